"""Sweeps: a grid of configs trained one after another, each an ordinary run folder, ranked by held-out $ error.

The sweep folder (`runs/SWEEP/`) holds `sweep.json` (the base config, the grid, the run of each point) and
`leaderboard.json`; the runs are its siblings (`runs/SWEEP-01-lora_r=8/`, ...), so the Runs tab lists them and each
resumes like any run. Running a sweep again continues it: finished points are skipped, an interrupted or stopped
run resumes from its last checkpoint, a run with no checkpoint yet starts over.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import threading
import typing
from pathlib import Path
from typing import Callable

import yaml

from .baselines import TEXT_BASELINE, TEXT_NEIGHBOURS
from .config import ConfigError, TrainConfig
from .job import JOBS, Busy
from .runs import RunFolder, list_runs, safe_name, write_atomic
from .tester import evaluate_run

SWEEP_FILE = "sweep.json"
LEADERBOARD_FILE = "leaderboard.json"
MAX_POINTS = 64
"""Grid points a sweep may have: each is a whole training run."""
FIXED = ("name", "data", "data_name", "text_column", "price_column", "test_size", "validation_size", "split_seed")
"""Fields a sweep cannot vary: every run must train and be measured on the same rows."""

def parse_set(text: str) -> tuple[str, list]:
    """`lora_r=8,16,32` as ("lora_r", [8, 16, 32]); list fields join names with '+' (`target_modules=q_proj+v_proj`)."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if not sep or not values.strip():
        raise ConfigError(f"--set {text!r}: write FIELD=VALUE,VALUE,…")
    if name not in fields:
        raise ConfigError(f"--set {text!r}: {name!r} is not a config field")
    if name in FIXED:
        raise ConfigError(f"--set {text!r}: a sweep cannot vary {name} (every run is measured on the same rows)")
    is_list = typing.get_origin(typing.get_type_hints(TrainConfig)[name]) is list
    raw = [v.strip().split("+") if is_list else yaml.safe_load(v.strip()) for v in values.split(",") if v.strip()]
    try:  # each value converted and checked by the config's own field rules
        return name, [getattr(TrainConfig.from_dict({name: value}), name) for value in raw]
    except ConfigError as exc:
        raise ConfigError(f"--set {text!r}: {exc}") from None


def grid(sets: list[tuple[str, list]]) -> list[dict]:
    """Every combination of the values, the first field varying slowest."""
    names = [name for name, _ in sets]
    if len(set(names)) != len(names):
        raise ConfigError("a field is set twice in the sweep")
    points = [dict(zip(names, combo)) for combo in itertools.product(*(values for _, values in sets))]
    if len(points) > MAX_POINTS:
        raise ConfigError(f"the sweep has {len(points)} runs; at most {MAX_POINTS}")
    return points


def point_label(point: dict) -> str:
    return " ".join(f"{k}={'+'.join(v) if isinstance(v, list) else v}" for k, v in point.items())


class Sweep:
    """A sweep folder: its base config, grid and run names; `configs()` checks every point before anything trains."""

    def __init__(self, folder: Path, base: TrainConfig, points: list[dict]):
        self.folder, self.base, self.points = Path(folder), base, points
        self.runs = [safe_name(f"{self.folder.name}-{i + 1:02d}-{point_label(p)}") for i, p in enumerate(points)]

    @classmethod
    def create_or_open(cls, folder: Path, base: TrainConfig, sets: list[tuple[str, list]]) -> tuple["Sweep", bool]:
        """The sweep in `folder` (True: opened as it was recorded, the given base and sets unused) or a new one."""
        folder = Path(folder)
        if (folder / SWEEP_FILE).is_file():
            recorded = json.loads((folder / SWEEP_FILE).read_text())
            return cls(folder, TrainConfig.from_dict(recorded["base"]), recorded["points"]), True
        return cls(folder, base, grid(sets)).save(), False

    def save(self) -> "Sweep":
        """Record the sweep in its folder (made here), every point checked first."""
        self.configs()  # a bad value is refused before the folder exists
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / SWEEP_FILE, json.dumps({"base": dataclasses.asdict(self.base),
                                                           "points": self.points, "runs": self.runs}, indent=2))
        return self

    def configs(self) -> list[TrainConfig]:
        out = []
        for name, point in zip(self.runs, self.points):
            try:
                out.append(TrainConfig.from_dict({**dataclasses.asdict(self.base), **point, "name": name}).validate())
            except ConfigError as exc:
                raise ConfigError(f"sweep point {point_label(point)}: {exc}") from None
        return out

    def run_folder(self, i: int) -> RunFolder:
        return RunFolder(self.folder.parent / self.runs[i])


def run_sweep(sweep: Sweep, start: Callable, progress: Callable[[str], None] = print) -> list[dict]:
    """Train and evaluate every point not yet done, in order; returns the leaderboard.

    `start(config=…, runs_root=…)` or `start(resume=…)` trains one run to its end and returns how it ended ("done",
    "stopped", "failed" or why it could not start); anything but "done" ends the sweep there, to be continued by
    running it again (a failed run is then tried again from the start)."""

    for i, config in enumerate(sweep.configs()):
        run = sweep.run_folder(i)
        label = f"[{i + 1}/{len(sweep.points)}] {point_label(sweep.points[i])}"
        state = run.state() if run.config_file.is_file() else None
        if state is None and run.path.exists():  # killed before its config was written: nothing to keep
            shutil.rmtree(run.path)
        if state == "done" and run.eval_file.is_file():
            progress(f"{label}: done before, {run.name}")
            continue
        if state != "done":
            resumable = state is not None and run.last_complete_checkpoint()[0] is not None
            if state is not None and not resumable:
                progress(f"{label}: {run.name} was {state} with no checkpoint yet: starting it over")
                shutil.rmtree(run.path)
            progress(f"{label}: {'resuming' if resumable else 'training'} {run.name}")
            outcome = start(resume=run.path) if resumable else start(config=config, runs_root=sweep.folder.parent)
            if outcome != "done":
                progress(f"{label}: {outcome}; the sweep stops here (run it again to continue)")
                return write_leaderboard(sweep)
        progress(f"{label}: evaluating {run.name} on its held-out rows")
        evaluate_run(run.path)
        write_leaderboard(sweep)
    return write_leaderboard(sweep)


