"""The Predict tab: one description in, the fine-tuned model's price by the method picked, every other way beside it;
and "Price a file": a whole catalog priced, with ranges, as a download."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from trainer import charts
from trainer.catalog import price_catalog, write_catalog
from trainer.data import OUTPUT_SUFFIXES, UPLOAD_SUFFIXES, DataError
from trainer.models import ModelError
from trainer.pricing import AUTO, AUTO_HELP, CHOICES, METHOD_NAMES, REGISTRY
from trainer.pricing.ranges import bounds_note
from trainer.runs import barely_trained
from trainer.tester import explain_price, method_name

from ..access import current_user
from ..common import (PICK_FINISHED, busy_refusal, caller_event, named_run, refused, reports_errors, run_choices,
                      run_picker)

PREVIEW_ROWS = 50


METHOD_HELP = "\n".join([f"- **{AUTO}**: {AUTO_HELP}.", *(f"- **{m.label}**: {m.help}." for m in REGISTRY)])


@reports_errors(2, at=0)
def predict(run_name, text, method=AUTO, progress=gr.Progress()):

    run = named_run(run_name, with_adapter=True)
    if run is None:
        return refused(PICK_FINISHED), None
    if not text or not text.strip():
        return refused("Type a product description."), None
    if method not in CHOICES:
        return refused(f"Pick a price method: {', '.join(CHOICES)}."), None
    busy = busy_refusal("Predict")
    if busy:
        return refused(busy), None
    try:
        answer = explain_price(run.path, text, method,
                               progress=lambda done, total, what: progress(done / total, desc=what))
    except (ModelError, OSError, ValueError) as exc:
        return refused(f"**Cannot price with run {run_name}:** {exc}"), None

    def show(price, output=""):
        return f"${price:,.2f}" if price is not None else f"unparseable {output!r}"

    used, prices = answer["method"], answer["prices"]
    rows = [f"| **{method_name(used)}** ◀ | **{show(answer['price'])}** |"]
    rows += [f"| {method_name(m)} | {show(p)} |" for m, p in prices.items() if m != used]
    rows.append(f"| base model, greedy | {show(answer['base'].price, answer['base'].text)} |")
    span = answer["range"]
    calibrated = "calibrated on the validation rows" if answer["calibrated"] else "the model's own, uncalibrated"
    if answer["bounds"]:
        calibrated += f"; {bounds_note(answer['bounds'])}"
    shown_range = (f"  \n{100 * answer['level']:.0f}% range: **{show(span[0])} – {show(span[1])}** ({calibrated})"
                   if span else "")
    warning = barely_trained(run)
    md = (f"**{show(answer['price'])}** by {method_name(used)} — {answer['reason']}.{shown_range}\n\n"
          + (f"**⚠ This product is {answer['unlike']}**: {answer['unlike_rule']}.\n\n" if answer["unlike"] else "")
          + (f"**⚠ {warning}**\n\n" if warning else "") +
          f"| run {run_name} | price |\n"
          "|---|---|\n" + "\n".join(rows))
    return md, charts.distribution_figure(answer["candidates"], answer["price"], METHOD_NAMES[used])


def create_predict_tab() -> dict:
    with gr.Tab("Predict") as tab:
        c = {"tab": tab, "run": run_picker(),
             "text": gr.Textbox(label="Product description", lines=4),
             "method": gr.Dropdown([(METHOD_NAMES[m], m) for m in CHOICES], value=AUTO, label="Price method"),
             "button": gr.Button("Predict price", variant="primary"), "result": gr.Markdown(),
             "chart": gr.Plot(label="What the model thinks: candidate prices")}
        gr.Markdown(METHOD_HELP)
        gr.Markdown("### Price a file\nA whole catalog: every row comes back in order with its columns untouched and "
                    "`predicted_price`, `price_low`, `price_high` (the range, calibrated on the run's validation "
                    "rows), `method` and `note` added. With a price column, the result is also measured against "
                    "it. Uses the run and the price method above.")
        with gr.Row():
            c["catalog"] = gr.File(label="Catalog (CSV, TSV, JSON, JSONL or Parquet; a price column is optional)",
                                   type="filepath", file_types=UPLOAD_SUFFIXES, elem_id="price-catalog")
            c["text_column"] = gr.Textbox(label="Text column(s), comma-separated (empty: found as for training)")
            c["level"] = gr.Number(value=0.8, label="Range level (0–1)")
        with gr.Row():
            c["price_button"] = gr.Button("Price the file", variant="primary")
            c["price_cancel"] = gr.Button("Cancel")
        c["price_summary"] = gr.Markdown()
        c["priced"] = gr.DownloadButton("Download the priced file", visible=False)
        c["preview"] = gr.Dataframe(label=f"First {PREVIEW_ROWS} rows", interactive=False, visible=False)
    tab.select(lambda: run_choices(with_adapter=True), outputs=c["run"], api_visibility="private")
    c["button"].click(predict, [c["run"], c["text"], c["method"]], [c["result"], c["chart"]], api_name="predict",
                      concurrency_id="gpu", concurrency_limit=1)
    c["price_button"].click(price_file, [c["run"], c["catalog"], c["text_column"], c["level"], c["method"]],
                            [c["price_summary"], c["priced"], c["preview"]], api_name="price_file",
                            concurrency_id="gpu", concurrency_limit=1, show_progress_on=c["price_summary"])
    c["price_cancel"].click(cancel_pricing, outputs=c["price_summary"], api_name="cancel_pricing",
                            concurrency_limit=None)
    return c


@reports_errors(3, at=0)
def price_file(run_name, file, text_column="", level=0.8, method=AUTO, request: gr.Request = None,
               progress=gr.Progress()):
    """Price every row of an uploaded catalog with a run's adapter; the priced file as a download."""

    hidden = gr.update(visible=False)
    run = named_run(run_name, with_adapter=True)
    if run is None:
        return refused(PICK_FINISHED), hidden, hidden
    if not file:
        return refused("Upload a catalog file to price."), hidden, hidden
    if method not in CHOICES:
        return refused(f"Pick a price method: {', '.join(CHOICES)}."), hidden, hidden
    try:
        level = float(level)
    except (TypeError, ValueError):
        return refused("Range level: enter a number between 0 and 1, such as 0.8."), hidden, hidden
    busy = busy_refusal("Price a file")
    if busy:
        return refused(busy), hidden, hidden
    cancel = caller_event("price", request)
    cancel.clear()
    try:
        catalog = price_catalog(run.path, str(file), text_column=str(text_column or "").strip() or None, level=level,
                                method=method, cancel=cancel,
                                progress=lambda done, total, what: progress(done / max(total, 1), desc=what))
    except (DataError, ModelError, OSError) as exc:
        return refused(f"**Cannot price the file:** {exc}"), hidden, hidden
    name = Path(str(file)).name
    suffix = Path(name).suffix.lower() if Path(name).suffix.lower() in OUTPUT_SUFFIXES else ".csv"
    out = priced_folder(request) / f"{Path(name).stem}-priced{suffix}"
    write_catalog(catalog.frame, out)
    head = catalog.frame.head(PREVIEW_ROWS)
    preview = head.astype(object).where(head.notna(), None)
    return (catalog.summary(), gr.update(value=str(out), visible=True, label=f"Download {out.name}"),
            gr.update(value=preview, visible=True))


def priced_folder(request: gr.Request | None) -> Path:
    """One folder per caller for the priced file, emptied first: a caller's earlier results never pile up on disk
    (Gradio's own copy of each download is removed by the app's delete_cache)."""
    key = current_user(request) or getattr(request, "session_hash", None) or "local"
    folder = Path(tempfile.gettempdir()) / "pricetune-priced" / hashlib.sha1(key.encode()).hexdigest()[:16]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def cancel_pricing(request: gr.Request = None):
    caller_event("price", request).set()
    return "Cancelling at the next batch; the rows priced so far are kept…"
