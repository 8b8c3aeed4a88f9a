"""Training speed: PriceTune's training path against the course recipe (TRL's SFTTrainer), on the same model, data,
LoRA, batch, learning rate, schedule and seed. Arms run in their own processes, alternated A B B' A B B' ...
Prints per arm real (non-pad) tokens/s, examples/s, peak RSS (and peak CUDA memory), and the ratios against B and
B'; and, on held-out probe items after training, the same measures for every arm: the loss on their price tokens
(teacher-forced) and the $ error of the expected price (the app's probe method). The training loss each arm logs is
printed too, but is not comparable between arms: TRL's completion ends in an end-of-sequence token, which its loss
averages in. Asserts nothing.

    .venv/bin/python bench/train_speed.py [--pairs 3] [--steps 12] [--warmup 2] [--examples 400]
    .venv/bin/python bench/train_speed.py --wall 40 [--pairs 1]

With --wall N every arm is one whole run of N steps, timed from its process's start to the adapter saved: A with the
app's defaults otherwise (the text baseline fitted, the probe priced at step 0, every sample_every steps and at the
end, checkpoints), B and B' as TRL runs them; it prints the wall time, its split by phase, and the ratios. Arm A also
reports its per-step host work: the time in the job's own callback (status.json, metrics.jsonl, stop and time checks).

Arms:
  A   PriceTune: TrainingJob as the app runs it (loss and logits only at the price tokens, length-grouped batches,
      bf16 where this machine computes it natively).
  B   The course recipe: TRL SFTTrainer on prompt/completion pairs, completion-only loss, TRL's defaults otherwise
      (gradient checkpointing on, bf16).
  B'  TRL with the fast options that apply on this machine: gradient checkpointing off, length-grouped batches.
      (padding_free needs FlashAttention, which a CPU does not have.)
  A16 (only when asked, e.g. --arms A,A16,B) A with fp32_norms off: under 4-bit, norms and embeddings stay in the
      compute dtype instead of PEFT's fp32 cast. The same as A where the compute dtype is fp32 (a CPU).
  AP  (when asked) A with `packing`: each batch in one row, no padding, position ids restarting per example.
  AL  (when asked; a CUDA GPU and liger-kernel) A with `liger_kernel`: Liger's fused RMSNorm, SwiGLU and RoPE.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "appliances_2000.jsonl"
ARMS = ("A", "B", "B'")  # the default arms; the others run when named in --arms
A_ARMS = ("A", "A16", "AP", "AL")  # PriceTune's training path, by setting


def _all_products(args):
    from trainer.data import load_products, make_sample_products

    return load_products(args.data)[0] if Path(args.data).is_file() else make_sample_products()


def _products(args):
    from trainer.data import split_products

    products = _all_products(args)
    if not args.probe:
        return products[: args.examples], []
    train, probe = split_products(products, test_size=args.probe, seed=42)
    return train[: args.examples], probe


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time and real tokens seen at the end of every optimizer step; at the end of training, the peak CUDA
        memory and the parameter counts of the model as trained (before anything else is loaded)."""

        def __init__(self):
            self.marks: list[tuple[float, int]] = []
            self.peak_cuda_gb: float | None = None
            self.counts: tuple[int, int] = (0, 0)

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

        def time_bookkeeping(self):
            """Time the job's own per-step host work (RunCallback: status.json, metrics.jsonl, the stop and time
            checks) into self.bookkeeping, one sum of seconds per step."""
            from trainer.job import RunCallback

            self.bookkeeping: dict[int, float] = {}
            for name in ("on_log", "on_step_end"):
                def timed(callback, args, state, control, _original=getattr(RunCallback, name), **kwargs):
                    began = time.perf_counter()
                    result = _original(callback, args, state, control, **kwargs)
                    spent = time.perf_counter() - began
                    self.bookkeeping[state.global_step] = self.bookkeeping.get(state.global_step, 0.0) + spent
                    return result
                setattr(RunCallback, name, timed)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            import torch

            if torch.cuda.is_available():
                self.peak_cuda_gb = torch.cuda.max_memory_allocated() / 2**30
            self.counts = parameter_counts(model)

    return StepTimer()


