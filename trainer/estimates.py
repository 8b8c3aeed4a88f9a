"""From the model's distribution over prices to one price: the point estimates, and the ensemble with the text baseline.

The digit beam gives (price, probability) candidates. In theory the expected value minimises squared error, the median
absolute error and the mean in log space the squared log error (RMSLE); a beam of 8 is a truncated, imperfectly
calibrated distribution, so which one measures best is found on a run's validation rows, never assumed.
"""

from __future__ import annotations

import math

import numpy as np

DISTRIBUTION_METHODS = ("expected", "median", "log_mean")
"""Point estimates read from one beam search's candidates."""
METHODS = (*DISTRIBUTION_METHODS, "greedy")
"""Every way the fine-tuned model alone prices a text; greedy decodes the likeliest digits instead."""
ENSEMBLE = "ensemble"
"""The fine-tuned model's price blended with the text baseline's in log price."""
AUTO = "auto"
"""The point estimate with the lowest $ error on the run's validation rows."""
CHOICES = (AUTO, *METHODS, ENSEMBLE)
"""What a user may ask a run to price by, in the Predict and Evaluate tabs and the CLI."""
METHOD_NAMES = {"expected": "expected value", "median": "median", "log_mean": "mean in log price",
                "greedy": "greedy", ENSEMBLE: "ensemble with the text baseline"}
WEIGHTS = [i / 20 for i in range(21)]
"""The fine-tuned model's blend weights tried: 0, 0.05, …, 1."""


def point_estimate(candidates: list[tuple[float, float]], method: str) -> float | None:
    """One price from (price, probability) candidates by `method` (one of DISTRIBUTION_METHODS); None without any."""
    total = sum(p for _, p in candidates)
    if not candidates or total <= 0:
        return None
    if method == "expected":
        return sum(price * p for price, p in candidates) / total
    if method == "log_mean":
        return math.expm1(sum(math.log1p(max(price, 0.0)) * p for price, p in candidates) / total)
    if method == "median":
        # The smallest price with at least half the probability at or below it.
        prices, weights = zip(*candidates)
        return float(np.quantile(prices, 0.5, weights=weights, method="inverted_cdf"))
    raise ValueError(f"unknown point estimate {method!r}; one of {', '.join(DISTRIBUTION_METHODS)}")


def blend(model_price: float | None, text_price: float, weight: float) -> float:
    """exp(w·log(1+model) + (1−w)·log(1+text)) − 1; the text baseline alone where the model gave no price."""
    if model_price is None or not math.isfinite(model_price) or model_price < 0:
        return text_price
    return math.expm1(weight * math.log1p(model_price) + (1 - weight) * math.log1p(max(text_price, 0.0)))


def fit_weight(model_prices: list[float | None], text_prices: list[float], truths: list[float]) -> float:
    """The blend weight (of WEIGHTS) with the lowest mean $ error on these rows; ties go to the smaller weight."""
    if not truths:
        raise ValueError("no rows to fit the ensemble weight on")

    def error(w: float) -> float:
        return sum(abs(blend(m, t, w) - y) for m, t, y in zip(model_prices, text_prices, truths)) / len(truths)

    return min(WEIGHTS, key=lambda w: (round(error(w), 9), w))
