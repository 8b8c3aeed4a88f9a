"""Load a finished run's adapter on its base model and price descriptions with it (and with the base model)."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from .config import TrainConfig
from .models import ModelError, load_model
from .runs import RunFolder


class Predictor:
    """A run's base model + adapter, kept loaded between calls; the base model is the same weights with the adapter off."""

    def __init__(self, run_path: str | Path):
        from peft import PeftModel
        from transformers import AutoTokenizer

        self.run = RunFolder(Path(run_path))
        if not self.run.has_adapter():
            raise ModelError(f"Run {self.run.name} has no saved adapter yet.")
        self.config = TrainConfig.from_yaml(self.run.config_file)
        self.tokenizer = AutoTokenizer.from_pretrained(self.run.adapter_dir)
        base = load_model(self.config.model, self.config.quant)
        self.model = PeftModel.from_pretrained(base, self.run.adapter_dir)
        self.model.eval()
        self.max_prompt_tokens = int(self.run.status().get("max_length") or 512)
        self.lock = threading.Lock()

    def predict(self, texts: list[str], *, base: bool = False, method: str = "greedy"):
        """Predictions of one of estimates.METHODS."""
        return self.predict_methods(texts, (method,), base=base)[method]

    def predict_methods(self, texts: list[str], methods, *, base: bool = False) -> dict:
        """method → predictions for each of `methods` (estimates.METHODS); the point estimates share one beam."""
        from .evaluate import predict_methods

        with self.lock, self._adapter(base):
            return predict_methods(self.model, self.tokenizer, texts, methods,
                                   max_prompt_tokens=self.max_prompt_tokens, question=self.config.asked())

    def distribution(self, text: str, *, base: bool = False):
        from .evaluate import price_distribution

        with self.lock, self._adapter(base):
            return price_distribution(self.model, self.tokenizer, text, max_prompt_tokens=self.max_prompt_tokens,
                                      question=self.config.asked())

    def _adapter(self, base: bool):
        """The base model (adapter off) for the block when `base`, else the fine-tuned model."""
        return self.model.disable_adapter() if base else contextlib.nullcontext()


_cache: dict[str, Predictor] = {}
_cache_lock = threading.Lock()


def predictor_for(run_path: str | Path) -> Predictor:
    """The Predictor of a run, loading it once; only the latest run's model is kept in memory."""
    key = str(Path(run_path).resolve())
    with _cache_lock:
        if key not in _cache:
            _cache.clear()
            _cache[key] = Predictor(run_path)
        return _cache[key]
