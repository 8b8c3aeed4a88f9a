"""TrainingJob: the one background training thread per process, its state, stop, and the run folder it writes."""

from __future__ import annotations

import dataclasses
import errno
import gc
import hashlib
import math
import os
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments, get_scheduler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from . import clock, cost, dist, trackers
from .config import RUN_DATA, ConfigError, TrainConfig, liger_usable
from .data import (COURSE_QUESTION, DataError, Product, as_size, fit_max_length, load_products, make_sample_products,
                   split_description, split_products, split_run, tokenize_example)
from .loss import LOG_PRICE, HeadTrainer, PackedPriceCollator, PriceCollator, price_loss
from .models import add_lora, eager, first_line, inference_precision, load_model, load_tokenizer
from .paths import runs_dir
from .pricing.hidden_state import TrainedHead, fit_for
from .pricing.prompts import device_of
from .probe import Probe
from .runs import RunFolder, finished_at

PAUSES = ("probe", "checkpoint saves", "adapter saves")
"""The phases the training loop pauses for: a step's own time leaves them out."""

class Busy(RuntimeError):
    """A job is already running in this process (one GPU, one job)."""

class StopRequested(Exception):
    """Raised between loading phases when the user pressed Stop before training began."""

def load_config_data(config: TrainConfig) -> tuple[list[Product], list[Product], list[Product], str, str]:
    """The train, validation and held-out products of a config, a one-line data summary, and the question the data's
    prompts asked ("" when none).

    The validation slice comes out of the training side of the split (never the held-out rows) and is not trained on.
    """
    question = ""
    if config.data == "sample":
        products, note = make_sample_products(), "synthetic sample products"
    elif config.data.startswith(RUN_DATA):
        # Another run's split, exactly: a variant trained on it is compared on the same held-out rows.
        source = RunFolder(runs_dir() / config.data[len(RUN_DATA):])
        train, validation, test = source.split(), source.split("validation"), source.split("test")
        if not train or not test:
            raise DataError(f"run {source.name} has no saved train/held-out split to reuse")
        if not validation:  # a run from before validation slices: carved from its training rows the usual way
            train, validation = split_products(train, as_size(config.validation_size), seed=config.split_seed)
        asked = TrainConfig.from_yaml(source.config_file).asked() if source.config_file.is_file() else ""
        return train, validation, test, f"the split of run {source.name}", asked
    else:
        products, report = load_products(config.data, text_column=config.text_column or None,
                                           price_column=config.price_column or None)
        note = f"{report.rows_kept} of {report.rows_read} rows kept; split: {split_description(report.splits)}"
        question = report.question
    train, validation, test = split_run(products, config.test_size, config.validation_size, config.split_seed)
    return train, validation, test, note, question


def failure_message(exc: BaseException) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return ("Out of GPU memory. Lower the batch size or the max length, raise gradient accumulation "
                "to keep the effective batch, or load the model in 4-bit.")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return ("Disk full while saving. The last complete checkpoint is kept: free some space (or lower "
                "save_total_limit) and press Resume.")
    if isinstance(exc, (DataError, ValueError)):
        return str(exc)
    return f"{type(exc).__name__}: {first_line(exc)}"


