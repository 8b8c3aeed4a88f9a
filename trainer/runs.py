"""The run folder: the one contract between the training job, the UI, the CLI and the disk."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TypedDict

import yaml
from safetensors import safe_open

from .data import Product
from .paths import runs_dir

ACTIVE_STATES = ("queued", "loading", "training", "stopping")
FINAL_STATES = ("done", "stopped", "failed")


class Status(TypedDict, total=False):
    """status.json: every key the job writes and the UI, CLI and export read, named once here."""

    state: str  # queued, loading, training, stopping, done, stopped, failed (read back as interrupted when dead)
    step: int  # optimizer steps done
    total_steps: int | None
    created: float  # time stamps: the folder made, loading began, the first step began, the run ended, last write
    started: float
    training_started: float
    training_started_step: int  # the step training (re)started from: a resumed run's ETA counts only its own steps
    ended: float | None
    updated: float
    message: str  # what the run is doing or how it ended, for people
    error: str | None
    pid: int  # the training process, to tell a running run from one whose process died
    owner: str | None  # the logged-in user who started it
    world_size: int
    examples_per_step: int
    max_length: int
    data_summary: str
    data_file: dict  # a data file's name, sha256 and size in bytes (config.yaml names it, never by a server path)
    baselines: dict  # the baselines' metrics on the probe items (constants, the text baseline)
    best_step: int  # the step and probe $ error of the adapter kept in adapter-best/
    best_error: float
    pricing_probe: int | None  # the step whose probe is being priced, while it is
    fitting_head: dict | None  # rows done and total, and since when, while the price head is fitted after training
    resumes: list  # one entry per resume: from which checkpoint, what was skipped, when
    phases: dict  # seconds of wall time by phase (data, text baseline, tokenize, model load, steps, probe, saves)


@dataclass
class Evaluation:
    """eval.json: the Tester's result (tester.evaluate_run). Its metrics are metrics.price_metrics dicts (error,
    rmsle, hits, mse, r2, unparseable, count)."""

    run: str
    """The run evaluated."""
    data: str
    """"held-out split", or the file evaluated on."""
    count: int
    """Rows priced."""
    method: str
    """The headline method (pricing.CHOICES less auto), chosen before these rows were priced."""
    metrics: dict
    """The headline's metrics."""
    methods: dict[str, dict]
    """Each fine-tuned method's metrics (the ensemble too, when the run has validation rows)."""
    baselines: dict[str, dict]
    """base_model, the constants, linear_bow and both text baselines: their metrics."""
    items: list[dict]
    """Per row: text (cut), truth, guess (the headline), category, and every method's and baseline's price."""
    method_reason: str = ""
    """Why the headline: asked for, or how it was chosen on the validation rows."""
    ensemble: dict | None = None
    """The ensemble's fit: the best method, its members' weights and intercept."""
    validation: dict | None = None
    """Rows, methods, best_method and ensemble on the validation rows."""
    categories: dict[str, dict] = field(default_factory=dict)
    """Per category: count and the headline's and the text baseline's metrics."""
    verdict: str = ""
    """One sentence: the best method against the strongest simple baseline and a constant."""
    ranges: dict = field(default_factory=dict)
    """Per level: the raw and calibrated ranges' coverage and median width, and the adjustment (on the rows that
    are given a range: not those unlike the training rows)."""
    unlike: int = 0
    """Rows unlike the training rows (pricing/novelty.py): priced, but given no range."""
    unlike_file: str = ""
    """When the rows as a whole are unlike the training rows, what shows it (then every row counts in `unlike`)."""

    @classmethod
    def from_dict(cls, values: dict) -> "Evaluation":
        """An Evaluation from eval.json's text, older files included; ValueError when a field is missing."""
        if not isinstance(values, dict):
            raise ValueError("not a PriceTune evaluation: not a JSON object")
        values = dict(values)
        values.setdefault("method", "greedy")  # before the headline could be chosen, it was greedy decoding
        if "methods" not in values:
            # Before every method had an entry, the other method was kept among the baselines.
            baselines = dict(values.get("baselines") or {})
            older = {m: baselines.pop(k) for k, m in (("expected_value", "expected"), ("greedy", "greedy"))
                     if k in baselines}
            values.update(baselines=baselines, methods={values["method"]: values.get("metrics"), **older})
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in values.items() if k in names})
        except TypeError as exc:
            raise ValueError(f"not a PriceTune evaluation: {exc}") from None


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write via a temp file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    if not path.exists():
        return rows
    with path.open() as f:
        for line in f:
            # The writer may be mid-line while we read; a torn last line is simply not there yet.
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def phase_line(status: Status) -> str:
    """Where a run's wall time went, largest share first: "time: steps 25.1 min (84%), probe 3.0 min (10%), …"."""
    phases = status.get("phases") or {}
    total = sum(phases.values())
    if not total:
        return ""
    parts = [f"{name} {seconds / 60:.1f} min ({100 * seconds / total:.0f}%)" if seconds >= 30 else
             f"{name} {seconds:.1f} s ({100 * seconds / total:.0f}%)"
             for name, seconds in sorted(phases.items(), key=lambda kv: -kv[1])]
    return f"time {total / 60:.1f} min: " + ", ".join(parts)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:80] or "run"