def _config(args):
    from trainer.config import TrainConfig, names_list

    # Both arms train exactly this; the target modules default to the model's own (the demo model: all seven).
    targets = {"target_modules": names_list(args.targets)} if args.targets else {}
    # A whole run keeps the app's probe, checkpoint and split settings; the timed steps leave them out.
    extras = {} if args.wall else dict(sample_every=0, save_steps=0, save_minutes=0, probe_size=1, num_samples=1)
    return TrainConfig.for_model(args.model, quant=args.quant, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                                 lora_dropout=args.lora_dropout, learning_rate=3e-4, lr_scheduler="cosine",
                                 warmup_ratio=0.03, batch_size=args.batch,
                                 max_steps=args.wall or args.warmup + args.steps, max_length=args.max_length,
                                 seed=42, **extras, **targets).validate()


def run_a(args, train, timer):
    import json as _json

    from trainer.inference import Predictor
    from trainer.job import TrainingJob

    folder = Path(tempfile.mkdtemp())
    data = folder / "train.jsonl"
    # The timed steps: `train` plus one row the job holds out (it also carves its validation slice from them; the
    # arms compare steps of the same batch size). A whole run splits every product but the bench's own probe items,
    # as the app does.
    if args.wall:
        probe = {p.text for p in _products(args)[1]}
        rows = [p for p in _all_products(args) if p.text not in probe]
    else:
        rows = train + train[:1]
    data.write_text("".join(_json.dumps({"text": p.text, "price": p.price}) + "\n" for p in rows))
    config = _config(args)
    config.data, config.name = str(data), "speed-a"
    if not args.wall:
        config.test_size = 1
    config.fp32_norms = args.arm != "A16"
    config.packing, config.liger_kernel = args.arm == "AP", args.arm == "AL"
    timer.time_bookkeeping()
    job = TrainingJob.new(config, runs_root=folder / "runs", callbacks=(timer,)).start()
    if job.wait() != "done":
        raise SystemExit(f"arm A failed: {job.run.status().get('error')}")
    losses = [r["loss"] for r in job.run.metrics() if "loss" in r]

    def trained():  # reloaded from the run folder only when the probe needs it (an 8B model takes a minute)
        predictor = Predictor(job.run.path)
        return predictor.model, predictor.tokenizer

    return losses, _adapter_mb(job.run.adapter_dir), trained, job.run.status()["max_length"], job.run.status()["phases"]


