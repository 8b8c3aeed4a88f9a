"""Plotly figures and tables drawn from run data (metrics.jsonl rows, samples, predictions). No UI imports."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .metrics import hit_color, price_metrics, summary_line

COLOURS = {"green": "#2ca02c", "orange": "#ff7f0e", "red": "#d62728"}
ROW_BACKGROUNDS = {"green": "#e3f4e3", "orange": "#fdebd3", "red": "#f9dcdc", "none": "#e8e8e8"}
LOSS_COLOUR = "#1f77b4"
LR_COLOUR = "#9467bd"
TEXT_BASELINE_COLOUR = "#17becf"
TEXT_NEIGHBOURS_COLOUR = "#e377c2"
EMA_ALPHA = 0.1


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _title(head: str, *details: str) -> dict:
    """A short title, its details below it in smaller type, a line each: the charts sit in narrow columns, where
    plotly cuts a long title off instead of wrapping it."""
    return dict(text=head, subtitle=dict(text="<br>".join(d for d in details if d)), font=dict(size=15))


# The data charts sit two to a narrow column: plotly's default 80 px right margin would take a third of the width.
NARROW = dict(l=60, r=20, t=100, b=60)

# Below the plot: at the top right a legend overlaps the title (and its subtitle) in a narrow column.
LEGEND_BELOW = dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0)


def empty_figure(title: str, message: str, x_title: str = "", y_title: str = "") -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, template="plotly_white",
                      xaxis=dict(showticklabels=False), yaxis=dict(showticklabels=False))
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=16, color="#888"))
    return fig


def ema(values: list[float], alpha: float = EMA_ALPHA) -> list[float]:
    """Exponential moving average, debiased (as TensorBoard does) so the start is not pulled towards 0."""
    out, average, weight = [], 0.0, 0.0
    for v in values:
        average = (1 - alpha) * average + alpha * v
        weight = (1 - alpha) * weight + alpha
        out.append(average / weight)
    return out


def step_axis(steps: list[int]) -> dict:
    """An x axis of whole steps from 0: plotly would tick 1.5 on a short run, and centre a single point on -1…1."""
    return dict(title="step", range=[0, max(max(steps, default=1), 1) * 1.03], tickformat="d",
                dtick=1 if max(steps, default=0) <= 8 else None)


def loss_figure(metrics: list[dict]) -> go.Figure:
    """Training loss (raw and smoothed) by step, learning rate on a second y axis."""
    rows = [r for r in metrics if _number(r.get("loss")) is not None and _number(r.get("step")) is not None]
    if not rows:
        return empty_figure("Training loss", "Waiting for the first step…", "step", "loss")
    rows.sort(key=lambda r: r["step"])
    steps = [r["step"] for r in rows]
    losses = [float(r["loss"]) for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=losses, name="loss", mode="lines", opacity=0.35,
                             line=dict(color=LOSS_COLOUR, width=1)))
    fig.add_trace(go.Scatter(x=steps, y=ema(losses), name="loss (smoothed)", mode="lines",
                             line=dict(color=LOSS_COLOUR, width=3)))
    lr_rows = [r for r in rows if _number(r.get("lr")) is not None]
    if lr_rows:
        fig.add_trace(go.Scatter(x=[r["step"] for r in lr_rows], y=[float(r["lr"]) for r in lr_rows],
                                 name="learning rate", mode="lines", yaxis="y2",
                                 line=dict(color=LR_COLOUR, width=1.5, dash="dot")))
    fig.update_layout(
        title=_title("Training loss", f"step {steps[-1]}, loss {losses[-1]:.3f}"),
        xaxis=step_axis(steps),
        yaxis=dict(title="loss"),
        yaxis2=dict(title="learning rate", overlaying="y", side="right", showgrid=False, exponentformat="e",
                    rangemode="tozero"),
        legend=LEGEND_BELOW, template="plotly_white", hovermode="x unified",
    )
    return fig


def error_figure(metrics: list[dict], base_error: float | None = None, constant_error: float | None = None,
                 text_baseline_error: float | None = None, text_neighbours_error: float | None = None) -> go.Figure:
    """Mean $ error on the probe set by step, with the base model, constant-guess, TF-IDF ridge and TF-IDF
    neighbours baselines as lines: the fine-tune is worth its minutes once it crosses below the strongest of them."""
    rows = sorted((r for r in metrics if _number(r.get("probe_error")) is not None
                   and _number(r.get("step")) is not None), key=lambda r: r["step"])
    if not rows and all(v is None for v in (base_error, constant_error, text_baseline_error, text_neighbours_error)):
        return empty_figure("Price error", "Waiting for the first evaluation…", "step", "mean absolute error ($)")
    fig = go.Figure()
    if rows:
        fig.add_trace(go.Scatter(x=[r["step"] for r in rows], y=[float(r["probe_error"]) for r in rows],
                                 name="fine-tuned", mode="lines+markers", line=dict(color=LOSS_COLOUR, width=2)))
    # The baselines as lines in the legend (below the plot), not annotations: a label on the line is covered by
    # the fine-tuned curve as soon as it crosses there.
    steps = [r["step"] for r in rows]
    span = [0, max(max(steps, default=1), 1) * 1.03]
    for value, label, colour in ((base_error, "base model", "#7f7f7f"),
                                 (constant_error, "constant guess", "#bcbd22"),
                                 (text_baseline_error, "TF-IDF ridge", TEXT_BASELINE_COLOUR),
                                 (text_neighbours_error, "TF-IDF neighbours", TEXT_NEIGHBOURS_COLOUR)):
        if _number(value) is not None:
            fig.add_trace(go.Scatter(x=span, y=[value, value], mode="lines", name=f"{label} ${value:,.2f}",
                                     line=dict(color=colour, dash="dash", width=1.5), hoverinfo="name"))
    latest = f"${float(rows[-1]['probe_error']):,.2f} at step {rows[-1]['step']}" if rows else ""
    fig.update_layout(title=_title("Price error on the probe set", latest), xaxis=step_axis(steps),
                      yaxis=dict(title="mean absolute error ($)", rangemode="tozero"), legend=LEGEND_BELOW,
                      template="plotly_white")
    return fig


def price_histogram(prices: list[float]) -> go.Figure:
    """Distribution of prices in the data."""
    values = [float(p) for p in prices if _number(p) is not None]
    if not values:
        return empty_figure("Prices", "No prices", "price ($)", "products")
    # An array, not a list: plotly encodes it in one pass (a list is checked item by item) and compactly.
    fig = go.Figure(go.Histogram(x=np.asarray(values), nbinsx=min(50, max(10, len(values) // 10)),
                                 marker_color=LOSS_COLOUR, name="products"))
    average = sum(values) / len(values)
    fig.update_layout(title=_title("Prices", f"{len(values):,} products",
                                   f"average ${average:,.2f}, max ${max(values):,.2f}"),
                      xaxis_title="price ($)", yaxis_title="products", bargap=0.05, template="plotly_white",
                      margin=NARROW)
    return fig


def token_length_figure(lengths: list[int], cutoff: int, of_rows: int | None = None) -> go.Figure:
    """Tokens per example (course prompt + price), a line at the max-length cut-off, the share cut in the title;
    `of_rows`: the lengths are a sample of that many rows."""
    values = [int(n) for n in lengths if _number(n) is not None]
    if not values:
        return empty_figure("Tokens per example", "No examples", "tokens (prompt + price)", "examples")
    cut = sum(n > cutoff for n in values)
    fig = go.Figure(go.Histogram(x=values, nbinsx=min(50, max(10, len(values) // 10)), marker_color=LR_COLOUR,
                                 name="examples"))
    fig.add_vline(x=cutoff, line_dash="dash", line_color=COLOURS["red"],
                  annotation_text=f"cut-off {cutoff}", annotation_position="top right")
    fig.update_layout(title=_title("Tokens per example", f"cut-off {cutoff}:",
                                   f"{cut:,} of {len(values):,} ({100 * cut / len(values):.1f}%) truncated"
                                   + (f"; sampled from {of_rows:,} rows" if of_rows and of_rows > len(values) else "")),
                      xaxis_title="tokens (prompt + price)", yaxis_title="examples", bargap=0.05,
                      template="plotly_white", margin=NARROW)
    return fig


def scatter_figure(truths: list[float], guesses: list[float | None]) -> go.Figure:
    """The course's Tester chart: truth on x, guess on y, dots coloured by hit, the y = x line, metrics in the title."""
    if not truths:
        return empty_figure("Predictions", "No predictions yet", "true price ($)", "predicted price ($)")
    shown = [g if _number(g) is not None and g >= 0 else 0.0 for g in guesses]  # unparseable counts as 0
    colours = [COLOURS[hit_color(g, t)] for g, t in zip(guesses, truths)]
    top = max(max(truths), max(shown)) * 1.05 or 1.0
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="perfect",
                             line=dict(color="deepskyblue", width=1.5), hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=list(truths), y=shown, mode="markers", name="products",
                             marker=dict(color=colours, size=6, opacity=0.8),
                             hovertemplate="true $%{x:,.2f}<br>guess $%{y:,.2f}<extra></extra>"))
    fig.update_layout(title=summary_line(price_metrics(list(guesses), list(truths))),
                      xaxis=dict(title="true price ($)", range=[0, top]),
                      yaxis=dict(title="predicted price ($)", range=[0, top]),
                      showlegend=False, template="plotly_white")
    return fig


