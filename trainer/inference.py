"""Load a finished run's adapter on its base model and price descriptions with it (and with the base model)."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from peft import PeftModel
from transformers import AutoTokenizer

from . import clock
from .config import TrainConfig
from .models import ModelError, inference_precision, load_model
from .pricing import STATE_METHODS, predict_methods
from .pricing.distribution import price_distribution
from .pricing.hidden_state import PriceHead, TrainedHead, fit_for, load_head
from .runs import RunFolder


class Predictor:
    """A run's base model + adapter, kept loaded between calls; the base model is the same weights with the adapter off."""

    def __init__(self, run_path: str | Path):
        self.run = RunFolder(Path(run_path))
        if not self.run.has_adapter():
            raise ModelError(f"Run {self.run.name} has no saved adapter yet.")
        self.config = TrainConfig.from_yaml(self.run.config_file)
        self.tokenizer = AutoTokenizer.from_pretrained(self.run.adapter_dir)
        base = load_model(self.config.model, self.config.quant, self.config.hub_kernels)
        self.model = PeftModel.from_pretrained(base, self.run.adapter_dir)
        self.model.eval()
        self.max_prompt_tokens = int(self.run.status().get("max_length") or 512)
        self.lock = threading.Lock()
        self.head = load_head(self.run.adapter_dir)
        self.bf16 = self.config.use_bf16()
        """Whether pricing runs under bf16 autocast, as the run trained (see models.inference_precision)."""

    @property
    def head_rows(self) -> int:
        """Training rows the head is fitted on: the run's plan (a short run's are fewer), else the config's."""
        plan = clock.run_plan(self.run.status())
        return plan.head_rows if plan else self.config.head_rows

    def head_rows_to_fit(self) -> int:
        """Training rows ensure_head will run forward passes on: 0 when the head is there."""
        return 0 if self.head is not None else min(self.head_rows, len(self.run.split()))

    def ensure_head(self, report=None) -> PriceHead:
        """The adapter's price head; a run without one (stopped, or trained before heads) gets it fitted on its
        first head_rows training rows and stored now, with `report(done, total)` after each batch."""
        with self.lock:
            if self.head is None:
                train = self.run.split()[: self.head_rows]
                if len(train) < 2:
                    raise ModelError(f"Run {self.run.name} has too few training rows to fit a price head on.")
                with inference_precision(self.model, self.bf16):
                    self.head = fit_for(self.model, self.tokenizer, train, report=report,
                                        trained=TrainedHead.load(self.run.adapter_dir),
                                        max_prompt_tokens=self.max_prompt_tokens, question=self.config.asked())
                if self.run.writer:
                    self.head.save(self.run.adapter_dir)
            return self.head

    def predict(self, texts: list[str], *, base: bool = False, method: str = "greedy"):
        """Predictions of one of pricing.METHODS."""
        return self.predict_methods(texts, (method,), base=base)[method]

    def predict_methods(self, texts: list[str], methods, *, base: bool = False) -> dict:
        """method → predictions for each of `methods` (pricing.METHODS); each kind of method shares one pass."""
        head = None
        if set(STATE_METHODS) & set(methods):
            if base:
                raise ValueError("the price head and its neighbours read the fine-tuned model's states; the base "
                                 "model has none")
            head = self.ensure_head()
        with self.lock, self._adapter(base), inference_precision(self.model, self.bf16):
            return predict_methods(self.model, self.tokenizer, texts, methods, head=head,
                                   max_prompt_tokens=self.max_prompt_tokens, question=self.config.asked())

    def distribution(self, text: str, *, base: bool = False):
        with self.lock, self._adapter(base), inference_precision(self.model, self.bf16):
            return price_distribution(self.model, self.tokenizer, text, max_prompt_tokens=self.max_prompt_tokens,
                                      question=self.config.asked())

    def _adapter(self, base: bool):
        """The base model (adapter off) for the block when `base`, else the fine-tuned model."""
        return self.model.disable_adapter() if base else contextlib.nullcontext()


_cache: dict[str, Predictor] = {}
_cache_lock = threading.Lock()


def predictor_for(run_path: str | Path, progress=None) -> Predictor:
    """The Predictor of a run, loading it once; only the latest run's model is kept in memory. `progress(done,
    total, what)` is told when it loads (seconds to minutes: the base model's weights)."""
    key = str(Path(run_path).resolve())
    with _cache_lock:
        if key not in _cache:
            if progress:
                progress(0, 1, f"loading the base model and adapter of run {Path(run_path).name}")
            _cache.clear()
            _cache[key] = Predictor(run_path)
        return _cache[key]
