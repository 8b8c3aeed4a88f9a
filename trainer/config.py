"""TrainConfig: every knob of a run, its default, its validation, and its YAML form."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import yaml
from peft import LoraConfig

from .data.prompt import COURSE_2024_QUESTION, COURSE_QUESTION
from .pricing import PROBE_METHODS, RETIRED
from .trackers import Tracker

COURSE_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
ALL_LINEAR = COURSE_TARGETS + ["gate_proj", "up_proj", "down_proj"]
DEMO = "demo"
RUN_DATA = "run:"
"""`data: run:NAME` trains on the train/held-out split that run NAME saved."""
Quantization = Literal["4bit", "8bit", "none"]
QUANTIZATIONS = typing.get_args(Quantization)
Schedule = Literal["cosine", "linear", "constant", "constant_with_warmup"]
Precision = Literal["auto", "bf16", "fp32"]


class ConfigError(ValueError):
    """One or more fields out of range; the message names each field."""

def on_gpu() -> bool:
    """Whether training here runs on a CUDA GPU: the GPU defaults below (bench/README.md, the GPU check) apply."""
    return torch.cuda.is_available()


def liger_usable() -> bool:
    """Whether Liger's kernels can run here: a CUDA GPU and the liger-kernel package."""

    return on_gpu() and importlib.util.find_spec("liger_kernel") is not None


def _default_quant() -> str:
    # 4-bit NF4 is the course's choice on a GPU; on a CPU it only adds dequantization work to every step.
    return "4bit" if on_gpu() else "none"


def model_defaults(model: str) -> dict:
    """The defaults that depend on the base model.

    The dataclass defaults are the demo model's: 135M parameters that must learn prices within 30 CPU-minutes
    learn them with a higher rate and LoRA on every projection (bench/quality.py measured it). Any other model,
    such as the course's Llama 3.1 8B on a GPU, starts from the course-style settings instead.
    """
    on = gpu_settings(model) if on_gpu() else {}
    if model == DEMO:
        return {"learning_rate": 1e-3, "target_modules": list(ALL_LINEAR), **on}
    return {"learning_rate": 3e-4, "target_modules": list(COURSE_TARGETS), **on}


def gpu_settings(model: str) -> dict:
    """The settings that depend on the model on a GPU (bench/README.md, measured on an H200 with the course's 8B
    shape): a larger model checkpoints its activations and compiles its layers, 7.2 GiB instead of 32.7 at 1.63x the
    speed of checkpointing alone, so it fits the T4 and L4 Spaces. The demo's activations are small enough without;
    compiling it was not measured."""
    larger = model != DEMO
    return {"gradient_checkpointing": larger, "compile_layers": larger}


def gpu_defaults_line(model: str) -> str:
    """PriceTune's defaults on a GPU for `model`, in words (the form's estimate and `trainer estimate` show it)."""
    on = gpu_settings(model)
    return ("On a GPU PriceTune defaults to 4-bit with norms in bf16 (`fp32_norms` off)"
            + (", gradient checkpointing and compiled layers (`compile_layers`)" if on["gradient_checkpointing"]
               else ", without checkpointing or compiled layers (a small model)")
            + "; hub kernels off.")


