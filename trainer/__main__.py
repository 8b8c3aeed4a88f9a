"""Headless CLI: train / predict / eval / estimate / check-data, on the same code paths as the UI."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import typing
from pathlib import Path

from .config import PRESET_NAMES, PRESETS, QUANTIZATIONS, ConfigError, TrainConfig, field_docs, names_list, preset
from .pricing import AUTO, AUTO_HELP, CHOICES, REGISTRY

# Each subcommand imports what it runs when it runs: --help and check-data load no job, Tester, catalog or sweep.

# CLI spellings the generated flags keep as aliases.
ALIASES = {"learning_rate": ["--lr"]}


def _train_parser(sub):
    """`train`'s flags, one per TrainConfig field, generated from the dataclass: its types, choices and docstrings."""
    p = sub.add_parser("train", help="train a LoRA adapter; writes runs/NAME/ like the UI does",
                       epilog="Several GPUs: the same command under `torchrun --nproc_per_node N -m trainer train …` "
                              "or `accelerate launch --multi_gpu --num_processes N -m trainer train …`; rank 0 "
                              "writes the run folder.")
    _config_flags(p)
    p.add_argument("--output", help="run folder to create, e.g. runs/my-run")
    p.add_argument("--resume", metavar="RUN", help="continue runs/NAME from its last complete checkpoint")


def _config_flags(p) -> None:
    """--config, --preset and one flag per TrainConfig field (but the name), shared by `train` and `sweep`."""
    p.add_argument("--config", help="a config.yaml (as exported by the UI or written by a run); flags override it")
    p.add_argument("--preset", choices=list(PRESETS), help="start from a preset (instead of --config): "
                   + "; ".join(f"{k}: {v}" for k, v in PRESET_NAMES.items()) + "; flags override it")
    docs, types = field_docs(), typing.get_type_hints(TrainConfig)
    steps = p.add_mutually_exclusive_group()  # --epochs trains by epochs instead of --max-steps
    for f in dataclasses.fields(TrainConfig):
        if f.name == "name":  # the run folder is --output
            continue
        kind, flags = types[f.name], [f"--{f.name.replace('_', '-')}", *ALIASES.get(f.name, [])]
        options = {"dest": f.name, "help": docs.get(f.name, "").replace("%", "%%")}
        if typing.get_origin(kind) is typing.Literal:
            options["choices"] = typing.get_args(kind)
        elif kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind in (int, float):
            options["type"] = kind
        elif kind != str:
            options["help"] += " (comma-separated)"
        (steps if f.name in ("max_steps", "epochs") else p).add_argument(*flags, **options)


def _config_of(args) -> TrainConfig:
    """The config `--config` / `--preset` and the field flags describe (not yet validated)."""
    if args.config and args.preset:
        raise SystemExit(f"{args.command}: give --config or --preset, not both")
    if args.preset:
        config = preset(args.preset)
    else:
        config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig.for_model(args.model or "demo")
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if getattr(args, f.name, None) is not None}
    if args.epochs is not None:
        overrides["max_steps"] = 0
    return TrainConfig.from_dict({**dataclasses.asdict(config), **overrides})


def _train(args) -> int:
    from .job import TrainingJob
    from .memory import gpu_warning

    if args.resume:
        job = TrainingJob.resume(args.resume)
        print(job.resume_note, flush=True)
        return _follow(job.start())
    config = _config_of(args)
    root = None
    if args.output:
        out = Path(args.output)
        if out.exists():  # the next command (eval --run, predict --run) would look there, not at a NAME-1 beside it
            raise ValueError(f"--output {out} exists: give a new folder, or continue that run with --resume {out}")
        config.name, root = out.name, out.parent
    warning = gpu_warning(config)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return _follow(TrainingJob.new(config, runs_root=root).start())


def _sweep_parser(sub):
    p = sub.add_parser("sweep", help="train a grid of configs one after another and rank them by held-out $ error",
                       epilog="Run the same command again to continue a stopped or killed sweep: finished runs are "
                              "skipped, an interrupted one resumes from its last checkpoint.")
    _config_flags(p)
    p.add_argument("--set", action="append", default=[], dest="sets", metavar="FIELD=V1,V2,…",
                   help="a field and its values (list fields join names with '+'); repeat for a grid")
    p.add_argument("--minutes", type=float, help="a time limit per run (max_minutes)")
    p.add_argument("--output", required=True, help="the sweep folder, e.g. runs/SWEEP; its runs go beside it")


