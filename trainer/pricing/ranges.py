"""Price ranges: the central range of the digit beam's distribution, calibrated on the run's validation rows
(conformalized quantile regression), clipped to the training prices and stretched to hold the price shown."""

from __future__ import annotations

import math

import numpy as np

from ..runs import RunFolder
from .choice import PriceChoice

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
    scores = [max(math.log1p(r[0]) - math.log1p(y), math.log1p(y) - math.log1p(r[1]))
              for r, y in zip(ranges, truths) if r is not None]
    if not scores:
        raise ValueError("no rows with a range to calibrate on")
    return conformal_quantile(scores, level)


def conformal_quantile(scores: list[float], level: float) -> float:
    """The finite-sample conformal quantile of calibration scores: a new row from the same data scores at most this
    with probability at least `level` (the largest score when there are too few rows for `level`)."""
    ordered = sorted(scores)
    return ordered[min(math.ceil((len(ordered) + 1) * level), len(ordered)) - 1]


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


def range_adjustment(choice: PriceChoice | None, level: float) -> float | None:
    """How much the model's raw `level` ranges are widened (log(1+price)) to hold `level` of the validation rows' true
    prices (fit_range_adjustment); None without validation rows the model gave a distribution for."""
    if not choice:
        return None
    ranges = [price_range([tuple(c) for c in cands], level) for cands in choice.candidates]
    if not any(ranges):
        return None
    return fit_range_adjustment(ranges, choice.truths, level)


def price_ranges(candidates: list, prices: list, level: float, choice: PriceChoice | None,
                 bounds: tuple[float, float] | None = None) -> list:
    """Each row's `level` range: the model's distribution, calibrated on the validation rows when the run has them,
    clipped to `bounds` (training_bounds) and stretched to hold the row's price."""
    return _ranges(candidates, prices, level, range_adjustment(choice, level), bounds)


def training_bounds(run: RunFolder) -> tuple[float, float] | None:
    """The lowest and highest training price: a beam over digits reaches $0 and $9,999, which the run never saw."""
    prices = [p.price for p in run.split()]
    return (min(prices), max(prices)) if prices else None


def bounds_note(bounds: tuple[float, float] | None) -> str:
    return f"within the training prices, ${bounds[0]:,.2f}–${bounds[1]:,.2f}" if bounds else ""


def _ranges(candidates: list, prices: list, level: float, adjustment: float | None,
            bounds: tuple[float, float] | None = None) -> list:
    out = []
    for cands, price in zip(candidates, prices):
        span = price_range([tuple(c) for c in cands], level)
        if span is not None and adjustment is not None:
            span = adjusted(span, adjustment)
        if span is not None and bounds is not None:
            span = (min(max(span[0], bounds[0]), bounds[1]), max(min(span[1], bounds[1]), bounds[0]))
        out.append(covering(span, price))
    return out


def range_report(candidates: list, prices: list, truths: list, choice: PriceChoice | None,
                  bounds: tuple[float, float] | None = None) -> dict:
    """For each of LEVELS: coverage and median width of the raw and the calibrated ranges (as shown: clipped to
    `bounds`), on these rows."""
    report = {}
    for level in LEVELS:
        report[str(level)] = {"raw": range_scores(_ranges(candidates, prices, level, None, bounds), truths)}
        adjustment = range_adjustment(choice, level)
        if adjustment is not None:
            report[str(level)]["calibrated"] = range_scores(
                _ranges(candidates, prices, level, adjustment, bounds), truths)
            report[str(level)]["adjustment"] = adjustment
    return report


def range_line(result) -> str:
    """An Evaluation's ranges' coverage in words: nominal level, raw and calibrated coverage and median width."""
    parts = []
    for level, r in result.ranges.items():
        if r["raw"]["coverage"] is None:
            continue
        part = (f"{100 * float(level):.0f}% range covers {100 * r['raw']['coverage']:.0f}% raw "
                f"(median width ${r['raw']['median_width']:.0f})")
        if "calibrated" in r:
            part += (f", {100 * r['calibrated']['coverage']:.0f}% calibrated on the validation rows "
                     f"(${r['calibrated']['median_width']:.0f})")
        parts.append(part)
    return "; ".join(parts)
