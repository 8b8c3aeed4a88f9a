"""The hidden-state methods. The price head: a ridge regression of log(1+price) on the tuned model's last hidden
state at the prompt's end.

H2O LLM Studio's "causal regression" reads a price out of the last hidden state; here the read-out is fitted in
closed form after training (scikit-learn's RidgeCV on standardized states, its penalty by leave-one-out), so it costs
one forward pass per training row it is fitted on and no training steps. Measured on the quality split with the
default run, it beats both the model's digit distribution and the TF-IDF ridge (README's quality table).

The same states give a second read-out: the price of the nearest training rows by their standardized states
(baselines.neighbours_estimator), which finds the near-duplicate products a linear read-out averages away.

A run may instead train its head with the LoRA (TrainConfig.head_loss): a linear read-out of standardized log price
whose MSE joins the price-token loss, so the adapter learns states that carry the price. It is saved with every
adapter and checkpoint (trained_head.safetensors) and, folded into the same form, serves as the price head.

The head lives in the adapter folder (price_head.safetensors, plain tensors), its rows' states and log prices beside
it (price_neighbours.safetensors): a newly saved adapter replaces the folder, so neither outlives the adapter whose
states they came from. The neighbours file holds the training prices, so a push to the Hub leaves it out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_tensors

from ..baselines import NEIGHBOURS as NEIGHBOUR_COUNT
from ..baselines import neighbours_estimator
from ..data import COURSE_QUESTION, encode_prompt
from . import HEAD, NEIGHBOURS
from .prompts import EvalMode, Prediction, device_of, left_padded, pad_id

# scikit-learn is imported where the head and its neighbours are fitted: a second on import, paid only by a fit.

HEAD_FILE = "price_head.safetensors"

TRAINED_HEAD_FILE = "trained_head.safetensors"

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
    trained_with: float = 0.0
    """The loss weight λ it was trained with beside the LoRA (TrainedHead); 0: fitted by the ridge after training."""
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


            knn = neighbours_estimator().set_params(n_neighbors=min(NEIGHBOUR_COUNT, len(self.states)))
            self._neighbours = make_pipeline(StandardScaler(), knn).fit(self.states.astype(np.float32),
                                                                         self.log_prices)
        logs = self._neighbours.predict(np.asarray(states, dtype=np.float32))
        return [max(math.expm1(float(v)), 0.0) for v in logs]

    def save(self, folder: Path) -> Path:
        path = Path(folder) / HEAD_FILE
        for name, tensors, meta in (
                (NEIGHBOURS_FILE, {"states": self.states,
                                   "log_prices": self.log_prices.astype(np.float64)}, {}),
                (HEAD_FILE, {"weight": self.weight.astype(np.float64), "bias": np.array([self.bias])},
                 # The head last: a head file means its rows are there.
                 {"rows": str(self.rows), "alpha": repr(self.alpha), "trained_with": repr(self.trained_with)})):
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

    path, beside = Path(folder) / HEAD_FILE, Path(folder) / NEIGHBOURS_FILE
    if not path.is_file() or not beside.is_file():
        return None
    with safe_open(str(beside), "np") as f:
        states, log_prices = f.get_tensor("states"), f.get_tensor("log_prices")
    with safe_open(str(path), "np") as f:
        meta = f.metadata() or {}
        return PriceHead(f.get_tensor("weight"), float(f.get_tensor("bias")[0]), int(meta.get("rows", 0)),
                         float(meta.get("alpha", "nan")), states, log_prices, float(meta.get("trained_with", "0")))


def fit_for(model, tokenizer, products, *, trained: "TrainedHead | None" = None, report=None,
            **prompt_args) -> PriceHead:
    """The head of this model on `products` (their prompts' last states): `trained` folded, with those rows for its
    neighbours, or else a ridge fitted on them; `report(done, total)` after each batch of forward passes."""
    states = last_states(model, tokenizer, [p.text for p in products], report=report, **prompt_args)
    prices = [p.price for p in products]
    if trained is None:
        return fit_head(states, prices)
    weight, bias = trained.folded()
    return PriceHead(weight, bias, len(products), float("nan"), _compact(states), np.log1p(np.maximum(prices, 0.0)),
                     trained.loss_weight)


class TrainedHead(torch.nn.Module):
    """A linear read-out of standardized log(1+price) from the prompt's last hidden state, trained with the LoRA.

    It starts at zero (it predicts the mean log price) so the first steps' gradients reach the LoRA only through
    the price tokens; the read-out is linear so that it folds into PriceHead's form, the fitted ridge's. It reads the
    state standardized per dimension by the untrained model's states on the first training rows (`centre`,
    `spread`), times `gain` = GAIN / sqrt(hidden size). On the raw states (a few dimensions near 45, the rest near
    1) a run's gradient norm was 35-100 against the LoRA's 0.5-0.8, which the shared clipping takes out of the
    LoRA's steps, and the head did not learn (its MSE stayed at the mean's); standardized and scaled it was 2-5."""

    GAIN = 2.0
    """The read-out's scale times sqrt(hidden size). On fixed tuned states of the demo model, AdamW at the run's rate
    fitted in 250 steps to 1.04-1.08× the ridge's MSE at a gain of 2.4, 1.08-1.21× at 1.2 (gradient norms 0.9 and
    0.5); 2 lies between."""

    STATS_ROWS = 64
    """Training rows whose untrained states give the per-dimension centre and spread."""

    def __init__(self, hidden_size: int, mean: float = 0.0, std: float = 1.0, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.register_buffer("centre", torch.zeros(hidden_size))
        self.register_buffer("spread", torch.ones(hidden_size))
        self.register_buffer("gain", torch.tensor(self.GAIN / math.sqrt(hidden_size)))

    @classmethod
    def for_prices(cls, hidden_size: int, prices: list[float], loss_weight: float,
                   states: np.ndarray | None = None) -> "TrainedHead":
        """A head standardizing log(1+price) by these training prices, and its input by these rows' `states`, its
        MSE weighted by `loss_weight`."""
        logs = np.log1p(np.maximum(prices, 0.0))
        head = cls(hidden_size, float(logs.mean()), float(max(logs.std(), 1e-6)), loss_weight)
        if states is not None and len(states) > 1:
            spread = np.asarray(states, dtype=np.float64).std(0)
            # Floored: a dimension nearly constant on these rows would turn a small move of the LoRA's into a big one.
            head.centre.copy_(torch.as_tensor(np.mean(states, 0)))
            head.spread.copy_(torch.as_tensor(np.maximum(spread, max(float(np.median(spread)), 1e-6))))
        return head

    @classmethod
    def for_run(cls, model, tokenizer, products, loss_weight: float, *, max_prompt_tokens: int, question: str,
                report=None) -> "TrainedHead":
        """A head for a new run: prices from all its training rows, the input's scale from its first rows' states
        under the untrained adapter; `report(done, total)` after each batch."""
        texts = [p.text for p in products[: cls.STATS_ROWS]]
        states = last_states(model, tokenizer, texts, max_prompt_tokens=max_prompt_tokens, question=question,
                             report=report)
        return cls.for_prices(model.config.hidden_size, [p.price for p in products], loss_weight, states)

    def predict(self, states: torch.Tensor) -> torch.Tensor:
        """The standardized log prices these states give."""
        x = (states.to(self.centre.dtype) - self.centre) / self.spread
        return self.gain * self.linear(x.to(self.linear.weight.dtype)).squeeze(-1)

    def loss(self, states: torch.Tensor, log_prices: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the standardized log prices these states predict."""
        predicted = self.predict(states)
        target = (log_prices.to(predicted) - self.mean) / self.std
        return torch.nn.functional.mse_loss(predicted, target)

    def folded(self) -> tuple[np.ndarray, float]:
        """log(1+price) = states · weight + bias: the standardizations folded in, as PriceHead holds it."""
        w = self.linear.weight.detach().double().cpu().numpy()[0]
        centre, spread = (t.detach().double().cpu().numpy() for t in (self.centre, self.spread))
        b, mean, std, gain = (float(t.detach().double()) for t in (self.linear.bias[0], self.mean, self.std,
                                                                      self.gain))
        return std * gain * w / spread, mean + std * gain * (b - float((w / spread) @ centre))

    def save(self, folder: Path) -> None:
        save_tensors({k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()},
                     str(Path(folder) / TRAINED_HEAD_FILE), metadata={"loss_weight": repr(self.loss_weight)})

    @classmethod
    def load(cls, folder: Path) -> "TrainedHead | None":
        """The head saved in an adapter or checkpoint folder; None when it has none."""
        path = Path(folder) / TRAINED_HEAD_FILE
        if not path.is_file():
            return None
        with safe_open(str(path), "pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            loss_weight = float((f.metadata() or {}).get("loss_weight", "1"))
        size = tensors["linear.weight"].shape[1]
        # A head saved before its input was standardized read the raw states.
        tensors = {"centre": torch.zeros(size), "spread": torch.ones(size), "gain": torch.tensor(1.0), **tensors}
        head = cls(size, loss_weight=loss_weight)
        head.load_state_dict(tensors)
        return head


def last_states(model, tokenizer, texts: list[str], *, batch_size: int = 16, max_prompt_tokens: int = 256,
                question: str = COURSE_QUESTION, report=None, layers: tuple[int | None, ...] | None = None):
    """Each text's last-layer hidden state (after the final norm) at its prompt's last token, "$": a float32 array
    of (texts, hidden size). With `layers`, those decoder layers' outputs there from the same pass, (texts,
    len(layers), hidden size): 1 is the first layer's, None the last after the norm. `report(done, total)` after
    each batch."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    wanted = (None,) if layers is None else tuple(layers)
    for layer in wanted:
        if layer is not None and not 1 <= layer <= base.config.num_hidden_layers:
            raise ValueError(f"layer {layer}: the model has layers 1 to {base.config.num_hidden_layers}")
    device, pad = device_of(model), pad_id(tokenizer)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad least
    states = np.zeros((len(texts), len(wanted), base.config.hidden_size), dtype=np.float32)
    with EvalMode(model), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            ids, mask = left_padded([encode_prompt(tokenizer, texts[i], max_prompt_tokens, question) for i in rows],
                                     pad, device)
            # Positions from each prompt's first real token, as in training (left padding would shift them).
            out = decoder(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                          use_cache=False, output_hidden_states=wanted != (None,))
            for j, layer in enumerate(wanted):
                hidden = out.last_hidden_state if layer is None else out.hidden_states[layer]
                states[rows, j] = hidden[:, -1, :].float().cpu().numpy()
            if report:
                report(min(start + batch_size, len(texts)), len(texts))
    return states[:, 0] if layers is None else states


def predict(model, tokenizer, texts: list[str], methods, *, head=None, **prompt) -> dict[str, list[Prediction]]:
    """The price head's and its neighbours' predictions (of `methods`), from one pass for the prompts' last states."""
    if head is None:
        raise ValueError("the price head or its neighbours were asked for without a fitted head")
    states = last_states(model, tokenizer, texts, **prompt)
    out = {}
    if HEAD in methods:
        how = (f"price head trained with the LoRA (loss weight {head.trained_with:g})" if head.trained_with
               else f"price head on {head.rows} training rows")
        out[HEAD] = [Prediction(price, HEAD, how) for price in head.prices(states)]
    if NEIGHBOURS in methods:
        out[NEIGHBOURS] = [Prediction(price, NEIGHBOURS, f"nearest of {head.rows} training rows by tuned states")
                           for price in head.neighbour_prices(states)]
    return out
