"""The Train tab: the data box, the form (one component per config field, by its name), start / stop / resume,
config import and export, the live estimates of memory and time; below them the live view and the sweep box."""

from __future__ import annotations

import dataclasses
import inspect
import shlex
import tempfile
import typing
from pathlib import Path

import gradio as gr
import torch

from trainer import cost, timing, trackers
from trainer.config import (COURSE_TARGETS, PRESET_NAMES, RUN_DATA, ConfigError, TrainConfig, field_docs,
                            gpu_defaults_line, preset)
from trainer.data import COURSE_2024_QUESTION, COURSE_QUESTION
from trainer.job import JOBS, Busy
from trainer.memory import ESTIMATE_LENGTH, detected_gpu, estimate_memory, fit_warning, gpu_warning
from trainer.models import DEMO, ModelError, estimate_adapter, linear_module_names, model_config
from trainer.pricing import PROBE_METHODS

from .. import data_box, live, sweep_box
from ..access import current_user, may_control, may_run_hub_code, model_folders
from ..common import RESUMABLE, refused, reports_errors, resume_run

DEFAULTS = TrainConfig()
NOT_IN_FORM = ("name", "data", "data_name", "text_column", "price_column")
"""Config fields without a form component: Start names the run; the data box gives the data and its columns."""
FORM_FIELDS = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in NOT_IN_FORM]
"""Every other config field is a component under its own name: fill_form's order and the API's parameter names. A new
config field needs no edit here: it appears under More training settings, labelled by its docstring."""
FIRST = ("model", "quant", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "max_steps", "max_minutes",
         "fit_to_time")
"""The settings a newcomer changes, shown open; the others wait in a closed accordion."""
MODEL_DEPENDENT = ("target_modules", "learning_rate", "gradient_checkpointing", "compile_layers")
"""The fields whose default depends on the model (config.model_defaults): a model change resets the untouched ones."""
QUESTION_CHOICES = [("the data's own (a course file's); else the current course's", ""),
                    (f"current course: {COURSE_QUESTION}", COURSE_QUESTION),
                    (f"course 2024: {COURSE_2024_QUESTION}", COURSE_2024_QUESTION)]
LABELS = {
    "model": "Model: 'demo' (SmolLM2-135M, built in), a Hugging Face id or a local folder",
    "quant": "Quantization (4bit = NF4 + double quant, the course default on a GPU)",
    "lora_r": "rank r", "lora_alpha": "alpha", "lora_dropout": "dropout", "target_modules": "target modules",
    "max_steps": "max steps (0 = use epochs)",
    "max_minutes": "time limit, minutes (0 = none; training stops and saves there)",
    "fit_to_time": "train to the time limit (instead of max steps; the schedule ends when the time does)",
    "learning_rate": "learning rate", "batch_size": "batch size", "grad_accum": "gradient accumulation",
    "max_length": "max length (0 = from data)", "sample_every": "sample predictions every N steps",
    "probe_size": "validation items priced each time", "save_steps": "checkpoint every N steps",
    "validation_size": "validation rows: share (<1) or count, not trained on",
    "warmup_ratio": "warm-up share of the steps", "max_grad_norm": "max gradient norm (0 = no clipping)",
    "head_rows": "training rows the price head is fitted on after training",
    "head_loss": "price head trained with the LoRA: its loss weight (0 = the course's loss; head fitted after)",
    "question": "Question the prompt asks (or type your own)",
    "report_to": "Report to (an experiment tracker; local logs go in the run folder)",
    "gradient_checkpointing": "Gradient checkpointing (less GPU memory, slower steps)",
    "max_cost": f"cost cap $ (0 = none; the price: {cost.PRICE_ENV} or {cost.HARDWARE_ENV})",
    "hub_kernels": "Hub kernels (let the model load fetch and run kernels from the Hugging Face Hub; needs the network)",
}
"""The page's words for a field where its docstring is not what a user needs; any other field is labelled by its
name, its docstring under it."""
CHOICES = {"question": QUESTION_CHOICES, "report_to": [(trackers.label(t), t) for t in trackers.TRACKERS],
           "probe_method": list(PROBE_METHODS)}
