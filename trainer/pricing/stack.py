"""The ensemble: the fine-tuned model's prices and the text baselines', stacked by a ridge regression in log price
fitted on the run's validation rows, as the course's week-8 ensemble stacks its models."""

from __future__ import annotations

import math

import numpy as np

from ..baselines import TEXT_BASELINE, TEXT_BASELINE_NAME, TEXT_NEIGHBOURS, TEXT_NEIGHBOURS_NAME
from . import METHOD_NAMES, STATE_METHODS

# scikit-learn is imported where the ensemble is fitted, so that importing the methods' names stays instant.

STACK_ALPHAS = (1e-3, 1e-2, 0.1, 1.0, 10.0)
"""The ensemble's ridge penalties tried (by leave-one-out on the validation rows)."""

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


def out_of_fold(members: dict[str, list[float | None]], truths: list[float], folds: int = 5) -> list[float] | None:
    """Each row's ensemble price from a fit on the other rows (scikit-learn's KFold, `folds` parts): its error is as
    honest as a single method's on these rows, which the ensemble's own fit on them is not. None when a fold has
    too few rows to be fitted on."""
    from sklearn.model_selection import KFold

    prices: list[float | None] = [None] * len(truths)
    if len(truths) < 2:
        return None
    for fitted, held in KFold(min(folds, len(truths)), shuffle=True, random_state=0).split(truths):
        try:
            stack = fit_stack({m: [v[i] for i in fitted] for m, v in members.items()}, [truths[i] for i in fitted])
        except ValueError:
            return None
        for i in held:
            prices[i] = stacked({m: v[i] for m, v in members.items()}, stack, TEXT_BASELINE)
    return prices


def stacked(prices: dict[str, float | None], stack: dict, fallback: str) -> float:
    """The ensemble's price from each member's price of one row: exp(intercept + Σ weight·log(1+price)) − 1; the
    `fallback` member's price where any member gave none."""
    if not all(_usable(prices[n]) for n in stack["members"]):
        return prices[fallback]
    log_price = stack["intercept"] + sum(w * math.log1p(prices[n]) for n, w in stack["members"].items())
    return max(math.expm1(log_price), 0.0)


def _usable(price: float | None) -> bool:
    return price is not None and math.isfinite(price) and price >= 0


def ensemble_members(best_method: str) -> tuple[str, ...]:
    """What the ensemble stacks: the tuned model's two read-outs of its states, its best method on the validation
    rows when that is another, and both text baselines (bench/ensemble_members.py measured what each adds)."""
    return (*STATE_METHODS, *(() if best_method in STATE_METHODS else (best_method,)), TEXT_BASELINE,
            TEXT_NEIGHBOURS)


def stacked_all(stack: dict, prices: dict[str, list], count: int) -> list[float]:
    """The ensemble's price of each of `count` rows, from each member's prices by name (stacked)."""
    return [stacked({m: prices[m][i] for m in stack["members"]}, stack, TEXT_BASELINE) for i in range(count)]


MEMBER_NAMES = {**METHOD_NAMES, TEXT_BASELINE: TEXT_BASELINE_NAME, TEXT_NEIGHBOURS: TEXT_NEIGHBOURS_NAME}
"""The ensemble's members by the names every table and chart gives them."""
