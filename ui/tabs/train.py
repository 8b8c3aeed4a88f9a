"""The Train tab: the data box, the form (fields listed once, by name), start / stop / resume, config import and
export, the live estimate; and beside them the live view."""

from __future__ import annotations

import dataclasses
import shlex
import tempfile
from pathlib import Path

import gradio as gr

from trainer.config import (COURSE_TARGETS, PRESET_NAMES, QUANTIZATIONS, RUN_DATA, ConfigError, TrainConfig,
                            gpu_defaults_line, model_defaults, preset)
from trainer import cost, timing, trackers
from trainer.data import COURSE_2024_QUESTION, COURSE_QUESTION
from trainer.job import JOBS, Busy
from trainer.memory import ESTIMATE_LENGTH, detected_gpu, estimate_memory, fit_warning, gpu_warning
from trainer.models import DEMO, ModelError, estimate_adapter, linear_module_names, model_config

from .. import data_box, live, sweep_box
from ..access import current_user, may_control, may_run_hub_code, model_folders
from ..common import RESUMABLE, refused, reports_errors, resume_run

DEFAULTS = TrainConfig()
# The form's fields, in the order of the handlers' parameters after the data (their API names are short: r for
# lora_r, ...), of fill_form's values and of the components.
FORM_FIELDS = ["model", "quant", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "learning_rate",
               "max_steps", "epochs", "batch_size", "grad_accum", "max_length", "sample_every", "probe_size", "seed",
               "save_steps", "validation_size", "question", "warmup_ratio", "weight_decay", "max_grad_norm",
               "report_to", "gradient_checkpointing", "max_cost", "head_rows", "hub_kernels", "max_minutes"]


def is_a_default(targets, lr) -> bool:
    """Whether the form still shows some model's defaults (then a model change may replace them)."""
    presets = [model_defaults(m) for m in (DEMO, "any other model")]
    return any(sorted(targets or []) == sorted(p["target_modules"]) and float(lr or 0) == p["learning_rate"]
               for p in presets)


def discover_targets(model_name, current, lr):
    """The new model's linear layers; its default targets, learning rate and checkpointing unless the user chose
    their own."""
    try:
        names = linear_module_names(model_config(model_name, model_folders()))
    except (ModelError, ValueError):  # the estimate beside the field says why; a toast would repeat on each blur
        return gr.skip(), gr.skip(), gr.skip()
    if is_a_default(current, lr):
        wanted = model_defaults(model_name.strip() or DEMO)
        keep = [n for n in wanted["target_modules"] if n in names] or names[:1]
        return (gr.CheckboxGroup(choices=names, value=keep), wanted["learning_rate"],
                wanted.get("gradient_checkpointing", DEFAULTS.gradient_checkpointing))
    keep = [n for n in current if n in names] or [n for n in COURSE_TARGETS if n in names] or names[:1]
    return gr.CheckboxGroup(choices=names, value=keep), gr.skip(), gr.skip()


ESTIMATED = ("model", "quant", "lora_r", "lora_dropout", "target_modules", "batch_size", "max_length",
             "gradient_checkpointing")
"""The form fields the live estimate depends on, in `estimate`'s order."""


def estimate(model_name, quant, r, dropout, targets, batch, max_len, checkpointing=False):
    """The adapter's size and the run's peak GPU memory, with a warning when the detected GPU cannot hold it."""
    if not targets:
        return "Pick at least one target module."
    try:  # the fields as Start would refuse them: a negative batch has no memory to estimate
        TrainConfig.from_dict({"quant": quant, "lora_r": r, "lora_dropout": dropout, "batch_size": batch,
                               "max_length": 0 if max_len == "" else max_len}).validate()
    except ConfigError as exc:
        return f"Cannot estimate: {exc}"
    try:
        config = model_config(model_name, model_folders())
        adapter = estimate_adapter(config, int(r), list(targets))
        memory = estimate_memory(config, quant, adapter.trainable_params, list(targets), int(r), int(batch or 1),
                                 int(max_len or 0), dropout=bool(dropout), gradient_checkpointing=bool(checkpointing))
    except (ModelError, ValueError, TypeError) as exc:
        return f"Cannot estimate: {exc}"
    gpu = detected_gpu()
    warning = fit_warning(memory, *gpu) if gpu else ""
    length = "" if max_len else f" (max length auto: estimated at {ESTIMATE_LENGTH} tokens)"
    return (f"{adapter.describe()}\n\nOn a GPU (bf16 compute): {memory.describe()}{length}\n\n"
            f"{gpu_defaults_line(model_name.strip() or DEMO)}" + (f"\n\n**Warning:** {warning}" if warning else ""))


