"""The probe: validation rows priced while a run trains (the base model at step 0, every sample_every steps, the last
step), the baselines it is drawn against on the live chart, and the best adapter by its $ error. A Trainer callback:
the training loop in job.py knows nothing of it but where it ends."""

from __future__ import annotations

import math
import time

from transformers import TrainerCallback

from . import dist, trackers
from .baselines import (TEXT_BASELINE, TEXT_NEIGHBOURS, constant_baselines, fit_text_baseline, fit_text_neighbours,
                        load_text_baseline, predict_prices, save_text_baseline)
from .data import Product
from .models import eager, inference_precision
from .pricing import predict_by
from .metrics import price_metrics

PROBE_BATCH = 16
"""Probe items priced together: one batch of the pricing code, and how often a probe checks for Stop."""


class Probe(TrainerCallback):
    """Prices the probe items of a TrainingJob at step 0 (the base model: LoRA's B matrices start at zero) and every
    sample_every steps; the job prices the last step."""

    def __init__(self, job):
        self.job = job
        self.items: list[Product] = []
        self.name = "validation"
        """Which split the items come from: validation, or held-out for a run from before validation rows."""
        self.best_error = job.run.status().get("best_error") or math.inf

    def choose(self, validation: list[Product], test: list[Product], count: int) -> None:
        """The first `count` validation rows (a run without any: held-out rows), never trained on."""
        self.items = (validation or test)[:count]
        self.name = "validation" if validation else "held-out"

    def fit_baselines(self, train: list[Product], resumed: bool) -> dict:
        """The baselines' $ error on the probe items, the live chart's lines to beat from step 0: the constants, and
        the text baselines (the TF-IDF ridge fitted on `train` and stored in the run folder; a resumed run's read)."""
        job = self.job
        baselines = constant_baselines(train, self.items)
        with job.timed("text baseline"):
            ridge = load_text_baseline(job.run.text_baseline_file) if resumed else None
            if ridge is None:
                job.run.update_status(message="fitting the text baseline (TF-IDF ridge)")
                # Every rank fits its own (the fit is deterministic); only the writer's lands in the folder.
                ridge = fit_text_baseline(train)
                if job.run.writer:
                    save_text_baseline(ridge, job.run.text_baseline_file)
            texts, truths = [p.text for p in self.items], [p.price for p in self.items]
            for key, model in ((TEXT_BASELINE, ridge), (TEXT_NEIGHBOURS, fit_text_neighbours(ridge, train))):
                baselines[key] = price_metrics(predict_prices(model, texts), truths)
        job.run.update_status(baselines=baselines)
        return baselines

    def priced(self, step: int) -> bool:
        """Whether the run's metrics already hold a probe of `step` (a resumed finished run may have priced it)."""
        return any(r.get("step") == step and "probe_error" in r for r in self.job.run.metrics())

    def price(self, model, step: int) -> None:
        """Price the probe set: $ metrics into metrics.jsonl, the first items into samples.jsonl, best adapter kept."""
        job, config = self.job, self.job.config
        texts, truths = [p.text for p in self.items], [p.price for p in self.items]
        # The live view shows this and holds its ETA: no step ends while the probe is priced.
        job.run.update_status(pricing_probe=step, clock_at=time.time())
        preds, began = [], time.perf_counter()
        # Greedy decoding of a digit-by-digit tokenizer collapses to round numbers ("10.00", "100.00": the likeliest
        # first digit is 1), so the best adapter is chosen by the expected value unless the config says otherwise.
        with job.timed("probe"), inference_precision(model, config.use_bf16()), eager():
            # In batches, so Stop ends a probe within one batch's seconds (an abandoned probe records nothing).
            for start in range(0, len(texts), PROBE_BATCH):
                if job.stop_event.is_set():
                    job.run.update_status(pricing_probe=None)
                    return
                preds += predict_by(model, job.tokenizer, texts[start:start + PROBE_BATCH], config.probe_method,
                                    batch_size=PROBE_BATCH, max_prompt_tokens=job.max_prompt_tokens,
                                    question=config.asked())
        job.tick("probe_items", len(texts), time.perf_counter() - began)
        metrics = price_metrics([p.price for p in preds], truths)
        scalars = {"probe/error_usd": metrics["error"], "probe/rmsle": metrics["rmsle"], "probe/hits": metrics["hits"]}
        if step == 0:  # the lines to beat, once
            scalars.update({f"baseline/{name}_error_usd": m["error"]
                            for name, m in job.run.status().get("baselines", {}).items()})
        trackers.log_metrics(job.trainer, scalars)
        job.run.append(job.run.metrics_file, {
            "step": step, "probe_error": metrics["error"], "probe_rmsle": metrics["rmsle"],
            "probe_hits": metrics["hits"], "probe_unparseable": metrics["unparseable"], "time": time.time()})
        rows = [{"text": item.text[:300], "truth": item.price, "guess": pred.price,
                 "error": None if pred.price is None else abs(pred.price - item.price), "output": pred.text}
                for item, pred in zip(self.items[: config.num_samples], preds)]
        job.run.append(job.run.samples_file, {"step": step, "items": rows})
        job.run.update_status(pricing_probe=None)
        if step > 0 and metrics["error"] < self.best_error:
            self.best_error = metrics["error"]
            with job.timed("adapter saves"):
                job.run.save_adapter(model, job.tokenizer, job.run.best_adapter_dir)
            job.run.update_status(best_step=step, best_error=metrics["error"])

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0 and dist.is_writer():  # not on resume: step 0 is already on the chart
            self.job.run.update_status(message="pricing the probe set with the base model")
            self.price(model, 0)
            self.job.run.update_status(message=self.job.data_message)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        job, every = self.job, self.job.config.sample_every
        if (control.should_training_stop or not every or state.global_step % every
                or state.global_step >= state.max_steps or not dist.is_writer()):
            return
        self.price(model, state.global_step)
        if job.stop_event.is_set() and args.world_size == 1:  # Stop ended the probe: end here, not a step on
            control.should_training_stop = True
            control.should_save = job.config.checkpointing()