def native_bf16() -> bool:
    """Whether this machine computes bf16 in hardware: a bf16-capable GPU, or a CPU with AVX512-BF16 or AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: emulated bf16 would be slower than fp32
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as the run's config.yaml."""

    name: str = ""
    """Run folder name under the runs folder; empty picks a time-stamped one."""
    data: str = "sample"
    """'sample' (built-in products), 'run:NAME' (that run's split), a CSV/TSV/JSON/JSONL/Parquet file, or a dataset."""
    data_name: str = ""
    """How the run folder names a data file instead of its path (an upload's own file name); empty: the path."""
    text_column: str = ""
    """Column holding the product text; empty detects text/prompt/description/title."""
    price_column: str = ""
    """Column holding the price; empty detects 'price'."""
    test_size: float = 0.1
    """Held-out share (<1) or count (>=1) of products, never trained on."""
    split_seed: int = 42
    """Seed of the train/test shuffle, so the held-out rows are the same every run."""
    validation_size: float = 0.1
    """Share (<1) or count (>=1) of the training split not trained on: the probe, and where the price method is chosen."""
    question: str = ""
    """The question every prompt asks; empty: the one the data's prompts ask, else the current course's (recorded)."""
    model: str = "demo"
    """'demo' (SmolLM2-135M-Instruct, built in), a Hugging Face model id, or a local model folder."""
    quant: Quantization = field(default_factory=_default_quant)
    """Base-model quantization: 4bit (NF4, double quant), 8bit, or none."""
    fp32_norms: bool = field(default_factory=lambda: not on_gpu())
    """With 4/8-bit, cast norms and embeddings to fp32 (PEFT's prepare_model_for_kbit_training); off on a GPU."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass: far less GPU memory, slower steps (model_defaults)."""
    lora_r: int = 16
    """LoRA rank r: width of the A/B matrices."""
    lora_alpha: int = 32
    """LoRA alpha: the update is scaled by alpha / r."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input during training."""
    target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    """Linear layers that get LoRA adapters (other models than the demo default to q,k,v,o: model_defaults)."""
    learning_rate: float = 1e-3
    """Peak AdamW learning rate (other models than the demo default to 3e-4: model_defaults)."""
    lr_scheduler: Schedule = "cosine"
    """Learning-rate schedule after warm-up."""
    warmup_ratio: float = 0.03
    """Share of the steps spent warming the learning rate up from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA weights."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this norm (0: no clipping)."""
    epochs: float = 1.0
    """Passes over the training split (used when max_steps is 0)."""
    max_steps: int = 250
    """Optimizer steps to train; 0 trains for `epochs` instead."""
    batch_size: int = 8
    """Examples per device per forward pass."""
    grad_accum: int = 1
    """Forward passes accumulated into one optimizer step."""
    max_length: int = 0
    """Max tokens of prompt + price; 0 sizes it from the data (longest 5% of texts get cut, never the price)."""
    # One probe of 50 items costs 3.6 demo-model steps on a CPU (44 vs 12 s): every 20 steps it took a sixth of a run.
    sample_every: int = 50
    """Price the probe set (validation $ error and sample predictions) every this many steps; 0: only at start and end."""
    probe_size: int = 50
    """Validation items priced at each sample point to measure $ error; the first num_samples are shown."""
    probe_method: str = "expected"
    """How the probe prices items: expected (the mean of a small beam over digits) or greedy."""
    num_samples: int = 8
    """How many of the probe items the sample-predictions table shows."""
    # Held-out $ error of the default run's head by rows fitted on: 400 → 32.53, 800 → 31.90, 1,447 → 31.17; a row
    # costs one forward pass (~0.5 s on a 2-core CPU with the demo model), so 1,000 is ~8 minutes there.
    head_rows: int = 1000
    """Training rows the price head is fitted on once training ends (one forward pass each)."""
    # On the appliances split 3 had the lowest validation error of 0, 0.3, 1 and 3 on seed 0, and over two seeds it
    # matched the defaults (docs/benchmarks.md): 0, the course's loss, stays the default.
    head_loss: float = 0.0
    """Weight of a price head trained with the LoRA (MSE on standardized log price) in the loss; 0: fitted after."""
    save_steps: int = 100
    """Write a resumable checkpoint every this many steps (0: only by time and on stop)."""
    save_minutes: float = 10.0
    """Also checkpoint when this many minutes passed since the last one, so a crash loses at most that (0: off)."""
    save_total_limit: int = 2
    """Checkpoints kept; older ones are deleted."""
    seed: int = 42
    """Seed of LoRA initialisation, data order and dropout."""
    precision: Precision = "auto"
    """Compute dtype of training and pricing: auto (bf16 where the GPU or CPU has it natively, else fp32), bf16, fp32."""
    group_by_length: bool = True
    """Batch examples of similar length together, so less compute goes into padding."""
    packing: bool = False
    """Pack a batch into one row without padding, position ids restarting per example; slower on a CPU (SDPA masks)."""
    liger_kernel: bool = False
    """Liger's fused Triton kernels (RMSNorm, SwiGLU, RoPE) in the Trainer; needs a CUDA GPU and liger-kernel."""
    compile_layers: bool = False
    """torch.compile each layer's attention and MLP for training (CUDA only; on by default for larger models)."""
    max_minutes: float = 0.0
    """Stop training after this many minutes and save the adapter, as if max_steps were reached (0: no limit)."""
    fit_to_time: bool = False
    """Train for the whole time limit instead of max_steps or epochs, warm-up and decay laid over the steps that fit."""
    max_cost: float = 0.0
    """Stop and save the adapter when the run's time at the stated hourly price costs this many dollars (0: no cap)."""
    hub_kernels: bool = False
    """Let transformers fetch and run kernels from the Hugging Face Hub when the model loads (needs the network)."""
    report_to: Tracker = "none"
    """Experiment tracker the Trainer reports the loss and PriceTune's $ metrics to (installed ones only)."""

    def validate(self) -> "TrainConfig":
        """Every field converted to its type (or refused, named), then checked against its range; returns self."""
        vars(self).update(vars(TrainConfig.from_dict(dataclasses.asdict(self))))
        problems = []

        def check(ok: bool, message: str):
            if not ok:
                problems.append(message)

        check(bool(str(self.data).strip()), "data: choose 'sample' or upload a file")
        if self.data.startswith(RUN_DATA):
            source = self.data[len(RUN_DATA):]
            check(bool(source) and "/" not in source and "\\" not in source and not source.startswith("."),
                  f"data: run:NAME takes a run folder's plain name (got {self.data!r})")
        check(bool(str(self.model).strip()), "model: give 'demo', a Hugging Face id or a folder")
        check(isinstance(self.lora_r, int) and 1 <= self.lora_r <= 256, f"lora_r: must be 1–256 (got {self.lora_r})")
        check(0 < self.lora_alpha <= 4096, f"lora_alpha: must be in (0, 4096] (got {self.lora_alpha})")
        check(0 <= self.lora_dropout < 1, f"lora_dropout: must be in [0, 1) (got {self.lora_dropout})")
        check(len(self.target_modules) > 0, "target_modules: pick at least one layer")
        check(0 < self.learning_rate <= 1, f"learning_rate: must be in (0, 1] (got {self.learning_rate})")
        check(0 <= self.warmup_ratio < 1, f"warmup_ratio: must be in [0, 1) (got {self.warmup_ratio})")
        check(0 <= self.weight_decay <= 1, f"weight_decay: must be in [0, 1] (got {self.weight_decay})")
        check(0 <= self.max_grad_norm <= 1000, f"max_grad_norm: must be 0–1000 (got {self.max_grad_norm})")
        check(len(self.question) <= MAX_QUESTION, f"question: at most {MAX_QUESTION} characters")
        check(self.max_steps >= 0, f"max_steps: must be 0 or more (got {self.max_steps})")
        check(self.max_steps > 0 or self.epochs > 0, "epochs: must be positive when max_steps is 0")
        check(1 <= self.batch_size <= 1024, f"batch_size: must be 1–1024 (got {self.batch_size})")
        check(1 <= self.grad_accum <= 1024, f"grad_accum: must be 1–1024 (got {self.grad_accum})")
        check(self.max_length == 0 or 32 <= self.max_length <= 8192,
              f"max_length: 0 (auto) or 32–8192 (got {self.max_length})")
        check(0 < self.test_size, f"test_size: must be positive (got {self.test_size})")
        check(0 < self.validation_size, f"validation_size: must be positive (got {self.validation_size})")
        check(self.sample_every >= 0, "sample_every: must be 0 or more")
        check(1 <= self.num_samples <= 64, "num_samples: must be 1–64")
        check(1 <= self.probe_size <= 1000, "probe_size: must be 1–1000")
        check(self.save_steps >= 0, "save_steps: must be 0 or more")
        check(self.save_minutes >= 0, "save_minutes: must be 0 or more")
        check(self.save_total_limit >= 1, "save_total_limit: must be 1 or more")
        check(self.probe_method in PROBE_METHODS,
              f"probe_method: one of {', '.join(PROBE_METHODS)} (got {self.probe_method!r})")
        check(2 <= self.head_rows <= 100_000, f"head_rows: must be 2–100,000 (got {self.head_rows})")
        check(0 <= self.head_loss <= 100, f"head_loss: must be 0–100 (got {self.head_loss})")
        for name in ("seed", "split_seed"):  # numpy's and torch's seeds are 32-bit
            check(0 <= getattr(self, name) < 2**32, f"{name}: must be 0–{2**32 - 1} (got {getattr(self, name)})")
        check(self.max_minutes >= 0, f"max_minutes: must be 0 or more (got {self.max_minutes})")
        check(not self.fit_to_time or self.max_minutes > 0, "fit_to_time: needs a time limit (max_minutes above 0)")
        check(0 <= self.max_cost <= 1e6, f"max_cost: must be 0–1,000,000 dollars (got {self.max_cost})")
        # Measured on the H200: dynamo cannot trace Liger's Triton kernels, and the demo trained 4 steps in 70 s.
        check(not (self.liger_kernel and self.compile_layers),
              "liger_kernel and compile_layers: choose one (compiled layers cannot trace Liger's kernels)")
        check(not self.name or ("/" not in self.name and "\\" not in self.name and not self.name.startswith(".")),
              f"name: a plain folder name, no slashes (got {self.name!r})")
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    @classmethod
    def for_model(cls, model: str = DEMO, **values) -> "TrainConfig":
        """A config for `model` with that model's defaults, then `values` on top."""
        return cls(model=model, **{**model_defaults(model), **values})

    def asked(self) -> str:
        """The question this run's prompts ask. A run's config.yaml always names it, except a run recorded before
        the setting existed, which asked the 2024 course's."""
        return self.question or COURSE_2024_QUESTION

    def lora_config(self):
        """PEFT's LoraConfig of this run: r, alpha, dropout and target modules on a causal LM, no bias."""
        return LoraConfig(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=list(self.target_modules), bias="none", task_type="CAUSAL_LM")

    def use_bf16(self) -> bool:
        return self.precision == "bf16" or (self.precision == "auto" and native_bf16())

    def checkpointing(self) -> bool:
        """Whether the run saves checkpoints (by steps or minutes), so that Stop and a crash can be resumed."""
        return bool(self.save_steps or self.save_minutes)

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)

    def recorded(self) -> "TrainConfig":
        """The config as a run folder or a download keeps it: a file named by `data_name`, never by a server path."""
        return dataclasses.replace(self, data=self.data_name or self.data)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """A config from plain values (a YAML mapping, the form's fields): each one checked against its field's type
        and converted, every problem named by its field. Not yet validated for ranges."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown field(s): {', '.join(map(str, unknown))}")
        if values.get("probe_method") in RETIRED:  # a run from before the method was dropped still loads
            values = {**values, "probe_method": RETIRED[values["probe_method"]]}
        types, converted, problems = typing.get_type_hints(cls), {}, []
        for name, value in values.items():
            try:
                converted[name] = _convert(value, types[name])
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(**converted)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        """A config from a YAML file (an upload, a run's config.yaml): at most MAX_CONFIG_BYTES, no aliases."""
        path = Path(path)
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path.name} is {path.stat().st_size:,} bytes; a config is at most "
                              f"{MAX_CONFIG_BYTES:,}")
        try:
            values = yaml.load(path.read_text(encoding="utf-8", errors="replace"), Loader=_PlainLoader) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path.name} is not valid YAML: {_yaml_problem(exc)}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of field: value")
        return cls.from_dict(values)