TIMED = ("model", "quant", "batch_size", "grad_accum", "max_length", "max_steps", "sample_every", "probe_size",
         "head_rows", "max_minutes")
"""The form fields the time estimate depends on, in `time_estimate`'s order."""


def time_estimate(model_name, quant, batch, accum, max_len, max_steps, sample_every, probe_size, head_rows,
                  max_minutes):
    """The run's expected wall time on this machine, by phase, from the newest run of its model here."""
    values = dict(zip(TIMED, (str(model_name or "").strip() or DEMO, quant, batch, accum, max_len, max_steps,
                              sample_every, probe_size, head_rows, max_minutes)))
    try:
        config = TrainConfig.from_dict({**dataclasses.asdict(TrainConfig.for_model(values["model"])),
                                        **values}).validate()
    except ConfigError as exc:
        return f"Cannot estimate the time: {exc}"
    return timing.time_line(config, config.max_length)


def time_it(config_of, request: gr.Request = None):
    """Times two steps of the form's config here with the real job, then estimates the whole run from them."""
    try:
        config = config_of()
        if config.hub_kernels and not may_run_hub_code(request):
            raise ConfigError("hub_kernels: on a shared app only an admin may let a model load run code from the Hub")
        model_config(config.model, model_folders())
        timing.measure(config, JOBS)
    except (ConfigError, ModelError, Busy, RuntimeError) as exc:
        return refused(f"**Cannot time it:** {exc}")
    return timing.time_line(config, config.max_length)


def form_config(data_path, model, quant, r, alpha, dropout, targets, lr, max_steps, epochs, batch, accum, max_len,
                sample_every, probe_size, seed, save_steps, validation=DEFAULTS.validation_size,
                question=DEFAULTS.question, warmup=DEFAULTS.warmup_ratio, weight_decay=DEFAULTS.weight_decay,
                grad_norm=DEFAULTS.max_grad_norm, report_to=DEFAULTS.report_to,
                checkpointing=DEFAULTS.gradient_checkpointing, max_cost=DEFAULTS.max_cost,
                head_rows=DEFAULTS.head_rows, hub_kernels=DEFAULTS.hub_kernels, max_minutes=DEFAULTS.max_minutes,
                mapping=None) -> TrainConfig:
    """The TrainConfig the form describes, every field converted and checked by the config itself (a cleared number
    field is refused by its name); Start and Export config share it."""
    # The column mapping of the uploaded file goes into the run's config.yaml; sample data has none.
    mapping = (mapping or {}) if data_path != "sample" else {}
    values = dict(zip(FORM_FIELDS, (model, quant, r, alpha, dropout, targets, lr, max_steps, epochs, batch, accum,
                                    max_len, sample_every, probe_size, seed, save_steps, validation,
                                    str(question or "").strip(), warmup, weight_decay, grad_norm,
                                    report_to or DEFAULTS.report_to, bool(checkpointing), max_cost, head_rows,
                                    bool(hub_kernels), max_minutes)))
    values["model"] = str(model or "").strip() or DEMO
    values["target_modules"] = list(targets or [])
    data = str(data_path or "sample")
    # An upload is named by its own file name in the run folder; Gradio's temp path stays on the server.
    upload = data != "sample" and not data.startswith(RUN_DATA)
    # The model's defaults for what the form has no field for (compile_layers on a GPU), as the CLI starts from.
    under = dataclasses.asdict(TrainConfig.for_model(values["model"]))
    return TrainConfig.from_dict({**under, "data": data, "data_name": Path(data).name if upload else "",
                                  "text_column": ",".join(mapping.get("text") or []),
                                  "price_column": mapping.get("price") or "", **values}).validate()