"""Fields offered as a list (by value, or (label, value)) that their type does not already list (a Literal)."""

def field_component(name: str):
    """The form component of config field `name`, by its type: a number (never a slider: a slider clamps a typed
    100000 to its maximum and starts a run nobody asked for; the config refuses it by name instead), a checkbox, a
    choice, the target modules of the demo model, or text."""
    kind, value = typing.get_type_hints(TrainConfig)[name], getattr(DEFAULTS, name)
    label, info = LABELS.get(name, name.replace("_", " ")), None if name in LABELS else field_docs()[name]
    if name in CHOICES:
        return gr.Dropdown(CHOICES[name], value=value, label=label, info=info, allow_custom_value=name == "question")
    if typing.get_origin(kind) is typing.Literal:
        return gr.Radio(list(typing.get_args(kind)), value=value, label=label, info=info)
    if kind is bool:
        return gr.Checkbox(value=value, label=label, info=info)
    if kind in (int, float):
        return gr.Number(value=value, label=label, info=info, precision=0 if kind is int else None)
    if typing.get_origin(kind) is list:
        return gr.CheckboxGroup(linear_module_names(model_config(DEMO)), value=list(value), label=label, info=info)
    return gr.Textbox(value=value, label=label, info=info)


def discover_targets(model_name, current, touched):
    """The new model's linear layers, and its defaults for each model-dependent field the user has not set by hand
    (`touched`: the fields they changed since the form was last filled), in MODEL_DEPENDENT's order."""
    try:
        names = linear_module_names(model_config(model_name, model_folders()))
    except (ModelError, ValueError):  # the estimate beside the field says why; a toast would repeat on each blur
        return (gr.skip(),) * len(MODEL_DEPENDENT)
    touched, wanted = set(touched or []), TrainConfig.for_model(str(model_name or "").strip() or DEMO)
    if "target_modules" in touched:
        keep = [n for n in current or [] if n in names] or [n for n in COURSE_TARGETS if n in names] or names[:1]
    else:
        keep = [n for n in wanted.target_modules if n in names] or names[:1]
    return (gr.CheckboxGroup(choices=names, value=keep),
            *(gr.skip() if name in touched else getattr(wanted, name) for name in MODEL_DEPENDENT[1:]))


def estimate(model="demo", quant=DEFAULTS.quant, lora_r=DEFAULTS.lora_r, lora_dropout=DEFAULTS.lora_dropout,
             target_modules=DEFAULTS.target_modules, batch_size=DEFAULTS.batch_size, max_length=DEFAULTS.max_length,
             gradient_checkpointing=DEFAULTS.gradient_checkpointing):
    """The adapter's size and the run's peak GPU memory, with a warning when the detected GPU cannot hold it."""
    if not target_modules:
        return "Pick at least one target module."
    try:  # the fields as Start would refuse them: a negative batch has no memory to estimate
        TrainConfig.from_dict({"quant": quant, "lora_r": lora_r, "lora_dropout": lora_dropout,
                               "batch_size": batch_size, "max_length": 0 if max_length == "" else max_length}).validate()
    except ConfigError as exc:
        return f"Cannot estimate: {exc}"
    try:
        config = model_config(model, model_folders())
        adapter = estimate_adapter(config, int(lora_r), list(target_modules))
        memory = estimate_memory(config, quant, adapter.trainable_params, list(target_modules), int(lora_r),
                                 int(batch_size or 1), int(max_length or 0), dropout=bool(lora_dropout),
                                 gradient_checkpointing=bool(gradient_checkpointing))
    except (ModelError, ValueError, TypeError) as exc:
        return f"Cannot estimate: {exc}"
    gpu = detected_gpu()
    warning = fit_warning(memory, *gpu) if gpu else ""
    length = "" if max_length else f" (max length auto: estimated at {ESTIMATE_LENGTH} tokens)"
    return (f"{adapter.describe()}\n\nOn a GPU (bf16 compute): {memory.describe()}{length}\n\n"
            f"{gpu_defaults_line(model.strip() or DEMO)}" + (f"\n\n**Warning:** {warning}" if warning else ""))