def distribution_figure(candidates: list[tuple[float, float]], expected: float | None,
                        label: str = "expected") -> go.Figure:
    """The model's candidate prices and their probabilities on a price axis, with a line at the price given (named by
    `label`). Prices that span an order of magnitude get a log axis; each candidate is a stem, which a log axis
    draws as it draws a linear one (bars would widen with the price)."""
    if not candidates:
        return empty_figure("Price distribution", "No candidate prices", "price ($)", "probability")
    ordered = sorted(candidates)
    prices, probabilities = [p for p, _ in ordered], [q for _, q in ordered]
    fig = go.Figure(go.Scatter(
        x=prices, y=probabilities, mode="markers", name="probability", marker=dict(color=LOSS_COLOUR, size=9),
        error_y=dict(type="data", symmetric=False, array=[0] * len(prices), arrayminus=probabilities, width=0,
                     thickness=5, color=LOSS_COLOUR),
        hovertemplate="$%{x:,.2f}: %{y:.1%}<extra></extra>"))
    title = "Price distribution"
    if _number(expected) is not None:
        fig.add_vline(x=expected, line=dict(color=COLOURS["red"], width=2, dash="dash"),
                      annotation_text=f"{label} ${expected:,.2f}", annotation_position="top")
        title += f" — {label} ${expected:,.2f}"
    values = [p for p in prices + ([expected] if _number(expected) is not None else []) if p > 0] or [1.0]
    low, high = min(values), max(values)
    log = high >= 10 * low
    # An explicit range: plotly's autorange on a log axis with the stems' error bars runs off to $10^28.
    if log:
        span = [math.log10(low) - 0.1, math.log10(high) + 0.1]
    else:
        pad = max((high - low) * 0.08, 0.5)
        span = [max(low - pad, 0), high + pad]
    fig.update_layout(title=title, xaxis=dict(title="price ($)", type="log" if log else "linear", tickprefix="$",
                                              range=span),
                      yaxis=dict(title="probability", tickformat=".0%", rangemode="tozero"), template="plotly_white")
    return fig