MAX_QUESTION = 300
"""The longest question a prompt may ask: the course's are under 50 characters."""
MAX_CONFIG_BYTES = 16_384
"""A config file's size limit: every field of a real one fits in under 2 KB."""
MAX_TEXT = 1_000
"""The longest text field (a model id, a path, a run name) a config may hold."""
MAX_MODULES = 64
"""The most target modules a config may name (an 8B Llama has seven linear kinds)."""

def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's complaint in plain words, where it is: its own text quotes the parser's internals."""
    if isinstance(exc, yaml.reader.ReaderError):
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return f"a control character (code {code:#04x}) at character {exc.position + 1}; a config is plain text"
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = (getattr(exc, "problem", None) or "cannot be read").replace("'<stream end>'", "the end of the file")
    return where + problem


class _PlainLoader(yaml.SafeLoader):
    """YAML without aliases: a few hundred bytes of nested aliases expand to billions of list items."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted in a config",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)


def field_docs() -> dict[str, str]:
    """Each TrainConfig field's one-line docstring, read from this file's source (the CLI's help texts)."""

    body = ast.parse(inspect.getsource(TrainConfig)).body[0].body
    return {target.target.id: doc.value.value for target, doc in zip(body, body[1:])
            if isinstance(target, ast.AnnAssign) and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)}


