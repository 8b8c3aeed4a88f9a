"""PriceTune's browser UI: builds the Gradio Blocks, wires events to trainer/, launches. No training logic here."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shlex
import shutil
import tempfile
import threading
import time
import traceback
from pathlib import Path

import gradio as gr
import pandas as pd

from trainer import charts
from trainer import data as D
from trainer.config import COURSE_TARGETS, RUN_DATA, ConfigError, TrainConfig, model_defaults
from trainer.job import JOBS, Busy
from trainer.models import DEMO, ModelError, estimate_adapter, first_line, linear_module_names, model_config
from trainer.paths import runs_dir
from trainer.runs import ACTIVE_STATES, FINAL_STATES, RunFolder, list_runs, read_jsonl, run_summary

RESUMABLE = ("stopped", "failed", "interrupted")

DEFAULTS = TrainConfig()
PREVIEW_ROWS = 8
PREVIEW_COLUMNS = ["price", "text"]  # the price first: a long text column would push it out of view


# ---------- errors ----------

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


# ---------- data ----------

@reports_errors(5, at=1)
def use_sample():
    products = D.make_sample_products()
    return "sample", *_describe_products(products, "**Synthetic sample data** (made by PriceTune's own seeded "
                                                   "generator; prices depend on category, brand tier, size and "
                                                   "material).")


@reports_errors(7, at=1)
def use_upload(file):
    if file is None:
        return (gr.skip(),) * 7
    return _read_upload(file, None, None)


@reports_errors(7, at=1)
def remap(file, text_columns, price_column):
    """The column pickers changed: read the same uploaded file again with the chosen mapping."""
    if not file:
        return (gr.skip(),) * 7
    return _read_upload(file, list(text_columns or []) or None, price_column or None)


def _read_upload(file, text_columns, price_column):
    # `file` is the temp path Gradio saved the upload under: the name the user gave it is shown, never used as a path.
    # Gradio hands it over as a str subclass, which YAML (config.yaml) cannot write: keep a plain str.
    file = str(file)
    try:
        products, report = D.load_products(file, text_column=text_columns, price_column=price_column)
    except D.DataError as exc:
        gr.Warning(str(exc))
        # Keep offering the columns, so a file whose price column was not found can still be mapped by hand.
        columns = exc.report.columns if exc.report else D.read_columns(file)
        mapping = {"columns": columns, "text": exc.report.text_columns if exc.report else list(text_columns or []),
                   "price": exc.report.price_column if exc.report else price_column or ""}
        return ("", refused(f"**Cannot use this file:** {exc}"), pd.DataFrame(columns=PREVIEW_COLUMNS), None, None,
                file, mapping)
    mapping = {"columns": report.columns, "text": report.text_columns, "price": report.price_column}
    described = _describe_products(products, f"**Uploaded file** `{Path(file).name}`\n\n{report.summary()}")
    return file, *described, file, mapping


def show_mapping(mapping):
    """Fill the column pickers with the file's columns and the mapping in use; hidden when there are none."""
    columns = (mapping or {}).get("columns") or []
    if not columns:
        return gr.Dropdown(visible=False), gr.Dropdown(visible=False)
    text = [c for c in mapping["text"] if c in columns]
    price = mapping["price"] if mapping["price"] in columns else None
    return (gr.Dropdown(choices=columns, value=text, multiselect=True, visible=True),
            gr.Dropdown(choices=columns, value=price, visible=True))


def hide_mapping():
    return gr.Dropdown(visible=False), gr.Dropdown(visible=False)


def _describe_products(products, header):
    test_size = DEFAULTS.test_size
    train, test = D.split_products(products, test_size=test_size, seed=DEFAULTS.split_seed)
    info = (f"{header}\n\n**{len(products)} products**: {len(train)} for training, {len(test)} held out "
            f"(seeded split, seed {DEFAULTS.split_seed}; never trained on).")
    preview = [[round(p.price, 2), p.text[:160]] for p in products[:PREVIEW_ROWS]]
    return (info, gr.Dataframe(value=preview, headers=PREVIEW_COLUMNS,
                               label=f"First {len(preview)} of {len(products):,} rows"),
            charts.price_histogram([p.price for p in products]), _token_lengths(products))


@functools.lru_cache(maxsize=1)
def _demo_tokenizer():
    from trainer.models import load_tokenizer

    return load_tokenizer(DEMO)


def _token_lengths(products):
    """Tokens per example with the demo tokenizer, and the max length training would pick from the data."""
    try:
        tokenizer = _demo_tokenizer()
        lengths, cutoff = D.example_lengths(tokenizer, products), D.fit_max_length(tokenizer, products)
        return charts.token_length_figure(lengths, cutoff)
    except (ModelError, ValueError) as exc:  # no tokenizer here: the data is still usable, only the chart is missing
        return charts._empty("Tokens per example", f"Cannot count tokens: {exc}")


# ---------- model form ----------

def _is_a_default(targets, lr) -> bool:
    """Whether the form still shows some model's defaults (then a model change may replace them)."""
    presets = [model_defaults(m) for m in (DEMO, "any other model")]
    return any(sorted(targets or []) == sorted(p["target_modules"]) and float(lr or 0) == p["learning_rate"]
               for p in presets)


def discover_targets(model_name, current, lr):
    """The new model's linear layers; its default targets and learning rate unless the user chose their own."""
    try:
        names = linear_module_names(model_config(model_name))
    except (ModelError, ValueError) as exc:
        gr.Warning(str(exc))
        return gr.skip(), gr.skip()
    if _is_a_default(current, lr):
        wanted = model_defaults(model_name.strip() or DEMO)
        keep = [n for n in wanted["target_modules"] if n in names] or names[:1]
        return gr.CheckboxGroup(choices=names, value=keep), wanted["learning_rate"]
    keep = [n for n in current if n in names] or [n for n in COURSE_TARGETS if n in names] or names[:1]
    return gr.CheckboxGroup(choices=names, value=keep), gr.skip()


def estimate(model_name, r, targets):
    if not targets:
        return "Pick at least one target module."
    try:
        return estimate_adapter(model_config(model_name), int(r), list(targets)).describe()
    except (ModelError, ValueError) as exc:
        return f"Cannot estimate: {exc}"


# ---------- start / stop ----------

FORM_FIELDS = ["model", "quant", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "learning_rate",
               "max_steps", "epochs", "batch_size", "grad_accum", "max_length", "sample_every", "probe_size", "seed",
               "save_steps"]