def _description(text: str, limit: int = 80) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1].rstrip() + "…"


def samples_frame(samples: list[dict]):
    """Sample predictions as a table (Description, True $, Predicted $, Error $), rows coloured by hit."""
    rows, backgrounds = [], []
    for s in samples:
        truth = float(s["truth"])
        guess = s.get("guess")
        guess = float(guess) if _number(guess) is not None else None
        error = s.get("error")
        if _number(error) is None:
            error = abs(guess - truth) if guess is not None else None
        rows.append({"Description": _description(s.get("text", "")), "True $": truth, "Predicted $": guess,
                     "Error $": error})
        backgrounds.append(ROW_BACKGROUNDS[hit_color(guess, truth) if guess is not None and guess >= 0 else "none"])
    frame = pd.DataFrame(rows, columns=["Description", "True $", "Predicted $", "Error $"])
    for column in ("True $", "Predicted $", "Error $"):
        frame[column] = frame[column].astype("float64")

    def colour_rows(row):
        return [f"background-color: {backgrounds[row.name]}"] * len(row)

    return (frame.style.apply(colour_rows, axis=1)
            .format({"True $": "{:,.2f}", "Predicted $": "{:,.2f}", "Error $": "{:,.2f}"}, na_rep="—")
            .hide(axis="index"))


