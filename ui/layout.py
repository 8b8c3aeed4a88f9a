"""build_app(): the header, one tab per module of ui/tabs, and the live view's timer wired across them."""

from __future__ import annotations

import gradio as gr

from . import live
from .tabs import evaluate, export, inside, predict, runs, train


def build_app() -> gr.Blocks:
    # Gradio copies every download and upload into its cache: files older than two hours go, checked hourly (a run
    # keeps its own copy of the data it trained on).
    with gr.Blocks(title="PriceTune", delete_cache=(3600, 7200)) as app:
        gr.Markdown("# PriceTune\nFine-tune a language model with QLoRA to predict product prices.")
        training = train.create_train_tab()
        predict.create_predict_tab()
        evaluate.create_evaluate_tab()
        runs.create_runs_tab(training)
        inside.create_inside_tab()
        export.create_export_tab()
        live.wire_live(training["live"], training["resume"], training["message"])
    return app