def _convert(value, kind):
    """`value` as a value of field type `kind` (int, float, str, bool, list[str]), or ValueError saying what is wrong.
    Str subclasses (Gradio's upload paths) become plain str, which YAML can write."""
    if value is None or (isinstance(value, str) and not value.strip() and kind in (int, float)):
        raise ValueError("is empty: enter a number" if kind in (int, float) else "is empty")
    if typing.get_origin(kind) is Literal:
        if value not in typing.get_args(kind):
            raise ValueError(f"must be {' or '.join(map(str, typing.get_args(kind)))} (got {_shown(value)})")
        return str(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"must be true or false (got {_shown(value)})")
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"must be a number (got {_shown(value)})")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"must be a number (got {_shown(value)})") from None
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number (got {_shown(value)})")
        if kind is int:
            if number != int(number):
                raise ValueError(f"must be a whole number (got {_shown(value)})")
            return int(number)
        return number
    if kind is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"must be text (got {type(value).__name__} {_shown(value)})")
        if len(str(value)) > MAX_TEXT:
            raise ValueError(f"is {len(str(value)):,} characters long; at most {MAX_TEXT:,}")
        return str(value)
    # list[str]: a short list of short names, or one comma-separated string of them
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ValueError(f"is {len(value):,} characters long; at most {MAX_TEXT:,}")
        names = names_list(value)
    elif not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"must be a list of names (got {_shown(value)})")
    else:
        names = [str(v).strip() for v in value if str(v).strip()]
    if len(names) > MAX_MODULES or any(len(n) > 100 for n in names):
        raise ValueError(f"at most {MAX_MODULES} names of at most 100 characters each (got {len(names):,} names)")
    return names