def run_b(args, train, timer, fast: bool):
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from trainer.data import completion, encode_completion, encode_prompt, fit_max_length
    from trainer.models import load_model, load_tokenizer

    cfg = _config(args)
    tokenizer = load_tokenizer(cfg.model)
    max_length = cfg.max_length or fit_max_length(tokenizer, train)

    def pair(p):
        # The same cut as PriceTune's: the text is shortened so prompt + price fit, never the price.
        answer = encode_completion(tokenizer, p.price)
        prompt = encode_prompt(tokenizer, p.text, max_length - len(answer))
        return {"prompt": tokenizer.decode(prompt, skip_special_tokens=True), "completion": completion(p.price)}

    phases: dict[str, float] = {}
    began = time.perf_counter()
    dataset = Dataset.from_list([pair(p) for p in train])
    options = dict(gradient_checkpointing=False, train_sampling_strategy="group_by_length") if fast else {}
    sft = SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=cfg.batch_size,
                    learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler,
                    warmup_steps=cfg.warmup_ratio, max_steps=cfg.max_steps, seed=cfg.seed, logging_steps=1,
                    report_to="none", save_strategy="no", disable_tqdm=True, max_length=max_length + 8,
                    include_num_input_tokens_seen="non_padding", completion_only_loss=True,
                    bf16=cfg.use_bf16(), use_cpu=not torch.cuda.is_available(), **options)
    lora = cfg.lora_config()
    losses: list[float] = []

    from transformers import TrainerCallback

    class Losses(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    phases["tokenize"] = time.perf_counter() - began
    began = time.perf_counter()
    model = load_model(cfg.model, cfg.quant)
    phases["model load"] = time.perf_counter() - began
    began = time.perf_counter()
    trainer = SFTTrainer(model=model, args=sft, train_dataset=dataset,
                         processing_class=tokenizer, peft_config=lora, callbacks=[timer, Losses()])
    phases["tokenize"] += time.perf_counter() - began  # TRL tokenizes the dataset and adds LoRA here
    began = time.perf_counter()
    trainer.train()
    phases["steps"] = time.perf_counter() - began
    began = time.perf_counter()
    saved = Path(tempfile.mkdtemp()) / "adapter"
    trainer.model.save_pretrained(saved)
    phases["adapter saves"] = time.perf_counter() - began
    return losses, _adapter_mb(saved), lambda: (trainer.model, tokenizer), max_length, phases


def probe_loss(model, tokenizer, items, max_length: int) -> float:
    """Mean cross-entropy of the price tokens of `items`, teacher-forced: the same tokens for every arm."""
    import torch

    from trainer.data import tokenize_example
    from trainer.loss import IGNORE_INDEX, PriceCollator, price_loss

    tokenizer.padding_side = "right"
    collate, device = PriceCollator(tokenizer, padding=True), next(model.parameters()).device
    total = count = 0.0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(items), 16):
            batch = collate([tokenize_example(tokenizer, p.text, p.price, max_length) for p in items[start:start + 16]])
            labels = batch.pop("labels")
            n = int((labels != IGNORE_INDEX).sum())
            total += price_loss(model(**{k: v.to(device) for k, v in batch.items()}), labels).item() * n
            count += n
    return total / count


def _adapter_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 1e6


def parameter_counts(model) -> tuple[int, int]:
    """(frozen linear weights, the LM head included and the input embedding not; LoRA weights). 4-bit counts unpacked."""
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    base = sum(m.in_features * m.out_features for n, m in model.named_modules()
               if hasattr(m, "in_features") and hasattr(m, "out_features") and "lora_" not in n
               and not hasattr(m, "base_layer"))  # PEFT's wrapper repeats its base layer's shape
    return base, lora


# Dense bf16 peak of the GPUs this check is meant for (no sparsity), in FLOP/s.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}


