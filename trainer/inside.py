"""Look inside one training step: the lecture's forward pass, loss, backward pass and optimizer step, with the real
numbers of one example and a run's newest adapter weights.

It loads its own copy of the base model and adapter, so a run that is training (or finished) is never touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model

from .config import TrainConfig
from .data import Product, fit_max_length, tokenize_example
from .loss import IGNORE_INDEX, PriceCollator, price_loss
from .models import load_model, load_tokenizer
from .runs import RunFolder, checkpoint_problem


@dataclass
class PriceToken:
    """One token of the true price: the probability the model gave it, and its share of the loss."""

    token: str
    prob: float
    nll: float  # -log prob


@dataclass
class LoraMatrix:
    """One LoRA matrix: the gradient that reached it and how far the optimizer step moved it."""

    name: str
    shape: tuple[int, ...]
    grad_norm: float
    update_norm: float


@dataclass
class StepInside:
    """Everything the four-step panel shows, computed on one example."""

    source: str  # which weights: a checkpoint, the saved adapter, or a fresh LoRA (step 0)
    text: str
    price: float
    top_next: list[tuple[str, float]]  # forward: the likeliest tokens after "Price is $"
    price_tokens: list[PriceToken]  # loss: -log p of each true price token
    loss: float  # the training loss function's value on this example
    lora: list[LoraMatrix] = field(default_factory=list)  # backward and step, per LoRA matrix
    base_with_grad: int = 0  # base weight tensors that received a gradient (frozen: must be 0)
    base_tensors: int = 0
    lr: float = 0.0
    update_norm: float = 0.0  # of all LoRA weights together
    loss_after: float = math.nan


def newest_weights(run: RunFolder) -> tuple[Path | None, str]:
    """The run's newest readable adapter weights: the final adapter or the last complete checkpoint, whichever is
    newer; (None, ...) before the first save, when the LoRA is still as initialised (B = 0)."""
    found = []
    if run.has_adapter():
        found.append(((run.adapter_dir / "adapter_model.safetensors").stat().st_mtime, run.adapter_dir,
                      f"adapter/ (step {run.status().get('step', '?')})"))
    for folder in run.checkpoints():
        if checkpoint_problem(folder) is None:
            found.append(((folder / "adapter_model.safetensors").stat().st_mtime, folder, folder.name))
            break
    if not found:
        return None, "a fresh LoRA, as at step 0 (the run has saved no weights yet)"
    _, path, label = max(found, key=lambda f: f[0])
    return path, label


def _current_lr(run: RunFolder, config: TrainConfig) -> float:
    rows = [r for r in run.metrics() if r.get("lr") is not None]
    return float(rows[-1]["lr"]) if rows and rows[-1]["lr"] > 0 else config.learning_rate


def look_inside(run_path: str | Path, text: str, price: float, *, top_k: int = 10) -> StepInside:
    """Do one training step on (`text`, `price`) with a copy of the run's model and report each of its four parts."""

    run = RunFolder(Path(run_path))
    config = TrainConfig.from_yaml(run.config_file)
    tokenizer = load_tokenizer(config.model)
    tokenizer.padding_side = "right"
    base = load_model(config.model, config.quant, config.hub_kernels)
    weights, source = newest_weights(run)
    if weights is not None:
        model = PeftModel.from_pretrained(base, weights, is_trainable=True)
    else:
        model = get_peft_model(base, config.lora_config())
    # No dropout: the shown -log p, the loss and the loss after the step must be the same computation, repeatable.
    model.eval()
    device = next(p for p in model.parameters()).device

    max_length = (int(run.status().get("max_length") or 0)
                  or fit_max_length(tokenizer, [Product(text, price)], question=config.asked()))
    example = tokenize_example(tokenizer, text, price, max_length, config.asked())
    batch = {k: v.to(device) for k, v in PriceCollator(tokenizer, padding=True)([example]).items()}
    labels = batch.pop("labels")

    # 1. Forward pass, exactly as training does it: logits only at the columns that predict a price token.
    outputs = model(**batch)
    logits = outputs.logits[0].float()
    probs = logits.detach().softmax(-1)
    top = probs[0].topk(top_k)  # column 0 predicts the token after "Price is $"
    top_next = [(tokenizer.decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices)]

    # 2. Loss: the training loss function, and the per-token -log p it averages.
    loss = price_loss(outputs, labels)
    targets = labels[0, 1:]
    rows = [PriceToken(tokenizer.decode([int(t)]), float(probs[j, t]), -math.log(max(float(probs[j, t]), 1e-45)))
            for j, t in enumerate(targets.tolist()) if t != IGNORE_INDEX]

    # 3. Backward pass into the LoRA weights; the 4-bit (or frozen) base weights have requires_grad off.
    loss.backward()
    named = list(model.named_parameters())
    lora = [(n, p) for n, p in named if "lora_" in n]
    base_params = [p for n, p in named if "lora_" not in n]
    before = [p.detach().clone() for _, p in lora]

    # 4. Optimizer step: AdamW as the Trainer builds it (its defaults: betas 0.9/0.999, eps 1e-8, no weight decay).
    lr = _current_lr(run, config)
    torch.optim.AdamW([p for _, p in lora], lr=lr, weight_decay=0.0).step()
    matrices = [LoraMatrix(n.removeprefix("base_model.model."), tuple(p.shape),
                           float(p.grad.norm()) if p.grad is not None else 0.0, float((p.detach() - b).norm()))
                for (n, p), b in zip(lora, before)]
    with torch.no_grad():
        loss_after = float(price_loss(model(**batch), labels))

    return StepInside(
        source=source, text=text, price=price, top_next=top_next, price_tokens=rows, loss=float(loss.detach()),
        lora=matrices, base_with_grad=sum(p.grad is not None for p in base_params), base_tensors=len(base_params),
        lr=lr, update_norm=math.sqrt(sum(m.update_norm ** 2 for m in matrices)), loss_after=loss_after)