def _sweep(args) -> int:
    from .job import TrainingJob
    from .sweep import Sweep, leaderboard_lines, parse_set, run_sweep

    if args.minutes is not None:
        args.max_minutes = args.minutes
    sets = [parse_set(text) for text in args.sets]
    folder = Path(args.output)
    sweep, opened = Sweep.create_or_open(folder, _config_of(args), sets)
    if opened:
        print(f"continuing the sweep recorded in {folder} (its own grid and settings)", flush=True)
    elif not sets:
        raise SystemExit("sweep: give at least one --set FIELD=V1,V2")

    def start(config=None, runs_root=None, resume=None):
        job = (TrainingJob.resume(resume) if resume is not None else TrainingJob.new(config, runs_root)).start()
        _follow(job)
        return job.outcome

    rows = run_sweep(sweep, start, progress=lambda line: print(line, flush=True))
    print("\n".join(leaderboard_lines(rows)))
    print(f"leaderboard: {folder / 'leaderboard.json'}")
    return 0


def _follow(job) -> int:
    """Print the run folder's new metric rows while the job trains; Ctrl-C stops it like the Stop button."""
    from . import clock, dist

    # Under torchrun every rank follows its own job; rank 0 alone prints, as it alone writes the folder.
    say = print if dist.is_writer() else (lambda *a, **k: None)
    say(f"run folder: {job.run.path}", flush=True)
    printed, message, said_at = len(job.run.metrics()), "", 0.0
    try:
        while job.thread.is_alive():
            job.thread.join(1.0)
            rows, status = job.run.metrics(), job.run.status()
            left = clock.eta(status, time.time())
            eta = "" if left is None else f"  ETA {clock.hms(left)}"
            for row in rows[printed:]:
                if "probe_error" in row:
                    say(f"step {row['step']:>5}  probe ${row['probe_error']:.2f} error, "
                          f"{100 * row['probe_hits']:.0f}% hits", flush=True)
                else:
                    say(f"step {row['step']:>5}  loss {row['loss']:.4f}  lr {row['lr'] or 0:.2e}  "
                          f"{row['tokens_per_s']:.0f} tok/s{eta}", flush=True)
            printed = len(rows)
            # What the run is doing between steps (loading, the head's rows), at most every 15 s while it repeats.
            now_saying = status.get("message") or ""
            if now_saying and now_saying != message and (now_saying.split(":")[0] != message.split(":")[0]
                                                         or time.time() - said_at >= 15):
                say(f"{now_saying}{eta}", flush=True)
                message, said_at = now_saying, time.time()
    except KeyboardInterrupt:
        say("stopping at the next step (Ctrl-C again to abort)…", flush=True)
        job.stop()
        job.wait()
    from .runs import phase_line

    status = job.run.status()
    if (status.get("error") or status.get("message")) != message:
        say(status.get("error") or status.get("message"))
    if phase_line(status):
        say(phase_line(status))
    dist.finish()
    return 0 if job.outcome in ("done", "stopped") else 1


def _predict(args) -> int:
    from .tester import price_texts

    def progress(done, total, what):
        print(f"\r{done}/{total} {what}    ", end="", file=sys.stderr, flush=True)

    from .pricing.novelty import novelty
    from .runs import RunFolder, barely_trained

    prices, method, why = price_texts(args.run, args.text, args.method, progress=progress)
    print(f"method: {method} ({why})", file=sys.stderr)
    run = RunFolder(Path(args.run))
    warning = barely_trained(run)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    novel = novelty(run)
    notes, whole = novel.judge(args.text, run) if novel else ([""] * len(prices), "")
    if any(notes):
        print(f"note: {f'these texts, {whole}' if whole else novel.rule()}", file=sys.stderr)
    for price, note in zip(prices, notes):
        print(("unparseable" if price is None else f"${price:.2f}") + (f"  ({note})" if note else ""))
    return 0