def _category(product: Product) -> dict:
    return {"category": product.category} if product.category else {}


@dataclass
class RunFolder:
    """Paths and readers/writers of one runs/<name>/ folder."""

    path: Path
    writer: bool = True
    """False on the other ranks of a multi-process run: they read the folder, rank 0 alone writes it."""

    @classmethod
    def create(cls, name: str, root: Path | None = None) -> "RunFolder":
        root = Path(root) if root else runs_dir()
        root.mkdir(parents=True, exist_ok=True)
        base = safe_name(name)
        for i in range(1000):
            candidate = root / (base if i == 0 else f"{base}-{i}")
            try:
                candidate.mkdir()
                return cls(candidate)
            except FileExistsError:
                continue
        raise RuntimeError(f"cannot create a run folder for {name!r} in {root}")

    @property
    def name(self) -> str:
        return self.path.name

    config_file = property(lambda self: self.path / "config.yaml")
    status_file = property(lambda self: self.path / "status.json")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    samples_file = property(lambda self: self.path / "samples.jsonl")
    adapter_dir = property(lambda self: self.path / "adapter")
    best_adapter_dir = property(lambda self: self.path / "adapter-best")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    train_file = property(lambda self: self.path / "train.jsonl")
    validation_file = property(lambda self: self.path / "validation.jsonl")
    test_file = property(lambda self: self.path / "test.jsonl")
    choice_file = property(lambda self: self.path / "price_choice.json")
    eval_file = property(lambda self: self.path / "eval.json")
    text_baseline_file = property(lambda self: self.path / "tfidf_ridge.joblib")

    def status(self) -> Status:
        try:
            return json.loads(self.status_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def update_status(self, **fields) -> Status:
        status = self.status()
        status.update(fields, updated=time.time())
        if self.writer:
            write_atomic(self.status_file, json.dumps(status))
        return status

    def append(self, path: Path, row: dict) -> None:
        if not self.writer:
            return
        # One write call per line: a concurrent reader sees whole lines or a torn last line, never interleaving.
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_file)

    def samples(self) -> list[dict]:
        return read_jsonl(self.samples_file)

    def evaluation(self) -> Evaluation | None:
        """eval.json (the Tester's last result), or None when the run was not evaluated; ValueError if unreadable."""
        try:
            return Evaluation.from_dict(json.loads(self.eval_file.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError(f"eval.json of run {self.name} is unreadable: {exc}") from None

    def delete(self) -> None:
        """Remove the run folder and everything in it."""
        shutil.rmtree(self.path)

    def write_evaluation(self, evaluation: Evaluation) -> None:
        """eval.json: the Tester's result, replacing the last."""
        if self.writer:
            write_atomic(self.eval_file, json.dumps(asdict(evaluation)))

    def write_config(self, config) -> None:
        """config.yaml: the run's TrainConfig as recorded (TrainConfig.recorded)."""
        if self.writer:
            write_atomic(self.config_file, config.to_yaml())

    def split(self, part: str = "train") -> list[Product]:
        """The run's own products of one part, as written when it started: "train" (trained on), "validation" (kept
        out of training: the probe, and where the price method is chosen) or "test" (held out, only evaluated).
        A run from before validation slices has none."""
        files = {"train": self.train_file, "validation": self.validation_file, "test": self.test_file}
        return [Product(r["text"], float(r["price"]), str(r.get("category") or "")) for r in read_jsonl(files[part])]

    def write_split(self, train: list[Product], validation: list[Product], test: list[Product]) -> None:
        if not self.writer:
            return
        for path, items in ((self.train_file, train), (self.validation_file, validation), (self.test_file, test)):
            write_atomic(path, "".join(json.dumps({"text": p.text, "price": p.price, **_category(p)}) + "\n"
                                       for p in items))

    def state(self) -> str:
        """The status's state, or "interrupted" when the process that was running it is gone (a crash, a kill)."""
        status = self.status()
        state = status.get("state", "unknown")
        if state in ACTIVE_STATES and not _process_alive(status.get("pid")):
            return "interrupted"
        return state

    def truncate_after(self, step: int) -> None:
        """Drop metric and sample rows past `step`: a resumed run redoes those steps, so the curves stay gap-free."""
        if not self.writer:
            return
        for path in (self.metrics_file, self.samples_file):
            rows = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
            write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))

    def checkpoints(self) -> list[Path]:
        """Checkpoint folders, newest step first."""
        found = [p for p in self.checkpoints_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True)

    def last_complete_checkpoint(self) -> tuple[Path | None, list[str]]:
        """The newest checkpoint whose files are all there and readable, and a note for each one skipped."""
        skipped = []
        for folder in self.checkpoints():
            problem = checkpoint_problem(folder)
            if problem is None:
                return folder, skipped
            skipped.append(f"{folder.name} skipped: {problem}")
        return None, skipped

    def save_adapter(self, model, tokenizer, target: Path) -> None:
        """Save an adapter into `target` via a sibling temp folder, so a crash never leaves a torn adapter there."""
        if not self.writer:
            return
        tmp, old = target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if getattr(model, "price_head", None) is not None:  # a head trained with the LoRA is part of the adapter
            model.price_head.save(tmp)
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)

    def has_adapter(self) -> bool:
        return (self.adapter_dir / "adapter_config.json").is_file()

    def zip_adapter(self, target: Path) -> Path:
        """The adapter folder zipped with the run's config, metrics and evaluation beside it."""
        beside = [(f, f.name) for f in (self.config_file, self.metrics_file, self.eval_file) if f.is_file()]
        return zip_files(target, [*folder_files(self.adapter_dir), *beside])


