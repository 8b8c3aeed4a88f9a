"""Experiment trackers through the Trainer's own `report_to`: which are installed, where their logs go (inside the
run folder where the tracker allows it), PriceTune's $ metrics logged beside the loss, and a tracker that fails
(no login, no network) turned into a warning instead of a failed run."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import typing
from pathlib import Path
from typing import Literal

from transformers import TrainerCallback

# The trackers' integrations are imported when a run logs to one: none of them is a requirement.

Tracker = Literal["none", "tensorboard", "trackio", "wandb", "mlflow"]
TRACKERS = typing.get_args(Tracker)
PACKAGES = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb", "mlflow": "mlflow"}
"""The package each tracker needs; none of them is a requirement of PriceTune."""


def missing(tracker: str) -> str | None:
    """Why `tracker` cannot be used here (with the pip command that adds it), or None when it can."""
    package = PACKAGES.get(tracker)
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return f"report_to: {tracker} is not installed here; add it with `pip install {package}`"


def label(tracker: str) -> str:
    """The tracker's name as a choice in the form: marked when it is not installed."""
    return tracker if missing(tracker) is None else f"{tracker} (not installed: pip install {PACKAGES[tracker]})"


@contextlib.contextmanager
def logs_in(run_path: Path, tracker: str):
    """Point the trackers that read their folder from the environment into the run folder while training, and put
    the environment back after (one process trains one run at a time, and the next run has its own folder)."""
    wanted = {"mlflow": {"MLFLOW_TRACKING_URI": (run_path / "mlruns").resolve().as_uri()},
              "wandb": {"WANDB_DIR": str(run_path.resolve())}}.get(tracker, {})
    wanted = {k: v for k, v in wanted.items() if k not in os.environ}  # a user's own setting wins
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key in wanted:
            os.environ.pop(key, None)


def set_up(trainer, run_path: Path, warn: typing.Callable[[str], None]) -> None:
    """Once the Trainer made its tracker callbacks: TensorBoard writes into the run folder, and every tracker's
    failure becomes a warning (the run goes on without it)."""
    from transformers.integrations import TensorBoardCallback

    handler = trainer.callback_handler
    for i, callback in enumerate(handler.callbacks):
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(run_path / "tensorboard")
        if type(callback).__module__.startswith("transformers.integrations"):
            handler.callbacks[i] = Guarded(callback, warn)


class Guarded(TrainerCallback):
    """A tracker's callback whose failures are reported once and then skipped, never raised into training."""

    def __init__(self, callback, warn: typing.Callable[[str], None]):
        self.callback, self.warn, self.failed = callback, warn, False

    def __getattribute__(self, name):
        if not name.startswith("on_"):
            return object.__getattribute__(self, name)
        inner = getattr(object.__getattribute__(self, "callback"), name)

        def event(*args, **kwargs):
            if self.failed:
                return None
            try:
                return inner(*args, **kwargs)
            except Exception as exc:  # any tracker error: no login, no network, a full disk
                self.failed = True
                self.warn(f"{type(self.callback).__name__} failed ({type(exc).__name__}: {exc}); "
                          f"training goes on without it")
                return None
        return event


def log_metrics(trainer, metrics: dict[str, float]) -> None:
    """PriceTune's own scalars (probe $ error, RMSLE, hits, the baselines' lines) to the trackers, at the current
    step, through the Trainer's log (so every tracker gets them as it gets the loss)."""
    if trainer is not None and trainer.args.report_to:  # the Trainer reads "none" as []
        trainer.log({k: float(v) for k, v in metrics.items() if v is not None})