@reports_errors()
def start(data_path, model, quant, r, alpha, dropout, targets, lr, max_steps, epochs, batch, accum, max_len,
          sample_every, probe_size, seed, save_steps, validation=DEFAULTS.validation_size, question=DEFAULTS.question,
          warmup=DEFAULTS.warmup_ratio, weight_decay=DEFAULTS.weight_decay, grad_norm=DEFAULTS.max_grad_norm,
          report_to=DEFAULTS.report_to,
          checkpointing=DEFAULTS.gradient_checkpointing, max_cost=DEFAULTS.max_cost, head_rows=DEFAULTS.head_rows,
          hub_kernels=DEFAULTS.hub_kernels, max_minutes=DEFAULTS.max_minutes, mapping=None,
          request: gr.Request = None):
    # Named parameters (not *args) so the HTTP API names each field; all of them but the request are the form.
    form = {k: v for k, v in locals().items() if k != "request"}
    if not data_path:
        return refused("Choose data first: **Use sample data** or upload a file.")
    try:
        config = form_config(**form)
        if config.hub_kernels and not may_run_hub_code(request):
            raise ConfigError("hub_kernels: on a shared app only an admin may let a model load run code from the Hub")
        # A mistyped id is refused now, not after the data is read and tokenized; a folder only where allowed.
        model_config(config.model, model_folders())
        warning = gpu_warning(config, model_folders())  # told, not refused: the estimate is an estimate
        job = JOBS.start(config, owner=current_user(request))
    except (ConfigError, ModelError, Busy) as exc:
        return refused(f"**Cannot start:** {exc}")
    return f"Started run **{job.run.name}**." + (f" **Warning:** {warning}" if warning else "")


@reports_errors(2, at=1)
def export_config(data_path, model, quant, r, alpha, dropout, targets, lr, max_steps, epochs, batch, accum, max_len,
                  sample_every, probe_size, seed, save_steps, validation=DEFAULTS.validation_size,
                  question=DEFAULTS.question, warmup=DEFAULTS.warmup_ratio, weight_decay=DEFAULTS.weight_decay,
                  grad_norm=DEFAULTS.max_grad_norm, report_to=DEFAULTS.report_to,
                  checkpointing=DEFAULTS.gradient_checkpointing, max_cost=DEFAULTS.max_cost,
                  head_rows=DEFAULTS.head_rows, hub_kernels=DEFAULTS.hub_kernels, max_minutes=DEFAULTS.max_minutes,
                  mapping=None):
    """The form as the YAML that `python -m trainer train --config` takes."""
    try:
        config = form_config(**locals())
    except ConfigError as exc:
        return gr.skip(), refused(f"**Cannot export:** {exc}")
    folder = Path(tempfile.mkdtemp(prefix="pricetune-config-"))
    path = folder / "pricetune-config.yaml"
    path.write_text(config.recorded().to_yaml())
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


@reports_errors(len(FORM_FIELDS) + 1, at=len(FORM_FIELDS))
def apply_preset(name):
    """Fill the form from a preset; every field stays editable, the data choice stays as it is."""
    if not name:
        return *[gr.skip()] * len(FORM_FIELDS), ""
    try:
        config = preset(name)
    except ConfigError as exc:
        return *[gr.skip()] * len(FORM_FIELDS), refused(f"**Cannot use the preset:** {exc}")
    return fill_form(config, f"Form filled from the preset **{PRESET_NAMES[name]}**.", data_kept=True)


def fill_form(config: TrainConfig, message: str, data_kept: bool = False):
    """The form's values for a config, then a message (with where its data was, as uploads are not kept)."""
    values = [getattr(config, f) for f in FORM_FIELDS]
    try:
        names = linear_module_names(model_config(config.model, model_folders()))
        values[FORM_FIELDS.index("target_modules")] = gr.CheckboxGroup(choices=names, value=config.target_modules)
    except (ModelError, ValueError):
        pass  # the model cannot be inspected here; the targets are shown as given
    upload = not (data_kept or config.data == "sample" or config.data.startswith(RUN_DATA))
    note = f" Its data was `{Path(config.data).name}`: upload that file to train on it." if upload else ""
    # Settings the form has no field for: a run started from the form gets their defaults, so say which differ.
    default = TrainConfig.for_model(config.model)
    own = set(FORM_FIELDS) | {"name", "data", "text_column", "price_column"}
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
    if job is not None and not may_control(job.run, request):
        return f"**Only {job.run.status().get('owner')} (who started {job.run.name}) or an admin can stop it.**"
    return JOBS.stop()


def resume(request: gr.Request = None):
    run = live.current_run()
    if run is None or run.state() not in RESUMABLE:
        return "Nothing to resume: the latest run is not stopped, failed or interrupted."
    return resume_run(run, request)