def folder_files(folder: Path) -> list[tuple[Path, str]]:
    """Every file under `folder` with its path inside it, for zip_files."""
    return [(f, f.relative_to(folder).as_posix()) for f in sorted(folder.rglob("*")) if f.is_file()]


def zip_files(target: Path, files: list[tuple[Path, str]], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip of (file, name inside) pairs, written via a temp file so a download never reads half a zip."""
    tmp = target.with_name(f".{target.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression) as z:
        for f, name in files:
            z.write(f, name)
    os.replace(tmp, target)
    return target


def _process_alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


CHECKPOINT_FILES = ("adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt")


def checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None. The Trainer writes trainer_state.json last."""
    for name in CHECKPOINT_FILES:
        if not (folder / name).is_file() or (folder / name).stat().st_size == 0:
            return f"{name} missing or empty"
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
        int(state["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return "trainer_state.json missing or unreadable (the save was cut short)"
    try:
        with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
            for key in f.keys():
                f.get_tensor(key)
    except Exception as exc:  # any decoding failure means the file is torn
        return f"adapter weights unreadable ({type(exc).__name__})"
    return None


def finished_at(checkpoint: Path) -> int | None:
    """The step of a (complete) checkpoint taken at the run's last step, or None when steps remain after it."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    step, last = int(state["global_step"]), int(state.get("max_steps") or 0)
    return step if last and step >= last else None


def list_runs(root: Path | None = None) -> list[RunFolder]:
    """Run folders, newest first."""
    root = Path(root) if root else runs_dir()
    if not root.is_dir():
        return []
    runs = [RunFolder(p) for p in root.iterdir() if p.is_dir() and (p / "status.json").exists()]
    return sorted(runs, key=lambda r: r.status().get("created", 0), reverse=True)


def barely_trained(run: RunFolder) -> str:
    """A warning for prices from a run that learned little: its last probe priced the validation rows no better than
    always guessing the training median did ("" when it did better, or was never probed after step 0)."""
    status = run.status()
    probes = [r for r in run.metrics() if isinstance(r.get("probe_error"), (int, float)) and r["step"] > 0]
    constant = (status.get("baselines") or {}).get("constant_median") or {}
    if not probes or not isinstance(constant.get("error"), (int, float)):
        return ""
    if probes[-1]["probe_error"] < constant["error"]:
        return ""
    total = f" of {status['total_steps']}" if status.get("total_steps") else ""
    return (f"Barely trained: run {run.name} trained {probes[-1]['step']}{total} steps, and its last probe's $ error "
            f"(${probes[-1]['probe_error']:.2f}) was no better than always guessing the training median "
            f"(${constant['error']:.2f}) on the same validation rows. Treat its prices as guesses; train longer.")


def run_summary(run: RunFolder) -> dict:
    """One row of the run history: what a user compares runs by."""

    status, metrics = run.status(), run.metrics()
    try:
        config = yaml.safe_load(run.config_file.read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    losses = [r["loss"] for r in metrics if isinstance(r.get("loss"), (int, float))]
    probes = [r["probe_error"] for r in metrics if isinstance(r.get("probe_error"), (int, float)) and r["step"] > 0]
    started = status.get("started") or status.get("created")
    return {
        "run": run.name, "status": run.state(),
        "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)) if started else "",
        "steps": status.get("step", 0), "final loss": round(losses[-1], 4) if losses else None,
        "best probe $ error": round(min(probes), 2) if probes else None, "model": config.get("model", "?"),
        "r / alpha": f"{config.get('lora_r', '?')} / {config.get('lora_alpha', '?')}",
        "targets": ",".join(config.get("target_modules") or []),
    }
