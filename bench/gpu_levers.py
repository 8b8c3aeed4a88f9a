"""What each GPU lever gives PriceTune's training step: the arms below on one model, loaded once, in one process,
against TRL's SFTTrainer with its defaults (arm B) measured in the same run. Prints, per arm, tokens/s, MFU, peak CUDA memory
and `trainer/memory.py`'s estimate, and the ratio to B; appends each arm's figures to --out as a JSON line. Asserts
nothing.

    python bench/gpu_levers.py --model FOLDER [--arms A,G32,G16,...] [--steps 15] [--warmup 3] [--seconds 300]

Every arm is PriceTune's own TrainingJob (arm B: TRL's SFTTrainer) on the same base model object: after an arm its
LoRA layers are taken out again and the norms and embeddings go back to the compute dtype, and the bench checks that
the model is as loaded before the next arm. Building the 8B model takes ~40 s, loading it in 4-bit ~3 s, an arm
11-28 s. Liger patches the model's modules for good, so the arms that use it come last (the order is fixed here).

Arms (LoRA, batch, length and learning rate as given; each setting is a TrainConfig field unless said):
  A            every activation kept, norms and embeddings in fp32 (the GPU defaults before this bench)
  G32          gradient checkpointing, norms and embeddings in fp32
  G16          gradient checkpointing, norms and embeddings in bf16
  G16-half     G16 with every other layer checkpointed (set on the layers here, not a TrainConfig field)
  G16-d0       G16 with LoRA dropout 0 (PEFT then skips the dropout)
  G16-compile  G16 with `compile_layers` (each layer's attention and MLP compiled); the compile time is reported
  N            TrainConfig.for_model's defaults for this model on this machine
  N-eager      N with `compile_layers` off
  N-cudnn      N with cuDNN's attention preferred (torch.nn.attention.sdpa_kernel, set here)
  B            TRL SFTTrainer, its defaults (gradient checkpointing on, bf16, full-vocabulary loss)
  AL           A with Liger's kernels
  AL16         AL with norms and embeddings in bf16
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

ORDER = ("A", "G32", "G16", "G16-half", "G16-d0", "G16-compile", "N", "N-eager", "N-cudnn", "B", "AL", "AL16")
SETTINGS = {
    "A": dict(gradient_checkpointing=False, fp32_norms=True, liger_kernel=False, compile_layers=False),
    "G32": dict(gradient_checkpointing=True, fp32_norms=True, liger_kernel=False, compile_layers=False),
    "G16": dict(gradient_checkpointing=True, fp32_norms=False, liger_kernel=False, compile_layers=False),
    "G16-half": dict(gradient_checkpointing=True, fp32_norms=False, liger_kernel=False, compile_layers=False),
    "G16-d0": dict(gradient_checkpointing=True, fp32_norms=False, liger_kernel=False, compile_layers=False,
                   lora_dropout=0.0),
    "G16-compile": dict(gradient_checkpointing=True, fp32_norms=False, liger_kernel=False, compile_layers=True),
    "AL": dict(gradient_checkpointing=False, fp32_norms=True, liger_kernel=True, compile_layers=False),
    "N-eager": dict(compile_layers=False), "N": {}, "N-cudnn": {},
    "AL16": dict(gradient_checkpointing=False, fp32_norms=False, liger_kernel=True, compile_layers=False),
}


def restore(model) -> None:
    """The base model as loaded: LoRA layers out, every float parameter back in the compute dtype and frozen,
    checkpointing and compiled modules off."""
    import torch

    from trainer.models import compute_dtype

    for name, module in list(model.named_modules()):
        if hasattr(module, "base_layer") and "." in name:
            parent, leaf = name.rsplit(".", 1)
            setattr(model.get_submodule(parent), leaf, module.base_layer)
    dtype = compute_dtype()
    for p in model.parameters():
        if p.dtype == torch.float32 and dtype != torch.float32:
            p.data = p.data.to(dtype)
        p.requires_grad_(False)
    for module in model.modules():
        if hasattr(module, "gradient_checkpointing"):
            module.gradient_checkpointing = False
        module._compiled_call_impl = None
    if getattr(model, "_require_grads_hooks", None):
        model.disable_input_require_grads()
    for attribute in ("peft_config", "_hf_peft_config_loaded"):
        if attribute in vars(model):
            delattr(model, attribute)


def state_of(model) -> dict:
    """What an arm may change and restore must undo: each parameter's dtype and trainability, checkpointing."""
    return {"parameters": [(n, p.dtype, p.requires_grad) for n, p in model.named_parameters()],
            "checkpointing": [n for n, m in model.named_modules() if getattr(m, "gradient_checkpointing", False)],
            "hooks": bool(getattr(model, "_require_grads_hooks", None))}