def _eval(args) -> int:
    from .pricing.ranges import range_line
    from .tester import evaluate_run, one_line, summary_table, verdict

    def progress(done, total, what):
        print(f"\r{done}/{total} {what}    ", end="", file=sys.stderr, flush=True)

    result = evaluate_run(args.run, data=args.data, limit=args.limit, progress=progress, method=args.method)
    print(file=sys.stderr)
    for name, error, rmsle, hits, mse, r2, bad in summary_table(result):
        r2 = "  —  " if r2 is None else f"{r2:5.2f}"
        print(f"{name:<32} error ${error:>8.2f}  RMSLE {rmsle:5.3f}  hits {hits:5.1f}%  MSE {mse or 0:>10,.0f}  "
              f"r² {r2}  unparseable {bad}")
    print(one_line(result))
    print(verdict(result))
    if range_line(result):
        print(range_line(result))
    return 0


def _price(args) -> int:
    from .catalog import price_catalog, write_catalog

    def progress(done, total, what):
        print(f"\r{done}/{total} {what}    ", end="", file=sys.stderr, flush=True)

    catalog = price_catalog(args.run, args.file, text_column=args.text_column, price_column=args.price_column,
                            level=args.level, method=args.method, progress=progress)
    print(file=sys.stderr)
    write_catalog(catalog.frame, args.out)
    print(catalog.summary())
    print(f"written: {args.out}")
    return 0


def _estimate(args) -> int:
    from .config import DEMO, gpu_defaults_line
    from .memory import ESTIMATE_LENGTH, GiB, detected_gpu, estimate_memory, fit_warning
    from .models import estimate_adapter, linear_module_names, model_config
    from .timing import TIMING_STEPS, time_line

    config = model_config(args.model)
    targets = names_list(args.target_modules)
    print(f"linear layers: {', '.join(linear_module_names(config))}")
    adapter = estimate_adapter(config, args.lora_r, targets)
    print(adapter.describe())
    length = args.max_length or ESTIMATE_LENGTH

    def memory(**settings):
        return estimate_memory(config, args.quant, adapter.trainable_params, targets, args.lora_r, args.batch_size,
                               length, dropout=args.lora_dropout > 0, **settings)

    # PriceTune's defaults on a GPU (config.model_defaults): checkpointing for every model but the demo.
    checkpointing = args.model.strip() != DEMO
    default = memory(gradient_checkpointing=checkpointing)
    print(f"batch {args.batch_size} × {length} tokens, {args.quant}, on a GPU with PriceTune's defaults (bf16 "
          f"compute and norms, gradient checkpointing {'on' if checkpointing else 'off'}): {default.describe()}")
    other = memory(gradient_checkpointing=not checkpointing)
    fp32 = memory(gradient_checkpointing=checkpointing, fp32_norms=True)
    full = memory(gradient_checkpointing=True, price_logits_only=False)
    print(f"with gradient checkpointing {'off' if checkpointing else 'on'}: {other.total / GiB:.1f} GiB; "
          f"with fp32 norms and embeddings (fp32_norms): {fp32.total / GiB:.1f} GiB; "
          f"TRL's SFTTrainer (checkpointing, the loss over the full vocabulary): {full.total / GiB:.1f} GiB")
    print(gpu_defaults_line(args.model.strip()))
    gpu = detected_gpu()
    if gpu and fit_warning(default, *gpu):
        print(f"warning: {fit_warning(default, *gpu)}")
    run = TrainConfig.from_dict({**dataclasses.asdict(TrainConfig.for_model(args.model)),
                                 **{k: getattr(args, k) for k in ("quant", "lora_r", "lora_dropout", "batch_size",
                                                                  "max_length", "grad_accum", "max_steps", "data",
                                                                  "sample_every", "probe_size", "head_rows",
                                                                  "max_minutes", "fit_to_time")},
                                 "target_modules": targets}).validate()
    if args.time:
        from .job import JOBS
        from .timing import measure

        print(f"timing {TIMING_STEPS} steps of it on this machine…", flush=True)
        measure(run, JOBS)
    print(time_line(run, run.max_length).replace("**", ""))
    return 0