def _shown(value) -> str:
    """A value as an error message quotes it: its repr, cut short (a pasted 5 MB list helps nobody)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"





def names_list(text: str) -> list[str]:
    """'q_proj, v_proj' → ['q_proj', 'v_proj']: how target modules are written on a command line."""
    return [name.strip() for name in text.split(",") if name.strip()]


_COURSE_RECIPE = dict(quant="4bit", lora_r=32, lora_alpha=64, lora_dropout=0.1, target_modules=COURSE_TARGETS,
                      learning_rate=1e-4, lr_scheduler="cosine", weight_decay=0.001, max_grad_norm=0.3,
                      epochs=1.0, max_steps=0, grad_accum=1, gradient_checkpointing=True)
PRESETS: dict[str, dict] = {
    "demo": {"model": DEMO},
    "course-2024": {**_COURSE_RECIPE, "model": "meta-llama/Meta-Llama-3.1-8B", "question": COURSE_2024_QUESTION,
                    "warmup_ratio": 0.03, "batch_size": 4, "max_length": 182},
    "course-lite": {**_COURSE_RECIPE, "model": "meta-llama/Llama-3.2-3B", "question": COURSE_QUESTION,
                    "warmup_ratio": 0.01, "batch_size": 32, "max_length": 128},
    "course-full": {**_COURSE_RECIPE, "model": "meta-llama/Llama-3.2-3B", "question": COURSE_QUESTION,
                    "warmup_ratio": 0.01, "batch_size": 256, "max_length": 128, "epochs": 3.0, "lora_r": 256,
                    "lora_alpha": 512, "target_modules": ALL_LINEAR},
}
"""Named starting points: the demo on a CPU, and the course's recipes (its notebooks' settings) for a GPU."""
PRESET_NAMES = {"demo": "demo (CPU)", "course-2024": "course 2024 (Llama 3.1 8B)",
                "course-lite": "course lite (Llama 3.2 3B)", "course-full": "course full (Llama 3.2 3B)"}


def preset(name: str) -> TrainConfig:
    """The config of a preset: the model's defaults with the preset's settings on top."""
    if name not in PRESETS:
        raise ConfigError(f"preset: one of {', '.join(repr(p) for p in PRESETS)} (got {_shown(name)})")
    values = dict(PRESETS[name])
    values["target_modules"] = list(values.get("target_modules", model_defaults(values["model"])["target_modules"]))
    return TrainConfig.for_model(values.pop("model"), **values)