def layers_of(model):
    """The decoder layers of a (PEFT-wrapped) causal LM."""
    while not hasattr(model, "layers"):
        model = model.model if hasattr(model, "model") else model.base_model
    return model.layers


def arm_callback(arm: str, timer, profile_after: int, report: dict):
    """The bench's own settings of an arm, applied when training begins; and a profile of the steps after the timed
    ones (the share of GPU time in bitsandbytes' 4-bit dequantization)."""
    import torch
    from transformers import TrainerCallback

    class Lever(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            layers = layers_of(model)
            if arm == "G16-half":
                for layer in layers[1::2]:
                    layer.gradient_checkpointing = False
            if arm == "N-cudnn":
                from torch.nn.attention import SDPBackend, sdpa_kernel

                self.attention = sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                                              SDPBackend.EFFICIENT_ATTENTION], set_priority=True)
                self.attention.__enter__()

        def on_step_begin(self, args, state, control, **kwargs):
            if profile_after and state.global_step == profile_after and torch.cuda.is_available():
                self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
                self.profiler.__enter__()

        def on_train_end(self, args, state, control, **kwargs):
            if getattr(self, "attention", None) is not None:
                self.attention.__exit__(None, None, None)
            profiler = getattr(self, "profiler", None)
            if profiler is None:
                return
            try:  # the profile is an extra: its failure must not cost the arm's figures
                torch.cuda.synchronize()
                profiler.__exit__(None, None, None)
                events = [e for e in profiler.key_averages() if e.self_device_time_total > 0]
                total = sum(e.self_device_time_total for e in events) or 1
                report["dequantize_share"] = sum(e.self_device_time_total for e in events
                                                 if "dequant" in e.key.lower()) / total
                top = sorted(events, key=lambda e: -e.self_device_time_total)[:8]
                report["top_kernels"] = [(e.key[:60], round(e.self_device_time_total / total, 3)) for e in top]
            except Exception as exc:
                report["profile_error"] = f"{type(exc).__name__}: {exc}"[:300]

    return Lever()


