"""The course Tester's metrics of a list of guessed prices against the true ones, and its colours."""

from __future__ import annotations

import math

# scikit-learn is imported where a metric needs it, so that importing the methods' names stays instant.


def _as_guess(guess: float | None) -> float:
    """The value a guess counts as in the metrics: None, negative and non-finite guesses count as 0."""
    if guess is None or not math.isfinite(guess) or guess < 0:
        return 0.0
    return float(guess)


def _unparseable(guess: float | None) -> bool:
    return guess is None or not math.isfinite(guess) or guess < 0


def hit_color(guess: float | None, truth: float) -> str:
    """Course Tester colours: green if error < $40 or < 20% of truth; orange if < $80 or < 40%; else red."""
    error = abs(_as_guess(guess) - truth)
    relative = error / truth if truth > 0 else (0.0 if error == 0 else math.inf)
    if error < 40 or relative < 0.2:
        return "green"
    if error < 80 or relative < 0.4:
        return "orange"
    return "red"


def price_metrics(guesses: list[float | None], truths: list[float]) -> dict:
    """The Tester's metrics: mean absolute $ error, RMSLE, share of green hits, and the current course's mean squared
    error and r², plus the count of unparseable guesses and the count.

    Unparseable guesses (None or negative) count as 0 in every metric. With no rows the metrics are None; r² needs
    two rows.
    """
    from sklearn.metrics import mean_squared_error, r2_score

    if len(guesses) != len(truths):
        raise ValueError(f"{len(guesses)} guesses for {len(truths)} truths")
    count = len(truths)
    unparseable = sum(1 for g in guesses if _unparseable(g))
    if count == 0:
        return {"error": None, "rmsle": None, "hits": None, "mse": None, "r2": None, "unparseable": 0, "count": 0}
    values = [_as_guess(g) for g in guesses]
    error = sum(abs(g - t) for g, t in zip(values, truths)) / count
    squared_log = sum((math.log(max(t, 0.0) + 1) - math.log(g + 1)) ** 2 for g, t in zip(values, truths)) / count
    hits = sum(1 for g, t in zip(values, truths) if hit_color(g, t) == "green") / count
    return {"error": error, "rmsle": math.sqrt(squared_log), "hits": hits,
            "mse": float(mean_squared_error(truths, values)),
            "r2": float(r2_score(truths, values)) if count >= 2 and len(set(truths)) > 1 else None,
            "unparseable": unparseable, "count": count}


def summary_line(metrics: dict) -> str:
    """The Tester title: "Error=$44.95 RMSLE=1.01 Hits=79.5%", then MSE and r² where measured (and the unparseable
    count when there are any)."""
    if not metrics or not metrics.get("count"):
        return "No predictions yet"
    line = f"Error=${metrics['error']:,.2f} RMSLE={metrics['rmsle']:.2f} Hits={100 * metrics['hits']:.1f}%"
    if metrics.get("mse") is not None:
        line += f" MSE={metrics['mse']:,.0f}"
    if metrics.get("r2") is not None:
        line += f" r²={metrics['r2']:.2f}"
    if metrics.get("unparseable"):
        line += f" Unparseable={metrics['unparseable']}"
    return line
