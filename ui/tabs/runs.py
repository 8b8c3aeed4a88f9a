"""The Runs tab: every run in the runs folder, curves overlaid, one run opened, resumed, reloaded or deleted."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from trainer import charts, sweep
from trainer.config import RUN_DATA, ConfigError, TrainConfig
from trainer.job import Busy
from trainer.paths import runs_dir
from trainer.runs import ACTIVE_STATES, list_runs, phase_line, run_summary
from trainer.tester import summary_table

from ..access import current_user, may_control
from ..common import (EVAL_COLUMNS, RESUMABLE, SAMPLE_WIDTHS, named_run, refused, reports_errors, resume_run,
                      runs_by_name)
from .train import FORM_FIELDS, fill_form

RUN_COLUMNS = ["run", "status", "started", "steps", "final loss", "best probe $ error", "model", "r / alpha", "targets"]


def list_history(delete_pick=None):
    """The table and pickers; the comparison starts with the three newest finished runs (an unfinished one draws an
    empty chart), and the run picked for deletion stays picked while it exists (a refusal keeps it)."""
    runs = list_runs()
    table = pd.DataFrame([run_summary(r) for r in runs], columns=RUN_COLUMNS)
    names = [r.name for r in runs]
    finished = [r.name for r in runs if r.state() in ("done", "stopped")][:3]
    return (table, gr.Dropdown(choices=names, value=finished, multiselect=True),
            gr.Dropdown(choices=names, value=names[0] if names else None),
            gr.Dropdown(choices=names, value=delete_pick if delete_pick in names else None))


def compare_runs(names):
    runs = runs_by_name()
    series = {name: runs[name].metrics() for name in (names or []) if name in runs}
    return (charts.overlay_figure(series, "loss", "Training loss (smoothed)", "loss"),
            charts.overlay_figure(series, "probe_error", "$ error on validation items", "$ error"))


@reports_errors()
def delete_run(run_name, confirmed, request: gr.Request = None):
    run = named_run(run_name)
    if run is None:
        return refused("Pick the run to delete.")
    if not confirmed:
        return refused(f"Tick **I am sure** to delete run {run.name} and everything in it.")
    if run.state() in ACTIVE_STATES:
        return refused(f"Run {run.name} is {run.state()}: stop it first.")
    if not may_control(run, request):
        return refused("Only the user who started this run (or an admin) may delete it.")
    run.delete()
    return f"Deleted run {run.name}."


def open_run(run_name):
    """One run in full: its status, config, latest sample predictions and evaluation."""
    run = named_run(run_name)
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
    if phase_line(status):
        lines.append(phase_line(status).capitalize())
    checkpoint = run.last_complete_checkpoint()[0]
    if run.state() in RESUMABLE:
        lines.append(f"Resumable from {checkpoint.name}." if checkpoint else "No complete checkpoint to resume from.")
    samples = run.samples()
    table = charts.samples_frame(samples[-1]["items"] if samples else [])
    evaluation = pd.DataFrame(columns=EVAL_COLUMNS)
    try:
        result = run.evaluation()
    except ValueError as exc:
        result = None
        lines.append(str(exc))
    if result is None:
        lines.append(f"Not evaluated yet: the Evaluate tab, or `python -m trainer eval --run {run.name}`, keeps "
                     "the Tester's result with the run.")
    else:
        evaluation = pd.DataFrame(summary_table(result), columns=EVAL_COLUMNS)
        lines.append(f"Evaluated on {result.count} items ({result.data}).")
    try:
        config_text = run.config_file.read_text()
    except OSError:
        config_text = ""
    return "\n\n".join(lines), config_text, table, evaluation


def resume_named(run_name, request: gr.Request = None):
    run = named_run(run_name)
    return "Pick a run." if run is None else resume_run(run, request)


@reports_errors(len(FORM_FIELDS) + 4, at=len(FORM_FIELDS))
def load_run_config(run_name):
    """Fill the Train form with a run's config, and take its train/held-out split as the data, to train a variant."""
    run = named_run(run_name)
    unchanged = [gr.skip()] * 3
    if run is None:
        return *[gr.skip()] * len(FORM_FIELDS), refused("Pick a run."), *unchanged
    try:
        config = TrainConfig.from_yaml(run.config_file).validate()
    except (ConfigError, OSError) as exc:
        return *[gr.skip()] * len(FORM_FIELDS), refused(f"**Cannot load the config of {run.name}:** {exc}"), *unchanged
    train, test = run.split() + run.split("validation"), run.split("test")
    if not train or not test:
        return *fill_form(config, f"Train form filled with the config of {run.name}."), *unchanged
    info = (f"**The data of run {run.name}**: its own {len(train):,} training (validation included) and "
            f"{len(test):,} held-out products, unchanged, so the variant is measured on the same rows.")
    return (*fill_form(config, f"Train form filled with the config and data of {run.name}.", data_kept=True),
            f"{RUN_DATA}{run.name}", info, None)


LEADERBOARD_COLUMNS = ["rank", "run", "held-out $ error", "RMSLE", "hits %", "settings"]


def list_sweeps():
    names = [p.name for p in sweep.list_sweeps(runs_dir())]
    return gr.Dropdown(choices=names, value=names[0] if names else None)


def show_sweep(name):
    """A sweep's leaderboard (its runs by held-out $ error, the TF-IDF ridge of the same rows among them) and its
    progress lines."""
    folder = next((p for p in sweep.list_sweeps(runs_dir()) if p.name == name), None)
    if folder is None:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS), "Pick a sweep."
    rows = [[rank, r["run"], round(r["error"], 2), round(r["rmsle"], 3), round(100 * r["hits"], 1),
             sweep.point_label(r["point"])] for rank, r in enumerate(sweep.read_leaderboard(folder), 1)]
    progress = folder / sweep.PROGRESS_FILE
    lines = progress.read_text(encoding="utf-8").splitlines()[-12:] if progress.is_file() else []
    return pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS), "\n".join(f"    {line}" for line in lines)


