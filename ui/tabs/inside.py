"""The Inside-a-step tab: one training step of the lecture on one example, on a copy of a run's model."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from trainer.data import DataError, parse_price
from trainer.inside import look_inside
from trainer.models import ModelError

from ..common import busy_refusal, named_run, refused, reports_errors, run_choices, run_picker


@reports_errors(4, at=0)
def inside_step(run_name, text, price, progress=gr.Progress()):
    """The four-step panel: one training step on one example, on a copy of the run's model."""

    run = named_run(run_name)
    if run is None:
        return "Pick a run.", None, None, None
    try:
        price = parse_price(price)
    except DataError as exc:
        return f"**Price:** {exc}", None, None, None
    if not text or not text.strip():
        return "Type a product description (or pick a training example).", None, None, None
    busy = busy_refusal("A look inside a step")
    if busy:
        return refused(busy), None, None, None
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


@reports_errors(2, at=0)
def example_of(run_name, index):
    """The index-th training example of a run (its own train split), for the four-step panel."""
    run = named_run(run_name)
    if run is None:
        return gr.skip(), gr.skip()
    products = run.split()
    if not products:
        return gr.skip(), gr.skip()
    product = products[int(index or 0) % len(products)]
    return product.text, f"{product.price:.2f}"


def create_inside_tab() -> dict:
    with gr.Tab("Inside a step") as tab:
        gr.Markdown("One training step of the lecture, on one example, with real numbers from a run's newest "
                    "adapter weights: forward pass, loss, backward pass, optimizer step. It runs on a copy of "
                    "the model; the run itself is not changed.")
        c = {"tab": tab}
        with gr.Row():
            c["run"] = run_picker()
            c["index"] = gr.Number(value=0, label="training example #", precision=0)
            c["pick"] = gr.Button("Take this training example")
        c["text"] = gr.Textbox(label="Product description", lines=3)
        c["price"] = gr.Textbox(label="True price ($)")
        c["button"] = gr.Button("Run one step", variant="primary")
        c["summary"] = gr.Markdown(elem_id="inside-step")
        c["tokens"] = gr.Dataframe(pd.DataFrame(columns=TOKEN_COLUMNS), label="Loss: the true price tokens",
                                   interactive=False)
        c["kinds"] = gr.Dataframe(pd.DataFrame(columns=KIND_COLUMNS), label="Backward and step, per module kind",
                                  interactive=False)
        with gr.Accordion("Every LoRA matrix", open=False):
            c["all"] = gr.Dataframe(pd.DataFrame(columns=MATRIX_COLUMNS), interactive=False)
    tab.select(run_choices, outputs=c["run"], api_visibility="private")
    c["pick"].click(example_of, [c["run"], c["index"]], [c["text"], c["price"]], api_name="training_example")
    c["button"].click(inside_step, [c["run"], c["text"], c["price"]], [c["summary"], c["tokens"], c["kinds"], c["all"]],
                      api_name="inside_step", concurrency_id="gpu", concurrency_limit=1)
    return c