def _check_data_parser(sub):
    p = sub.add_parser("check-data", help="read a data file the way training will and report what was cleaned")
    p.add_argument("file", help="a CSV/TSV/JSON/JSONL/Parquet file, a Hugging Face dataset folder "
                                "(save_to_disk), or a Hub dataset id owner/name")
    p.add_argument("--text-column", dest="text_column",
                   help="text column, or several comma-separated (joined in order); default: detected")
    p.add_argument("--price-column", dest="price_column", help="price column; default: detected")
    p.add_argument("--decimal-comma", dest="decimal_comma", action="store_true", default=None,
                   help="prices write decimals after a comma (1.299,99); default: detected per file")
    p.add_argument("--max-rows", dest="max_rows", type=int, default=200_000, help="refuse files with more rows")


def _histogram(lengths: list[int], cutoff: int, bins: int = 10, width: int = 40) -> list[str]:
    """A text histogram of example lengths; the bin holding the cut-off is marked."""
    low, high = min(lengths), max(lengths)
    step = max(1, -(-(high - low + 1) // bins))  # ceiling division: every length falls in a bin
    counts = [0] * (-(-(high - low + 1) // step))
    for n in lengths:
        counts[(n - low) // step] += 1
    lines = []
    for i, count in enumerate(counts):
        start, end = low + i * step, low + (i + 1) * step - 1
        mark = "  ◀ cut-off" if start <= cutoff <= end else ""
        bar = "#" * max(1 if count else 0, round(width * count / max(counts)))
        lines.append(f"  {start:>5}–{end:<5} {bar:<{width}} {count:>6}{mark}")
    return lines


def _token_report(products) -> list[str]:
    from statistics import median

    from .data import example_lengths, fit_max_length
    from .models import load_tokenizer

    tokenizer = load_tokenizer("demo")
    lengths = example_lengths(tokenizer, products)
    cutoff = fit_max_length(tokenizer, products)
    cut = sum(n > cutoff for n in lengths)
    return ([f"tokens per example (demo tokenizer, course prompt + price): min {min(lengths)}, "
             f"median {median(lengths):.0f}, max {max(lengths)}"]
            + _histogram(lengths, cutoff)
            + [f"cut-off (max length from the data): {cutoff} tokens; {cut} of {len(lengths)} "
               f"({100 * cut / len(lengths):.1f}%) texts get truncated (never the price)"])


def _data_report_lines(report, products) -> list[str]:
    from statistics import median

    from .data import split_run

    lines = [f"rows read:      {report.rows_read:,}", f"rows kept:      {report.rows_kept:,}",
             f"columns found:  {', '.join(report.columns)}",
             f"text column(s): {' + '.join(report.text_columns)}"
             + ("  (raw Amazon metadata, curated the course's way)" if report.schema == "amazon" else ""),
             f"price column:   {report.price_column}"]
    lines += [f"dropped:        {line}" for line in report.dropped_lines()]
    lines.append(f"duplicates:     {report.duplicates:,} exact duplicates removed")
    lines.append(f"conflicting:    {report.conflicting:,} repeated texts with a different price (first kept)")
    lines += [f"warning:        {w}" for w in report.warnings]
    prices = [p.price for p in products]
    lines.append(f"prices:         min ${min(prices):,.2f}, median ${median(prices):,.2f}, max ${max(prices):,.2f}")
    defaults = TrainConfig()
    train, validation, test = split_run(products, defaults.test_size, defaults.validation_size, defaults.split_seed)
    leaked = len({p.text for p in train + validation} & {p.text for p in test})
    lines.append(f"split:          {len(train):,} train / {len(validation):,} validation / {len(test):,} held out; "
                 f"{leaked} texts in both training and held out")
    return lines


def _check_data(args) -> int:
    from .data import DataError, load_products
    from .models import load_tokenizer

    try:
        # The tokenizer cuts curated Amazon metadata to the course's token budget, as training would see it.
        products, report = load_products(args.file, text_column=args.text_column, price_column=args.price_column,
                                           decimal_comma=args.decimal_comma, max_rows=args.max_rows,
                                           tokenizer=load_tokenizer("demo"))
    except DataError as exc:
        print(f"not usable: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, as the exit code promises
        return 2
    print("\n".join(_data_report_lines(report, products) + _token_report(products)))
    print("usable: yes")
    return 0


def _export(args) -> int:
    from . import export

    print(f"model card: {export.model_card(args.run)}")
    if args.merge is not None:
        print(f"merged model: {export.merge(args.run, args.merge or None)}")
    if args.push:
        print(f"pushed: {export.push(args.run, args.push, args.token, private=not args.public)}")
    return 0


def _method_argument(p) -> None:
    p.add_argument("--method", choices=CHOICES, default=AUTO,
                   help="; ".join([f"{AUTO}: {AUTO_HELP}", *(f"{m.name}: {m.help}" for m in REGISTRY)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _sweep_parser(sub)
    p = sub.add_parser("predict", help="price descriptions with a run's adapter")
    p.add_argument("--run", required=True, help="run folder, e.g. runs/NAME")
    _method_argument(p)
    p.add_argument("text", nargs="+", help="product description(s)")
    p = sub.add_parser("eval", help="the course's Tester: fine-tuned vs base model vs baselines; writes eval.json")
    p.add_argument("--run", required=True, help="run folder, e.g. runs/NAME")
    p.add_argument("--data", help="test file (default: the run's held-out split)")
    p.add_argument("--limit", type=int, help="evaluate only the first N items")
    _method_argument(p)
    p = sub.add_parser("price", help="price a whole file of products: every row out, in order, with a price, a "
                                     "range, the method and a note (the Predict tab's Price a file)")
    p.add_argument("--run", required=True, help="run folder, e.g. runs/NAME")
    p.add_argument("file", help="CSV, TSV, JSON, JSONL or Parquet; a price column is optional")
    p.add_argument("--out", required=True, help="the priced file: .csv, .tsv, .json, .jsonl or .parquet")
    p.add_argument("--text-column", help="text column(s), comma-separated (default: found as for training)")
    p.add_argument("--price-column", help="true prices to measure against (default: 'price' or 'completion' if any)")
    p.add_argument("--level", type=float, default=0.8, help="the range's level, between 0 and 1 (default 0.8)")
    _method_argument(p)
    p = sub.add_parser("estimate", help="trainable parameters and adapter size, without loading weights")
    p.add_argument("--model", default="demo")
    p.add_argument("--lora-r", type=int, default=16, dest="lora_r")
    p.add_argument("--target-modules", default="q_proj,k_proj,v_proj,o_proj", dest="target_modules")
    p.add_argument("--lora-dropout", type=float, default=TrainConfig.lora_dropout, dest="lora_dropout")
    p.add_argument("--quant", default="4bit", choices=QUANTIZATIONS, help="the weights' format (default 4bit)")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, dest="batch_size")
    p.add_argument("--max-length", type=int, default=0, dest="max_length",
                   help="tokens per example (default 0: a course prompt's length is assumed)")
    for name in ("grad_accum", "max_steps", "sample_every", "probe_size", "head_rows", "max_minutes", "data"):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(getattr(TrainConfig, name)),
                       default=getattr(TrainConfig, name), help=field_docs()[name])
    p.add_argument("--fit-to-time", dest="fit_to_time", action=argparse.BooleanOptionalAction, default=False,
                   help=field_docs()["fit_to_time"])
    p.add_argument("--time", action="store_true",
                   help="time two steps of this config here first (the real job; minutes for a large model)")
    _check_data_parser(sub)
    p = sub.add_parser("export", help="model card, merged model folder, or a push to the Hugging Face Hub")
    p.add_argument("--run", required=True, help="run folder, e.g. runs/NAME")
    p.add_argument("--merge", metavar="FOLDER", nargs="?", const="",
                   help="fold the adapter into the base model and save it (default folder: RUN/merged)")
    p.add_argument("--push", metavar="OWNER/NAME", help="upload the adapter and its card to this Hub model repo")
    p.add_argument("--token", help="Hugging Face token with write access (default: HF_TOKEN or your login)")
    p.add_argument("--public", action="store_true", help="make a new Hub repo public (default: private)")
    args = parser.parse_args(argv)
    commands = {"train": _train, "sweep": _sweep, "predict": _predict, "eval": _eval, "price": _price,
                "estimate": _estimate, "check-data": _check_data, "export": _export}
    try:
        return commands[args.command](args)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
