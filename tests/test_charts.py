"""Charts are pure functions of run data: check the traces they hold, not how they look."""

import pandas as pd
import plotly.graph_objects as go
import pytest

from trainer.charts import (COLOURS, ROW_BACKGROUNDS, distribution_figure, ema, error_figure, loss_figure,
                            price_histogram, samples_frame, scatter_figure, token_length_figure)
from trainer.metrics import hit_color


def _annotations(fig):
    return " ".join(a.text for a in fig.layout.annotations)


def _total_variation(values):
    return sum(abs(b - a) for a, b in zip(values, values[1:]))


def test_loss_figure_traces():
    losses = [2.5, 1.0, 2.2, 0.9, 1.8, 0.7, 1.5, 0.6, 1.2, 0.5]
    metrics = [{"step": i + 1, "loss": v, "lr": 1e-4 * (1 - i / 10), "epoch": i / 10} for i, v in enumerate(losses)]
    metrics.insert(3, {"step": 3, "probe_error": 50.0})  # an evaluation row without loss is ignored
    fig = loss_figure(metrics)
    raw, smooth, lr = fig.data
    assert list(raw.y) == losses and list(raw.x) == list(range(1, 11))
    assert len(smooth.y) == len(losses)
    assert _total_variation(list(smooth.y)) < _total_variation(losses) / 3
    assert smooth.line.width > raw.line.width
    assert smooth.y[0] == pytest.approx(losses[0])  # debiased EMA starts at the first value
    assert lr.yaxis == "y2" and list(lr.y) == pytest.approx([1e-4 * (1 - i / 10) for i in range(10)])
    assert fig.layout.yaxis2.overlaying == "y"
    assert fig.layout.xaxis.title.text == "step"
    assert fig.layout.title.subtitle.text == f"step 10, loss {losses[-1]:.3f}"


def test_loss_figure_without_lr_and_unsorted():
    fig = loss_figure([{"step": 2, "loss": 1.0}, {"step": 1, "loss": 2.0}, {"step": 3, "loss": float("nan")}])
    assert len(fig.data) == 2
    assert list(fig.data[0].x) == [1, 2] and list(fig.data[0].y) == [2.0, 1.0]


@pytest.mark.parametrize("metrics", [[], [{"step": 1, "probe_error": 3.0}]])
def test_loss_figure_empty(metrics):
    fig = loss_figure(metrics)
    assert isinstance(fig, go.Figure) and len(fig.data) == 0
    assert "waiting for the first step" in _annotations(fig).lower()


def test_ema():
    assert ema([]) == []
    assert ema([3.0, 3.0, 3.0]) == pytest.approx([3.0, 3.0, 3.0])
    # debiased: averages 0.1·2 = 0.2 then 0.9·0.2 + 0.1·4 = 0.58; weights 0.1 then 0.9·0.1 + 0.1 = 0.19
    assert ema([2.0, 4.0], alpha=0.1) == pytest.approx([2.0, 0.58 / 0.19])


def test_error_figure():
    metrics = [{"step": 1, "loss": 2.0}, {"step": 10, "probe_error": 80.0}, {"step": 20, "probe_error": 60.0},
               {"step": 15, "loss": 1.0}]
    fig = error_figure(metrics, base_error=120.5, constant_error=100.0, text_baseline_error=55.25,
                       text_neighbours_error=50.0)
    curve, *lines = fig.data
    assert list(curve.x) == [10, 20] and list(curve.y) == [80.0, 60.0]
    # Baselines are flat lines across the whole step range, named in the legend (a label on the line gets covered).
    assert {line.name: set(line.y) for line in lines} == {"base model $120.50": {120.5},
                                                          "constant guess $100.00": {100.0},
                                                          "TF-IDF ridge $55.25": {55.25},
                                                          "TF-IDF neighbours $50.00": {50.0}}
    assert all(min(line.x) == 0 and max(line.x) >= 20 for line in lines)
    assert fig.layout.xaxis.range[0] == 0 and fig.layout.yaxis.rangemode == "tozero"


def test_step_axes_are_whole_steps_from_zero():
    # One point (the base model's probe at step 0) sits at the left edge, not centred on -1…1.
    fig = error_figure([{"step": 0, "probe_error": 50.0}])
    assert fig.layout.xaxis.range[0] == 0 and fig.layout.xaxis.range[1] > 0
    fig = loss_figure([{"step": s, "loss": 1.0} for s in (1, 2, 3)])
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tickformat == "d"  # no 1.5 tick on a short run


def test_error_figure_empty_and_baselines_only():
    fig = error_figure([{"step": 1, "loss": 2.0}])
    assert len(fig.data) == 0 and "waiting" in _annotations(fig).lower()
    fig = error_figure([], base_error=90.0)
    assert [set(t.y) for t in fig.data] == [{90.0}]


def test_price_histogram():
    fig = price_histogram([10.0, 20.0, 20.0, 300.0])
    assert list(fig.data[0].x) == [10.0, 20.0, 20.0, 300.0]
    assert fig.layout.title.text == "Prices" and "4 products" in fig.layout.title.subtitle.text
    assert len(price_histogram([]).data) == 0