def run_arm(arm: str, args, base, train) -> dict:
    """One arm on `base`; its figures."""
    import torch

    import trainer.job
    import trainer.models
    from train_speed import PEAK_BF16, _config, _step_timer, parameter_counts, run_b
    from trainer.job import TrainingJob
    from trainer.memory import GiB, estimate_memory
    from trainer.models import model_config

    load = lambda *a, **k: base  # noqa: E731 - every arm trains the one model already loaded
    trainer.job.load_model = trainer.models.load_model = load
    timer, report = _step_timer(), {}
    profile_after = args.warmup + args.steps if arm == "N" else 0
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    if arm == "B":
        run_b(speed_args(args, "B"), train, timer, fast=False)
        settings = dict(gradient_checkpointing=True, fp32_norms=False, liger_kernel=False, compile_layers=False)
    else:
        config = _config(speed_args(args, arm))
        # N: the defaults TrainConfig.for_model gave this model on this machine; the other arms set their own.
        settings = {k: getattr(config, k) for k in ("gradient_checkpointing", "fp32_norms", "liger_kernel",
                                                    "compile_layers")}
        settings.update(SETTINGS[arm])
        for key, value in settings.items():
            setattr(config, key, value)
        folder = Path(args.work) / arm
        data = folder / "train.jsonl"
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text("".join(json.dumps({"text": p.text, "price": p.price}) + "\n" for p in train + train[:1]))
        config.data, config.name, config.test_size, config.head_rows = str(data), f"levers-{arm}", 1, 2
        config.max_steps = args.warmup + args.steps + (3 if profile_after else 0)
        lever = arm_callback(arm, timer, profile_after, report)
        job = TrainingJob.new(config, runs_root=folder / "runs", callbacks=(timer, lever)).start()
        outcome = job.wait()
        job.trainer = None  # its optimizer state must not reach into the next arm's peak
        if outcome != "done":
            raise RuntimeError(job.run.status().get("error"))
    wall = time.perf_counter() - began
    marks = timer.marks[: args.warmup + args.steps]
    (t0, n0), (t1, n1) = marks[args.warmup - 1], marks[-1]
    steps = [b[0] - a[0] for a, b in zip(timer.marks, timer.marks[1:])]
    base_n, lora_n = timer.counts if timer.counts != (0, 0) else parameter_counts(base)
    flops = 4 * base_n + 6 * lora_n
    tokens_per_s = (n1 - n0) / (t1 - t0)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    architecture = model_config(args.model)
    targets = args.targets.split(",")
    estimate = estimate_memory(architecture, "4bit", lora_n, targets, args.lora_r, args.batch, args.max_length,
                               dropout=settings.get("lora_dropout", args.lora_dropout) > 0,
                               fp32_norms=settings["fp32_norms"], price_logits_only=arm != "B",
                               gradient_checkpointing=settings["gradient_checkpointing"],
                               liger=settings["liger_kernel"]).total / GiB
    first = timer.marks[0][0] - began if timer.marks else None
    return {"arm": arm, **{k: v for k, v in settings.items()}, "tokens_per_s": tokens_per_s,
            "mfu": tokens_per_s * flops / peak if peak else None, "step_s": (t1 - t0) / args.steps,
            "peak_cuda_gib": timer.peak_cuda_gb, "estimate_gib": estimate, "wall_s": wall,
            # On CUDA the job's AdamW is bitsandbytes' paged one: its two moments live outside torch's allocator.
            "paged_optimizer_gib": lora_n * 8 / GiB if arm != "B" and torch.cuda.is_available() else 0.0,
            # The first step's extra time over the median step: compilation, autotuning, allocator warm-up.
            "first_step_extra_s": (steps[0] - statistics.median(steps)) if len(steps) > 2 else None,
            "until_first_step_s": first, **report}