def form_config(data_path, model, quant, r, alpha, dropout, targets, lr, max_steps, epochs, batch, accum, max_len,
                sample_every, probe_size, seed, save_steps, mapping=None) -> TrainConfig:
    """The TrainConfig the form describes, every field converted and checked by the config itself (a cleared number
    field is refused by its name); Start and Export config share it."""
    # The column mapping of the uploaded file goes into the run's config.yaml; sample data has none.
    mapping = (mapping or {}) if data_path != "sample" else {}
    values = dict(zip(FORM_FIELDS, (model, quant, r, alpha, dropout, targets, lr, max_steps, epochs, batch, accum,
                                    max_len, sample_every, probe_size, seed, save_steps)))
    values["model"] = str(model or "").strip() or DEMO
    values["target_modules"] = list(targets or [])
    return TrainConfig.from_dict({"data": str(data_path or "sample"), "text_column": ",".join(mapping.get("text") or []),
                                  "price_column": mapping.get("price") or "", **values}).validate()


@reports_errors()
def start(data_path, model, quant, r, alpha, dropout, targets, lr, max_steps, epochs, batch, accum, max_len,
          sample_every, probe_size, seed, save_steps, mapping=None, request: gr.Request = None):
    # Named parameters (not *args) so the HTTP API names each field; all of them but the request are the form.
    form = {k: v for k, v in locals().items() if k != "request"}
    if not data_path:
        return refused("Choose data first: **Use sample data** or upload a file.")
    try:
        config = form_config(**form)
        model_config(config.model)  # a mistyped id is refused now, not after the data is read and tokenized
        job = JOBS.start(config, owner=_user(request))
    except (ConfigError, ModelError, Busy) as exc:
        return refused(f"**Cannot start:** {exc}")
    return f"Started run **{job.run.name}**."


@reports_errors(2, at=1)
def export_config(data_path, model, quant, r, alpha, dropout, targets, lr, max_steps, epochs, batch, accum, max_len,
                  sample_every, probe_size, seed, save_steps, mapping=None):
    """The form as the YAML that `python -m trainer train --config` takes."""
    try:
        config = form_config(**locals())
    except ConfigError as exc:
        return gr.skip(), refused(f"**Cannot export:** {exc}")
    folder = Path(tempfile.mkdtemp(prefix="pricetune-config-"))
    path = folder / "pricetune-config.yaml"
    path.write_text(config.to_yaml())
    return gr.DownloadButton(value=str(path), visible=True, label="Download config.yaml"), commands_text(config)


def commands_text(config: TrainConfig, file: str = "pricetune-config.yaml") -> str:
    """The headless commands of a config: one process, and every GPU of a machine (the Trainer's data parallelism)."""
    import torch

    # An upload lives in Gradio's temp folder under its own file name: point the command at that name.
    data = "" if config.data == "sample" else f" --data {shlex.quote(Path(config.data).name)}"
    gpus = max(torch.cuda.device_count(), 2)
    run = f"-m trainer train --config {file}{data}"
    return (f"Run it headless: `python {run}`\n\n"
            f"On {gpus} GPUs of one machine (each step then takes {gpus} × batch size examples):\n\n"
            f"```\ntorchrun --nproc_per_node {gpus} {run}\n"
            f"accelerate launch --multi_gpu --num_processes {gpus} {run}\n```")


@reports_errors(len(FORM_FIELDS) + 1, at=len(FORM_FIELDS))
def import_config(file):
    """Fill the form from a config.yaml (as exported, or a run's own); the data choice stays as it is."""
    if not file:
        return *[gr.skip()] * len(FORM_FIELDS), ""
    try:
        config = TrainConfig.from_yaml(file).validate()
    except (ConfigError, OSError, ValueError) as exc:  # yaml errors are ValueErrors too
        return *[gr.skip()] * len(FORM_FIELDS), refused(f"**Cannot import:** {exc}")
    return fill_form(config, "Form filled from the config.")


def fill_form(config: TrainConfig, message: str, data_kept: bool = False):
    """The form's values for a config, then a message (with where its data was, as uploads are not kept)."""
    values = [getattr(config, f) for f in FORM_FIELDS]
    try:
        names = linear_module_names(model_config(config.model))
        values[FORM_FIELDS.index("target_modules")] = gr.CheckboxGroup(choices=names, value=config.target_modules)
    except (ModelError, ValueError):
        pass  # the model cannot be inspected here; the targets are shown as given
    upload = not (data_kept or config.data == "sample" or config.data.startswith(RUN_DATA))
    note = f" Its data was `{Path(config.data).name}`: upload that file to train on it." if upload else ""
    # Settings the form has no field for: a run started from the form gets their defaults, so say which differ.
    default, own = TrainConfig(), set(FORM_FIELDS) | {"name", "data", "text_column", "price_column"}
    shown = lambda v: f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731
    dropped = [f"{f.name} {shown(getattr(config, f.name))} (default {shown(getattr(default, f.name))})"
               for f in dataclasses.fields(TrainConfig)
               if f.name not in own and getattr(config, f.name) != getattr(default, f.name)]
    if dropped:
        note += (f" Not in the form, so a run started here uses the defaults instead: {', '.join(dropped)}; "
                 "to keep them, train headless with this config.yaml.")
    return *values, f"{message}{note}"


def stop(request: gr.Request = None):
    job = JOBS.active()
    if job is not None and not _may_control(job.run, request):
        return f"**Only {job.run.status().get('owner')} (who started {job.run.name}) or an admin can stop it.**"
    return JOBS.stop()


def resume(request: gr.Request = None):
    run = current_run()
    if run is None or run.state() not in RESUMABLE:
        return "Nothing to resume: the latest run is not stopped, failed or interrupted."
    return _resume(run, request)


def _resume(run: RunFolder, request: gr.Request | None) -> str:
    if run.state() not in RESUMABLE:
        return f"Run {run.name} is {run.state()}: only a stopped, failed or interrupted run can be resumed."
    if not _may_control(run, request):
        return f"**Only {run.status().get('owner')} (who started {run.name}) or an admin can resume it.**"
    try:
        job = JOBS.start(resume=run.path, owner=run.status().get("owner"))
    except (ValueError, Busy) as exc:
        return f"**{exc}**"
    return f"Resuming run **{job.run.name}**: {job.resume_note}."


# ---------- login ----------

def auth_users() -> list[tuple[str, str]]:
    """PRICETUNE_AUTH="user:password,user2:password2" turns login on."""
    pairs = [p.split(":", 1) for p in os.environ.get("PRICETUNE_AUTH", "").split(",") if ":" in p]
    return [(u.strip(), pw) for u, pw in pairs if u.strip()]


def _user(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None) if request is not None else None


def _may_control(run: RunFolder, request: gr.Request | None) -> bool:
    """With login on, only the run's owner or an admin (PRICETUNE_ADMINS) may stop or resume it; all may watch."""
    if not auth_users():
        return True
    user = _user(request)
    admins = {a.strip() for a in os.environ.get("PRICETUNE_ADMINS", "").split(",") if a.strip()}
    return user is not None and (user == run.status().get("owner") or user in admins)


# ---------- live view (polled) ----------