def form_components() -> dict:
    """The settings a newcomer changes (model, LoRA, length), by config field name; the rest are more_settings'."""
    f = {}
    gr.Markdown("### 2 · Model and LoRA")
    # The preset in use is shown: the form opens on the demo preset's values.
    f["preset"] = gr.Dropdown([(label, key) for key, label in PRESET_NAMES.items()], value=DEMO,
                              label="Preset (fills the form; every field stays editable)",
                              info="the course's recipes are for a GPU; demo (CPU) is the default")
    f["model"] = gr.Textbox(value=DEMO, label="Model: 'demo' (SmolLM2-135M, built in), a Hugging Face id or a local "
                                              "folder")
    f["quant"] = gr.Radio(list(QUANTIZATIONS), value=DEFAULTS.quant,
                          label="Quantization (4bit = NF4 + double quant, the course default on a GPU)")
    # Numbers without a range on the page: a slider clamps a typed 100000 to its maximum and starts a run nobody
    # asked for; the config refuses it by name instead (1–256, [0, 1)).
    with gr.Row():
        f["lora_r"] = gr.Number(value=DEFAULTS.lora_r, precision=0, label="rank r")
        f["lora_alpha"] = gr.Number(value=DEFAULTS.lora_alpha, label="alpha", precision=0)
        f["lora_dropout"] = gr.Number(value=DEFAULTS.lora_dropout, label="dropout")
    f["target_modules"] = gr.CheckboxGroup(linear_module_names(model_config(DEMO)),
                                           value=list(DEFAULTS.target_modules), label="target modules")
    f["estimate"] = gr.Markdown(estimate(DEMO, DEFAULTS.quant, DEFAULTS.lora_r, DEFAULTS.lora_dropout,
                                         DEFAULTS.target_modules, DEFAULTS.batch_size, DEFAULTS.max_length,
                                         DEFAULTS.gradient_checkpointing))
    gr.Markdown("### 3 · How long")
    with gr.Row(equal_height=True):
        f["max_steps"] = gr.Number(value=DEFAULTS.max_steps, label="max steps (0 = use epochs)", precision=0)
        f["max_minutes"] = gr.Number(value=DEFAULTS.max_minutes, label="time limit, minutes (0 = none; training "
                                                                       "stops and saves there)")
        f["time_it"] = gr.Button("Time it", scale=0)
    return f


def more_settings(f: dict) -> None:
    """The other training fields, into `f` by config field name: in a closed accordion, each with its default."""
    numbers = [[("learning_rate", "learning rate", None), ("epochs", "epochs", None),
                ("batch_size", "batch size", 0), ("grad_accum", "gradient accumulation", 0)],
               [("max_length", "max length (0 = from data)", 0), ("sample_every", "sample predictions every N steps", 0),
                ("probe_size", "validation items priced each time", 0), ("seed", "seed", 0)],
               [("save_steps", f"checkpoint every N steps (and every {DEFAULTS.save_minutes:g} min)", 0),
                ("validation_size", "validation rows: share (<1) or count, not trained on", None),
                ("head_rows", "training rows the price head is fitted on after training", 0)],
               [("warmup_ratio", "warm-up share of the steps", None), ("weight_decay", "weight decay", None),
                ("max_grad_norm", "max gradient norm (0 = no clipping)", None)]]
    for row in numbers:
        with gr.Row():
            for name, label, precision in row:
                f[name] = gr.Number(value=getattr(DEFAULTS, name), label=label, precision=precision)
    f["question"] = gr.Dropdown(QUESTION_CHOICES, value=DEFAULTS.question, allow_custom_value=True,
                                label="Question the prompt asks (or type your own)")
    with gr.Row():
        f["report_to"] = gr.Dropdown([(trackers.label(t), t) for t in trackers.TRACKERS], value=DEFAULTS.report_to,
                                     label="Report to (an experiment tracker; local logs go in the run folder)")
        f["max_cost"] = gr.Number(value=DEFAULTS.max_cost, label=f"cost cap $ (0 = none; the price: {cost.PRICE_ENV} "
                                                                 f"or {cost.HARDWARE_ENV})")
    with gr.Row():
        f["gradient_checkpointing"] = gr.Checkbox(value=DEFAULTS.gradient_checkpointing,
                                                  label="Gradient checkpointing (less GPU memory, slower steps)")
        f["hub_kernels"] = gr.Checkbox(value=DEFAULTS.hub_kernels,
                                       label="Hub kernels (let the model load fetch and run kernels from the Hugging "
                                             "Face Hub; needs the network)")


QUESTION_CHOICES = [("the data's own (a course file's); else the current course's", ""),
                    (f"current course: {COURSE_QUESTION}", COURSE_QUESTION),
                    (f"course 2024: {COURSE_2024_QUESTION}", COURSE_2024_QUESTION)]


