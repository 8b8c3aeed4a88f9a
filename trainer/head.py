"""The price head: a ridge regression of log(1+price) on the tuned model's last hidden state at the prompt's end.

H2O LLM Studio's "causal regression" reads a price out of the last hidden state; here the read-out is fitted in
closed form after training (scikit-learn's RidgeCV on standardized states, its penalty by leave-one-out), so it costs
one forward pass per training row it is fitted on and no training steps. Measured on the quality split with the
default run, it beats both the model's digit distribution and the TF-IDF ridge (README's quality table).

The same states give a second read-out: the price of the nearest training rows by their standardized states
(baselines.neighbours_estimator), which finds the near-duplicate products a linear read-out averages away.

The head lives in the adapter folder (price_head.safetensors, plain tensors), its rows' states and log prices beside
it (price_neighbours.safetensors): a newly saved adapter replaces the folder, so neither outlives the adapter whose
states they came from. The neighbours file holds the training prices, so a push to the Hub leaves it out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HEAD_FILE = "price_head.safetensors"
NEIGHBOURS_FILE = "price_neighbours.safetensors"
ALPHAS = np.logspace(-1, 5, 25)
"""Ridge penalties tried on the standardized states (leave-one-out picks one)."""


@dataclass
class PriceHead:
    """log(1+price) = states · weight + bias, with the standardization folded into weight and bias."""

    weight: np.ndarray
    bias: float
    rows: int
    """How many training rows it was fitted on."""
    alpha: float
    """The ridge penalty cross-validation chose."""
    states: np.ndarray
    """The fitting rows' states (float16 where they fit: a 3B model's 1,000 rows are 6 MB), for the neighbours."""
    log_prices: np.ndarray
    """The fitting rows' log(1+price)."""
    _neighbours: object = field(default=None, init=False, repr=False)

    def prices(self, states: np.ndarray) -> list[float]:
        """Each state row's price in dollars (never negative)."""
        logs = np.asarray(states, dtype=np.float64) @ self.weight + self.bias
        return [max(math.expm1(float(v)), 0.0) for v in logs]

    def neighbour_prices(self, states: np.ndarray) -> list[float]:
        """Each state row's price by its nearest fitting rows (baselines.neighbours_estimator on standardized
        states), in dollars."""
        if self._neighbours is None:
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            from .baselines import NEIGHBOURS, neighbours_estimator

            knn = neighbours_estimator().set_params(n_neighbors=min(NEIGHBOURS, len(self.states)))
            self._neighbours = make_pipeline(StandardScaler(), knn).fit(self.states.astype(np.float32),
                                                                         self.log_prices)
        logs = self._neighbours.predict(np.asarray(states, dtype=np.float32))
        return [max(math.expm1(float(v)), 0.0) for v in logs]

    def save(self, folder: Path) -> Path:
        from safetensors.numpy import save_file

        path = Path(folder) / HEAD_FILE
        for name, tensors, meta in (
                (NEIGHBOURS_FILE, {"states": self.states,
                                   "log_prices": self.log_prices.astype(np.float64)}, {}),
                (HEAD_FILE, {"weight": self.weight.astype(np.float64), "bias": np.array([self.bias])},
                 {"rows": str(self.rows), "alpha": repr(self.alpha)})):  # the head last: a head file means its rows are there
            tmp = path.with_name(name + ".tmp")
            save_file(tensors, str(tmp), metadata=meta)
            tmp.replace(path.with_name(name))
        return path


def head_estimator():
    """The head's unfitted scikit-learn pipeline (standardize, then RidgeCV on log(1+price)), before folding."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS))


def fit_head(states: np.ndarray, prices: list[float]) -> PriceHead:
    """The head fitted on these rows' states and true prices."""
    states = np.asarray(states, dtype=np.float64)
    if len(states) < 2 or len(states) != len(prices):
        raise ValueError(f"the price head needs at least 2 rows with a state and a price (got {len(states)} states "
                         f"for {len(prices)} prices)")
    log_prices = np.log1p(np.maximum(prices, 0.0))
    fit = head_estimator().fit(states, log_prices)
    scaler, ridge = fit[0], fit[1]
    weight = ridge.coef_ / scaler.scale_
    return PriceHead(weight, float(ridge.intercept_ - scaler.mean_ @ weight), len(states), float(ridge.alpha_),
                     _compact(states), log_prices)


def _compact(states: np.ndarray) -> np.ndarray:
    fits = np.abs(states).max(initial=0.0) < np.finfo(np.float16).max
    return states.astype(np.float16 if fits else np.float32)


def load_head(folder: Path) -> PriceHead | None:
    """The head stored in an adapter folder; None when it has none, or none of its rows' states (a head saved
    before the neighbours read-out is fitted again when asked for)."""
    from safetensors import safe_open

    path, beside = Path(folder) / HEAD_FILE, Path(folder) / NEIGHBOURS_FILE
    if not path.is_file() or not beside.is_file():
        return None
    with safe_open(str(beside), "np") as f:
        states, log_prices = f.get_tensor("states"), f.get_tensor("log_prices")
    with safe_open(str(path), "np") as f:
        meta = f.metadata() or {}
        return PriceHead(f.get_tensor("weight"), float(f.get_tensor("bias")[0]), int(meta.get("rows", 0)),
                         float(meta.get("alpha", "nan")), states, log_prices)


def fit_for(model, tokenizer, products, *, report=None, **prompt_args) -> PriceHead:
    """The head of this model fitted on `products` (their prompts' last states); `report(done, total)` after each
    batch of forward passes."""
    from .evaluate import last_states

    states = last_states(model, tokenizer, [p.text for p in products], report=report, **prompt_args)
    return fit_head(states, [p.price for p in products])