class RunCallback(TrainerCallback):
    """Streams the Trainer's progress into the run folder and honours Stop."""

    def __init__(self, job: "TrainingJob"):
        self.job = job
        self.last_time = None
        self.last_tokens = 0

    def lap(self) -> float:
        """Seconds since the last lap, less the probes and saves in between (their own phases): the loop's own."""
        now, paused = time.perf_counter(), self.job.paused()
        spent = now - self.mark - (paused - self.paused_at)
        self.mark, self.paused_at = now, paused
        return spent

    def total_steps(self, state) -> int | None:
        """The run's step count as the page shows it: None while a run fitted to its time has no estimate yet."""
        return None if state.max_steps == clock.FIT_STEPS_BOUND else state.max_steps

    def fit_to_time(self, args, state, scheduler, done: int, probe_due: bool) -> None:
        """Lays the learning-rate schedule over the steps that fit in the rest of the time limit once `done` steps
        are (and their probe, if due), at the rates measured so far or the prior run's: it ends when the time does."""
        job = self.job
        left = 60 * job.config.max_minutes - (time.time() - self.began)
        total = clock.steps_within(job.plan, clock.own_rates(job.run.status()), left, done, probe_due)
        total = dist.from_writer(total)  # every rank stops at the same step
        if total is None or total == state.max_steps:
            return
        state.max_steps = job.plan.total_steps = total
        # The Trainer's own schedule, rebuilt for the new count.
        rule = get_scheduler(args.lr_scheduler_type, torch.optim.SGD([torch.zeros(1)]), args.get_warmup_steps(total),
                             total, args.lr_scheduler_kwargs).lr_lambdas[0]
        scheduler.lr_lambdas = [rule] * len(scheduler.lr_lambdas)
        job.run.update_status(total_steps=total, plan=dataclasses.asdict(job.plan))

    def on_train_begin(self, args, state, control, model=None, lr_scheduler=None, **kwargs):
        self.last_save = self.began = time.time()
        fitted = self.job.config.fit_to_time
        if fitted:
            # A fresh run prices the probe set with the base model before its first step.
            self.fit_to_time(args, state, lr_scheduler, state.global_step, probe_due=state.global_step == 0)
        self.job.run.update_status(
            state="training", step=state.global_step, total_steps=self.total_steps(state), world_size=args.world_size,
            examples_per_step=args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size)
        self.last_time, self.last_tokens = time.time(), state.num_input_tokens_seen
        if state.max_steps != self.job.plan.total_steps and not fitted:  # the Trainer counts an epochs-run's steps
            self.job.plan.total_steps = state.max_steps
            self.job.run.update_status(plan=dataclasses.asdict(self.job.plan))
        self.mark, self.paused_at = time.perf_counter(), self.job.paused()
        self.job.run.update_status(training_started=self.last_time, training_started_step=state.global_step,
                                   message=self.job.data_message)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return
        now = time.time()
        tokens = state.num_input_tokens_seen
        row = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), "loss": logs["loss"],
               "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
               "tokens_per_s": (tokens - self.last_tokens) / max(now - self.last_time, 1e-9), "time": now}
        if "head_mse" in logs:
            row["head_mse"] = logs["head_mse"]
        self.last_time, self.last_tokens = now, tokens
        self.job.run.append(self.job.run.metrics_file, row)
        self.lap()
        bad = [k for k in ("loss", "grad_norm") if row[k] is not None and not math.isfinite(row[k])]
        if bad:
            self.job.nonfinite = f"{' and '.join(bad)} became {row[bad[0]]} at step {state.global_step}"
            control.should_training_stop = True
            control.should_save = False  # the Trainer saves after logging: never checkpoint broken weights

    def on_save(self, args, state, control, model=None, **kwargs):
        self.last_save = time.time()
        if getattr(model, "price_head", None) is not None and dist.is_writer():  # the Trainer saves the LoRA alone
            model.price_head.save(Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        # The Trainer saves right after on_step_end and on_log: the time since is the checkpoint's.
        spent = self.lap()
        self.job.add_phase("checkpoint saves", spent)
        self.job.tick("saves", 1, spent)
        self.paused_at = self.job.paused()

    def on_optimizer_step(self, args, state, control, lr_scheduler=None, **kwargs):
        # Before the scheduler's step, which sets the rate of the next step by the count fitted here.
        if self.job.config.fit_to_time:
            done, every = state.global_step + 1, self.job.config.sample_every
            self.fit_to_time(args, state, lr_scheduler, done, probe_due=bool(every) and done % every == 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        job = self.job
        # Since the last lap, less the probe and saves: the step alone, as the ETA counts it.
        job.tick("steps", 1, self.lap(), step=state.global_step, total_steps=self.total_steps(state))
        if job.config.fit_to_time and state.global_step >= state.max_steps:
            control.should_training_stop = True
        now, minutes, limit = time.time(), job.config.save_minutes, job.config.max_minutes
        save_due = bool(minutes) and now - self.last_save >= 60 * minutes
        time_up = bool(limit) and now - self.began >= 60 * limit and state.global_step < state.max_steps
        spent = cost.cost(now - job.started_at, job.price[0]) if job.price else 0.0
        cost_up = bool(job.config.max_cost) and spent >= job.config.max_cost and state.global_step < state.max_steps
        save_due, time_up, cost_up, stop = dist.any_rank(save_due, time_up, cost_up, job.stop_event.is_set())
        if save_due:
            control.should_save = True
        if time_up:
            job.time_up = f"time limit of {limit:g} min reached at step {state.global_step} of {state.max_steps}"
            control.should_training_stop = True
        elif cost_up:
            job.time_up = (f"cost cap of ${job.config.max_cost:g} reached at step {state.global_step} of "
                           f"{state.max_steps} (${spent:.2f} at ${job.price[0]:g}/h)")
            control.should_training_stop = True
        if stop:
            job.stop_event.set()  # Stop pressed on another rank: this one ends as stopped too
            control.should_training_stop = True
            # A checkpoint at the stop point lets Resume continue exactly here.
            control.should_save = job.config.checkpointing()


def _machine_check(config: TrainConfig) -> tuple[float, str] | None:
    """What `config` needs of the machine and its packages, refused before any folder is touched; then the stated
    hourly price (USD, its source), checked against a cost cap."""
    if trackers.missing(config.report_to):
        raise ConfigError(trackers.missing(config.report_to))
    if config.compile_layers and not torch.cuda.is_available():
        raise ConfigError("compile_layers: compiling the layers needs a CUDA GPU (on a CPU it costs more minutes "
                          "than it saves: bench/README.md)")
    if config.liger_kernel and not liger_usable():
        raise ConfigError("liger_kernel: Liger's kernels need a CUDA GPU and the liger-kernel package "
                          "(pip install liger-kernel)")
    try:
        price = cost.hourly_price()
    except cost.PriceError as exc:
        if config.max_cost:  # without a cap, an unpriced flavour only means no cost line
            raise ConfigError(str(exc)) from None
        return None
    if config.max_cost and price is None:
        raise ConfigError(f"max_cost: a cost cap needs the hourly price: set {cost.PRICE_ENV} (dollars an hour) "
                          f"or {cost.HARDWARE_ENV} (a Spaces flavour)")
    return price


def training_args(cfg: TrainConfig, run: RunFolder) -> TrainingArguments:
    """The Trainer's arguments for a run of `cfg` into `run`'s checkpoints folder."""
    return TrainingArguments(
        output_dir=str(run.checkpoints_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        # transformers 5 has no warmup_ratio: it reads a warmup_steps below 1 as that share of the steps.
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.epochs,
        max_steps=clock.FIT_STEPS_BOUND if cfg.fit_to_time else cfg.max_steps or -1,
        logging_steps=1,
        # Without this, a NaN loss is logged as the previous value and training goes on silently.
        logging_nan_inf_filter=False,
        # With save_steps 0 the callback still asks for time-based and stop-time checkpoints.
        save_strategy="steps" if cfg.checkpointing() else "no",
        save_steps=cfg.save_steps or 10**9,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        report_to=cfg.report_to,
        run_name=run.name,
        disable_tqdm=True,
        remove_unused_columns=False,
        # A packed row has no padding and no attention mask to count it by.
        include_num_input_tokens_seen="all" if cfg.packing else "non_padding",
        use_liger_kernel=cfg.liger_kernel,
        optim="paged_adamw_32bit" if torch.cuda.is_available() else "adamw_torch",
        bf16=cfg.use_bf16(),
        # Non-reentrant: the frozen base's inputs need no gradient for the LoRA layers inside to get theirs.
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        # Without a GPU the Trainer refuses bf16, and accelerate sets up several processes (gloo), only when told
        # the CPU is meant; otherwise it keeps picking MPS where there is one.
        use_cpu=not torch.cuda.is_available() and (cfg.use_bf16() or dist.world_size() > 1),
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        dataloader_pin_memory=torch.cuda.is_available(),
    )


class TrainingJob:
    """One training run in a background thread, writing runs/<name>/ as it goes: TrainingJob.new(config) or
    TrainingJob.resume(folder), then start()."""

    def __init__(self, run: RunFolder, config: TrainConfig, price: tuple[float, str] | None, *,
                 checkpoint: Path | None = None, resume_note: str = "", owner: str | None = None,
                 callbacks: tuple = ()):
        """A job on a run folder that new() or resume() has made ready; `callbacks` are extra Trainer callbacks (the
        speed benchmark times steps with one)."""
        self.run, self.config, self.price, self.checkpoint = run, config, price, checkpoint
        self.resume_note = resume_note
        """Where a resumed run continues from, and what it skipped ("" for a new run)."""
        self.extra_callbacks = list(callbacks)
        self.run.update_status(pid=os.getpid(), owner=owner, hourly_usd=self.price and self.price[0],
                               price_source=self.price and self.price[1])
        self.stop_event = threading.Event()
        self.trainer = None  # the Trainer while it trains: the probe logs its scalars to the trackers through it
        self.thread = threading.Thread(target=self._run, name=f"train-{self.run.name}", daemon=True)
        self.nonfinite: str | None = None
        self.time_up: str | None = None
        self.tokenizer = None
        self.probe = Probe(self)
        self.data_message = self.data_note = ""
        self.outcome: str | None = None  # this process's final state; on ranks > 0 the status file is rank 0's
        # Where the wall time went, in seconds by phase; a resumed run adds its own to the earlier ones.
        self.phases: dict[str, float] = dict(self.run.status().get("phases") or {})
        self.clock: dict[str, float] = dict(self.run.status().get("clock") or {})
        self.plan: clock.Plan | None = clock.run_plan(self.run.status())

    @classmethod
    def new(cls, config: TrainConfig, runs_root: Path | None = None, owner: str | None = None,
            callbacks: tuple = ()) -> "TrainingJob":
        """A new run of `config` in a new folder under `runs_root` (the app's runs folder by default)."""
        # Checked (types too) before any folder exists: a refused config leaves nothing behind.
        config = config.validate()
        price = _machine_check(config)
        name = config.name or f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(config.model).name}-r{config.lora_r}"
        if dist.is_writer():
            made = RunFolder.create(name, runs_root)
            config.name = made.name  # the folder's real name, suffixed if the name was taken
            made.write_config(config.recorded())
        # Every rank trains into the one folder rank 0 made (its name may have a suffix or another second).
        run = RunFolder(Path(dist.from_writer(str(made.path) if dist.is_writer() else None)), writer=dist.is_writer())
        config.name = run.name
        run.update_status(state="queued", step=0, total_steps=None, created=time.time(), error=None)
        return cls(run, config, price, owner=owner, callbacks=callbacks)

    @classmethod
    def resume(cls, folder: str | Path, owner: str | None = None, callbacks: tuple = ()) -> "TrainingJob":
        """The run in `folder`, to continue from its last complete checkpoint (later ones incomplete are skipped)."""
        run = RunFolder(Path(folder), writer=dist.is_writer())
        if not run.config_file.is_file():
            raise ValueError(f"{folder} is not a run folder (no config.yaml)")
        # Only rank 0 checks: the other ranks could already see its own "queued".
        if run.writer and run.state() in ("queued", "loading", "training", "stopping"):
            raise ValueError(f"run {run.name} is still {run.state()} in another process")
        config = TrainConfig.from_yaml(run.config_file).validate()
        price = _machine_check(config)
        checkpoint, skipped = run.last_complete_checkpoint()
        if checkpoint is None:
            raise ValueError(f"run {run.name} has no complete checkpoint to resume from"
                             + (f" ({'; '.join(skipped)})" if skipped else ""))
        resumed_at = int(checkpoint.name.split("-")[-1])
        run.truncate_after(resumed_at)
        note = f"resuming from {checkpoint.name}" + (f" ({'; '.join(skipped)})" if skipped else "")
        resumes = run.status().get("resumes", []) + [{"from": checkpoint.name, "skipped": skipped, "time": time.time()}]
        run.update_status(state="queued", step=resumed_at, error=None, ended=None, message=note, resumes=resumes)
        return cls(run, config, price, checkpoint=checkpoint, resume_note=note, owner=owner, callbacks=callbacks)

    def tick(self, kind: str, count: int, seconds: float, **fields) -> None:
        """Counts `count` units of `kind` (steps, probe_items, saves, head_rows) done in `seconds`: the run's rates,
        which its ETA and later runs' pre-Start estimates read (clock.py)."""
        self.clock[kind] = self.clock.get(kind, 0) + count
        self.clock[f"{kind}_s"] = round(self.clock.get(f"{kind}_s", 0.0) + seconds, 3)
        self.run.update_status(clock=self.clock, clock_at=time.time(), **fields)

    def add_phase(self, phase: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds
        self.run.update_status(phases={name: round(value, 2) for name, value in self.phases.items()})

    @contextmanager
    def timed(self, phase: str):
        """Adds the block's wall time to `phase` in status.json's `phases`."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.add_phase(phase, time.perf_counter() - began)

    @property
    def state(self) -> str:
        return self.run.status().get("state", "queued")

    def start(self) -> "TrainingJob":
        self.thread.start()
        return self

    def stop(self) -> None:
        if not self.stop_event.is_set() and self.thread.is_alive():
            self.stop_event.set()
            self.run.update_status(state="stopping")

    def wait(self, timeout: float | None = None) -> str:
        self.thread.join(timeout)
        return self.state

    def _check_stop(self):
        if self.stop_event.is_set():
            raise StopRequested()

    def paused(self) -> float:
        """Seconds the training loop has paused for so far (PAUSES)."""
        return sum(self.phases.get(name, 0.0) for name in PAUSES)

    def _run(self) -> None:
        model = None
        # What a cost cap and the live cost count from: the GPU is paid for while the model loads too. A resumed run
        # counts from its resume.
        self.started_at = time.time()
        self.run.update_status(cost_from=self.started_at)
        try:
            # 1. The data: the split, the probe items and the constant baselines to beat.
            train = self._load_data()
            self._check_stop()
            # 2. The model: tokenizer, examples, frozen base, LoRA adapters.
            model, examples = self._load_model(train)
            # 3. The lecture's four steps per batch, in transformers' Trainer.
            step = self._train(model, examples)
            # 4. The last probe, the adapter saved, the final state.
            self._finish_run(model, step, train)
        except StopRequested:
            self._finish("stopped", message="stopped before training began")
        except BaseException as exc:  # anything raised in the thread must end the job, never the app
            traceback.print_exc()
            self._finish("failed", error=failure_message(exc), message="failed")
        finally:
            del model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _load_data(self) -> list[Product]:
        cfg = self.config
        self.run.update_status(state="loading", started=self.run.status().get("started") or time.time(),
                               message="reading data")
        began = time.perf_counter()
        if self.checkpoint is not None:
            # The run's own split: the original upload may be gone, and the split must not change.
            train, validation, test = self.run.split(), self.run.split("validation"), self.run.split("test")
            note = "resumed run's split"
        else:
            train, validation, test, note, question = load_config_data(cfg)
            if not cfg.question:  # the data's own question, so a course file is asked what it was written with
                cfg.question = question or COURSE_QUESTION
                self.run.write_config(cfg.recorded())
            self.run.write_split(train, validation, test)
            if Path(cfg.data).is_file():  # which file it was, by content: its path may be a server's temp folder
                with open(cfg.data, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256")
                self.run.update_status(data_file={"name": cfg.data_name or Path(cfg.data).name,
                                                  "sha256": digest.hexdigest(), "bytes": Path(cfg.data).stat().st_size})
        if self.plan is None:
            self.plan = clock.plan_for(cfg, len(train), clock.planned_steps(cfg, len(train), dist.world_size()))
        # The probe measures training on rows kept out of it; the held-out rows are only for the final Tester.
        self.probe.choose(validation, test, self.plan.probe_items)
        self.data_note = (f"{len(train)} training / {len(validation)} validation / {len(test)} held-out products "
                          f"({note})") + (f"; {clock.plan_note(self.plan, cfg)}" if not self.plan.full else "")
        self.add_phase("data", time.perf_counter() - began)
        self.probe.fit_baselines(train, resumed=self.checkpoint is not None)
        return train

    def _load_model(self, train: list[Product]):
        cfg = self.config
        self.run.update_status(message=f"loading {cfg.model} ({cfg.quant})")
        with self.timed("tokenize"):
            self.tokenizer = tokenizer = load_tokenizer(cfg.model)
            tokenizer.padding_side = "right"
            max_length = cfg.max_length or fit_max_length(tokenizer, train, question=cfg.asked())
            self.max_prompt_tokens = max_length
            examples = [tokenize_example(tokenizer, p.text, p.price, max_length, cfg.asked()) for p in train]
            if cfg.head_loss:
                examples = [{**e, LOG_PRICE: math.log1p(p.price)} for e, p in zip(examples, train)]
        self._check_stop()
        with self.timed("model load"):
            model = load_model(cfg.model, cfg.quant, cfg.hub_kernels)
            self._check_stop()
            model = add_lora(model, cfg)
            if cfg.head_loss:
                # A module of the model, so that the Trainer's optimizer, device moves and train/eval modes reach it.
                # On the model's device: the Trainer moves no quantized model, so it would not move the head either.
                head = TrainedHead.load(self.checkpoint) if self.checkpoint else None
                if head is None:
                    with inference_precision(model, cfg.use_bf16()), eager():
                        # Stop is honoured between its batches: on a CPU the pass takes seconds.
                        head = TrainedHead.for_run(model, tokenizer, train, cfg.head_loss,
                                                   max_prompt_tokens=max_length, question=cfg.asked(),
                                                   report=lambda *_: self._check_stop())
                model.price_head = head.to(device_of(model))
        self._check_stop()
        self.data_message = (f"{self.data_note}; max length {max_length} tokens; $ error on "
                             f"{len(self.probe.items)} {self.probe.name} items")
        shape = {"model": cfg.model, "quant": cfg.quant, "precision": "bf16" if cfg.use_bf16() else "fp32",
                 "batch_size": cfg.batch_size * cfg.grad_accum, "max_length": max_length}
        # The newest run of this shape on this machine: its rates stand in for any this run has not measured yet.
        prior = clock.newest_rates(shape["model"], shape["quant"], shape["precision"], shape["batch_size"],
                                   max_length, self.run.path.parent, skip=self.run.name)
        self.run.update_status(max_length=max_length, data_summary=self.data_message, message=self.data_message,
                               plan=dataclasses.asdict(self.plan), machine=clock.machine(), shape=shape,
                               prior=prior and dataclasses.asdict(prior))
        return model, examples

    def _train(self, model, examples) -> int:
        """Train to the end (or Stop, or the time limit); the step it ended on."""
        step = finished_at(self.checkpoint) if self.checkpoint else None
        if step is not None:
            # Stopped between the last step's checkpoint and the end: nothing is left to train, and the Trainer
            # would still run one step past max_steps before checking it. Finish from the checkpoint's weights.
            set_peft_model_state_dict(model, load_file(str(self.checkpoint / "adapter_model.safetensors")))
            return step
        trainer = (HeadTrainer if self.config.head_loss else Trainer)(
            model=model, args=training_args(self.config, self.run), train_dataset=examples,
            data_collator=PackedPriceCollator() if self.config.packing else PriceCollator(self.tokenizer, padding=True),
            compute_loss_func=price_loss, callbacks=[RunCallback(self), self.probe, *self.extra_callbacks])
        trainer.remove_callback(PrinterCallback)  # progress goes to the run folder, not stdout
        trackers.set_up(trainer, self.run.path, lambda warning: self.run.update_status(tracker_warning=warning))
        self.trainer = trainer
        before, began = self.paused(), time.perf_counter()
        with trackers.logs_in(self.run.path, self.config.report_to):
            trainer.train(resume_from_checkpoint=str(self.checkpoint) if self.checkpoint else None)
        # The steps themselves: the training loop's time less the probes and saves it paused for.
        self.add_phase("steps", time.perf_counter() - began - self.paused() + before)
        if self.nonfinite:
            raise FloatingPointError(f"Training stopped: {self.nonfinite}. Nothing was saved from the broken "
                                     "weights; lower the learning rate or use a higher-precision dtype.")
        return trainer.state.global_step

    def _finish_run(self, model, step: int, train: list[Product]) -> None:
        # The last step is never priced in on_step_end, except when the time limit ended the run there; a resumed
        # finished run may have priced it before it was stopped.
        if not self.stop_event.is_set() and dist.is_writer() and not self.probe.priced(step):
            self.probe.price(model, step)
        with self.timed("adapter saves"):
            self.run.save_adapter(model, self.tokenizer, self.run.adapter_dir)
        saved = f"the adapter of step {step}"
        if not self.stop_event.is_set() and dist.is_writer() and self._fit_head(model, train):
            saved += " with its price head"
        best = self.run.status().get("best_step")
        if best is not None:
            saved += (f" and, kept beside it, the one with the best probe $ error (step {best}, "
                      f"${self.probe.best_error:.2f})")
        if self.stop_event.is_set():
            self._finish("stopped", step=step, message=f"stopped at step {step}; saved {saved}")
        else:
            ended = f" ({self.time_up})" if self.time_up else ""
            self._finish("done", step=step, message=f"done: {step} steps{ended}; saved {saved}")

    def _fit_head(self, model, train: list[Product]) -> bool:
        """The price head fitted on the first head_rows training rows and stored beside the adapter; False when
        Stop was pressed meanwhile (the head is then fitted when first asked for)."""

        began = time.time()

        def report(done: int, total: int) -> None:
            # The live view's ETA runs on these rows once the last step is done.
            self.run.update_status(message=f"fitting the price head: {done} of {total} training rows",
                                   fitting_head={"done": done, "total": total, "since": began, "at": time.time()})
            self._check_stop()

        rows = train[: self.plan.head_rows]
        self.run.update_status(fitting_head={"done": 0, "total": len(rows), "since": began, "at": began})
        try:
            with self.timed("price head"), inference_precision(model, self.config.use_bf16()), eager():
                head = fit_for(model, self.tokenizer, rows, trained=getattr(model, "price_head", None),
                               report=report, max_prompt_tokens=self.max_prompt_tokens, question=self.config.asked())
        except StopRequested:
            return False
        finally:
            self.run.update_status(fitting_head=None)
        self.tick("head_rows", len(rows), time.time() - began)
        head.save(self.run.adapter_dir)
        return True

    def _finish(self, state: str, **fields) -> None:
        self.outcome = state
        self.run.update_status(state=state, ended=time.time(), **fields)


class JobManager:
    """Holds the process's one training job; a second start is refused with the running job's progress."""

    def __init__(self):
        self._lock = threading.Lock()
        self.job: TrainingJob | None = None

    def start(self, config: TrainConfig | None = None, runs_root: Path | None = None,
              resume: str | Path | None = None, owner: str | None = None) -> TrainingJob:
        with self._lock:
            if self.job is not None and self.job.outcome is not None:
                # Ended, and only freeing its model: the next run waits for that memory, not the user.
                self.job.thread.join(timeout=120)
            if self.job is not None and self.job.thread.is_alive():
                status = self.job.run.status()
                total = status.get("total_steps") or "?"
                raise Busy(f"Busy: run {self.job.run.name} is {status.get('state', 'running')} "
                           f"(step {status.get('step', 0)}/{total}). Stop it or wait for it to finish.")
            self.job = (TrainingJob.resume(resume, owner=owner) if resume is not None
                        else TrainingJob.new(config, runs_root, owner=owner)).start()
            return self.job

    def stop(self) -> str:
        job = self.job
        if job is None or not job.thread.is_alive():
            return "No run is training."
        job.stop()
        return f"Stopping {job.run.name} at the next step…"

    def active(self) -> TrainingJob | None:
        job = self.job
        return job if job is not None and job.thread.is_alive() else None


JOBS = JobManager()
