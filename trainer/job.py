"""TrainingJob: the one background training thread per process, its state, stop, and the run folder it writes."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import gc
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
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments, set_seed

from .data import (COURSE_QUESTION, DataError, Product, as_size, fit_max_length, load_products, make_sample_products,
                   split_description, split_products, split_run, tokenize_example)
from . import clock, cost, dist, trackers
from .baselines import (TEXT_BASELINE, TEXT_NEIGHBOURS, constant_baselines, fit_text_baseline, fit_text_neighbours,
                        load_text_baseline, predict_prices, save_text_baseline)
from .evaluate import price_metrics
from .config import RUN_DATA, ConfigError, TrainConfig, liger_usable
from .dropout import use_fast_dropout
from .loss import PackedPriceCollator, PriceCollator, price_loss
from .models import compile_layers, eager, first_line, inference_precision, load_model, load_tokenizer
from .paths import runs_dir
from .runs import RunFolder, finished_at


PROBE_BATCH = 16
"""Probe items priced together: one batch of the pricing code, and how often a probe checks for Stop."""


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

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.job.run.update_status(
            state="training", step=state.global_step, total_steps=state.max_steps, world_size=args.world_size,
            examples_per_step=args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size)
        if state.global_step == 0 and dist.is_writer():  # not on resume: step 0 is already on the chart
            self.job.run.update_status(message="pricing the probe set with the base model")
            # LoRA's B matrices start at zero, so this is the base model's score: the line to beat.
            self.job.evaluate_probe(model, 0)
        self.last_time, self.last_tokens = time.time(), state.num_input_tokens_seen
        self.last_save = self.began = time.time()
        if state.max_steps != self.job.plan.total_steps:  # the Trainer's count of an epochs-run is the one it keeps
            self.job.plan.total_steps = state.max_steps
            self.job.run.update_status(plan=dataclasses.asdict(self.job.plan))
        self.mark = time.perf_counter()
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
        self.last_time, self.last_tokens = now, tokens
        self.job.run.append(self.job.run.metrics_file, row)
        self.mark = time.perf_counter()
        bad = [k for k in ("loss", "grad_norm") if row[k] is not None and not math.isfinite(row[k])]
        if bad:
            self.job.nonfinite = f"{' and '.join(bad)} became {row[bad[0]]} at step {state.global_step}"
            control.should_training_stop = True
            control.should_save = False  # the Trainer saves after logging: never checkpoint broken weights

    def on_save(self, args, state, control, **kwargs):
        self.last_save = time.time()
        # The Trainer saves right after on_step_end and on_log: the time since is the checkpoint's.
        spent = time.perf_counter() - self.mark
        self.job.add_phase("checkpoint saves", spent)
        self.job.tick("saves", 1, spent)
        self.mark = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        job = self.job
        # Since the last callback's own work (a probe, a save) ended: the step alone, as the ETA counts it.
        job.tick("steps", 1, time.perf_counter() - self.mark, step=state.global_step, total_steps=state.max_steps)
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
            control.should_save = job.checkpointing
            return
        every = job.config.sample_every
        if every and state.global_step % every == 0 and state.global_step < state.max_steps and dist.is_writer():
            job.evaluate_probe(model, state.global_step)
            if job.stop_event.is_set() and args.world_size == 1:  # Stop ended the probe: end here, not a step on
                control.should_training_stop = True
                control.should_save = job.checkpointing
        self.mark = time.perf_counter()


class TrainingJob:
    """One training run in a background thread, writing runs/<name>/ as it goes."""

    def __init__(self, config: TrainConfig | None = None, runs_root: Path | None = None,
                 resume: str | Path | None = None, owner: str | None = None, callbacks: tuple = ()):
        """A new run from `config`, or with `resume`, the run folder to continue from its last complete checkpoint.

        `callbacks` are extra Trainer callbacks (the speed benchmark times steps with one)."""
        self.extra_callbacks = list(callbacks)
        self.checkpoint: Path | None = None
        self.resume_note = ""
        if resume is not None:
            self.run = RunFolder(Path(resume), writer=dist.is_writer())
            if not self.run.config_file.is_file():
                raise ValueError(f"{resume} is not a run folder (no config.yaml)")
            # Only rank 0 checks: the other ranks could already see its own "queued".
            if self.run.writer and self.run.state() in ("queued", "loading", "training", "stopping"):
                raise ValueError(f"run {self.run.name} is still {self.run.state()} in another process")
            self.config = TrainConfig.from_yaml(self.run.config_file).validate()
            self._check_machine()
            self.price = self._price()
            self.checkpoint, skipped = self.run.last_complete_checkpoint()
            if self.checkpoint is None:
                raise ValueError(f"run {self.run.name} has no complete checkpoint to resume from"
                                 + (f" ({'; '.join(skipped)})" if skipped else ""))
            resumed_at = int(self.checkpoint.name.split("-")[-1])
            self.run.truncate_after(resumed_at)
            self.resume_note = f"resuming from {self.checkpoint.name}" + (f" ({'; '.join(skipped)})" if skipped else "")
            resumes = self.run.status().get("resumes", []) + [
                {"from": self.checkpoint.name, "skipped": skipped, "time": time.time()}]
            self.run.update_status(state="queued", step=resumed_at, error=None, ended=None,
                                   message=self.resume_note, resumes=resumes)
        else:
            # Checked (types too) before any folder exists: a refused config leaves nothing behind.
            self.config = config.validate()
            self._check_machine()
            self.price = self._price()
            name = self.config.name or f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(self.config.model).name}-r{self.config.lora_r}"
            if dist.is_writer():
                self.run = RunFolder.create(name, runs_root)
                self.config.name = self.run.name  # the folder's real name, suffixed if the name was taken
                self.run.write_config(self.config.recorded())
            # Every rank trains into the one folder rank 0 made (its name may have a suffix or another second).
            path = dist.from_writer(str(self.run.path) if dist.is_writer() else None)
            self.run = RunFolder(Path(path), writer=dist.is_writer())
            self.config.name = self.run.name
            self.run.update_status(state="queued", step=0, total_steps=None, created=time.time(), error=None)
        self.run.update_status(pid=os.getpid(), owner=owner, hourly_usd=self.price and self.price[0],
                               price_source=self.price and self.price[1])
        self.stop_event = threading.Event()
        self.trainer = None  # the Trainer while it trains: the probe logs its scalars to the trackers through it
        self.thread = threading.Thread(target=self._run, name=f"train-{self.run.name}", daemon=True)
        self.nonfinite: str | None = None
        self.time_up: str | None = None
        self.tokenizer = None
        self.probe_items: list[Product] = []
        self.best_error = self.run.status().get("best_error") or math.inf
        self.data_message = self.data_note = ""
        self.outcome: str | None = None  # this process's final state; on ranks > 0 the status file is rank 0's
        # Where the wall time went, in seconds by phase; a resumed run adds its own to the earlier ones.
        self.phases: dict[str, float] = dict(self.run.status().get("phases") or {})
        self.clock: dict[str, float] = dict(self.run.status().get("clock") or {})
        self.plan: clock.Plan | None = clock.run_plan(self.run.status())

    def _check_machine(self) -> None:
        """What this config needs of the machine and its packages, refused before any folder is touched."""
        if trackers.missing(self.config.report_to):
            raise ConfigError(trackers.missing(self.config.report_to))
        if self.config.compile_layers and not torch.cuda.is_available():
            raise ConfigError("compile_layers: compiling the layers needs a CUDA GPU (on a CPU it costs more minutes "
                              "than it saves: bench/README.md)")
        if self.config.liger_kernel and not liger_usable():
            raise ConfigError("liger_kernel: Liger's kernels need a CUDA GPU and the liger-kernel package "
                              "(pip install liger-kernel)")

    def _price(self) -> tuple[float, str] | None:
        """The stated hourly price (USD, its source), checked against a cost cap before any folder is touched."""
        try:
            price = cost.hourly_price()
        except cost.PriceError as exc:
            if self.config.max_cost:  # without a cap, an unpriced flavour only means no cost line
                raise ConfigError(str(exc)) from None
            return None
        if self.config.max_cost and price is None:
            raise ConfigError(f"max_cost: a cost cap needs the hourly price: set {cost.PRICE_ENV} (dollars an hour) "
                              f"or {cost.HARDWARE_ENV} (a Spaces flavour)")
        return price

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
    def checkpointing(self) -> bool:
        return bool(self.config.save_steps or self.config.save_minutes)

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

    def evaluate_probe(self, model, step: int) -> None:
        """Price the probe set: $ metrics into metrics.jsonl, the first items into samples.jsonl, best adapter kept."""
        from .evaluate import predict_by, price_metrics

        texts = [p.text for p in self.probe_items]
        truths = [p.price for p in self.probe_items]
        # The live view shows this and holds its ETA: no step ends while the probe is priced.
        self.run.update_status(pricing_probe=step, clock_at=time.time())
        preds, began = [], time.perf_counter()
        # Greedy decoding of a digit-by-digit tokenizer collapses to round numbers ("10.00", "100.00": the likeliest
        # first digit is 1), so the best adapter is chosen by the expected value unless the config says otherwise.
        with self.timed("probe"), inference_precision(model, self.config.use_bf16()), eager():
            # In batches, so Stop ends a probe within one batch's seconds (an abandoned probe records nothing).
            for start in range(0, len(texts), PROBE_BATCH):
                if self.stop_event.is_set():
                    self.run.update_status(pricing_probe=None)
                    return
                preds += predict_by(model, self.tokenizer, texts[start:start + PROBE_BATCH],
                                    self.config.probe_method, batch_size=PROBE_BATCH,
                                    max_prompt_tokens=self.max_prompt_tokens, question=self.config.asked())
        self.tick("probe_items", len(texts), time.perf_counter() - began)
        metrics = price_metrics([p.price for p in preds], truths)
        scalars = {"probe/error_usd": metrics["error"], "probe/rmsle": metrics["rmsle"], "probe/hits": metrics["hits"]}
        if step == 0:  # the lines to beat, once
            scalars.update({f"baseline/{name}_error_usd": m["error"]
                            for name, m in self.run.status().get("baselines", {}).items()})
        trackers.log_metrics(self.trainer, scalars)
        self.run.append(self.run.metrics_file, {
            "step": step, "probe_error": metrics["error"], "probe_rmsle": metrics["rmsle"],
            "probe_hits": metrics["hits"], "probe_unparseable": metrics["unparseable"], "time": time.time()})
        rows = [{"text": item.text[:300], "truth": item.price, "guess": pred.price,
                 "error": None if pred.price is None else abs(pred.price - item.price), "output": pred.text}
                for item, pred in zip(self.probe_items[: self.config.num_samples], preds)]
        self.run.append(self.run.samples_file, {"step": step, "items": rows})
        self.run.update_status(pricing_probe=None)
        if step > 0 and metrics["error"] < self.best_error:
            self.best_error = metrics["error"]
            with self.timed("adapter saves"):
                self.run.save_adapter(model, self.tokenizer, self.run.best_adapter_dir)
            self.run.update_status(best_step=step, best_error=metrics["error"])

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
        self.probe_items = (validation or test)[: self.plan.probe_items]
        self.probe_name = "validation" if validation else "held-out"
        self.data_note = (f"{len(train)} training / {len(validation)} validation / {len(test)} held-out products "
                          f"({note})") + (f"; {clock.plan_note(self.plan, cfg)}" if not self.plan.full else "")
        baselines = constant_baselines(train, self.probe_items)
        self.add_phase("data", time.perf_counter() - began)
        with self.timed("text baseline"):
            ridge = load_text_baseline(self.run.text_baseline_file) if self.checkpoint is not None else None
            if ridge is None:
                self.run.update_status(message="fitting the text baseline (TF-IDF ridge)")
                # Every rank fits its own (the fit is deterministic); only the writer's lands in the folder.
                ridge = fit_text_baseline(train)
                if self.run.writer:
                    save_text_baseline(ridge, self.run.text_baseline_file)
            # The strong baselines' $ error on the probe: the live chart's lines to beat, from step 0.
            texts, truths = [p.text for p in self.probe_items], [p.price for p in self.probe_items]
            for key, model in ((TEXT_BASELINE, ridge), (TEXT_NEIGHBOURS, fit_text_neighbours(ridge, train))):
                baselines[key] = price_metrics(predict_prices(model, texts), truths)
        self.run.update_status(baselines=baselines)
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
        self._check_stop()
        with self.timed("model load"):
            model = load_model(cfg.model, cfg.quant, cfg.hub_kernels)
            self._check_stop()
            model = self._add_lora(model)
        self._check_stop()
        self.data_message = (f"{self.data_note}; max length {max_length} tokens; $ error on "
                             f"{len(self.probe_items)} {self.probe_name} items")
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
        trainer = Trainer(model=model, args=self._training_args(), train_dataset=examples,
                          data_collator=PackedPriceCollator() if self.config.packing
                          else PriceCollator(self.tokenizer, padding=True), compute_loss_func=price_loss,
                          callbacks=[RunCallback(self), *self.extra_callbacks])
        trainer.remove_callback(PrinterCallback)  # progress goes to the run folder, not stdout
        trackers.set_up(trainer, self.run.path, lambda warning: self.run.update_status(tracker_warning=warning))
        self.trainer = trainer
        inside = ("probe", "checkpoint saves", "adapter saves")
        before, began = sum(self.phases.get(name, 0.0) for name in inside), time.perf_counter()
        with trackers.logs_in(self.run.path, self.config.report_to):
            trainer.train(resume_from_checkpoint=str(self.checkpoint) if self.checkpoint else None)
        # The steps themselves: the training loop's time less the probes and saves it paused for.
        self.add_phase("steps", time.perf_counter() - began - sum(self.phases.get(n, 0.0) for n in inside) + before)
        if self.nonfinite:
            raise FloatingPointError(f"Training stopped: {self.nonfinite}. Nothing was saved from the broken "
                                     "weights; lower the learning rate or use a higher-precision dtype.")
        return trainer.state.global_step

    def _finish_run(self, model, step: int, train: list[Product]) -> None:
        # The last step is never priced in on_step_end, except when the time limit ended the run there; a resumed
        # finished run may have priced it before it was stopped.
        if not self.stop_event.is_set() and dist.is_writer() and not any(
                r.get("step") == step and "probe_error" in r for r in self.run.metrics()):
            self.evaluate_probe(model, step)
        with self.timed("adapter saves"):
            self.run.save_adapter(model, self.tokenizer, self.run.adapter_dir)
        saved = f"the adapter of step {step}"
        if not self.stop_event.is_set() and dist.is_writer() and self._fit_head(model, train):
            saved += " with its price head"
        best = self.run.status().get("best_step")
        if best is not None:
            saved += f" and, kept beside it, the one with the best probe $ error (step {best}, ${self.best_error:.2f})"
        if self.stop_event.is_set():
            self._finish("stopped", step=step, message=f"stopped at step {step}; saved {saved}")
        else:
            ended = f" ({self.time_up})" if self.time_up else ""
            self._finish("done", step=step, message=f"done: {step} steps{ended}; saved {saved}")

    def _fit_head(self, model, train: list[Product]) -> bool:
        """The price head fitted on the first head_rows training rows and stored beside the adapter; False when
        Stop was pressed meanwhile (the head is then fitted when first asked for)."""
        from .head import fit_for

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
                head = fit_for(model, self.tokenizer, rows, report=report,
                               max_prompt_tokens=self.max_prompt_tokens, question=self.config.asked())
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

    def _add_lora(self, model):
        from peft import get_peft_model, prepare_model_for_kbit_training

        cfg = self.config
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

    def _training_args(self) -> TrainingArguments:
        cfg = self.config
        return TrainingArguments(
            output_dir=str(self.run.checkpoints_dir),
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type=cfg.lr_scheduler,
            # transformers 5 has no warmup_ratio: it reads a warmup_steps below 1 as that share of the steps.
            warmup_steps=cfg.warmup_ratio,
            weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.max_grad_norm,
            num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps or -1,
            logging_steps=1,
            # Without this, a NaN loss is logged as the previous value and training goes on silently.
            logging_nan_inf_filter=False,
            # With save_steps 0 the callback still asks for time-based and stop-time checkpoints.
            save_strategy="steps" if self.checkpointing else "no",
            save_steps=cfg.save_steps or 10**9,
            save_total_limit=cfg.save_total_limit,
            seed=cfg.seed,
            report_to=cfg.report_to,
            run_name=self.run.name,
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


class JobManager:
    """Holds the process's one training job; a second start is refused with the running job's progress."""

    def __init__(self):
        self._lock = threading.Lock()
        self.job: TrainingJob | None = None

    def start(self, config: TrainConfig | None = None, runs_root: Path | None = None,
              resume: str | Path | None = None, owner: str | None = None) -> TrainingJob:
        with self._lock:
            if self.job is not None and self.job.thread.is_alive():
                status = self.job.run.status()
                total = status.get("total_steps") or "?"
                raise Busy(f"Busy: run {self.job.run.name} is {status.get('state', 'running')} "
                           f"(step {status.get('step', 0)}/{total}). Stop it or wait for it to finish.")
            self.job = TrainingJob(config, runs_root, resume=resume, owner=owner).start()
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
