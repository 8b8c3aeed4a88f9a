"""Getting a run out of PriceTune: a merged model folder, a model card for the adapter, and a push to the Hub."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from peft import PeftModel
from transformers import AutoTokenizer

from .config import TrainConfig
from .models import first_line, hub_id, load_model
from .pricing.hidden_state import NEIGHBOURS_FILE
from .metrics import hit_color, summary_line
from .runs import RunFolder, folder_files, write_atomic, zip_files
from .tester import one_line, summary_table, verdict

# matplotlib and huggingface_hub are imported where a card's chart or a push needs them: seconds, for one button.


class ExportError(ValueError):
    """An export that cannot be done, with what to do instead."""

QUANTIZED_MERGE = (
    "Run {name} trained its adapter on a {quant} base model. Merging into 4/8-bit weights would round the merged "
    "weights again and lose what the adapter learned, so PriceTune merges only into full-precision bases. Use the "
    "adapter with the {quant} base as trained (Predict tab, `python -m trainer predict`), or retrain with quant "
    "none if you need one merged model folder.")


def _run(run_path) -> tuple[RunFolder, TrainConfig]:
    run = RunFolder(Path(run_path))
    if not run.config_file.is_file():
        raise ExportError(f"{run_path} is not a run folder (no config.yaml)")
    if not run.has_adapter():
        raise ExportError(f"run {run.name} has no saved adapter yet")
    return run, TrainConfig.from_yaml(run.config_file)


def merge(run_path, out: str | Path | None = None) -> Path:
    """Fold the run's LoRA adapter into its base model; a plain safetensors folder for from_pretrained."""

    run, config = _run(run_path)
    if config.quant != "none":
        raise ExportError(QUANTIZED_MERGE.format(name=run.name, quant=config.quant))
    out = Path(out) if out else run.path / "merged"
    base = load_model(config.model, "none", config.hub_kernels)
    model = PeftModel.from_pretrained(base, run.adapter_dir).merge_and_unload()
    model.config.use_cache = True  # training switched the cache off; generation wants it back
    # Written beside the target and renamed in, so a crash never leaves a half-written model where one is expected.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(run.adapter_dir).save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


MAX_MERGED_DOWNLOAD = 4 * 2**30
"""The largest merged model offered as a browser download: the demo's is 0.5 GB; a 3B model's (12 GB in fp32) is read
from the server's disk instead."""

def zip_merged(folder: Path, target: Path) -> Path:
    """The merged model folder as one zip at `target` (stored, not deflated: safetensors barely compress), refused
    over MAX_MERGED_DOWNLOAD."""
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    if size > MAX_MERGED_DOWNLOAD:
        raise ExportError(f"the merged model is {size / 2**30:.1f} GB, over the {MAX_MERGED_DOWNLOAD / 2**30:.0f} GB "
                          f"a browser download is offered for; copy {folder} from the server instead")
    return zip_files(target, folder_files(folder), zipfile.ZIP_STORED)


def scatter_png(items: list[dict], path: Path, title: str) -> None:
    """The course's scatter (truth vs guess, green/orange/red, diagonal) as a static image for the card."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt


    truths = [i["truth"] for i in items]
    guesses = [i["guess"] or 0.0 for i in items]
    colours = [hit_color(i["guess"], i["truth"]) for i in items]
    top = max(truths + guesses + [1.0])
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    ax.scatter(truths, guesses, s=8, c=colours)
    ax.plot([0, top], [0, top], color="deepskyblue", linewidth=1)
    ax.set(xlabel="Ground truth ($)", ylabel="Model estimate ($)", xlim=(0, top), ylim=(0, top), title=title)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def model_card(run_path) -> Path:
    """Write README.md (and scatter.png when the run was evaluated) into the run's adapter folder."""

    run, config = _run(run_path)
    status = run.status()
    evaluation = run.evaluation()
    base = hub_id(config.model)
    lines = [
        "---", *([f"base_model: {base}"] if base else []), "library_name: peft",
        "tags: [pricetune, lora, price-prediction]", "---", "", f"# {run.name}: a PriceTune price-prediction adapter", "",
        f"A LoRA adapter for `{base or config.model}` that answers the prompt its run asked (`{config.asked()}` … "
        "`Price is $`) with a price. Trained with PriceTune.", "",
        "## Data", "", status.get("data_summary") or f"source: {config.data}", "",
        "## Hyperparameters", "", "| field | value |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in vars(config).items() if k not in ("name", "data")],
        f"| steps trained | {status.get('step')} |", "",
        "## Evaluation (the course's Tester)", "",
    ]
    if evaluation:
        lines += [verdict(evaluation), "", f"Run {one_line(evaluation)}", "",
                  "| model | error $ | RMSLE | hits % | MSE | r² | unparseable |", "|---|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join("—" if v is None else str(v) for v in row) + " |"
                  for row in summary_table(evaluation)]
        scatter = run.adapter_dir / "scatter.png"
        # Redrawn only for a newer evaluation: an unchanged card leaves the adapter folder (and its zip) as it was.
        if not scatter.is_file() or scatter.stat().st_mtime < run.eval_file.stat().st_mtime:
            scatter_png(evaluation.items, scatter, summary_line(evaluation.metrics))
        lines += ["", "![truth vs estimate](scatter.png)"]
    else:
        lines.append(f"Not evaluated yet: `python -m trainer eval --run {run.path}` and export again.")
    card, text = run.adapter_dir / "README.md", "\n".join(lines) + "\n"
    if not card.is_file() or card.read_text() != text:
        write_atomic(card, text)
    return card


def push(run_path, repo_id: str, token: str | None, private: bool = True) -> str:
    """Upload the adapter folder (with its model card) to a Hub model repo; private unless asked otherwise. The price
    neighbours' file stays behind: it holds the training rows' prices."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled


    run, _ = _run(run_path)
    if not repo_id or repo_id.count("/") != 1:
        raise ExportError(f"repo id must look like owner/name (got {repo_id!r})")
    model_card(run.path)
    api = HfApi(token=token or None)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(repo_id=repo_id, folder_path=run.adapter_dir, repo_type="model",
                                   commit_message=f"PriceTune adapter {run.name}", ignore_patterns=[NEIGHBOURS_FILE])
    except OfflineModeIsEnabled as exc:
        raise ExportError("Cannot push: this machine is offline (HF_HUB_OFFLINE is set). Download the adapter zip "
                          "and upload it from a machine with internet.") from exc
    except HfHubHTTPError as exc:
        raise ExportError(f"The Hub refused the push to {repo_id}: {first_line(exc)}. Check the token has write "
                          "access.") from exc
    except Exception as exc:  # DNS failure, refused connection, timeout: the HTTP client's own error types
        raise ExportError(f"Cannot reach the Hugging Face Hub to push {repo_id}: "
                          f"{type(exc).__name__}: {first_line(exc)}") from exc
    return getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo_id}"
