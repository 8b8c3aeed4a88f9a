"""Peak GPU memory of a training run, before any weight is loaded: the formula, term by term, and which GPUs hold it.

    total = base weights + LoRA (weights, gradients, AdamW) + activations + price logits + framework
    base weights   linear layers (lm_head excluded) × 0.5 B + NF4 double-quant scales (4-bit), × 1 B (8-bit), or
                   × 2 B (bf16); everything else (embeddings, lm_head, norms) × 4 B when PEFT's fp32 cast is on
                   (quantized runs, `fp32_norms`), else × 2 B
    LoRA           trainable parameters × 16 B: fp32 weight 4, gradient 4, AdamW's two moments 8
    activations    tokens (batch × max length) × layers × the bytes one layer keeps for backward (`layer_bytes`);
                   with gradient checkpointing: each layer's input (2 B × hidden) plus one layer recomputed
    price logits   the positions the loss is computed at × vocabulary × 10 B (bf16 logits 2, their fp32 copy 4,
                   log-softmax 4): PriceTune computes them at the price columns only (≤ batch × 7 columns per row);
                   a full-vocabulary loss (TRL's, the course's notebook) at every token
    framework      1 GiB (CUDA context, cuBLAS workspace) + 10% of the activations and logits (the caching
                   allocator's fragmentation)

Against two published figures:
- the course's notebook: Llama 3.1 8B, 4-bit, LoRA r32 on q,k,v,o, batch 16, length 182, full-vocabulary loss,
  "about 38 GB" on an A100 40 GB: this formula 36.1 GB (95%; tests/test_memory.py keeps it within 10%);
- torchtune's README: Llama 3.1 8B QLoRA (r8 on q,v,o and the MLP, bf16 embeddings), batch 2 × 2048 packed,
  activation checkpointing, 7.4 GiB: 14.3 GiB here. Weights, LoRA and activations alone are 7.7 GiB; the rest is
  the logits (4.9 GiB here; torchtune computes its loss in chunks) and the framework term (its figure is memory
  allocated by tensors, without the CUDA context). So: close for the course's recipe, an upper bound beside
  a chunked loss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .cost import HARDWARE_ENV
from .models import meta_model

GiB = 2**30
ESTIMATE_LENGTH = 256
"""The max length estimated when the config leaves it to the data (0): a course product prompt is ~180 tokens."""
PRICE_COLUMNS = 7
"""Logit columns per row at most: a price is ≤ 6 tokens ("1,234.56" digit by digit) plus the end of text."""

BYTES_PER_WEIGHT = {"4bit": 0.5 + 1 / 64 + 4 / (64 * 256), "8bit": 1.0, "none": 2.0}
"""A frozen linear weight's bytes: NF4 with double quantization (an 8-bit scale per 64 weights, an fp32 one per 256
scales), LLM.int8, bf16."""

# What torch.cuda reports as total memory for the GPUs users rent most (bytes / 2**30), largest last.
GPUS: dict[str, float] = {"T4 16 GB": 14.6, "L4 24 GB": 22.0, "A10G 24 GB": 22.0, "A100 40 GB": 39.4,
                          "A100 80 GB": 79.1, "H100 80 GB": 79.1}


@dataclass
class MemoryEstimate:
    """Peak training memory in bytes, by term (`terms` keeps the formula's order)."""

    terms: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.terms.values())

    def fits(self, capacity_gib: float) -> bool:
        return self.total <= capacity_gib * GiB

    def describe(self) -> str:
        parts = ", ".join(f"{name} {value / GiB:.2f}" for name, value in self.terms.items())
        held = [name for name, gib in GPUS.items() if self.fits(gib)]
        short = [name for name in GPUS if name not in held]
        if not held:
            where = f"more than any of {', '.join(GPUS)}"
        elif not short:
            where = f"fits every GPU listed, from the {held[0]} up"
        else:
            where = f"fits the {held[0]} and larger; too big for the {', '.join(short)}"
        return f"peak GPU memory ≈ {self.total / GiB:.1f} GiB ({parts} GiB); {where}"