def current_run() -> RunFolder | None:
    job = JOBS.active()
    if job is not None:
        return job.run
    root = runs_dir()
    try:
        stamp = root.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    # The 5-second bucket also catches a run folder scanned in the instant before its status file was written.
    return _newest_run(str(root), stamp, int(time.time() // 5))


@functools.lru_cache(maxsize=1)
def _newest_run(root: str, stamp: int, bucket: int) -> RunFolder | None:
    # Every poll of every browser lands here while idle: rescan the runs folder only when a run was added or removed.
    runs = list_runs(Path(root))
    return runs[0] if runs else None


def _fmt_seconds(s):
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def status_text(run: RunFolder, status: dict, metrics: list[dict], settings: str = "") -> str:
    state = status.get("state", "?")
    step, total = status.get("step", 0), status.get("total_steps")
    now = status.get("ended") or time.time()
    parts = [f"**Run {run.name}** — **{state}**"]
    if state == "stopped" and status.get("training_started"):
        parts[0] = f"**Run {run.name}** — **stopped at step {step}**"
    if total:
        parts.append(f"step {step}/{total}")
    if status.get("started"):
        parts.append(f"elapsed {_fmt_seconds(now - status['started'])}")
    eta = _eta(status, metrics)
    if eta is not None:
        parts.append(f"ETA {_fmt_seconds(eta)}")
    recent = [r["tokens_per_s"] for r in metrics if "tokens_per_s" in r][-10:]
    if recent:
        parts.append(f"{sum(recent) / len(recent):.0f} tokens/s")
    probes = [r for r in metrics if "probe_error" in r]
    if probes:
        parts.append(f"probe error ${probes[-1]['probe_error']:,.2f}")
    lines = [" · ".join(parts)]
    if settings:
        lines.append(settings)
    if status.get("error"):
        lines.append(f"**Error:** {status['error']}")
    elif state == "training" and status.get("pricing_probe") is not None:
        lines.append(f"Pricing the probe set at step {status['pricing_probe']}…")
    elif status.get("message"):
        lines.append(status["message"])
    return "\n\n".join(lines)


def _eta(status: dict, metrics: list[dict]) -> float | None:
    """Seconds left: the average time per step so far (probe pricing included, as it recurs) times the steps left,
    counted from the end of the last step, so the estimate runs down smoothly while a probe is priced instead of
    jumping up."""
    began, total = status.get("training_started"), status.get("total_steps")
    steps = [r for r in metrics if "loss" in r and isinstance(r.get("time"), (int, float))]
    if status.get("state") != "training" or not began or not total or not steps:
        return None
    last = steps[-1]
    done = last["step"] - (status.get("training_started_step") or 0)
    if done <= 0:
        return None
    per_step = (last["time"] - began) / done
    return max(per_step * (total - last["step"]) - (time.time() - last["time"]), 0.0)


def run_settings(run: RunFolder) -> str:
    """The settings a run trains with, in one line: after a reload the form shows defaults, not these."""
    try:
        c = TrainConfig.from_yaml(run.config_file)
    except (ConfigError, OSError):
        return ""
    data = "sample data" if c.data == "sample" else (c.data if c.data.startswith("run:") else Path(c.data).name)
    return (f"Settings of this run: {c.model} ({c.quant}) · LoRA r {c.lora_r}, alpha {c.lora_alpha}, dropout "
            f"{c.lora_dropout:g} on {', '.join(c.target_modules)} · lr {c.learning_rate:g} · batch {c.batch_size}"
            f"×{c.grad_accum} · {f'{c.max_steps} steps' if c.max_steps else f'{c.epochs:g} epochs'} · data {data}")


class LiveView:
    """The rendered live view of the current run, built once per change of its files and shared by every browser.

    Training shares this process (and the GIL, and on a CPU the cores) with the web server, so each poll must cost
    almost nothing: a poll stats three files and, only when they changed, one poll rebuilds the figures for all.
    A rebuild (two plotly figures, ~45 ms of CPU) happens at most every REBUILD_SECONDS while the run and its state
    stay the same: on a fast GPU the files change every step, and the charts need not.
    """

    REBUILD_SECONDS = 3.0

    def __init__(self):
        self.lock = threading.Lock()
        self.key = None
        self.parts = None
        self.built = 0.0

    @staticmethod
    def file_key(path: Path):
        try:
            st = path.stat()
            return st.st_size, st.st_mtime_ns
        except FileNotFoundError:
            return None

    def get(self, run: RunFolder):
        # The state is in the key too: a run whose process died reads "interrupted" with no file changing.
        key = (run.name, run.state(),
               *(self.file_key(p) for p in (run.status_file, run.metrics_file, run.samples_file)))
        with self.lock:
            now = time.monotonic()
            # A new run or state (stopped, done, failed) shows at once; new steps at most every REBUILD_SECONDS.
            if key != self.key and (self.key is None or key[:2] != self.key[:2]
                                    or now - self.built >= self.REBUILD_SECONDS):
                self.key, self.parts, self.built = key, self._build(run, key), now
            return self.key, self.parts

    @staticmethod
    def _build(run: RunFolder, key) -> dict:
        status, metrics, samples = run.status(), run.metrics(), run.samples()
        state = run.state()
        base = next((r["probe_error"] for r in metrics if r.get("step") == 0 and "probe_error" in r), None)
        constant = status.get("baselines", {}).get("constant_mean", {}).get("error")
        download = gr.skip()
        if state in FINAL_STATES and run.has_adapter():
            download = gr.DownloadButton(f"Download adapter, config and metrics of {run.name} (zip)",
                                         value=_adapter_zip(run),
                                         visible=True)
        resumable = state in RESUMABLE and run.last_complete_checkpoint()[0] is not None
        ended = {"done": "finished", "stopped": "stopped", "failed": "failed", "interrupted": "was interrupted"}
        return {
            "status": {**status, "state": state}, "metrics": metrics, "settings": run_settings(run),
            # What a page compares to know it must redraw the charts, or the download and resume buttons.
            "version": f"{run.name}:{hash(key)}", "phase": f"{run.name}|{state}|{run.has_adapter()}|{resumable}",
            # Serialized here, once per change: Gradio passes ready plot/table data through untouched, where a
            # figure or Styler would be turned into JSON again for every polling browser.
            "loss": _PLOT.postprocess(charts.loss_figure(metrics)),
            "error": _PLOT.postprocess(charts.error_figure(metrics, base_error=base, constant_error=constant)),
            "table": _TABLE.postprocess(charts.samples_frame(samples[-1]["items"] if samples else [])).model_dump(),
            "download": download,
            "resume": gr.Button(f"Resume run {run.name}", visible=resumable),
            # Replaces "Stopping … at the next step" under Start once the run has ended.
            "message": f"Run **{run.name}** {ended[state]}." if state in ended else gr.skip(),
        }


_PLOT, _TABLE = gr.Plot(render=False), gr.Dataframe(render=False, interactive=False)
SAMPLE_WIDTHS = ["58%", "14%", "14%", "14%"]  # description, true, predicted, error: prices stay in view
EVAL_COLUMNS = ["model", "error $", "RMSLE", "hits %", "unparseable"]
COLOUR_KEY = ("<small>Colours, as the course's Tester: **green** within $40 or 20% of the true price (a hit), "
              "**orange** within $80 or 40%, **red** further off; grey: no price could be read.</small>")
LIVE = LiveView()


NO_RUN = "No run yet: choose data and press **Start**."


def poll():
    """The page's timer, every second: the status text, and two short tags whose change makes the page fetch the
    charts (redraw) or the buttons (controls). A poll returns plain values only: Gradio builds a new component
    for every update dict, even an empty gr.skip(), which made a poll cost ~8.5 ms of server CPU (now ~3 ms,
    mostly the HTTP stack)."""
    run = current_run()
    if run is None:
        return NO_RUN, "", ""
    _, parts = LIVE.get(run)
    # The text is rebuilt every poll: elapsed time and ETA move even when no file changed.
    return status_text(run, parts["status"], parts["metrics"], parts["settings"]), parts["version"], parts["phase"]


def redraw():
    """The charts and sample table, fetched by a page when its version tag changed (a new step, probe or run)."""
    run = current_run()
    if run is None:
        return gr.skip(), gr.skip(), gr.skip()
    _, parts = LIVE.get(run)
    return parts["loss"], parts["error"], parts["table"]


def controls():
    """The download and resume buttons and the message under Start, fetched when the run's phase tag changed (it
    ended, or became resumable)."""
    run = current_run()
    if run is None:
        return gr.skip(), gr.skip(), gr.skip()
    _, parts = LIVE.get(run)
    return parts["download"], parts["resume"], parts["message"]


def refresh():
    """The whole live view in one call, for API clients: status, loss chart, $-error chart, samples, download."""
    run = current_run()
    if run is None:
        return NO_RUN, None, None, None, None
    _, parts = LIVE.get(run)
    return (status_text(run, parts["status"], parts["metrics"], parts["settings"]), parts["loss"], parts["error"],
            parts["table"], parts["download"])


def _adapter_zip(run: RunFolder) -> str:
    # Built in a temp folder the server owns: downloads never expose the runs folder itself.
    folder = Path(tempfile.gettempdir()) / "pricetune-downloads"
    folder.mkdir(exist_ok=True)
    # Named by the adapter's and the evaluation's save times, so a resumed, re-finished or re-evaluated run never
    # serves a stale zip.
    stamps = [int(p.stat().st_mtime) for p in (run.adapter_dir, run.eval_file) if p.exists()]
    target = folder / f"{run.name}-adapter-{'-'.join(map(str, stamps))}.zip"
    if not target.exists():
        run.zip_adapter(target)
    return str(target)


# ---------- runs by name (every tab) ----------

PICK_FINISHED = "Pick a finished run with an adapter."

def _runs(with_adapter: bool = False) -> dict[str, RunFolder]:
    """The runs by name, newest first. Only these names ever reach the file system: a posted name is looked up here,
    never used as a path."""
    return {r.name: r for r in list_runs() if not with_adapter or r.has_adapter()}


def _named_run(run_name, with_adapter: bool = False) -> RunFolder | None:
    return _runs(with_adapter).get(run_name)


# ---------- predict ----------

def runs_with_adapters():
    names = list(_runs(with_adapter=True))
    return gr.Dropdown(choices=names, value=names[0] if names else None)


@reports_errors(2, at=0)
def predict(run_name, text):
    from trainer.evaluate import expected_price
    from trainer.inference import predictor_for

    run = _named_run(run_name, with_adapter=True)
    if run is None:
        return refused(PICK_FINISHED), None
    if not text or not text.strip():
        return refused("Type a product description."), None
    try:
        predictor = predictor_for(run.path)
    except (ModelError, OSError, ValueError) as exc:
        return refused(f"**Cannot load run {run_name}:** {exc}"), None
    candidates = predictor.distribution(text)
    expected = expected_price(candidates)
    greedy = predictor.predict([text])[0]
    base = predictor.predict([text], base=True)[0]

    def show(pred):
        return f"${pred.price:,.2f}" if pred.price is not None else f"unparseable ({pred.text!r})"

    headline = f"**${expected:,.2f}**" if expected is not None else "no price among the candidates"
    md = (f"| | price |\n|---|---|\n| **fine-tuned ({run_name}), expected value** | {headline} |\n"
          f"| fine-tuned, greedy | {show(greedy)} |\n| base model, greedy | {show(base)} |\n\n"
          "The expected value weighs each candidate price by its probability (the chart); greedy decoding reads "
          "the single likeliest digits, which for a digit-by-digit tokenizer collapse to round prices.")
    return md, charts.distribution_figure(candidates, expected)


# ---------- evaluate ----------

EVAL_CANCEL = threading.Event()


@reports_errors(4, at=0)
def run_evaluation(run_name, file, limit, progress=gr.Progress()):
    from trainer.tester import Cancelled, evaluate_run, one_line, summary_table

    run = _named_run(run_name, with_adapter=True)
    if run is None:
        return refused(PICK_FINISHED), None, None, None
    EVAL_CANCEL.clear()
    try:
        result = evaluate_run(run.path, data=str(file) if file else None, limit=int(limit or 0) or None,
                              progress=lambda done, total, what: progress(done / total, desc=what),
                              cancel=EVAL_CANCEL)
    except Cancelled:
        return "Evaluation cancelled; nothing was written.", None, None, None
    except ValueError as exc:  # DataError, ModelError: bad test file or unloadable run
        return refused(f"**Cannot evaluate:** {exc}"), None, None, None
    truths = [item["truth"] for item in result["items"]]
    guesses = [item["guess"] for item in result["items"]]
    table = pd.DataFrame(summary_table(result), columns=EVAL_COLUMNS)
    return (f"{one_line(result)}  \nSaved with run {run_name}: its model card and adapter zip include it.", table,
            charts.scatter_figure(truths, guesses), charts.bucket_figure(truths, guesses))


def cancel_evaluation():
    EVAL_CANCEL.set()
    return "Cancelling at the next batch…"


# ---------- run history ----------

RUN_COLUMNS = ["run", "status", "started", "steps", "final loss", "best probe $ error", "model", "r / alpha", "targets"]


def list_history():
    runs = list_runs()
    table = pd.DataFrame([run_summary(r) for r in runs], columns=RUN_COLUMNS)
    names = [r.name for r in runs]
    return (table, gr.Dropdown(choices=names, value=names[:3], multiselect=True),
            gr.Dropdown(choices=names, value=names[0] if names else None), gr.Dropdown(choices=names, value=None))


def all_runs():
    names = list(_runs())
    return gr.Dropdown(choices=names, value=names[0] if names else None)


def compare_runs(names):
    runs = _runs()
    series = {name: runs[name].metrics() for name in (names or []) if name in runs}
    return (charts.overlay_figure(series, "loss", "Training loss (smoothed)", "loss"),
            charts.overlay_figure(series, "probe_error", "$ error on held-out items", "$ error"))


@reports_errors()
def delete_run(run_name, confirmed, request: gr.Request = None):
    run = _named_run(run_name)
    if run is None:
        return refused("Pick the run to delete.")
    if not confirmed:
        return refused(f"Tick **I am sure** to delete run {run.name} and everything in it.")
    if run.state() in ACTIVE_STATES:
        return refused(f"Run {run.name} is {run.state()}: stop it first.")
    if not _may_control(run, request):
        return refused("Only the user who started this run (or an admin) may delete it.")
    shutil.rmtree(run.path)
    return f"Deleted run {run.name}."


def open_run(run_name):
    """One run in full: its status, config, latest sample predictions and evaluation."""
    run = _named_run(run_name)
    if run is None:
        return "Pick a run.", "", charts.samples_frame([]), pd.DataFrame(columns=EVAL_COLUMNS)
    summary, status = run_summary(run), run.status()
    lines = [f"**{run.name}** · {summary['status']} · step {summary['steps']}"
             + (f"/{status['total_steps']}" if status.get("total_steps") else "")
             + (f" · final loss {summary['final loss']}" if summary["final loss"] is not None else "")
             + (f" · best probe ${summary['best probe $ error']}" if summary["best probe $ error"] else "")]
    if status.get("error") or status.get("message"):
        lines.append(status.get("error") or status.get("message"))
    if status.get("data_summary"):
        lines.append(f"Data: {status['data_summary']}")
    checkpoint = run.last_complete_checkpoint()[0]
    if run.state() in RESUMABLE:
        lines.append(f"Resumable from {checkpoint.name}." if checkpoint else "No complete checkpoint to resume from.")
    samples = run.samples()
    table = charts.samples_frame(samples[-1]["items"] if samples else [])
    evaluation = pd.DataFrame(columns=EVAL_COLUMNS)
    if not run.eval_file.is_file():
        lines.append(f"Not evaluated yet: the Evaluate tab, or `python -m trainer eval --run {run.path}`, writes "
                     "eval.json.")
    else:
        from trainer.tester import summary_table

        try:
            result = json.loads(run.eval_file.read_text())
            evaluation = pd.DataFrame(summary_table(result), columns=EVAL_COLUMNS)
            lines.append(f"Evaluated on {result['count']} items ({result['data']}).")
        except (OSError, ValueError, KeyError):
            lines.append("eval.json is unreadable.")
    try:
        config_text = run.config_file.read_text()
    except OSError:
        config_text = ""
    return "\n\n".join(lines), config_text, table, evaluation


def resume_named(run_name, request: gr.Request = None):
    run = _named_run(run_name)
    return "Pick a run." if run is None else _resume(run, request)


@reports_errors(len(FORM_FIELDS) + 4, at=len(FORM_FIELDS))
def load_run_config(run_name):
    """Fill the Train form with a run's config, and take its train/held-out split as the data, to train a variant."""
    run = _named_run(run_name)
    unchanged = [gr.skip()] * 3
    if run is None:
        return *[gr.skip()] * len(FORM_FIELDS), refused("Pick a run."), *unchanged
    try:
        config = TrainConfig.from_yaml(run.config_file).validate()
    except (ConfigError, OSError) as exc:
        return *[gr.skip()] * len(FORM_FIELDS), refused(f"**Cannot load the config of {run.name}:** {exc}"), *unchanged
    train, test = run.split(), run.split(test=True)
    if not train or not test:
        return *fill_form(config, f"Train form filled with the config of {run.name}."), *unchanged
    info = (f"**The data of run {run.name}**: its own {len(train):,} training and {len(test):,} held-out products, "
            "unchanged, so the variant is measured on the same rows.")
    return (*fill_form(config, f"Train form filled with the config and data of {run.name}.", data_kept=True),
            f"{RUN_DATA}{run.name}", info, None)


def inside_step(run_name, text, price, progress=gr.Progress()):
    """The four-step panel: one training step on one example, on a copy of the run's model."""
    from trainer.inside import look_inside

    run = _named_run(run_name)
    if run is None:
        return "Pick a run.", None, None, None
    try:
        price = D.parse_price(price)
    except D.DataError as exc:
        return f"**Price:** {exc}", None, None, None
    if not text or not text.strip():
        return "Type a product description (or pick a training example).", None, None, None
    progress(0, desc="loading a copy of the model")
    try:
        step = look_inside(run.path, text.strip(), price)
    except (ModelError, OSError, ValueError) as exc:
        return f"**Cannot look inside {run.name}:** {exc}", None, None, None
    return inside_markdown(step), *inside_tables(step)


def inside_markdown(step) -> str:
    top = " · ".join(f"`{t!r}` {p:.1%}" for t, p in step.top_next[:6])
    nll = " + ".join(f"{t.nll:.3f}" for t in step.price_tokens)
    grads = [m for m in step.lora if m.grad_norm > 0]
    a_still = not any(m.grad_norm > 0 for m in step.lora if ".lora_A." in m.name)
    return (
        f"Weights: **{step.source}**; true price ${step.price:,.2f}, written `{''.join(t.token for t in step.price_tokens)}`.\n\n"
        f"**1 · Forward pass.** After “Price is $” the model's likeliest next tokens: {top}.\n\n"
        f"**2 · Loss.** −log p of each true price token: {nll}; their mean is the loss **{step.loss:.4f}**.\n\n"
        f"**3 · Backward pass.** {len(grads)} of {len(step.lora)} LoRA matrices received a gradient"
        + (" (none reached the A matrices: every B is still 0, as LoRA starts, and blocks it)" if a_still else "")
        + "; "
        f"{step.base_with_grad} of {step.base_tensors} base weight tensors did (frozen).\n\n"
        f"**4 · Optimizer step.** AdamW at learning rate {step.lr:.2e} moved the LoRA weights by "
        f"{step.update_norm:.4f} (L2 norm of the update); the loss on this example went "
        f"**{step.loss:.4f} → {step.loss_after:.4f}**. Done on a copy: the run is unchanged.")


TOKEN_COLUMNS, KIND_COLUMNS = ["token", "p", "−log p"], ["module · matrix", "mean grad norm", "mean update norm"]
MATRIX_COLUMNS = ["matrix", "shape", "grad norm", "update norm"]


def inside_tables(step):
    tokens = pd.DataFrame([(repr(t.token), round(t.prob, 4), round(t.nll, 4)) for t in step.price_tokens],
                          columns=TOKEN_COLUMNS)
    rows = pd.DataFrame([(m.name, "×".join(map(str, m.shape)), m.grad_norm, m.update_norm) for m in step.lora],
                        columns=MATRIX_COLUMNS)
    # Per module kind (q_proj, ..., A or B), which a 30-layer model's 420 rows hide.
    rows["kind"] = rows["matrix"].str.extract(r"\.([^.]+)\.lora_([AB])\.").agg(" ".join, axis=1)
    kinds = rows.groupby("kind", sort=False)[["grad norm", "update norm"]].mean().reset_index()
    kinds.columns = KIND_COLUMNS
    return tokens, kinds.round(6), rows.drop(columns="kind").round(6)


def example_of(run_name, index):
    """The index-th training example of a run (its own train split), for the four-step panel."""
    run = _named_run(run_name)
    if run is None:
        return gr.skip(), gr.skip()
    rows = read_jsonl(run.train_file)
    if not rows:
        return gr.skip(), gr.skip()
    row = rows[int(index or 0) % len(rows)]
    return row["text"], f"{float(row['price']):.2f}"


# ---------- export ----------

@reports_errors(3, at=0)
def export_card(run_name):
    from trainer.export import model_card

    run = _named_run(run_name, with_adapter=True)
    if run is None:
        return refused(PICK_FINISHED), gr.skip(), None
    card = model_card(run.path)
    scatter = card.with_name("scatter.png")
    return (card_preview(card.read_text()), gr.DownloadButton(
        value=_adapter_zip(run), visible=True, label=f"Download adapter + card, config and metrics of {run.name} (zip)"),
            str(scatter) if scatter.is_file() else None)


def card_preview(card: str) -> str:
    """The model card as the page shows it: its YAML front matter as YAML (Markdown would make it a heading), its
    scatter image beside it (a relative link the page cannot follow)."""
    front, body = "", card
    if card.startswith("---\n") and "\n---\n" in card[4:]:
        front, body = card[4:].split("\n---\n", 1)
        front = f"```yaml\n{front}\n```\n"
    return front + body.replace("![truth vs estimate](scatter.png)", "*(truth vs estimate: the image beside)*")


def _run_for(run_name, request, verb) -> tuple[RunFolder | None, str]:
    """The finished run a control may act on, or why not."""
    run = _named_run(run_name, with_adapter=True)
    if run is None:
        return None, PICK_FINISHED
    if not _may_control(run, request):
        return None, f"Only the user who started this run (or an admin) may {verb} it."
    return run, ""


def export_merge(run_name, request: gr.Request = None):
    from trainer.export import ExportError, merge

    run, refusal = _run_for(run_name, request, "merge")
    if run is None:
        return refusal
    try:
        out = merge(run.path)
    except (ExportError, ModelError) as exc:
        return f"**Cannot merge:** {exc}"
    return (f"Merged model saved on the server in `{run.name}/merged/` (safetensors): load it with "
            f"`AutoModelForCausalLM.from_pretrained(\"{out}\")`.")


def export_push(run_name, repo_id, token, private, request: gr.Request = None):
    from trainer.export import ExportError, push

    run, refusal = _run_for(run_name, request, "push")
    if run is None:
        return refusal
    try:
        url = push(run.path, (repo_id or "").strip(), (token or "").strip() or None, private=bool(private))
    except ExportError as exc:
        return f"**Cannot push:** {exc}"
    return f"Pushed to {url}"


# ---------- layout ----------

def build_app() -> gr.Blocks:
    with gr.Blocks(title="PriceTune") as app:
        gr.Markdown("# PriceTune\nFine-tune a language model with QLoRA to predict product prices.")
        with gr.Tab("Train") as train_tab:
            with gr.Row():
                with gr.Column(scale=2):
                    gr.Markdown("### 1 · Data")
                    data_path = gr.State("")
                    with gr.Row():
                        sample_btn = gr.Button("Use sample data (synthetic)")
                    upload = gr.File(label="…or upload CSV, TSV, JSON, JSONL or Parquet with a text and a price "
                                           "column",
                                     file_types=[".csv", ".tsv", ".jsonl", ".json", ".parquet"], type="filepath")
                    with gr.Row():
                        text_cols = gr.Dropdown(label="Text column(s), joined in this order", multiselect=True,
                                                choices=[], visible=False)
                        price_col = gr.Dropdown(label="Price column", choices=[], visible=False)
                    upload_path = gr.State("")  # Gradio's temp path of the last upload, kept server-side
                    mapping = gr.State(None)  # {"columns", "text", "price"} of the last upload
                    data_info = gr.Markdown()
                    preview = gr.Dataframe(pd.DataFrame(columns=PREVIEW_COLUMNS), label="First rows",
                                           interactive=False, wrap=True, column_widths=["15%", "85%"])
                    with gr.Row():
                        hist = gr.Plot(label="Prices")
                        tok_hist = gr.Plot(label="Tokens per example (demo tokenizer)")

                    gr.Markdown("### 2 · Model")
                    model = gr.Textbox(value=DEMO, label="Model: 'demo' (SmolLM2-135M, built in), a Hugging Face "
                                                         "id or a local folder")
                    quant = gr.Radio(["4bit", "8bit", "none"], value=DEFAULTS.quant,
                                     label="Quantization (4bit = NF4 + double quant, the course default on a GPU)")

                    gr.Markdown("### 3 · LoRA")
                    lora_r = gr.Slider(1, 256, value=DEFAULTS.lora_r, step=1, label="rank r")
                    alpha = gr.Number(value=DEFAULTS.lora_alpha, label="alpha", precision=0)
                    dropout = gr.Slider(0, 0.5, value=DEFAULTS.lora_dropout, step=0.01, label="dropout")
                    demo_layers = linear_module_names(model_config(DEMO))
                    targets = gr.CheckboxGroup(demo_layers, value=list(DEFAULTS.target_modules),
                                               label="target modules")
                    estimate_md = gr.Markdown(estimate(DEMO, DEFAULTS.lora_r, DEFAULTS.target_modules))

                    gr.Markdown("### 4 · Training")
                    with gr.Row():
                        lr = gr.Number(value=DEFAULTS.learning_rate, label="learning rate")
                        max_steps = gr.Number(value=DEFAULTS.max_steps, label="max steps (0 = use epochs)",
                                              precision=0)
                        epochs = gr.Number(value=DEFAULTS.epochs, label="epochs")
                    with gr.Row():
                        batch = gr.Number(value=DEFAULTS.batch_size, label="batch size", precision=0)
                        accum = gr.Number(value=DEFAULTS.grad_accum, label="gradient accumulation", precision=0)
                        max_len = gr.Number(value=DEFAULTS.max_length, label="max length (0 = from data)",
                                            precision=0)
                    with gr.Row():
                        sample_every = gr.Number(value=DEFAULTS.sample_every, label="sample predictions every N steps",
                                                 precision=0)
                        probe_size = gr.Number(value=DEFAULTS.probe_size, label="held-out items priced each time",
                                               precision=0)
                        seed = gr.Number(value=DEFAULTS.seed, label="seed", precision=0)
                        save_steps = gr.Number(value=DEFAULTS.save_steps, precision=0,
                                               label=f"checkpoint every N steps (and every {DEFAULTS.save_minutes:g} min)")
                    with gr.Row():
                        config_in = gr.UploadButton("Import config", file_types=[".yaml", ".yml"], type="filepath")
                        config_out_btn = gr.Button("Export config")
                        config_out = gr.DownloadButton("Download config.yaml", visible=False)
                    config_md = gr.Markdown(elem_id="config-message")
                    with gr.Row():
                        start_btn = gr.Button("Start", variant="primary")
                        stop_btn = gr.Button("Stop", variant="stop")
                        resume_btn = gr.Button("Resume", visible=False)
                    start_msg = gr.Markdown()
                with gr.Column(scale=3):
                    gr.Markdown("### Live")
                    status_md = gr.Markdown("No run yet.", elem_id="run-status")
                    with gr.Row():
                        loss_plot = gr.Plot(label="Loss", elem_id="loss-plot")
                        error_plot = gr.Plot(label="$ error on held-out items", elem_id="error-plot")
                    samples_df = gr.Dataframe(charts.samples_frame([]), label="Sample predictions on held-out items",
                                              interactive=False, wrap=True, elem_id="samples",
                                              column_widths=SAMPLE_WIDTHS)
                    gr.Markdown(COLOUR_KEY)
                    download = gr.DownloadButton("Download adapter (zip)", visible=False)
        with gr.Tab("Predict") as predict_tab:
            run_pick = gr.Dropdown(label="Run", choices=[], allow_custom_value=True)
            description = gr.Textbox(label="Product description", lines=4)
            predict_btn = gr.Button("Predict price", variant="primary")
            predict_md = gr.Markdown()
            predict_plot = gr.Plot(label="What the model thinks: candidate prices")

        with gr.Tab("Evaluate") as eval_tab:
            gr.Markdown("The course's Tester: the fine-tuned adapter against the base model, constant guesses and a "
                        "bag-of-words linear regression, on the run's held-out split or a file you upload.")
            with gr.Row():
                eval_run = gr.Dropdown(label="Run", choices=[], allow_custom_value=True)
                eval_file = gr.File(label="Test file (optional; default: the run's held-out split)", type="filepath",
                                    file_types=[".csv", ".tsv", ".jsonl", ".json", ".parquet"])
                eval_limit = gr.Number(value=200, label="items (0 = all)", precision=0)
            with gr.Row():
                eval_btn = gr.Button("Evaluate", variant="primary")
                eval_cancel = gr.Button("Cancel")
            eval_md = gr.Markdown()
            eval_table = gr.Dataframe(pd.DataFrame(columns=EVAL_COLUMNS), label="Results", interactive=False,
                                      elem_id="eval-table")
            with gr.Row():
                eval_scatter = gr.Plot(label="Truth vs guess", elem_id="eval-scatter")
                eval_buckets = gr.Plot(label="Error by price")
            gr.Markdown(COLOUR_KEY)

        with gr.Tab("Runs") as runs_tab:
            gr.Markdown("Every run in the runs folder, from the app or the CLI. Select runs to overlay their curves.")
            history = gr.Dataframe(pd.DataFrame(columns=RUN_COLUMNS), label="Runs", interactive=False,
                                   elem_id="runs-table")
            history_pick = gr.Dropdown(label="Runs to compare", choices=[], multiselect=True, allow_custom_value=True)
            with gr.Row():
                history_loss = gr.Plot(label="Loss")
                history_error = gr.Plot(label="$ error")
            with gr.Row():
                delete_pick = gr.Dropdown(label="Run to delete", choices=[], allow_custom_value=True)
                delete_sure = gr.Checkbox(label="I am sure", value=False)
                delete_btn = gr.Button("Delete this run", variant="stop")
            history_md = gr.Markdown(elem_id="delete-message")
            gr.Markdown("### One run")
            open_pick = gr.Dropdown(label="Open a run", choices=[], allow_custom_value=True)
            open_md = gr.Markdown(elem_id="run-detail")
            with gr.Row():
                open_resume_btn = gr.Button("Resume this run")
                open_load_btn = gr.Button("Load its config into the Train form")
            open_msg = gr.Markdown(elem_id="run-detail-message")
            with gr.Row():
                open_config = gr.Code(label="config.yaml", language="yaml", interactive=False)
                open_samples = gr.Dataframe(charts.samples_frame([]), label="Latest sample predictions",
                                            interactive=False, wrap=True, column_widths=SAMPLE_WIDTHS)
            open_eval = gr.Dataframe(pd.DataFrame(columns=EVAL_COLUMNS), label="Evaluation (eval.json)",
                                     interactive=False)

        with gr.Tab("Inside a step") as inside_tab:
            gr.Markdown("One training step of the lecture, on one example, with real numbers from a run's newest "
                        "adapter weights: forward pass, loss, backward pass, optimizer step. It runs on a copy of "
                        "the model; the run itself is not changed.")
            with gr.Row():
                inside_run = gr.Dropdown(label="Run", choices=[], allow_custom_value=True)
                inside_index = gr.Number(value=0, label="training example #", precision=0)
                inside_pick_btn = gr.Button("Take this training example")
            inside_text = gr.Textbox(label="Product description", lines=3)
            inside_price = gr.Textbox(label="True price ($)")
            inside_btn = gr.Button("Run one step", variant="primary")
            inside_md = gr.Markdown(elem_id="inside-step")
            inside_tokens = gr.Dataframe(pd.DataFrame(columns=TOKEN_COLUMNS), label="Loss: the true price tokens",
                                         interactive=False)
            inside_kinds = gr.Dataframe(pd.DataFrame(columns=KIND_COLUMNS),
                                        label="Backward and step, per module kind", interactive=False)
            with gr.Accordion("Every LoRA matrix", open=False):
                inside_all = gr.Dataframe(pd.DataFrame(columns=MATRIX_COLUMNS), interactive=False)

        with gr.Tab("Export") as export_tab:
            gr.Markdown("Take a run out of PriceTune: its adapter with a model card (config, data, the Tester's "
                        "numbers and scatter; evaluate first for those), a merged model folder, or a push to the "
                        "Hugging Face Hub.")
            export_run = gr.Dropdown(label="Run", choices=[], allow_custom_value=True)
            with gr.Row():
                card_btn = gr.Button("Write model card", variant="primary")
                merge_btn = gr.Button("Merge adapter into the base model")
            export_download = gr.DownloadButton("Download adapter (zip)", visible=False)
            export_scatter = gr.Image(label="Truth vs estimate (in the card)", type="filepath", interactive=False,
                                      height=360)
            with gr.Row():
                repo_box = gr.Textbox(label="Hub repo (owner/name)")
                token_box = gr.Textbox(label="Hugging Face token (write)", type="password")
                private_box = gr.Checkbox(value=True, label="private")
                push_btn = gr.Button("Push adapter to the Hub")
            export_md = gr.Markdown(elem_id="export-result")

        # Hidden but in the page: the browser fires .change when a poll brings a new tag. (A gr.State would not do:
        # its change events are dispatched only for queued events, and the poll is off the queue.)
        version, phase = gr.Textbox(visible="hidden"), gr.Textbox(visible="hidden")
        refresh_api = gr.Button(visible=False)  # no page presses it: the whole view over HTTP for API clients
        timer = gr.Timer(1.0)
        # A chart redrawn while its tab was hidden is laid out at a fallback width; plotly's responsive charts
        # re-measure their container on a window resize.
        train_tab.select(None, js="() => { setTimeout(() => window.dispatchEvent(new Event('resize')), 100); }")

        sample_btn.click(use_sample, outputs=[data_path, data_info, preview, hist, tok_hist], api_name="use_sample")
        upload_outputs = [data_path, data_info, preview, hist, tok_hist, upload_path, mapping]
        upload.upload(use_upload, inputs=upload, outputs=upload_outputs, api_name="upload").then(
            show_mapping, mapping, [text_cols, price_col], api_visibility="private")
        sample_btn.click(hide_mapping, outputs=[text_cols, price_col], api_visibility="private")
        for picker in (text_cols, price_col):
            picker.input(remap, [upload_path, text_cols, price_col], upload_outputs, api_visibility="private")
        model.submit(discover_targets, [model, targets, lr], [targets, lr])
        model.blur(discover_targets, [model, targets, lr], [targets, lr], api_visibility="private")
        for comp in (model, lora_r, targets):
            comp.change(estimate, [model, lora_r, targets], estimate_md, show_progress="hidden",
                        api_visibility="private")
        form = [model, quant, lora_r, alpha, dropout, targets, lr, max_steps, epochs, batch, accum, max_len,
                sample_every, probe_size, seed, save_steps]
        start_btn.click(start, [data_path, *form, mapping], start_msg,
                        api_name="start", concurrency_id="gpu", concurrency_limit=1)
        config_out_btn.click(export_config, [data_path, *form, mapping], [config_out, config_md],
                             api_name="export_config")
        config_in.upload(import_config, config_in, [*form, config_md], api_name="import_config")
        # Stop must never wait behind a queued start or evaluation.
        stop_btn.click(stop, outputs=start_msg, api_name="stop", concurrency_limit=None)
        resume_btn.click(resume, outputs=start_msg, api_name="resume", concurrency_id="gpu", concurrency_limit=1)
        # Off the queue: a poll is one plain HTTP request (no queue join and event stream), which is what lets
        # twenty open pages cost training little.
        timer.tick(poll, outputs=[status_md, version, phase], show_progress="hidden", queue=False, api_name="poll")
        version.change(redraw, outputs=[loss_plot, error_plot, samples_df], show_progress="hidden", queue=False,
                       api_visibility="private")
        phase.change(controls, outputs=[download, resume_btn, start_msg], show_progress="hidden", queue=False,
                     api_visibility="private")
        refresh_api.click(refresh, outputs=[status_md, loss_plot, error_plot, samples_df, download], queue=False,
                          api_name="refresh")
        predict_tab.select(runs_with_adapters, outputs=run_pick, api_visibility="private")
        predict_btn.click(predict, [run_pick, description], [predict_md, predict_plot], api_name="predict",
                          concurrency_id="gpu", concurrency_limit=1)
        eval_tab.select(runs_with_adapters, outputs=eval_run, api_visibility="private")
        eval_btn.click(run_evaluation, [eval_run, eval_file, eval_limit], [eval_md, eval_table, eval_scatter,
                                                                          eval_buckets],
                       api_name="evaluate", concurrency_id="gpu", concurrency_limit=1, show_progress_on=eval_md)
        eval_cancel.click(cancel_evaluation, outputs=eval_md, api_name="cancel_evaluation", concurrency_limit=None)
        # Registered first so the public endpoint gets the plain name; the tab's chained call is private.
        history_pick.change(compare_runs, history_pick, [history_loss, history_error], api_name="compare_runs")
        runs_tab.select(list_history, outputs=[history, history_pick, open_pick, delete_pick],
                        api_name="list_runs").then(
            compare_runs, history_pick, [history_loss, history_error], api_visibility="private")
        delete_pick.change(lambda name: gr.Button(f"Delete run {name}" if name else "Delete this run"), delete_pick,
                           delete_btn, api_visibility="private", queue=False)
        delete_btn.click(delete_run, [delete_pick, delete_sure], history_md, api_name="delete_run").then(
            list_history, outputs=[history, history_pick, open_pick, delete_pick], api_visibility="private")
        open_pick.change(open_run, open_pick, [open_md, open_config, open_samples, open_eval], api_name="open_run")
        open_resume_btn.click(resume_named, open_pick, open_msg, api_name="resume_run", concurrency_id="gpu",
                              concurrency_limit=1)
        open_load_btn.click(load_run_config, open_pick, [*form, open_msg, data_path, data_info, mapping],
                            api_name="load_run_config").then(hide_mapping, outputs=[text_cols, price_col],
                                                              api_visibility="private")
        inside_tab.select(all_runs, outputs=inside_run, api_visibility="private")
        inside_pick_btn.click(example_of, [inside_run, inside_index], [inside_text, inside_price],
                              api_name="training_example")
        inside_btn.click(inside_step, [inside_run, inside_text, inside_price],
                         [inside_md, inside_tokens, inside_kinds, inside_all], api_name="inside_step",
                         concurrency_id="gpu", concurrency_limit=1)
        export_tab.select(runs_with_adapters, outputs=export_run, api_visibility="private")
        card_btn.click(export_card, export_run, [export_md, export_download, export_scatter], api_name="export_card")
        merge_btn.click(export_merge, export_run, export_md, api_name="export_merge", concurrency_id="gpu",
                        concurrency_limit=1)
        push_btn.click(export_push, [export_run, repo_box, token_box, private_box], export_md, api_name="export_push")
    return app


demo = build_app()


def main() -> None:
    users = auth_users()
    share = os.environ.get("PRICETUNE_SHARE", "") in ("1", "true", "yes")
    if share and not users:
        raise SystemExit("Refusing a public share link without login: set PRICETUNE_AUTH=user:password first, "
                         "or anyone with the link could use your GPU.")
    # On a Space the platform's port and host apply; locally only this machine can reach the app by default.
    host = os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    demo.queue(default_concurrency_limit=4).launch(
        server_name=host, server_port=int(os.environ.get("PORT", 7860)), share=share, auth=users or None,
        max_file_size=os.environ.get("PRICETUNE_MAX_FILE_SIZE", "200mb"), allowed_paths=[])


if __name__ == "__main__":
    main()
