"""Peak GPU memory of a training run, before any weight is loaded: the formula, term by term, and which GPUs hold it.

    total = base weights + LoRA (weights, gradients, AdamW) + kept activations + the largest passing tensor
    base weights   linear layers (lm_head excluded) × 0.5 B + NF4 double-quant scales (4-bit), × 1 B (8-bit), or
                   × 2 B (bf16); everything else (embeddings, lm_head, norms) × 4 B when PEFT's fp32 cast is on
                   (quantized runs with `fp32_norms`), else × 2 B; with the cast, autocast also keeps a bf16 copy of
                   the fp32 output layer (2 B × its weights)
    LoRA           trainable parameters × 16 B: fp32 weight 4, gradient 4, AdamW's two moments 8 (bitsandbytes'
                   paged AdamW on CUDA: outside torch's allocator, on the GPU all the same)
    activations    tokens (batch × max length) × layers × the bytes a layer keeps for backward (`layer_bytes`);
                   with gradient checkpointing, each layer's input (2 B × hidden) instead
    passing        the larger of the logits (PriceTune's price columns: ≤ 2 × 7 columns a row × vocabulary × 10 B;
                   a full-vocabulary loss such as TRL's: every token × vocabulary × 2 B) and, with checkpointing, one
                   layer recomputed; plus one dequantized weight (the largest linear × 2 B) on a quantized model

`layer_bytes` is calibrated on the H200 (bench/README.md): the bytes the frozen base keeps (norms, attention, MLP),
by hand, times ACTIVATION_SCALE for the dtype the norms hand on (PEFT's fp32 norms make every state after them fp32),
times LIGER_SCALE with Liger's kernels (its RMSNorm and SwiGLU keep less), plus each LoRA layer's own. The figure is
torch's peak allocation plus the paged optimizer; `fits` adds the CUDA context (CUDA_CONTEXT). Against the course's
8B shape (4-bit, r32 on q,k,v,o, batch 16 × 182) as measured there, tests/test_memory.py keeps every arm within 15%:
today's defaults without checkpointing 32.68 GiB, with it 7.18, TRL's SFTTrainer 7.02, Liger 27.80.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from .cost import HARDWARE_ENV
from .models import ModelError, estimate_adapter, meta_model, model_config

GiB = 2**30
ESTIMATE_LENGTH = 256
"""The max length estimated when the config leaves it to the data (0): a course product prompt is ~180 tokens."""
PRICE_COLUMNS = 7
"""Logit columns per row at most: a price is ≤ 6 tokens ("1,234.56" digit by digit) plus the end of text."""
CUDA_CONTEXT = 0.5
"""GiB the CUDA context and cuBLAS workspace take beside what torch allocates."""
ACTIVATION_SCALE = {"fp32": 1.376, "bf16": 0.633}
"""The kept states of the frozen base per token and layer, against `layer_bytes`' hand count: fitted on the H200's
8B arms without checkpointing (fp32: today's defaults, 274,100 B measured; bf16: with Liger and bf16 norms)."""
LIGER_SCALE = 0.7067
"""What Liger's fused RMSNorm and SwiGLU keep of the base's states (H200: 27.80 GiB with Liger against 32.68)."""

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
        return self.total + CUDA_CONTEXT * GiB <= capacity_gib * GiB

    def where(self) -> str:
        """Which of the common GPUs hold it, in words."""
        held = [name for name, gib in GPUS.items() if self.fits(gib)]
        short = [name for name in GPUS if name not in held]
        if not held:
            return f"more than any of {', '.join(GPUS)}"
        if not short:
            return f"fits every GPU listed, from the {held[0]} up"
        return f"fits the {held[0]} and larger; too big for the {', '.join(short)}"

    def describe(self) -> str:
        parts = ", ".join(f"{name} {value / GiB:.2f}" for name, value in self.terms.items())
        return (f"peak GPU memory ≈ {self.total / GiB:.1f} GiB ({parts} GiB) + {CUDA_CONTEXT:g} GiB CUDA context; "
                f"{self.where()}")


def layer_bytes(config, lora_inputs: list[int], rank: int, dropout: bool, fp32_states: bool = True,
                liger: bool = False) -> int:
    """Bytes one decoder layer keeps per token for the backward pass (frozen base weights).

    The base, by hand: the two RMSNorms' fp32 inputs (4 B × hidden each); the attention kernel's q, k, v and output
    (2 B each); the MLP's gate and up outputs and the SiLU output (2 B × intermediate each); scaled by
    ACTIVATION_SCALE (and LIGER_SCALE) as measured. Frozen linears keep nothing (no weight gradient). Per
    LoRA-targeted linear: its input cast to fp32 (4 B × its in-features), dropout's mask (1 B each) and the rank-sized
    A output (4 B × r)."""
    h, i = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    q = config.num_attention_heads * head_dim
    base = 2 * 4 * h + 2 * (q + 2 * kv + q) + 3 * 2 * i
    scale = ACTIVATION_SCALE["fp32" if fp32_states else "bf16"] * (LIGER_SCALE if liger else 1.0)
    lora = sum(4 * n + (n if dropout else 0) + 4 * rank for n in lora_inputs)
    return round(base * scale) + lora


def estimate_memory(config, quant: str, lora_params: int, target_modules: list[str], rank: int, batch: int,
                    max_length: int, *, dropout: bool = True, fp32_norms: bool = False,
                    gradient_checkpointing: bool = False, price_logits_only: bool = True,
                    liger: bool = False) -> MemoryEstimate:
    """The formula of this module for one model config (a transformers config) and training shape; the defaults are
    PriceTune's on a GPU but checkpointing, which depends on the model (config.model_defaults)."""

    if quant not in BYTES_PER_WEIGHT:
        raise ValueError(f"quant: must be one of {', '.join(BYTES_PER_WEIGHT)} (got {quant!r})")
    model = meta_model(config)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    linear = sum(m.in_features * m.out_features for n, m in linears.items() if not n.endswith("lm_head"))
    total = sum(p.numel() for p in model.parameters())
    fp32_cast = quant != "none" and fp32_norms
    output_layer = model.get_output_embeddings().weight.numel()
    # The in-features of every targeted linear in one layer (the first layer stands for all).
    first = model.model.layers[0]
    lora_inputs = [m.in_features for n, m in first.named_modules()
                   if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in target_modules]
    layers, length = config.num_hidden_layers, max_length or ESTIMATE_LENGTH
    tokens = batch * length
    one_layer = layer_bytes(config, lora_inputs, rank, dropout, fp32_states=fp32_cast, liger=liger)
    kept = tokens * layers * (2 * config.hidden_size if gradient_checkpointing else one_layer)
    if price_logits_only:
        logits = batch * min(length, 2 * PRICE_COLUMNS) * config.vocab_size * 10
    else:
        logits = tokens * config.vocab_size * 2
    largest = max(m.in_features * m.out_features for n, m in linears.items() if not n.endswith("lm_head"))
    passing = max(logits, tokens * one_layer if gradient_checkpointing else 0) + (largest * 2 if quant != "none" else 0)
    return MemoryEstimate({
        "base weights": linear * BYTES_PER_WEIGHT[quant] + (total - linear) * (4 if fp32_cast else 2)
        + (output_layer * 2 if fp32_cast else 0),
        "LoRA + AdamW": lora_params * 16,
        "activations": kept,
        "logits and one layer": passing,
    })


def config_memory(config, roots=None) -> MemoryEstimate:
    """estimate_memory for a TrainConfig: its model (with `roots`, local folders only under them), LoRA, shape and
    GPU settings."""

    architecture = model_config(config.model, roots)
    lora = estimate_adapter(architecture, config.lora_r, config.target_modules).trainable_params
    return estimate_memory(architecture, config.quant, lora, config.target_modules, config.lora_r,
                           config.batch_size, config.max_length, dropout=config.lora_dropout > 0,
                           fp32_norms=config.fp32_norms, gradient_checkpointing=config.gradient_checkpointing,
                           liger=config.liger_kernel)


def fit_warning(estimate: MemoryEstimate, gpu: str, capacity_gib: float) -> str:
    """A warning when the estimate exceeds this GPU's memory, else ""."""
    if estimate.fits(capacity_gib):
        return ""
    return (f"Estimated peak memory {estimate.total / GiB:.1f} GiB is more than this GPU ({gpu}, "
            f"{capacity_gib:.1f} GiB) holds ({estimate.where()}): lower the batch size or the max length (raise "
            "gradient accumulation to keep the effective batch), turn on gradient checkpointing, or load the model "
            "in 4-bit.")


SPACE_GPUS: dict[str, float] = {"t4-small": 14.6, "t4-medium": 14.6, "l4x1": 22.0, "l4x4": 22.0, "a10g-small": 22.0,
                                "a10g-large": 22.0, "l40sx1": 44.4, "l40sx4": 44.4}
"""GiB of one GPU of a Spaces hardware flavour (one training process uses one GPU)."""

def detected_gpu() -> tuple[str, float] | None:
    """(name, GiB) of the GPU training would use: the one torch sees, else the Spaces flavour PRICETUNE_HARDWARE
    states (planning a Space's runs from elsewhere); None without either."""

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.name, props.total_memory / GiB
    flavour = os.environ.get(HARDWARE_ENV, "").strip()
    if flavour in SPACE_GPUS:
        return f"{flavour}, as {HARDWARE_ENV} states", SPACE_GPUS[flavour]
    return None


def gpu_warning(config, roots=None) -> str:
    """fit_warning for a TrainConfig on the GPU detected here ("" without a GPU or an inspectable model)."""

    gpu = detected_gpu()
    if gpu is None:
        return ""
    try:
        estimate = config_memory(config, roots)
    except (ModelError, ValueError):
        return ""
    return fit_warning(estimate, *gpu)