ESTIMATED = tuple(inspect.signature(estimate).parameters)
"""The form fields the live memory estimate depends on: its parameters."""


TIMED = ("model", "quant", "batch_size", "grad_accum", "max_length", "max_steps", "sample_every", "probe_size",
         "head_rows", "max_minutes", "fit_to_time")
"""The form fields the time estimate depends on."""

def time_estimate(**values):
    """The run's expected wall time on this machine, by phase, from the newest run of its model here."""
    model = str(values.get("model") or "").strip() or DEMO
    try:
        config = TrainConfig.from_dict({**dataclasses.asdict(TrainConfig.for_model(model)), **values,
                                        "model": model}).validate()
    except ConfigError as exc:
        return f"Cannot estimate the time: {exc}"
    return timing.time_line(config, config.max_length)


@reports_errors()
def time_it(request: gr.Request = None, **form):
    """Times two steps of the form's config here with the real job (on the sample data until a file is chosen),
    then estimates the whole run from them."""
    try:
        config = runnable_config({**form, "data": form.get("data") or "sample"}, request)
        timing.measure(config, JOBS)
    except (ConfigError, ModelError, Busy, RuntimeError) as exc:
        return refused(f"**Cannot time it:** {exc}")
    return timing.time_line(config, config.max_length)


def form_config(form: dict) -> TrainConfig:
    """The TrainConfig the form describes (`form`: values by config field name, with "data" and the upload's column
    "mapping"), every field converted and checked by the config itself (a cleared number field is refused by its
    name); Start, Time it, Export config and the sweep share it. A field left out keeps the model's default."""
    types = typing.get_type_hints(TrainConfig)
    values = {name: form[name] for name in FORM_FIELDS if name in form}
    for name, value in values.items():  # Gradio's empty values, as the config reads them
        if types[name] is bool:
            values[name] = bool(value)
        elif typing.get_origin(types[name]) is list:
            values[name] = list(value or [])
        elif types[name] is str or typing.get_origin(types[name]) is typing.Literal:
            values[name] = str(value or "").strip() or getattr(DEFAULTS, name)
    values["question"] = str(form.get("question") or "").strip()  # empty is a choice: the data's own question
    values["model"] = str(form.get("model") or "").strip() or DEMO
    data = str(form.get("data") or "sample")
    # The column mapping of the uploaded file goes into the run's config.yaml; sample data has none.
    mapping = (form.get("mapping") or {}) if data != "sample" else {}
    # An upload is named by its own file name in the run folder; Gradio's temp path stays on the server.
    upload = data != "sample" and not data.startswith(RUN_DATA)
    under = dataclasses.asdict(TrainConfig.for_model(values["model"]))
    return TrainConfig.from_dict({**under, "data": data, "data_name": Path(data).name if upload else "",
                                  "text_column": ",".join(mapping.get("text") or []),
                                  "price_column": mapping.get("price") or "", **values}).validate()


def runnable_config(form: dict, request: gr.Request | None) -> TrainConfig:
    """form_config, refused where this caller may not run it: hub kernels only for an admin of a shared app, and a
    model that does not resolve (a mistyped id now, not after the data is read; a folder only where allowed)."""
    config = form_config(form)
    if config.hub_kernels and not may_run_hub_code(request):
        raise ConfigError("hub_kernels: on a shared app only an admin may let a model load run code from the Hub")
    model_config(config.model, model_folders())
    return config


