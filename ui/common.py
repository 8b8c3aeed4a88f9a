"""What every tab shares: run lookup by name, errors shown next to their button, the adapter zip, shared texts."""

from __future__ import annotations

import functools
import glob
import re
import shutil
import tempfile
import traceback
import threading
from pathlib import Path

import gradio as gr

from trainer.job import JOBS, Busy
from trainer.models import first_line
from trainer.runs import RunFolder, list_runs

from .access import current_user, may_control

RESUMABLE = ("stopped", "failed", "interrupted")
PICK_FINISHED = "Pick a finished run with an adapter."
EVAL_COLUMNS = ["model", "error $", "RMSLE", "hits %", "MSE", "r²", "unparseable"]
SAMPLE_WIDTHS = ["58%", "14%", "14%", "14%"]  # description, true, predicted, error: prices stay in view
COLOUR_KEY = ("<small>Colours, as the course's Tester: **green** within $40 or 20% of the true price (a hit), "
              "**orange** within $80 or 40%, **red** further off; grey: no price could be read.</small>")


def reports_errors(outputs: int = 1, at: int = 0):
    """Whatever a handler raises reaches the user: a toast, and the message in its output `at` (of `outputs`),
    next to the button that caused it. Gradio alone shows a bare "Error" or nothing."""
    def wrap(fn):
        @functools.wraps(fn)  # Gradio reads the wrapped signature: API parameter names, gr.Request, gr.Progress
        def handler(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                traceback.print_exc()
                message = f"**Something went wrong:** {type(exc).__name__}: {first_line(exc)}"
                gr.Warning(message)
                if outputs == 1:
                    return message
                values = [gr.skip()] * outputs
                values[at] = message
                return tuple(values)
        return handler
    return wrap


def refused(message: str) -> str:
    """A handler's answer to bad input: shown next to its button and as a toast."""
    gr.Warning(message.replace("**", ""))
    return message


def runs_by_name(with_adapter: bool = False) -> dict[str, RunFolder]:
    """The runs by name, newest first. Only these names ever reach the file system: a posted name is looked up here,
    never used as a path."""
    return {r.name: r for r in list_runs() if not with_adapter or r.has_adapter()}


def named_run(run_name, with_adapter: bool = False) -> RunFolder | None:
    return runs_by_name(with_adapter).get(run_name)


def run_picker(label: str = "Run") -> gr.Dropdown:
    """A tab's run picker; its choices come from run_choices when the tab is selected."""
    return gr.Dropdown(label=label, choices=[], allow_custom_value=True)


def run_choices(with_adapter: bool = False) -> gr.Dropdown:
    """A run picker's choices, newest first and selected."""
    names = list(runs_by_name(with_adapter))
    return gr.Dropdown(choices=names, value=names[0] if names else None)


def resume_run(run: RunFolder, request: gr.Request | None) -> str:
    """Resume a run from its last complete checkpoint, if it may be and the user may."""
    if run.state() not in RESUMABLE:
        return f"Run {run.name} is {run.state()}: only a stopped, failed or interrupted run can be resumed."
    if not may_control(run, request):
        return f"**Only {run.status().get('owner')} (who started {run.name}) or an admin can resume it.**"
    try:
        job = JOBS.start(resume=run.path, owner=run.status().get("owner"))
    except (ValueError, Busy) as exc:
        return f"**{exc}**"
    return f"Resuming run **{job.run.name}**: {job.resume_note}."


def adapter_zip(run: RunFolder) -> str:
    """The run's adapter zip for download, `NAME-adapter.zip`, built in a temp folder the server owns (never the runs
    folder itself): one per run and adapter version, the older ones of the run removed."""
    return str(versioned_download(run, "adapter", [run.adapter_dir, run.eval_file], run.zip_adapter))


def versioned_download(run: RunFolder, kind: str, sources: list[Path], build) -> Path:
    """`NAME-kind.zip` in a folder named by the save times of `sources`, so a resumed, re-finished or re-evaluated
    run never serves a stale zip, while the file the browser saves keeps a plain name; `build(target)` writes it."""
    root = Path(tempfile.gettempdir()) / "pricetune-downloads"
    stamps = "-".join(str(int(p.stat().st_mtime)) for p in sources if p.exists())
    target = root / f"{run.name}-{kind}-{stamps}" / f"{run.name}-{kind}.zip"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            build(target)
        except BaseException:
            shutil.rmtree(target.parent, ignore_errors=True)
            raise
        mine = re.compile(re.escape(f"{run.name}-{kind}-") + r"[\d-]+")
        for old in root.glob(f"{glob.escape(run.name)}-{kind}-*"):
            if old != target.parent and mine.fullmatch(old.name):
                shutil.rmtree(old, ignore_errors=True)
    return target


def busy_refusal(what: str) -> str | None:
    """Why `what` must wait while a run trains (it would load a second copy of the model beside the running job,
    which on a GPU can push that job out of memory); None when no run trains in this process."""
    job = JOBS.active()
    if job is None:
        return None
    status = job.run.status()
    return (f"**Busy:** run {job.run.name} is training (step {status.get('step', 0)}/{status.get('total_steps') or '?'})."
            f" {what} loads a second copy of the model, so it waits until the run ends (or is stopped).")


_EVENTS: dict[tuple[str, str], threading.Event] = {}
_EVENTS_LOCK = threading.Lock()


def caller_event(kind: str, request: gr.Request | None) -> threading.Event:
    """The `kind` Cancel flag of one caller (the logged-in user, else the page's session): Cancel stops only your
    own evaluation or pricing."""
    key = current_user(request) or getattr(request, "session_hash", None) or ""
    with _EVENTS_LOCK:
        return _EVENTS.setdefault((kind, key), threading.Event())
