"""Headless CLI: train / predict / estimate, on the same code paths as the UI."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .config import ConfigError, TrainConfig


def _train_parser(sub):
    p = sub.add_parser("train", help="train a LoRA adapter; writes runs/NAME/ like the UI does")
    p.add_argument("--config", help="a config.yaml (as exported by the UI or written by a run); flags override it")
    p.add_argument("--data", help="'sample' or a CSV/JSONL/JSON/Parquet file")
    p.add_argument("--model", help="'demo', a Hugging Face model id, or a local folder")
    p.add_argument("--quant", choices=["4bit", "8bit", "none"])
    p.add_argument("--lora-r", type=int, dest="lora_r")
    p.add_argument("--lora-alpha", type=int, dest="lora_alpha")
    p.add_argument("--lora-dropout", type=float, dest="lora_dropout")
    p.add_argument("--target-modules", dest="target_modules", help="comma-separated, e.g. q_proj,v_proj")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--max-steps", type=int, dest="max_steps")
    steps.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--grad-accum", type=int, dest="grad_accum")
    p.add_argument("--lr", type=float, dest="learning_rate")
    p.add_argument("--max-length", type=int, dest="max_length")
    p.add_argument("--sample-every", type=int, dest="sample_every")
    p.add_argument("--save-steps", type=int, dest="save_steps")
    p.add_argument("--seed", type=int)
    p.add_argument("--output", help="run folder to create, e.g. runs/my-run")


def _train(args) -> int:
    from .job import TrainingJob

    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if getattr(args, f.name, None) is not None}
    if args.epochs is not None:
        overrides["max_steps"] = 0
    if isinstance(overrides.get("target_modules"), str):
        overrides["target_modules"] = [m.strip() for m in overrides["target_modules"].split(",") if m.strip()]
    config = dataclasses.replace(config, **overrides)
    root = None
    if args.output:
        out = Path(args.output)
        config.name, root = out.name, out.parent
    job = TrainingJob(config, runs_root=root).start()
    print(f"run folder: {job.run.path}", flush=True)
    printed = 0
    try:
        while job.thread.is_alive():
            job.thread.join(1.0)
            rows = job.run.metrics()
            for row in rows[printed:]:
                if "probe_error" in row:
                    print(f"step {row['step']:>5}  probe ${row['probe_error']:.2f} error, "
                          f"{100 * row['probe_hits']:.0f}% hits", flush=True)
                else:
                    print(f"step {row['step']:>5}  loss {row['loss']:.4f}  lr {row['lr'] or 0:.2e}  "
                          f"{row['tokens_per_s']:.0f} tok/s", flush=True)
            printed = len(rows)
    except KeyboardInterrupt:
        print("stopping at the next step (Ctrl-C again to abort)…", flush=True)
        job.stop()
        job.wait()
    status = job.run.status()
    print(f"{status.get('state')}: {status.get('error') or status.get('message')}")
    return 0 if status.get("state") in ("done", "stopped") else 1


def _predict(args) -> int:
    from .inference import Predictor

    predictor = Predictor(args.run)
    for pred in predictor.predict(args.text, method=args.method):
        print("unparseable: " + repr(pred.text) if pred.price is None else f"${pred.price:.2f}")
    return 0


def _eval(args) -> int:
    from .tester import evaluate_run, one_line, summary_table

    def progress(done, total, what):
        print(f"\r{done}/{total} {what}    ", end="", file=sys.stderr, flush=True)

    result = evaluate_run(args.run, data=args.data, limit=args.limit, progress=progress)
    print(file=sys.stderr)
    for name, error, rmsle, hits, bad in summary_table(result):
        print(f"{name:<32} error ${error:>8.2f}  RMSLE {rmsle:5.3f}  hits {hits:5.1f}%  unparseable {bad}")
    print(one_line(result))
    return 0


def _estimate(args) -> int:
    from .models import estimate_adapter, linear_module_names, model_config

    config = model_config(args.model)
    targets = [m.strip() for m in args.target_modules.split(",") if m.strip()]
    print(f"linear layers: {', '.join(linear_module_names(config))}")
    print(estimate_adapter(config, args.lora_r, targets).describe())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    p = sub.add_parser("predict", help="price descriptions with a run's adapter")
    p.add_argument("--run", required=True, help="run folder, e.g. runs/NAME")
    p.add_argument("--method", choices=["greedy", "expected"], default="greedy")
    p.add_argument("text", nargs="+", help="product description(s)")
    p = sub.add_parser("eval", help="the course's Tester: fine-tuned vs base model vs baselines; writes eval.json")
    p.add_argument("--run", required=True, help="run folder, e.g. runs/NAME")
    p.add_argument("--data", help="test file (default: the run's held-out split)")
    p.add_argument("--limit", type=int, help="evaluate only the first N items")
    p = sub.add_parser("estimate", help="trainable parameters and adapter size, without loading weights")
    p.add_argument("--model", default="demo")
    p.add_argument("--lora-r", type=int, default=16, dest="lora_r")
    p.add_argument("--target-modules", default="q_proj,k_proj,v_proj,o_proj", dest="target_modules")
    args = parser.parse_args(argv)
    try:
        return {"train": _train, "predict": _predict, "eval": _eval, "estimate": _estimate}[args.command](args)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