def speed_args(args, arm: str):
    """train_speed.py's argument namespace for its config and TRL helpers."""
    return types.SimpleNamespace(model=args.model, quant="4bit", lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                                 lora_dropout=SETTINGS.get(arm, {}).get("lora_dropout", args.lora_dropout),
                                 targets=args.targets, batch=args.batch, max_length=args.max_length, wall=0,
                                 warmup=args.warmup, steps=args.steps, arm=arm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a local model folder (bench/random_model.py makes one)")
    parser.add_argument("--data", help="products to train on (default: the model folder's products.jsonl)")
    parser.add_argument("--arms", default=",".join(ORDER))
    parser.add_argument("--steps", type=int, default=15, help="timed optimizer steps per arm")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=182, dest="max_length")
    parser.add_argument("--lora-r", type=int, default=32, dest="lora_r")
    parser.add_argument("--lora-alpha", type=int, default=64, dest="lora_alpha")
    parser.add_argument("--lora-dropout", type=float, default=0.1, dest="lora_dropout")
    parser.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj")
    parser.add_argument("--seconds", type=float, default=0, help="skip the arms that would start after this")
    parser.add_argument("--arm-seconds", type=float, default=25, dest="arm_seconds",
                        help="an arm's expected length, to skip one that cannot finish in time")
    parser.add_argument("--out", default="", help="append each arm's figures here as JSON lines")
    parser.add_argument("--work", default="", help="scratch folder (default: a new temp folder)")
    args = parser.parse_args()
    import tempfile

    import torch

    from trainer.data import load_products
    from trainer.models import load_model

    began = time.perf_counter()
    args.work = args.work or tempfile.mkdtemp(prefix="levers-")
    wanted = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(wanted) - set(ORDER))
    if unknown:
        raise SystemExit(f"unknown arms: {', '.join(unknown)}; known: {', '.join(ORDER)}")
    arms = [a for a in ORDER if a in wanted]
    if not torch.cuda.is_available():
        arms = [a for a in arms if a not in ("G16-compile", "N-cudnn", "AL", "AL16")]
        print("arms G16-compile, N-cudnn, AL and AL16 left out: compiled layers, cuDNN attention and Liger need a "
              "CUDA GPU")
    products = load_products(args.data or str(Path(args.model) / "products.jsonl"))[0]
    train = products[: (args.warmup + args.steps + 4) * args.batch]
    loaded = time.perf_counter()
    base = load_model(args.model, "4bit")
    print(f"model {args.model} loaded in 4-bit in {time.perf_counter() - loaded:.1f} s; "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}; batch {args.batch} x "
          f"{args.max_length}, LoRA r{args.lora_r} alpha {args.lora_alpha} dropout {args.lora_dropout} on "
          f"{args.targets}; {args.warmup} warm-up + {args.steps} timed steps an arm", flush=True)
    loaded_state = state_of(base)
    results = []
    for arm in arms:
        left = args.seconds - (time.perf_counter() - began) if args.seconds else None
        extra = 30 if arm in ("G16-compile", "N") else 0
        if left is not None and left < args.arm_seconds + extra:
            print(f"{arm:<10} skipped: {left:.0f} s left", flush=True)
            continue
        try:
            row = run_arm(arm, args, base, train)
        except Exception as exc:  # one lever failing must not cost the others' figures
            row = {"arm": arm, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
        finally:
            restore(base)
        if state_of(base) != loaded_state:  # every later arm would measure a changed model
            raise SystemExit(f"after arm {arm} the model is not as loaded: the bench cannot go on")
        results.append(row)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
        print(line(row, next((r for r in results if r["arm"] == "B" and "error" not in r), None)), flush=True)
    reference = next((r for r in results if r["arm"] == "B" and "error" not in r), None)
    print("\nsummary (ratios to B, TRL's defaults, measured in this run)")
    for row in results:
        print(line(row, reference))
    shares = [r for r in results if "dequantize_share" in r]
    for row in shares:
        print(f"{row['arm']}: bitsandbytes' 4-bit dequantization {100 * row['dequantize_share']:.1f}% of the GPU "
              f"time of 3 profiled steps; top kernels {row['top_kernels']}")


def line(row: dict, reference: dict | None) -> str:
    if "error" in row:
        return f"{row['arm']:<10} failed: {row['error']}"
    ratio = f"{row['tokens_per_s'] / reference['tokens_per_s']:.2f}x B" if reference else "-"
    mfu = f"MFU {100 * row['mfu']:.1f}%" if row["mfu"] else "MFU -"
    peak = f"{row['peak_cuda_gib']:.2f}" if row["peak_cuda_gib"] is not None else "-"
    if row.get("paged_optimizer_gib"):
        peak += f" (+{row['paged_optimizer_gib']:.2f} paged)"
    extra = f"  first step +{row['first_step_extra_s']:.1f} s" if row.get("first_step_extra_s") else ""
    return (f"{row['arm']:<10} {row['tokens_per_s']:9.0f} tokens/s  {ratio:>8}  {mfu}  peak {peak} GiB  "
            f"estimate {row['estimate_gib']:.2f} GiB  step {row['step_s']:.3f} s{extra}")


if __name__ == "__main__":
    main()
