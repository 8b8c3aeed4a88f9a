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
HEAD = "head"
"""A ridge read-out of the tuned model's last hidden state, fitted on training rows after training (head.py)."""
NEIGHBOURS = "neighbours"
"""The training rows whose tuned last states are nearest, their prices averaged (head.py, fitted with the head)."""
STATE_METHODS = (HEAD, NEIGHBOURS)
"""The methods that read the tuned model's last hidden state instead of its digits."""
METHODS = (*DISTRIBUTION_METHODS, "greedy", *STATE_METHODS)
"""Every way the fine-tuned model alone prices a text; greedy decodes the likeliest digits instead."""
PROBE_METHODS = tuple(m for m in METHODS if m not in STATE_METHODS)
"""The methods a probe may price by during training: the head and its neighbours are fitted once training ends."""
ENSEMBLE = "ensemble"
"""The fine-tuned model's prices and the text baselines', stacked by a linear regression in log price."""
AUTO = "auto"
"""The point estimate with the lowest $ error on the run's validation rows."""
CHOICES = (AUTO, *METHODS, ENSEMBLE)
"""What a user may ask a run to price by, in the Predict and Evaluate tabs and the CLI."""
METHOD_NAMES = {"expected": "expected value", "median": "median", "log_mean": "mean in log price",
                "greedy": "greedy", HEAD: "price head on the last hidden state",
                NEIGHBOURS: "nearest training rows by the last hidden state",
                ENSEMBLE: "ensemble with the text baselines", AUTO: "auto: the best on the run's validation rows"}
"""Each method's one name, wherever a person reads it (the key is what the CLI, the API and a priced file's `method`
column take)."""
STACK_ALPHAS = (1e-3, 1e-2, 0.1, 1.0, 10.0)
"""The ensemble's ridge penalties tried (by leave-one-out on the validation rows)."""


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


def fit_stack(members: dict[str, list[float | None]], truths: list[float]) -> dict:
    """The ensemble fitted on these rows: log(1+price) regressed on each member's log(1+price), a ridge regression
    (scikit-learn's RidgeCV, its penalty by leave-one-out), as the course's week-8 ensemble stacks its models.
    `members` maps a name to its price of each row; rows where a member gave no price are left out of the fit.
    Returns {"members": name → weight, "intercept": …}."""
    from sklearn.linear_model import RidgeCV

    names = list(members)
    rows = [i for i in range(len(truths)) if all(_usable(members[n][i]) for n in names)]
    if len(rows) < 2:
        raise ValueError(f"{len(rows)} rows with a price from every member; the ensemble needs at least 2 to be "
                         "fitted on")
    features = np.log1p(np.array([[members[n][i] for n in names] for i in rows], dtype=np.float64))
    fit = RidgeCV(alphas=STACK_ALPHAS).fit(features, np.log1p([truths[i] for i in rows]))
    return {"members": {n: float(c) for n, c in zip(names, fit.coef_)}, "intercept": float(fit.intercept_)}


def stacked(prices: dict[str, float | None], stack: dict, fallback: str) -> float:
    """The ensemble's price from each member's price of one row: exp(intercept + Σ weight·log(1+price)) − 1; the
    `fallback` member's price where any member gave none."""
    if not all(_usable(prices[n]) for n in stack["members"]):
        return prices[fallback]
    log_price = stack["intercept"] + sum(w * math.log1p(prices[n]) for n, w in stack["members"].items())
    return max(math.expm1(log_price), 0.0)


def _usable(price: float | None) -> bool:
    return price is not None and math.isfinite(price) and price >= 0


# --- price ranges ------------------------------------------------------------------------------------------------

LEVELS = (0.5, 0.8)
"""The range levels measured on the held-out rows; a catalog may ask for any level in (0, 1)."""


def price_range(candidates: list[tuple[float, float]], level: float) -> tuple[float, float] | None:
    """The central `level` range of the candidates' distribution: its (1−level)/2 and (1+level)/2 weighted quantiles
    (numpy's inverted CDF, as the median); None without candidates."""
    if not 0 < level < 1:
        raise ValueError(f"level {level} must be between 0 and 1")
    if not candidates or sum(p for _, p in candidates) <= 0:
        return None
    prices, weights = zip(*candidates)
    low, high = np.quantile(prices, [(1 - level) / 2, (1 + level) / 2], weights=weights, method="inverted_cdf")
    return float(low), float(high)


def fit_range_adjustment(ranges: list[tuple[float, float] | None], truths: list[float], level: float) -> float:
    """Conformalized quantile regression (Romano et al., 2019) in log(1+price): how far the raw ranges must be
    widened (or, negative, narrowed) so that `level` of these rows' true prices fall inside; fitted on validation
    rows, it holds on new rows from the same data with at least that probability."""
    scores = sorted(max(math.log1p(r[0]) - math.log1p(y), math.log1p(y) - math.log1p(r[1]))
                    for r, y in zip(ranges, truths) if r is not None)
    if not scores:
        raise ValueError("no rows with a range to calibrate on")
    rank = min(math.ceil((len(scores) + 1) * level), len(scores))  # the finite-sample conformal quantile
    return scores[rank - 1]


def adjusted(price_range_: tuple[float, float], adjustment: float) -> tuple[float, float]:
    """A range widened by `adjustment` at both ends in log(1+price) (narrowed when negative, never past its middle)."""
    low, high = (math.log1p(max(v, 0.0)) for v in price_range_)
    adjustment = max(adjustment, -(high - low) / 2)
    return max(math.expm1(low - adjustment), 0.0), math.expm1(high + adjustment)


def covering(price_range_: tuple[float, float] | None, price: float | None) -> tuple[float, float] | None:
    """The range stretched to hold the price given for the row (a greedy or ensemble price may lie outside the
    model's distribution), so that low ≤ price ≤ high always."""
    if price_range_ is None or price is None:
        return price_range_
    return min(price_range_[0], price), max(price_range_[1], price)


def range_scores(ranges: list[tuple[float, float] | None], truths: list[float]) -> dict:
    """coverage: the share of true prices inside their range; median_width: the ranges' median width in $; rows:
    how many had a range."""
    pairs = [(r, y) for r, y in zip(ranges, truths) if r is not None]
    if not pairs:
        return {"coverage": None, "median_width": None, "rows": 0}
    return {"coverage": sum(low <= y <= high for (low, high), y in pairs) / len(pairs),
            "median_width": float(np.median([high - low for (low, high), _ in pairs])), "rows": len(pairs)}
