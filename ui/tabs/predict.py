"""The Predict tab: one description in, the fine-tuned model's price (expected value), greedy and base beside it."""

from __future__ import annotations

import gradio as gr

from trainer import charts
from trainer.models import ModelError

from ..common import PICK_FINISHED, named_run, refused, reports_errors, run_choices, run_picker


@reports_errors(2, at=0)
def predict(run_name, text):
    from trainer.evaluate import expected_price
    from trainer.inference import predictor_for

    run = named_run(run_name, with_adapter=True)
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


def create_predict_tab() -> dict:
    with gr.Tab("Predict") as tab:
        c = {"tab": tab, "run": run_picker(),
             "text": gr.Textbox(label="Product description", lines=4),
             "button": gr.Button("Predict price", variant="primary"), "result": gr.Markdown(),
             "chart": gr.Plot(label="What the model thinks: candidate prices")}
    tab.select(lambda: run_choices(with_adapter=True), outputs=c["run"], api_visibility="private")
    c["button"].click(predict, [c["run"], c["text"]], [c["result"], c["chart"]], api_name="predict",
                      concurrency_id="gpu", concurrency_limit=1)
    return c
