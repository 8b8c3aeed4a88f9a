"""The Predict tab: one description in, the fine-tuned model's price by the method picked, every other way beside it."""

from __future__ import annotations

import gradio as gr

from trainer import charts
from trainer.estimates import AUTO, CHOICES, METHOD_NAMES
from trainer.models import ModelError

from ..common import PICK_FINISHED, busy_refusal, named_run, refused, reports_errors, run_choices, run_picker


METHOD_HELP = (
    "**auto** takes the point estimate with the lowest $ error on the run's validation rows (rows of the training "
    "split it was not trained on, priced once, ~a minute); the held-out rows never choose. In theory the **expected "
    "value** minimises squared error, the **median** absolute error and the **mean in log price** RMSLE, but a beam of "
    "8 digit paths is a truncated distribution, so it is measured, not assumed. **Greedy** reads the likeliest digits, "
    "which a digit-by-digit tokenizer collapses to round prices. The **ensemble** blends the model's price with the "
    "text baseline (TF-IDF ridge) in log price, its weight fitted on the validation rows.")


@reports_errors(2, at=0)
def predict(run_name, text, method=AUTO, progress=gr.Progress()):
    from trainer.tester import explain_price, method_name

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
    md = (f"**{show(answer['price'])}** by {method_name(used)} — {answer['reason']}.\n\n| run {run_name} | price |\n"
          "|---|---|\n" + "\n".join(rows))
    return md, charts.distribution_figure(answer["candidates"], answer["price"], METHOD_NAMES[used])


def create_predict_tab() -> dict:
    with gr.Tab("Predict") as tab:
        c = {"tab": tab, "run": run_picker(),
             "text": gr.Textbox(label="Product description", lines=4),
             "method": gr.Dropdown(list(CHOICES), value=AUTO, label="Price method"),
             "button": gr.Button("Predict price", variant="primary"), "result": gr.Markdown(),
             "chart": gr.Plot(label="What the model thinks: candidate prices")}
        gr.Markdown(METHOD_HELP)
    tab.select(lambda: run_choices(with_adapter=True), outputs=c["run"], api_visibility="private")
    c["button"].click(predict, [c["run"], c["text"], c["method"]], [c["result"], c["chart"]], api_name="predict",
                      concurrency_id="gpu", concurrency_limit=1)
    return c
