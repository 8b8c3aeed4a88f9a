"""The Train tab's "Sweep" section: up to two fields and their values, the grid and its time shown before it starts,
its runs trained one after another through the one-job queue (trainer.sweep does the work)."""

from __future__ import annotations

import time
from typing import Callable

import gradio as gr

from trainer.config import ConfigError
from trainer.job import Busy
from trainer.models import ModelError
from trainer.paths import runs_dir
from trainer.sweep import Sweep, grid, pace, parse_set, plan, run_in_background

from .access import current_user
from .common import refused, reports_errors


def sweepable(form: dict) -> list[str]:
    """The fields the section offers: the form's numbers and choices (the CLI's --set takes any field but the data
    and split ones)."""
    return [name for name, part in form.items() if isinstance(part, (gr.Number, gr.Radio))]


def _sweep(values: dict, config_of: Callable, request: gr.Request | None) -> Sweep:
    sets = [parse_set(f"{values[f'field_{k}']}={values[f'values_{k}']}") for k in "ab"
            if values[f"field_{k}"] and str(values[f"values_{k}"] or "").strip()]
    if not sets:
        raise ConfigError("pick a field and type its values, e.g. lora_r and 8,16,32")
    stamp = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = next(runs_dir() / name for name in (stamp, *(f"{stamp}-{i}" for i in range(1, 100)))
                  if not (runs_dir() / name).exists())
    return Sweep(folder, config_of(values, request), grid(sets))


def _grid_text(sweep: Sweep) -> str:
    measured = pace(sweep.base.model, runs_dir())
    rows, total = plan(sweep, measured)
    lines = ["| # | settings | steps | training minutes |", "|---|---|---|---|"]
    shown = lambda minutes: "?" if minutes is None else f"{minutes:.1f}"  # noqa: E731
    lines += [f"| {i} | {r['settings']} | {r['steps']} | {shown(r['minutes'])} |" for i, r in enumerate(rows, 1)]
    if total is not None:
        where = f"at the pace of run {measured[1]}" if measured else "the time limit of each run"
        head = f"**{len(rows)} runs, about {total:.0f} training minutes** ({where}; each run is then evaluated)"
    else:
        head = (f"**{len(rows)} runs**; their time is unknown: no finished run of {sweep.base.model} to time it by "
                "(set a time limit per run to bound it)")
    return head + "\n\n" + "\n".join(lines)


def create_sweep_box(form: dict, config_of: Callable) -> dict:
    """The section's components, its events wired; `form` holds the form's components by config field name (with
    "data" and "mapping"), `config_of(values, request)` the TrainConfig the values by those names describe, refused
    where that caller may not run it (as Start refuses it)."""
    c = {}
    fields = sweepable(form)
    with gr.Accordion("Sweep: train a grid of settings, one run after another", open=False):
        with gr.Row():
            c["field_a"] = gr.Dropdown(fields, value="lora_r", label="Field")
            c["values_a"] = gr.Textbox(label="Values, comma-separated", placeholder="8,16,32")
        with gr.Row():
            c["field_b"] = gr.Dropdown(["", *fields], value="", label="Second field (optional)")
            c["values_b"] = gr.Textbox(label="Its values", placeholder="3e-4,1e-3")
        with gr.Row():
            c["show"] = gr.Button("Show the grid")
            c["start"] = gr.Button("Start sweep")
        c["message"] = gr.Markdown(elem_id="sweep-message")
    # By name: the API takes the form's fields as Start does, then the sweep's own.
    everything = {**form, **{k: c[k] for k in ("field_a", "values_a", "field_b", "values_b")}}

    @reports_errors()
    def show(request: gr.Request = None, **values):
        try:
            return _grid_text(_sweep(values, config_of, request))
        except (ConfigError, ModelError) as exc:
            return refused(f"**Cannot sweep:** {exc}")

    @reports_errors()
    def start(request: gr.Request = None, **values):
        try:
            sweep = _sweep(values, config_of, request)
            text = _grid_text(sweep)
            run_in_background(sweep, owner=current_user(request))
        except (ConfigError, ModelError, Busy) as exc:
            return refused(f"**Cannot start the sweep:** {exc}")
        return (f"Started sweep **{sweep.folder.name}**: each run shows in the live view as it trains; Stop ends the "
                f"sweep; the leaderboard is in the Runs tab.\n\n{text}")

    c["show"].click(show, inputs_kwargs=everything, outputs=c["message"], api_name="sweep_grid")
    c["start"].click(start, inputs_kwargs=everything, outputs=c["message"], api_name="start_sweep",
                     concurrency_id="gpu", concurrency_limit=1)
    return c