def write_leaderboard(sweep: Sweep) -> list[dict]:
    """The evaluated runs ranked by held-out $ error, with the text baselines of the same rows as rows."""

    rows, baselines = [], {}
    for i, name in enumerate(sweep.runs):
        result = sweep.run_folder(i).evaluation()
        if result is None:
            continue
        m = result.metrics
        rows.append({"run": name, "point": sweep.points[i], "method": result.method, "error": m["error"],
                     "rmsle": m["rmsle"], "hits": m["hits"], "count": result.count})
        baselines = baselines or result.baselines
    for key, label in ((TEXT_BASELINE, "TF-IDF ridge"), (TEXT_NEIGHBOURS, "TF-IDF neighbours")):
        if key in baselines:  # an eval.json from before the neighbours baseline has only the ridge
            b = baselines[key]
            rows.append({"run": f"{label} (baseline, the same held-out rows)", "point": {}, "method": None,
                         "error": b["error"], "rmsle": b["rmsle"], "hits": b["hits"], "count": rows[0]["count"]})
    rows.sort(key=lambda r: r["error"])
    write_atomic(sweep.folder / LEADERBOARD_FILE, json.dumps(rows, indent=2))
    return rows


def leaderboard_lines(rows: list[dict]) -> list[str]:
    lines = [f"{'rank':<5}{'run':<48}{'error $':>9}{'RMSLE':>8}{'hits %':>8}  settings"]
    for rank, r in enumerate(rows, 1):
        lines.append(f"{rank:<5}{r['run'][:47]:<48}{r['error']:>9.2f}{r['rmsle']:>8.3f}{100 * r['hits']:>8.1f}  "
                     f"{point_label(r['point'])}")
    return lines


def list_sweeps(root: Path) -> list[Path]:
    """Sweep folders in a runs folder, newest first."""
    if not Path(root).is_dir():
        return []
    found = [p for p in Path(root).iterdir() if (p / SWEEP_FILE).is_file()]
    return sorted(found, key=lambda p: (p / SWEEP_FILE).stat().st_mtime, reverse=True)


def read_leaderboard(folder: Path) -> list[dict]:
    path = Path(folder) / LEADERBOARD_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def pace(model: str, root: Path) -> tuple[float, str] | None:
    """(seconds per trained example, run name) of the newest finished run of `model` in `root`, or None."""

    for run in list_runs(root):
        s = run.status()
        steps = (s.get("step") or 0) - (s.get("training_started_step") or 0)
        if (run.state() == "done" and steps > 0 and s.get("ended") and s.get("training_started")
                and run.config_file.is_file() and TrainConfig.from_yaml(run.config_file).model == model):
            return (s["ended"] - s["training_started"]) / (steps * (s.get("examples_per_step") or 1)), run.name
    return None


def plan(sweep: Sweep, measured: tuple[float, str] | None) -> tuple[list[dict], float | None]:
    """Each point's steps and estimated training minutes (at `measured`'s pace, capped by its time limit), and the
    total (None when some point cannot be estimated: trained by epochs with no pace, or no pace at all)."""
    rows, total = [], 0.0
    for point, config in zip(sweep.points, sweep.configs()):
        minutes = None
        if measured and config.max_steps and not config.fit_to_time:
            minutes = config.max_steps * config.batch_size * config.grad_accum * measured[0] / 60
        if config.max_minutes:
            minutes = min(minutes, config.max_minutes) if minutes is not None else config.max_minutes
        steps = "fitted to the time" if config.fit_to_time else config.max_steps or f"{config.epochs:g} epochs"
        rows.append({"settings": point_label(point), "steps": steps,
                     "minutes": minutes})
        total = None if total is None or minutes is None else total + minutes
    return rows, total


PROGRESS_FILE = "progress.txt"
_background = threading.Lock()


def run_in_background(sweep: Sweep, owner: str | None = None) -> threading.Thread:
    """The app's sweep, recorded in its folder, then run_sweep in a thread, each run through the process's one-job
    queue (Stop stops the run and the sweep; a job started by someone else between two runs ends it too), its lines
    in the sweep folder's progress.txt. One sweep at a time per process, never beside a run: else Busy."""

    if not _background.acquire(blocking=False):
        raise Busy("Busy: a sweep is already running. Stop its current run to end it.")
    try:
        if JOBS.active():
            raise Busy(f"Busy: run {JOBS.active().run.name} is training. Stop it or wait for it to finish.")
        sweep.save()
    except BaseException:
        _background.release()
        raise

    def say(line: str) -> None:
        with open(sweep.folder / PROGRESS_FILE, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def start(config=None, runs_root=None, resume=None):
        try:
            job = JOBS.start(config, runs_root, resume=resume, owner=owner)
        except Busy as exc:
            return str(exc)
        job.wait()
        return job.outcome

    def work():
        try:
            rows = run_sweep(sweep, start, progress=say)
            say("\n".join(leaderboard_lines(rows)))
        except Exception as exc:  # a failure ends the sweep, never the app
            say(f"the sweep failed: {type(exc).__name__}: {exc}")
        finally:
            _background.release()

    thread = threading.Thread(target=work, name=f"sweep-{sweep.folder.name}", daemon=True)
    thread.start()
    return thread