def create_train_tab() -> dict:
    """The Train tab's components (the data box's, the form's by field name, the live view's under "live")."""
    with gr.Tab("Train") as tab:
        # Reading order: data, the few settings a newcomer changes, Start, then the live view right below it.
        with gr.Row():
            with gr.Column():
                c = {"data": data_box.create_data_box()}
            with gr.Column():
                c["form"] = form = form_components()
                c["time_it"] = form.pop("time_it")
                c["time"] = gr.Markdown(time_estimate(*[getattr(DEFAULTS, n) for n in TIMED]),
                                        elem_id="time-estimate")
                with gr.Accordion("More training settings (learning rate, batch size, probes, question, "
                                  "tracker…) and config files", open=False):
                    more_settings(form)
                    with gr.Row():
                        c["config_in"] = gr.UploadButton("Import config", file_types=[".yaml", ".yml"],
                                                         type="filepath")
                        c["config_out_btn"] = gr.Button("Export config")
                        c["config_out"] = gr.DownloadButton("Download config.yaml", visible=False)
                c["config_md"] = gr.Markdown(elem_id="config-message")
        with gr.Row():
            c["start"] = gr.Button("Start", variant="primary", elem_id="start")
            c["stop"] = gr.Button("Stop", variant="stop")
            c["resume"] = gr.Button("Resume", visible=False)
        c["message"] = gr.Markdown()
        c["live"] = live.create_live_panel()
        form, data = [c["form"][name] for name in FORM_FIELDS], c["data"]

        def sweep_base(values):  # the form's config, as Start would train it
            if not values[data["path"]]:
                raise ConfigError("choose data first: Use sample data or upload a file")
            return form_config(values[data["path"]], *[values[x] for x in form], mapping=values[data["mapping"]])

        @reports_errors()
        def time_form(values, request: gr.Request = None):  # the sample data until a file is chosen
            return time_it(lambda: sweep_base({**values, data["path"]: values[data["path"]] or "sample"}), request)

        c["sweep"] = sweep_box.create_sweep_box({data["path"], data["mapping"], *form}, sweep_base)
    c["tab"] = tab
    f, data = c["form"], c["data"]
    form = [f[name] for name in FORM_FIELDS]
    discovered = [f["target_modules"], f["learning_rate"], f["gradient_checkpointing"]]
    f["model"].submit(discover_targets, [f["model"], f["target_modules"], f["learning_rate"]], discovered)
    f["model"].blur(discover_targets, [f["model"], f["target_modules"], f["learning_rate"]], discovered,
                    api_visibility="private")
    sizes = [f[name] for name in ESTIMATED]
    f["model"].change(estimate, sizes, f["estimate"], show_progress="hidden", api_name="estimate")
    for name in ESTIMATED[1:]:
        f[name].change(estimate, sizes, f["estimate"], show_progress="hidden", api_visibility="private")
    timed = [f[name] for name in TIMED]
    f["model"].change(time_estimate, timed, c["time"], show_progress="hidden", api_name="time_estimate")
    for name in TIMED[1:]:
        f[name].change(time_estimate, timed, c["time"], show_progress="hidden", api_visibility="private")
    c["time_it"].click(time_form, {data["path"], data["mapping"], *form}, c["time"], api_name="time_it",
                       concurrency_id="gpu", concurrency_limit=1)
    c["start"].click(start, [data["path"], *form, data["mapping"]], c["message"], api_name="start",
                     concurrency_id="gpu", concurrency_limit=1)
    c["config_out_btn"].click(export_config, [data["path"], *form, data["mapping"]], [c["config_out"], c["config_md"]],
                              api_name="export_config")
    c["config_in"].upload(import_config, c["config_in"], [*form, c["config_md"]], api_name="import_config")
    f["preset"].input(apply_preset, f["preset"], [*form, c["config_md"]], api_name="apply_preset")
    # Stop must never wait behind a queued start or evaluation.
    c["stop"].click(stop, outputs=c["message"], api_name="stop", concurrency_limit=None)
    c["resume"].click(resume, outputs=c["message"], api_name="resume", concurrency_id="gpu", concurrency_limit=1)
    # A chart redrawn while its tab was hidden is laid out at a fallback width; plotly's responsive charts
    # re-measure their container on a window resize.
    tab.select(None, js="() => { setTimeout(() => window.dispatchEvent(new Event('resize')), 100); }")
    return c
