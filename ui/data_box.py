"""The "1 · Data" box of the Train tab: the sample, an upload, the column mapping, the preview and histograms."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import gradio as gr
import pandas as pd

from trainer import charts
from trainer.config import TrainConfig
from trainer.data import (UPLOAD_SUFFIXES, DataError, example_lengths, fit_max_length, load_products,
                          make_sample_products, read_columns, split_run)
from trainer.models import DEMO, ModelError, load_tokenizer

from .common import refused, reports_errors

DEFAULTS = TrainConfig()
PREVIEW_ROWS = 8
PREVIEW_COLUMNS = ["price", "text"]  # the price first: a long text column would push it out of view


@reports_errors(5, at=1)
def use_sample():
    products = make_sample_products()
    return "sample", *describe_products(products, "**Synthetic sample data** (made by PriceTune's own seeded "
                                                   "generator; prices depend on category, brand tier, size and "
                                                   "material).")


@reports_errors(7, at=1)
def use_upload(file):
    if file is None:
        return (gr.skip(),) * 7
    return read_upload(file, None, None)


@reports_errors(7, at=1)
def remap(file, text_columns, price_column):
    """The column pickers changed: read the same uploaded file again with the chosen mapping."""
    if not file:
        return (gr.skip(),) * 7
    return read_upload(file, list(text_columns or []) or None, price_column or None)


def read_upload(file, text_columns, price_column):
    # `file` is the temp path Gradio saved the upload under: the name the user gave it is shown, never used as a path.
    # Gradio hands it over as a str subclass, which YAML (config.yaml) cannot write: keep a plain str.
    file = str(file)
    try:
        products, report = load_products(file, text_column=text_columns, price_column=price_column)
    except DataError as exc:
        # Keep offering the columns, so a file whose price column was not found can still be mapped by hand.
        columns = exc.report.columns if exc.report else read_columns(file)
        mapping = {"columns": columns, "text": exc.report.text_columns if exc.report else list(text_columns or []),
                   "price": exc.report.price_column if exc.report else price_column or ""}
        return ("", refused(f"**Cannot use this file:** {exc}"), pd.DataFrame(columns=PREVIEW_COLUMNS), None, None,
                file, mapping)
    mapping = {"columns": report.columns, "text": report.text_columns, "price": report.price_column}
    described = describe_products(products, f"**Uploaded file** `{Path(file).name}`\n\n{report.summary()}")
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


def describe_products(products, header):
    train, validation, test = split_run(products, DEFAULTS.test_size, DEFAULTS.validation_size, DEFAULTS.split_seed)
    info = (f"{header}\n\n**{len(products)} products**: {len(train)} for training, {len(validation)} for validation "
            f"(not trained on: the live $ error, and where the price method is chosen), {len(test)} held out "
            f"(seeded split, seed {DEFAULTS.split_seed}; only for the final evaluation).")
    preview = [[round(p.price, 2), p.text[:160]] for p in products[:PREVIEW_ROWS]]
    return (info, gr.Dataframe(value=preview, headers=PREVIEW_COLUMNS,
                               label=f"First {len(preview)} of {len(products):,} rows"),
            charts.price_histogram([p.price for p in products]), token_lengths(products))


@functools.lru_cache(maxsize=1)
def demo_tokenizer():

    return load_tokenizer(DEMO)


CHART_ROWS = 4_000
"""Rows tokenized for the token-length chart: enough for a histogram and its cut-off, seconds on any upload."""

def token_lengths(products):
    """Tokens per example with the demo tokenizer on a seeded sample of the rows, and the max length training would
    pick (training sizes it from every row)."""
    shown = random.Random(0).sample(products, CHART_ROWS) if len(products) > CHART_ROWS else products
    try:
        tokenizer = demo_tokenizer()
        lengths, cutoff = example_lengths(tokenizer, shown), fit_max_length(tokenizer, shown)
        return charts.token_length_figure(lengths, cutoff, of_rows=len(products))
    except (ModelError, ValueError) as exc:  # no tokenizer here: the data is still usable, only the chart is missing
        return charts.empty_figure("Tokens per example", f"Cannot count tokens: {exc}")


def create_data_box() -> dict:
    """The data box's components, its events wired; "path" holds the data the form trains on."""
    gr.Markdown("### 1 · Data")
    c = {"path": gr.State("")}
    with gr.Row():
        c["sample"] = gr.Button("Use sample data (synthetic)")
    c["upload"] = gr.File(label="…or upload CSV, TSV, JSON, JSONL or Parquet with a text and a price column",
                          file_types=UPLOAD_SUFFIXES, type="filepath", elem_id="data-upload")
    with gr.Row():
        c["text_columns"] = gr.Dropdown(label="Text column(s), joined in this order", multiselect=True, choices=[],
                                        visible=False)
        c["price_column"] = gr.Dropdown(label="Price column", choices=[], visible=False)
    c["upload_path"] = gr.State("")  # Gradio's temp path of the last upload, kept server-side
    c["mapping"] = gr.State(None)  # {"columns", "text", "price"} of the last upload
    c["info"] = gr.Markdown()
    c["preview"] = gr.Dataframe(pd.DataFrame(columns=PREVIEW_COLUMNS), label="First rows", interactive=False,
                                wrap=True, column_widths=["15%", "85%"])
    with gr.Row():
        c["prices"] = gr.Plot(label="Prices")
        c["tokens"] = gr.Plot(label="Tokens per example (demo tokenizer)")

    pickers = [c["text_columns"], c["price_column"]]
    c["sample"].click(use_sample, outputs=[c["path"], c["info"], c["preview"], c["prices"], c["tokens"]],
                      api_name="use_sample")
    outputs = [c["path"], c["info"], c["preview"], c["prices"], c["tokens"], c["upload_path"], c["mapping"]]
    c["upload"].upload(use_upload, inputs=c["upload"], outputs=outputs, api_name="upload").then(
        show_mapping, c["mapping"], pickers, api_visibility="private")
    c["sample"].click(hide_mapping, outputs=pickers, api_visibility="private")
    for picker in pickers:
        picker.input(remap, [c["upload_path"], *pickers], outputs, api_visibility="private")
    return c