def layer_bytes(config, lora_inputs: list[int], rank: int, dropout: bool) -> int:
    """Bytes one decoder layer keeps per token for the backward pass (bf16 compute, frozen base weights).

    Frozen linears keep nothing (no weight gradient, so no input). Kept: the two RMSNorms' fp32 inputs (4 B × hidden
    each); the attention kernel's q, k, v and output (2 B each); the MLP's gate and up outputs and the SiLU output
    (2 B × intermediate each); per LoRA-targeted linear its input cast to fp32 (4 B × its in-features), dropout's mask
    (1 B each) and the rank-sized A output (4 B × r)."""
    h, i = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    q = config.num_attention_heads * head_dim
    base = 2 * 4 * h + 2 * (q + 2 * kv + q) + 3 * 2 * i
    lora = sum(4 * n + (n if dropout else 0) + 4 * rank for n in lora_inputs)
    return base + lora


def estimate_memory(config, quant: str, lora_params: int, target_modules: list[str], rank: int, batch: int,
                    max_length: int, *, dropout: bool = True, fp32_norms: bool = True,
                    gradient_checkpointing: bool = False, price_logits_only: bool = True,
                    liger: bool = False) -> MemoryEstimate:
    """The formula of this module for one model config (a transformers config) and training shape."""
    import torch

    model = meta_model(config)
    linear = sum(m.in_features * m.out_features for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head"))
    total = sum(p.numel() for p in model.parameters())
    if quant not in BYTES_PER_WEIGHT:
        raise ValueError(f"quant: must be one of {', '.join(BYTES_PER_WEIGHT)} (got {quant!r})")
    per_weight = BYTES_PER_WEIGHT[quant]
    other = 4 if quant != "none" and fp32_norms else 2
    layers = config.num_hidden_layers
    # The in-features of every targeted linear in one layer (the first layer stands for all).
    first = model.model.layers[0]
    lora_inputs = [m.in_features for n, m in first.named_modules()
                   if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in target_modules]
    length = max_length or ESTIMATE_LENGTH
    tokens = batch * length
    one_layer = layer_bytes(config, lora_inputs, rank, dropout)
    if gradient_checkpointing:
        activations = tokens * (layers * 2 * config.hidden_size + one_layer)
    else:
        activations = tokens * layers * one_layer
    positions = batch * min(length, batch * PRICE_COLUMNS) if price_logits_only else tokens
    logits = positions * config.vocab_size * 10
    return MemoryEstimate({
        "base weights": linear * per_weight + (total - linear) * other,
        "LoRA + AdamW": lora_params * 16,
        "activations": activations,
        "price logits" if price_logits_only else "logits": logits,
        "framework": GiB + 0.1 * (activations + logits),
    })


def fit_warning(estimate: MemoryEstimate, gpu: str, capacity_gib: float) -> str:
    """A warning when the estimate exceeds this GPU's memory, else ""."""
    if estimate.fits(capacity_gib):
        return ""
    return (f"Estimated peak memory {estimate.total / GiB:.1f} GiB is more than this GPU ({gpu}, "
            f"{capacity_gib:.1f} GiB) holds: lower the batch size or the max length (raise gradient accumulation "
            "to keep the effective batch), turn on gradient checkpointing, or load the model in 4-bit.")


SPACE_GPUS: dict[str, float] = {"t4-small": 14.6, "t4-medium": 14.6, "l4x1": 22.0, "l4x4": 22.0, "a10g-small": 22.0,
                                "a10g-large": 22.0, "l40sx1": 44.4, "l40sx4": 44.4}
"""GiB of one GPU of a Spaces hardware flavour (one training process uses one GPU)."""


def detected_gpu() -> tuple[str, float] | None:
    """(name, GiB) of the GPU training would use: the one torch sees, else the Spaces flavour PRICETUNE_HARDWARE
    states (planning a Space's runs from elsewhere); None without either."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.name, props.total_memory / GiB
    flavour = os.environ.get(HARDWARE_ENV, "").strip()
    if flavour in SPACE_GPUS:
        return f"{flavour}, as {HARDWARE_ENV} states", SPACE_GPUS[flavour]
    return None


def gpu_warning(config, roots=None) -> str:
    """fit_warning for a TrainConfig on the GPU detected here ("" without a GPU or an inspectable model)."""
    from .models import ModelError, estimate_adapter, model_config

    gpu = detected_gpu()
    if gpu is None:
        return ""
    try:
        architecture = model_config(config.model, roots)
        lora = estimate_adapter(architecture, config.lora_r, config.target_modules).trainable_params
    except (ModelError, ValueError):
        return ""
    estimate = estimate_memory(architecture, config.quant, lora, config.target_modules, config.lora_r,
                               config.batch_size, config.max_length, dropout=config.lora_dropout > 0,
                               fp32_norms=config.fp32_norms, gradient_checkpointing=config.gradient_checkpointing)
    return fit_warning(estimate, *gpu)