PRICE_BUCKETS = (0, 10, 25, 50, 100, 250, 500, 1000, float("inf"))


def bucket_figure(truths: list[float], guesses: list[float | None]) -> go.Figure:
    """Mean $ error by true-price bucket: where the model prices well and where it does not."""

    bars = []
    for low, high in zip(PRICE_BUCKETS, PRICE_BUCKETS[1:]):
        pairs = [(t, g) for t, g in zip(truths, guesses) if low <= t < high]
        if pairs:
            m = price_metrics([g for _, g in pairs], [t for t, _ in pairs])
            label = f"${low:g}+" if high == float("inf") else f"${low:g}–{high:g}"
            bars.append((label, m["error"], len(pairs)))
    if not bars:
        return empty_figure("Error by price", "No predictions", "true price", "mean absolute error ($)")
    fig = go.Figure(go.Bar(x=[b[0] for b in bars], y=[b[1] for b in bars], text=[f"n={b[2]}" for b in bars],
                           marker_color=LOSS_COLOUR))
    fig.update_layout(title="Mean error by true price", xaxis_title="true price", yaxis_title="mean absolute error ($)",
                      template="plotly_white")
    return fig


def category_figure(categories: dict, shown: int = 20) -> go.Figure:
    """Mean $ error by the data's category (the largest `shown`), the fine-tune beside the text baseline."""
    rows = list(categories.items())[:shown]
    if not rows:
        return empty_figure("Error by category", "The data has no category column", "category",
                            "mean absolute error ($)")
    names = [name for name, _ in rows]
    fig = go.Figure([go.Bar(name="fine-tuned", x=names, y=[c["model"]["error"] for _, c in rows],
                            text=[f"n={c['count']}" for _, c in rows], marker_color=LOSS_COLOUR),
                     go.Bar(name="text baseline (TF-IDF ridge)", x=names,
                            y=[c["tfidf_ridge"]["error"] for _, c in rows],
                            marker_color=TEXT_BASELINE_COLOUR)])
    fig.update_layout(title="Mean error by category", barmode="group", xaxis_title="category",
                      yaxis_title="mean absolute error ($)", template="plotly_white")
    return fig


def overlay_figure(series: dict[str, list[dict]], key: str, title: str, y_title: str) -> go.Figure:
    """One line per run of metric `key` by step (loss smoothed), for comparing runs."""
    fig = go.Figure()
    for name, metrics in series.items():
        rows = sorted((r for r in metrics if _number(r.get(key)) is not None and _number(r.get("step")) is not None),
                      key=lambda r: r["step"])
        if not rows:
            continue
        values = [float(r[key]) for r in rows]
        fig.add_trace(go.Scatter(x=[r["step"] for r in rows], y=ema(values) if key == "loss" else values,
                                 name=name, mode="lines" if key == "loss" else "lines+markers"))
    if not fig.data:
        return empty_figure(title, "Select runs with data to compare.", "step", y_title)
    fig.update_layout(title=title, xaxis=dict(title="step"), yaxis=dict(title=y_title), template="plotly_white",
                      legend=LEGEND_BELOW)
    return fig