def peak_flops(torch) -> float | None:
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def child(args) -> None:
    began = time.perf_counter()
    import torch

    from trainer.pricing import predict_by
    from trainer.metrics import price_metrics

    torch.manual_seed(0)
    train, probe = _products(args)
    timer = _step_timer()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    if args.arm in A_ARMS:
        losses, adapter_mb, trained, max_length, phases = run_a(args, train, timer)
    else:
        losses, adapter_mb, trained, max_length, phases = run_b(args, train, timer, fast=args.arm == "B'")
    wall = time.perf_counter() - began
    (t0, n0), (t1, n1) = timer.marks[args.warmup - 1], timer.marks[-1]
    steps = len(timer.marks) - args.warmup
    metrics, held_out_loss = {"error": None}, None
    if probe:
        model, tokenizer = trained()
        preds = predict_by(model, tokenizer, [p.text for p in probe], "expected", max_prompt_tokens=max_length)
        metrics = price_metrics([p.price for p in preds], [p.price for p in probe])
        held_out_loss = probe_loss(model, tokenizer, probe, max_length)
    base, lora = timer.counts
    # The memory formula's figure for this arm's shape on a GPU, beside the peak a GPU measures (computed on a CPU
    # too, so the prepared check's tiny run exercises it).
    from trainer.memory import GiB, estimate_memory
    from trainer.models import model_config

    cfg = _config(args)
    estimate_gib = estimate_memory(model_config(args.model), cfg.quant, lora, list(cfg.target_modules),
                                   cfg.lora_r, cfg.batch_size, max_length, dropout=cfg.lora_dropout > 0,
                                   fp32_norms=args.arm != "A16", price_logits_only=args.arm in A_ARMS,
                                   gradient_checkpointing=args.arm == "B").total / GiB
    # The issue's count: forward 2N and backward 2N (input grads only) for the frozen base, 6 per LoRA weight.
    flops = 4 * base + 6 * lora
    tokens_per_s = (n1 - n0) / (t1 - t0)
    peak = peak_flops(torch) if torch.cuda.is_available() else None
    print(json.dumps({
        "mfu": tokens_per_s * flops / peak if peak else None, "flops_per_token": flops,
        "adapter_mb": adapter_mb,
        "arm": args.arm, "tokens_per_s": tokens_per_s, "examples_per_s": steps * args.batch / (t1 - t0),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_cuda_gb": timer.peak_cuda_gb, "estimate_gib": estimate_gib, "base_params": base, "lora_params": lora,
        "final_loss": statistics.mean(losses[-5:]), "probe_error": metrics["error"], "probe_loss": held_out_loss,
        "steps": steps,
        "wall_s": wall, "phases": phases,
        # The median step's, so a probe priced inside on_step_end is not counted as bookkeeping.
        "bookkeeping_s": statistics.median(timer.bookkeeping.values()) if getattr(timer, "bookkeeping", None)
        else None,
        "step_s": (t1 - t0) / steps,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="rounds of A, B, B' (each arm in a fresh process)")
    parser.add_argument("--steps", type=int, default=12, help="timed optimizer steps per arm")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--examples", type=int, default=400, help="training examples the arms draw batches from")
    parser.add_argument("--probe", type=int, default=50, help="held-out items priced after each arm")
    parser.add_argument("--data", default=str(SHARED), help="product file; the sample generator if missing")
    parser.add_argument("--model", default="demo", help="'demo', or a local model folder")
    parser.add_argument("--quant", default="none", choices=["none", "4bit", "8bit"])
    parser.add_argument("--lora-r", type=int, default=16, dest="lora_r")
    parser.add_argument("--lora-alpha", type=int, default=32, dest="lora_alpha")
    parser.add_argument("--lora-dropout", type=float, default=0.05, dest="lora_dropout")
    parser.add_argument("--targets", default="", help="LoRA target modules, comma-separated; the model's default if empty")
    parser.add_argument("--max-length", type=int, default=0, dest="max_length", help="0: sized from the data")
    parser.add_argument("--arms", default=",".join(ARMS), help="which arms, e.g. A,B")
    parser.add_argument("--wall", type=int, default=0, metavar="N",
                        help="time whole runs of N steps (start to adapter saved) instead of the steps alone")
    parser.add_argument("--arm", choices=(*ARMS, *A_ARMS[1:]), help=argparse.SUPPRESS)  # set in the child processes
    args = parser.parse_args()
    if args.arm:
        return child(args)

    arms = [a for a in args.arms.split(",") if a]
    config = _config(args)  # a bad option fails here, before any arm starts
    print(f"model: {args.model} ({config.quant}), LoRA r{config.lora_r} alpha {config.lora_alpha} dropout "
          f"{config.lora_dropout} on {','.join(config.target_modules)}, max length {config.max_length or 'auto'}")
    print(f"data: {args.data if Path(args.data).is_file() else 'sample generator'}; {args.pairs} rounds of "
          f"{' '.join(arms)}, "
          + (f"whole runs of {args.wall} steps (tokens/s over the last {args.wall - args.warmup})" if args.wall
             else f"{args.warmup} warm-up + {args.steps} timed steps")
          + f" of batch {args.batch} each", flush=True)
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    forward = [a for a in sys.argv[1:]]
    for round_ in range(args.pairs):
        for arm in arms:
            out = subprocess.run([sys.executable, __file__, *forward, "--arm", arm], capture_output=True, text=True,
                                 env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            if out.returncode or not lines:
                print(out.stderr[-3000:])
                raise SystemExit(f"arm {arm} failed (exit {out.returncode})")
            results[arm].append(json.loads(lines[-1]))
            r = results[arm][-1]
            probe = (f"probe loss {r['probe_loss']:.3f} ${r['probe_error']:.2f}" if r["probe_error"] is not None
                     else "")
            mfu = f"MFU {100 * r['mfu']:.1f}%" if r["mfu"] else ""
            print(f"round {round_ + 1} {arm:<3} {r['tokens_per_s']:8.1f} tokens/s  {r['examples_per_s']:.2f} ex/s  "
                  f"train loss {r['final_loss']:.3f}  {probe}  {mfu}  adapter {r['adapter_mb']:.1f} MB", flush=True)

    def med(arm, key):
        values = [r[key] for r in results[arm] if r[key] is not None]
        return statistics.median(values) if values else None

    print(f"\nmedian of {args.pairs} runs per arm")
    print(f"{'arm':<5}{'tokens/s':>10}{'examples/s':>12}{'peak RSS GB':>13}{'peak CUDA GiB':>14}{'estimate':>10}"
          f"{'train loss':>12}{'probe loss':>12}"
          f"{'probe $ err':>13}{'MFU':>7}{'A/this tok/s':>14}")

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    for arm in arms:
        ratio = med("A", "tokens_per_s") / med(arm, "tokens_per_s") if "A" in arms else None
        print(f"{arm:<5}{med(arm, 'tokens_per_s'):>10.1f}{med(arm, 'examples_per_s'):>12.2f}"
              f"{med(arm, 'peak_rss_gb'):>13.2f}{fmt(med(arm, 'peak_cuda_gb'), '.2f'):>14}"
              f"{fmt(med(arm, 'estimate_gib'), '.2f'):>10}"
              f"{med(arm, 'final_loss'):>12.3f}{fmt(med(arm, 'probe_loss'), '.3f'):>12}"
              f"{fmt(med(arm, 'probe_error'), '.2f'):>13}"
              f"{fmt(med(arm, 'mfu') and 100 * med(arm, 'mfu'), '.1f'):>7}{fmt(ratio, '.2f'):>13}x")
    for arm in [a for a in arms if med(a, "bookkeeping_s") is not None]:
        host, step = med(arm, "bookkeeping_s"), med(arm, "step_s")
        print(f"{arm}: the job's per-step host work (RunCallback: status.json, metrics.jsonl, stop and time checks) "
              f"{1000 * host:.1f} ms a step = {100 * host / step:.2f}% of the median step")
    for arm in [a for a in ("B", "B'") if a in arms and "A" in arms]:
        ratios = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(results["A"], results[arm])]
        print(f"A/{arm} tokens/s per round: {', '.join(f'{x:.2f}x' for x in ratios)}")
    if args.wall:
        print(f"\nwhole runs of {args.wall} steps, process start to adapter saved (median wall time; split of the "
              "median run)")
        for arm in arms:
            run = sorted(results[arm], key=lambda r: r["wall_s"])[len(results[arm]) // 2]
            split = ", ".join(f"{name} {seconds:.1f} s ({100 * seconds / run['wall_s']:.0f}%)"
                              for name, seconds in sorted(run["phases"].items(), key=lambda kv: -kv[1]))
            other = run["wall_s"] - sum(run["phases"].values())
            ratio = f"  {arm}/A wall {med(arm, 'wall_s') / med('A', 'wall_s'):.2f}x" if "A" in arms else ""
            print(f"{arm:<4} {run['wall_s']:7.1f} s{ratio}: {split}, imports and the rest {other:.1f} s")


if __name__ == "__main__":
    main()
