"""The Evaluate tab: the course's Tester on a run's held-out split (or a file), against the base model and baselines."""

from __future__ import annotations

import threading

import gradio as gr
import pandas as pd

from trainer import charts
from trainer.data import UPLOAD_SUFFIXES
from trainer.pricing import AUTO, CHOICES, METHOD_NAMES
from trainer.pricing.choice import Cancelled
from trainer.pricing.ranges import range_line
from trainer.tester import CATEGORY_COLUMNS, category_table, evaluate_run, one_line, summary_table, verdict

from ..access import may_control
from ..common import (COLOUR_KEY, EVAL_COLUMNS, PICK_FINISHED, busy_refusal, caller_event, named_run, refused,
                      reports_errors, run_choices, run_picker)


def cancel_event(request: gr.Request | None) -> threading.Event:
    """This caller's Cancel flag of evaluations."""
    return caller_event("evaluate", request)


@reports_errors(6, at=0)
def run_evaluation(run_name, file, limit, method=AUTO, request: gr.Request = None, progress=gr.Progress()):

    run = named_run(run_name, with_adapter=True)
    if run is None:
        return refused(PICK_FINISHED), None, None, None, None, None
    if method not in CHOICES:
        return refused(f"Pick a headline price method: {', '.join(CHOICES)}."), None, None, None, None, None
    busy = busy_refusal("Evaluate")
    if busy:
        return refused(busy), None, None, None, None, None
    cancel = cancel_event(request)
    cancel.clear()
    # Anyone logged in may evaluate; only the run's owner (or an admin) writes eval.json, which feeds its card and zip.
    save = may_control(run, request)
    try:
        result = evaluate_run(run.path, data=str(file) if file else None, limit=int(limit or 0) or None,
                              progress=lambda done, total, what: progress(done / total, desc=what),
                              cancel=cancel, method=method, save=save)
    except Cancelled:
        return "Evaluation cancelled; nothing was written.", None, None, None, None, None
    except ValueError as exc:  # DataError, ModelError: bad test file or unloadable run
        return refused(f"**Cannot evaluate:** {exc}"), None, None, None, None, None
    truths = [item["truth"] for item in result.items]
    guesses = [item["guess"] for item in result.items]
    table = pd.DataFrame(summary_table(result), columns=EVAL_COLUMNS)
    saved = ("Saved with run {run_name}: its model card and adapter zip include it." if save else
             f"Not saved: only the user who started run {run_name} (or an admin) writes its evaluation.")
    categories = result.categories
    ranges = f"{range_line(result)}  \n" if range_line(result) else ""
    return (f"**{verdict(result)}**  \n{one_line(result)}  \n{ranges}{saved.format(run_name=run_name)}", table,
            charts.scatter_figure(truths, guesses), charts.bucket_figure(truths, guesses),
            gr.update(value=pd.DataFrame(category_table(categories), columns=CATEGORY_COLUMNS), visible=bool(categories)),
            gr.update(value=charts.category_figure(categories), visible=bool(categories)))


def cancel_evaluation(request: gr.Request = None):
    cancel_event(request).set()
    return "Cancelling your evaluation at the next batch…"


def create_evaluate_tab() -> dict:
    with gr.Tab("Evaluate") as tab:
        gr.Markdown("The course's Tester: the fine-tuned adapter against the base model, constant guesses, the "
                    "course's bag-of-words linear regression and the strong text baselines (TF-IDF ridge on log "
                    "price and the 10 nearest training rows by TF-IDF, fitted on the run's training split), on the "
                    "run's held-out split or a file you upload. Every price method has its row, and the ensemble "
                    "of the model with the text baselines; the "
                    "headline method and the ensemble's regression are chosen on the run's validation rows, never the "
                    "rows evaluated here.")
        with gr.Row():
            c = {"tab": tab, "run": run_picker(),
                 "file": gr.File(label="Test file (optional; default: the run's held-out split)", type="filepath",
                                 file_types=UPLOAD_SUFFIXES),
                 "limit": gr.Number(value=200, label="items (0 = all)", precision=0),
                 "method": gr.Dropdown([(METHOD_NAMES[m], m) for m in CHOICES], value=AUTO,
                                       label="Headline price method",
                                       info="every method gets its row below either way (help in the Predict tab)")}
        with gr.Row():
            c["button"] = gr.Button("Evaluate", variant="primary")
            c["cancel"] = gr.Button("Cancel")
        c["summary"] = gr.Markdown()
        c["table"] = gr.Dataframe(pd.DataFrame(columns=EVAL_COLUMNS), label="Results, lowest $ error first",
                                  interactive=False, elem_id="eval-table")
        gr.Markdown("◀ headline: the method *auto* chose on the run's validation rows, before these rows were "
                    "priced (choosing on them would flatter it). ◀ strongest baseline: the best of the text and "
                    "constant baselines, the line a fine-tune must beat. r² below 0: worse than always guessing these "
                    "rows' mean price.")
        with gr.Row():
            c["scatter"] = gr.Plot(label="Truth vs guess", elem_id="eval-scatter")
            c["buckets"] = gr.Plot(label="Error by price")
        with gr.Row():  # only for data with a category column (the course's Item records have one)
            c["categories"] = gr.Dataframe(label="Error by category (the headline method)", interactive=False,
                                           visible=False, elem_id="eval-categories")
            c["category_chart"] = gr.Plot(label="Error by category", visible=False)
        gr.Markdown(COLOUR_KEY)
    tab.select(lambda: run_choices(with_adapter=True), outputs=c["run"], api_visibility="private")
    c["button"].click(run_evaluation, [c["run"], c["file"], c["limit"], c["method"]],
                      [c["summary"], c["table"], c["scatter"], c["buckets"], c["categories"], c["category_chart"]],
                      api_name="evaluate",
                      concurrency_id="gpu", concurrency_limit=1, show_progress_on=c["summary"])
    c["cancel"].click(cancel_evaluation, outputs=c["summary"], api_name="cancel_evaluation", concurrency_limit=None)
    return c