def chosen_data_config(form: dict, request: gr.Request | None = None) -> TrainConfig:
    """runnable_config, refused until data is chosen (Start says the same): the sweep's base config."""
    if not form.get("data"):
        raise ConfigError("choose data first: Use sample data or upload a file")
    return runnable_config(form, request)


@reports_errors()
def start(request: gr.Request = None, **form):
    """Start a run of the form's config (`form`: by config field name, with "data" and "mapping")."""
    if not form.get("data"):
        return refused("Choose data first: **Use sample data** or upload a file.")
    try:
        config = runnable_config(form, request)
        warning = gpu_warning(config, model_folders())  # told, not refused: the estimate is an estimate
        job = JOBS.start(config, owner=current_user(request))
    except (ConfigError, ModelError, Busy) as exc:
        return refused(f"**Cannot start:** {exc}")
    return f"Started run **{job.run.name}**." + (f" **Warning:** {warning}" if warning else "")


@reports_errors(2, at=1)
def export_config(**form):
    """The form as the YAML that `python -m trainer train --config` takes."""
    try:
        config = form_config(form)
    except ConfigError as exc:
        return gr.skip(), refused(f"**Cannot export:** {exc}")
    folder = Path(tempfile.mkdtemp(prefix="pricetune-config-"))
    path = folder / "pricetune-config.yaml"
    path.write_text(config.recorded().to_yaml())
    return gr.DownloadButton(value=str(path), visible=True, label="Download config.yaml"), commands_text(config)


def commands_text(config: TrainConfig, file: str = "pricetune-config.yaml") -> str:
    """The headless commands of a config: one process, and every GPU of a machine (the Trainer's data parallelism)."""

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
    """Every form component by config field name: the settings a newcomer changes open, the rest in a closed
    accordion; the preset, the memory estimate and Time it under their own names beside them."""
    f = {}
    gr.Markdown("### 2 · Model and LoRA")
    # The preset in use is shown: the form opens on the demo preset's values.
    f["preset"] = gr.Dropdown([(label, key) for key, label in PRESET_NAMES.items()], value=DEMO,
                              label="Preset (fills the form; every field stays editable)",
                              info="the course's recipes are for a GPU; demo (CPU) is the default")
    f["model"], f["quant"] = field_component("model"), field_component("quant")
    with gr.Row():
        for name in ("lora_r", "lora_alpha", "lora_dropout"):
            f[name] = field_component(name)
    f["target_modules"] = field_component("target_modules")
    f["estimate"] = gr.Markdown(estimate())
    gr.Markdown("### 3 · How long")
    with gr.Row(equal_height=True):
        f["max_steps"], f["max_minutes"] = field_component("max_steps"), field_component("max_minutes")
        f["fit_to_time"] = field_component("fit_to_time")
        f["time_it"] = gr.Button("Time it", scale=0)
    f["time"] = gr.Markdown(time_estimate(**{n: getattr(DEFAULTS, n) for n in TIMED}), elem_id="time-estimate")
    with gr.Accordion("More training settings (learning rate, batch size, probes, question, tracker…) and config "
                      "files", open=False):
        rest = [name for name in FORM_FIELDS if name not in FIRST]
        kinds = {name: typing.get_type_hints(TrainConfig)[name] for name in rest}
        numbers = [n for n in rest if kinds[n] in (int, float)]
        for i in range(0, len(numbers), 4):  # four numbers a row
            with gr.Row():
                for name in numbers[i:i + 4]:
                    f[name] = field_component(name)
        for name in rest:
            if name not in numbers and kinds[name] is not bool:
                f[name] = field_component(name)
        flags = [n for n in rest if kinds[n] is bool]
        for i in range(0, len(flags), 2):
            with gr.Row():
                for name in flags[i:i + 2]:
                    f[name] = field_component(name)
        with gr.Row():
            f["config_in"] = gr.UploadButton("Import config", file_types=[".yaml", ".yml"], type="filepath")
            f["config_out_btn"] = gr.Button("Export config")
            f["config_out"] = gr.DownloadButton("Download config.yaml", visible=False)
    return f


