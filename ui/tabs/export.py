"""The Export tab: the adapter with a model card, a merged model folder, or a push to the Hugging Face Hub."""

from __future__ import annotations

import gradio as gr

from trainer.export import ExportError, merge, model_card, push, zip_merged
from trainer.models import ModelError
from trainer.runs import RunFolder

from ..access import may_control
from ..common import (PICK_FINISHED, adapter_zip, named_run, refused, reports_errors, run_choices, run_picker,
                      versioned_download)


@reports_errors(3, at=0)
def export_card(run_name, request: gr.Request = None):

    run, refusal = controllable_run(run_name, request, "write the model card of")
    if run is None:
        return refused(refusal), gr.skip(), None
    card = model_card(run.path)
    scatter = card.with_name("scatter.png")
    return (card_preview(card.read_text()), gr.DownloadButton(
        value=adapter_zip(run), visible=True, label=f"Download adapter + card, config and metrics of {run.name} (zip)"),
            str(scatter) if scatter.is_file() else None)


def card_preview(card: str) -> str:
    """The model card as the page shows it: its YAML front matter as YAML (Markdown would make it a heading), its
    scatter image beside it (a relative link the page cannot follow)."""
    front, body = "", card
    if card.startswith("---\n") and "\n---\n" in card[4:]:
        front, body = card[4:].split("\n---\n", 1)
        front = f"```yaml\n{front}\n```\n"
    return front + body.replace("![truth vs estimate](scatter.png)", "*(truth vs estimate: the image beside)*")


def controllable_run(run_name, request, verb) -> tuple[RunFolder | None, str]:
    """The finished run a control may act on, or why not."""
    run = named_run(run_name, with_adapter=True)
    if run is None:
        return None, PICK_FINISHED
    if not may_control(run, request):
        return None, f"Only the user who started this run (or an admin) may {verb} it."
    return run, ""


def export_download(run_name):
    """The picked run's adapter zip, offered as soon as the run is picked (the card goes in once it is written)."""
    run, merged = named_run(run_name, with_adapter=True), gr.DownloadButton(visible=False)  # Merge offers its own
    if run is None:
        return gr.DownloadButton(visible=False), merged
    return gr.DownloadButton(value=adapter_zip(run), visible=True,
                             label=f"Download adapter, config and metrics of {run.name} (zip)"), merged


def export_merge(run_name, request: gr.Request = None):

    run, refusal = controllable_run(run_name, request, "merge")
    if run is None:
        return refusal, gr.skip()
    try:
        out = merge(run.path)
    except (ExportError, ModelError) as exc:
        return f"**Cannot merge:** {exc}", gr.skip()
    saved = (f"Merged model saved on the server in `{run.name}/merged/` (safetensors): load it with "
             f"`AutoModelForCausalLM.from_pretrained(\"{out}\")`.")
    try:
        archive = versioned_download(run, "merged", [out], lambda target: zip_merged(out, target))
    except ExportError as exc:
        return f"{saved} No download: {exc}.", gr.DownloadButton(visible=False)
    size = archive.stat().st_size / 2**30
    return saved, gr.DownloadButton(value=str(archive), visible=True,
                                    label=f"Download merged model of {run.name} ({size:.1f} GB zip)")


def export_push(run_name, repo_id, token, private, request: gr.Request = None):

    run, refusal = controllable_run(run_name, request, "push")
    if run is None:
        return refusal
    try:
        url = push(run.path, (repo_id or "").strip(), (token or "").strip() or None, private=bool(private))
    except ExportError as exc:
        return f"**Cannot push:** {exc}"
    return f"Pushed to {url}"


def create_export_tab() -> dict:
    with gr.Tab("Export") as tab:
        gr.Markdown("Take a run out of PriceTune: its adapter with a model card (config, data, the Tester's "
                    "numbers and scatter; evaluate first for those), a merged model folder, or a push to the "
                    "Hugging Face Hub.")
        c = {"tab": tab, "run": run_picker()}
        with gr.Row():
            c["card"] = gr.Button("Write model card", variant="primary")
            c["merge"] = gr.Button("Merge adapter into the base model")
        with gr.Row():
            c["download"] = gr.DownloadButton("Download adapter (zip)", visible=False)
            c["merged"] = gr.DownloadButton("Download merged model (zip)", visible=False)
        c["scatter"] = gr.Image(label="Truth vs estimate (in the card)", type="filepath", interactive=False,
                                height=360)
        with gr.Row():
            c["repo"] = gr.Textbox(label="Hub repo (owner/name)")
            c["token"] = gr.Textbox(label="Hugging Face token (write)", type="password")
            c["private"] = gr.Checkbox(value=True, label="private")
            c["push"] = gr.Button("Push adapter to the Hub")
        c["result"] = gr.Markdown(elem_id="export-result")
    tab.select(lambda: run_choices(with_adapter=True), outputs=c["run"], api_visibility="private")
    c["card"].click(export_card, c["run"], [c["result"], c["download"], c["scatter"]], api_name="export_card")
    c["run"].change(export_download, c["run"], [c["download"], c["merged"]], api_name="export_download")
    c["merge"].click(export_merge, c["run"], [c["result"], c["merged"]], api_name="export_merge",
                     concurrency_id="gpu", concurrency_limit=1)
    c["push"].click(export_push, [c["run"], c["repo"], c["token"], c["private"]], c["result"], api_name="export_push")
    return c