@reports_errors()
def continue_sweep(name, request: gr.Request = None):
    """Run a stopped or interrupted sweep on: its finished runs are skipped, an interrupted one resumes."""
    folder = next((p for p in sweep.list_sweeps(runs_dir()) if p.name == name), None)
    if folder is None:
        return refused("Pick a sweep.")
    found, _ = sweep.Sweep.create_or_open(folder, None, [])
    runs = [found.run_folder(i) for i in range(len(found.points))]
    if not all(may_control(r, request) for r in runs if r.config_file.is_file()):
        return refused("Only the user who started this sweep (or an admin) may continue it.")
    try:
        sweep.run_in_background(found, owner=current_user(request))
    except Busy as exc:
        return refused(f"**Cannot continue the sweep:** {exc}")
    return f"Continuing sweep **{found.folder.name}**: finished runs are skipped; follow it in the live view."


def create_runs_tab(train: dict) -> dict:
    """The Runs tab; *Load its config* fills `train`'s form and data box."""
    with gr.Tab("Runs") as tab:
        gr.Markdown("Every run in the runs folder, from the app or the CLI. Select runs to overlay their curves.")
        c = {"tab": tab, "table": gr.Dataframe(pd.DataFrame(columns=RUN_COLUMNS), label="Runs", interactive=False,
                                               elem_id="runs-table"),
             "compare": gr.Dropdown(label="Runs to compare", choices=[], multiselect=True, allow_custom_value=True)}
        with gr.Row():
            c["loss"] = gr.Plot(label="Loss")
            c["error"] = gr.Plot(label="$ error")
        with gr.Row():
            c["delete_pick"] = gr.Dropdown(label="Run to delete", choices=[], allow_custom_value=True)
            c["delete_sure"] = gr.Checkbox(label="I am sure", value=False)
            c["delete"] = gr.Button("Delete this run", variant="stop")
        c["delete_message"] = gr.Markdown(elem_id="delete-message")
        gr.Markdown("### One run")
        c["open"] = gr.Dropdown(label="Open a run", choices=[], allow_custom_value=True)
        c["detail"] = gr.Markdown(elem_id="run-detail")
        with gr.Row():
            c["resume"] = gr.Button("Resume this run")
            c["load"] = gr.Button("Load its config into the Train form")
        c["message"] = gr.Markdown(elem_id="run-detail-message")
        with gr.Row():
            c["config"] = gr.Code(label="config.yaml", language="yaml", interactive=False)
            c["samples"] = gr.Dataframe(charts.samples_frame([]), label="Latest sample predictions",
                                        interactive=False, wrap=True, column_widths=SAMPLE_WIDTHS)
        c["eval"] = gr.Dataframe(pd.DataFrame(columns=EVAL_COLUMNS), label="Evaluation (eval.json)",
                                 interactive=False)
        gr.Markdown("### Sweeps")
        with gr.Row():
            c["sweep"] = gr.Dropdown(label="Sweep", choices=[], allow_custom_value=True)
            c["continue_sweep"] = gr.Button("Continue this sweep")
        c["leaderboard"] = gr.Dataframe(pd.DataFrame(columns=LEADERBOARD_COLUMNS), interactive=False,
                                        label="Leaderboard: the sweep's runs by held-out $ error")
        c["sweep_message"] = gr.Markdown(elem_id="sweep-continue-message")
        c["sweep_progress"] = gr.Markdown(elem_id="sweep-progress")
    listing = [c["table"], c["compare"], c["open"], c["delete_pick"]]
    curves = [c["loss"], c["error"]]
    # Registered first so the public endpoint gets the plain name; the tab's chained call is private.
    c["compare"].change(compare_runs, c["compare"], curves, api_name="compare_runs")
    tab.select(list_history, outputs=listing, api_name="list_runs").then(
        compare_runs, c["compare"], curves, api_visibility="private")
    c["delete_pick"].change(lambda name: gr.Button(f"Delete run {name}" if name else "Delete this run"),
                            c["delete_pick"], c["delete"], api_visibility="private", queue=False)
    c["delete"].click(delete_run, [c["delete_pick"], c["delete_sure"]], c["delete_message"],
                      api_name="delete_run").then(list_history, c["delete_pick"], listing, api_visibility="private")
    c["open"].change(open_run, c["open"], [c["detail"], c["config"], c["samples"], c["eval"]], api_name="open_run")
    c["sweep"].change(show_sweep, c["sweep"], [c["leaderboard"], c["sweep_progress"]], api_name="sweep_leaderboard")
    c["continue_sweep"].click(continue_sweep, c["sweep"], c["sweep_message"], api_name="continue_sweep",
                              concurrency_id="gpu", concurrency_limit=1)
    tab.select(list_sweeps, outputs=c["sweep"], api_visibility="private").then(
        show_sweep, c["sweep"], [c["leaderboard"], c["sweep_progress"]], api_visibility="private")
    c["resume"].click(resume_named, c["open"], c["message"], api_name="resume_run", concurrency_id="gpu",
                      concurrency_limit=1)
    data, form = train["data"], [train["form"][name] for name in FORM_FIELDS]
    c["load"].click(load_run_config, c["open"], [*form, c["message"], data["path"], data["info"], data["mapping"]],
                    api_name="load_run_config").then(
        lambda: (gr.Dropdown(visible=False), gr.Dropdown(visible=False), []),
        outputs=[data["text_columns"], data["price_column"], train["touched"]], api_visibility="private")
    return c