def create_train_tab() -> dict:
    """The Train tab's components: the data box's under "data", the config fields' by name under "form", the live
    view's under "live", the rest by their own names."""
    with gr.Tab("Train") as tab:
        # Reading order: data, the few settings a newcomer changes, Start, then the live view right below it.
        with gr.Row():
            with gr.Column():
                c = {"data": data_box.create_data_box()}
            with gr.Column():
                parts = form_components()
                c["config_md"] = gr.Markdown(elem_id="config-message")
        c.update({k: parts.pop(k) for k in ("preset", "estimate", "time_it", "time", "config_in", "config_out_btn",
                                            "config_out")})
        c["form"] = f = parts  # only config fields remain: FORM_FIELDS, each under its name
        with gr.Row():
            c["start"] = gr.Button("Start", variant="primary", elem_id="start")
            c["stop"] = gr.Button("Stop", variant="stop")
            c["resume"] = gr.Button("Resume", visible=False)
        c["message"] = gr.Markdown()
        c["live"] = live.create_live_panel()
        data = c["data"]
        # The form by name for the handlers and the API: each config field, the data and the upload's mapping.
        named = {**{name: f[name] for name in FORM_FIELDS}, "data": data["path"], "mapping": data["mapping"]}
        c["sweep"] = sweep_box.create_sweep_box(named, chosen_data_config)
    c["tab"] = tab
    form = [f[name] for name in FORM_FIELDS]
    # The model-dependent fields the user changed by hand since the form was last filled keep their values.
    c["touched"] = touched = gr.State([])
    for name in MODEL_DEPENDENT:
        f[name].input(lambda seen, name=name: sorted({*(seen or []), name}), touched, touched,
                      api_visibility="private")
    discovered = [f[name] for name in MODEL_DEPENDENT]
    for event in (f["model"].submit, f["model"].blur):
        event(discover_targets, [f["model"], f["target_modules"], touched], discovered, api_visibility="private")
    for inputs, handler, output, api in ((ESTIMATED, estimate, c["estimate"], "estimate"),
                                         (TIMED, time_estimate, c["time"], "time_estimate")):
        by_name = {name: f[name] for name in inputs}
        f["model"].change(handler, inputs_kwargs=by_name, outputs=output, show_progress="hidden", api_name=api)
        for name in inputs[1:]:
            f[name].change(handler, inputs_kwargs=by_name, outputs=output, show_progress="hidden",
                           api_visibility="private")
    c["time_it"].click(time_it, inputs_kwargs=named, outputs=c["time"], api_name="time_it", concurrency_id="gpu",
                       concurrency_limit=1)
    c["start"].click(start, inputs_kwargs=named, outputs=c["message"], api_name="start", concurrency_id="gpu",
                     concurrency_limit=1)
    c["config_out_btn"].click(export_config, inputs_kwargs=named, outputs=[c["config_out"], c["config_md"]],
                              api_name="export_config")
    # A filled form is the user's starting point: nothing in it counts as changed by hand yet.
    c["config_in"].upload(import_config, c["config_in"], [*form, c["config_md"]], api_name="import_config").then(
        list, outputs=touched, api_visibility="private")
    c["preset"].input(apply_preset, c["preset"], [*form, c["config_md"]], api_name="apply_preset").then(
        list, outputs=touched, api_visibility="private")
    # Stop must never wait behind a queued start or evaluation.
    c["stop"].click(stop, outputs=c["message"], api_name="stop", concurrency_limit=None)
    c["resume"].click(resume, outputs=c["message"], api_name="resume", concurrency_id="gpu", concurrency_limit=1)
    # A chart redrawn while its tab was hidden is laid out at a fallback width; plotly's responsive charts
    # re-measure their container on a window resize.
    tab.select(None, js="() => { setTimeout(() => window.dispatchEvent(new Event('resize')), 100); }")
    return c