def test_token_length_figure_marks_the_cutoff_and_the_share_truncated():
    fig = token_length_figure([40, 50, 60, 70, 130], 64)
    assert list(fig.data[0].x) == [40, 50, 60, 70, 130]
    assert "cut-off 64:<br>2 of 5 (40.0%) truncated" in fig.layout.title.subtitle.text
    (line,) = [shape for shape in fig.layout.shapes if shape.type == "line"]
    assert line.x0 == line.x1 == 64
    assert "0 of 3 (0.0%) truncated" in token_length_figure([10, 20, 30], 30).layout.title.subtitle.text
    assert len(token_length_figure([], 64).data) == 0


def test_scatter_figure_colours_match_hit_color():
    truths = [100.0, 100.0, 100.0, 500.0, 30.0]
    guesses = [110.0, 170.0, 400.0, None, 25.0]
    fig = scatter_figure(truths, guesses)
    diagonal, dots = fig.data
    assert list(diagonal.x) == list(diagonal.y)  # y = x
    assert list(dots.x) == truths
    assert list(dots.y) == [110.0, 170.0, 400.0, 0.0, 25.0]  # unparseable plotted at 0, as it is counted
    assert list(dots.marker.color) == [COLOURS[hit_color(g, t)] for g, t in zip(guesses, truths)]
    assert list(dots.marker.color) == [COLOURS[c] for c in ("green", "orange", "red", "red", "green")]
    # errors 10, 70, 300, 500, 5 → mean 177; hits 2/5
    assert fig.layout.title.text.startswith("Error=$177.00 RMSLE=")
    assert "Hits=40.0%" in fig.layout.title.text


def test_scatter_figure_empty():
    fig = scatter_figure([], [])
    assert len(fig.data) == 0


def test_distribution_figure():
    candidates = [(12.0, 0.5), (3.0, 0.3), (120.0, 0.2)]
    fig = distribution_figure(candidates, expected=28.5)
    [stems] = fig.data
    assert list(stems.x) == [3.0, 12.0, 120.0] and list(stems.y) == [0.3, 0.5, 0.2]
    assert fig.layout.xaxis.type == "log"  # $3 to $120: a numeric axis, logarithmic over an order of magnitude
    [line] = fig.layout.shapes
    assert line.x0 == line.x1 == 28.5  # the price itself on the price axis, not a position between labels
    assert distribution_figure([(20.0, 0.6), (29.0, 0.4)], 24.0).layout.xaxis.type == "linear"
    assert "expected $28.50" in _annotations(fig)
    assert len(distribution_figure(candidates, None).layout.shapes) == 0
    assert len(distribution_figure([], None).data) == 0


def test_samples_frame():
    long_text = "Whirlpool  dishwasher\nrack " + "x" * 200
    samples = [
        {"text": long_text, "truth": 100.0, "guess": 110.0, "error": 10.0},
        {"text": "<b>fridge</b>", "truth": 100.0, "guess": 170.0, "error": 70.0},
        {"text": "oven", "truth": 100.0, "guess": 400.0},
        {"text": "kettle", "truth": 50.0, "guess": None, "error": None},
    ]
    styler = samples_frame(samples)
    frame = styler.data
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["Description", "True $", "Predicted $", "Error $"]
    assert frame["Description"][0].startswith("Whirlpool dishwasher rack x") and len(frame["Description"][0]) <= 80
    assert "\n" not in frame["Description"][0]
    assert frame["Description"][1] == "<b>fridge</b>"  # plain text, left for the table to escape
    assert list(frame["Error $"][:3]) == [10.0, 70.0, 300.0]  # a missing error is computed
    assert pd.isna(frame["Predicted $"][3]) and pd.isna(frame["Error $"][3])
    styler._compute()
    colours = [styler.ctx[(i, 0)] for i in range(4)]
    expected = [ROW_BACKGROUNDS[c] for c in ("green", "orange", "red", "none")]
    assert [dict(c)["background-color"] for c in colours] == expected
    assert all(styler.ctx[(i, j)] == styler.ctx[(i, 0)] for i in range(4) for j in range(4))


def test_samples_frame_empty():
    styler = samples_frame([])
    assert list(styler.data.columns) == ["Description", "True $", "Predicted $", "Error $"]
    assert len(styler.data) == 0


def test_figures_serialise():
    figures = [loss_figure([]), loss_figure([{"step": 1, "loss": 1.0, "lr": 1e-4}]),
               error_figure([{"step": 1, "probe_error": 5.0}], 9.0, 8.0), price_histogram([1.0, 2.0]),
               scatter_figure([1.0], [2.0]), distribution_figure([(1.0, 1.0)], 1.0)]
    for fig in figures:
        assert fig.to_json()
    assert "<table" in samples_frame([{"text": "a", "truth": 1.0, "guess": 1.0, "error": 0.0}]).to_html()
