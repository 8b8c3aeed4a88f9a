"""The course's Tester on a finished run: fine-tuned vs base model vs baselines on a test set; writes eval.json."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable

from .data import DataError, Product, load_products
from .baselines import (TEXT_BASELINE, TEXT_BASELINE_NAME, constant_baselines, fit_text_baseline, linear_bow,
                        load_text_baseline, predict_prices)
from .config import TrainConfig
from .evaluate import price_metrics, summary_line
from .runs import RunFolder, write_atomic

BATCH = 16


class Cancelled(Exception):
    """The user cancelled a running evaluation."""


def test_set(run: RunFolder, data: str | None = None) -> list[Product]:
    """The run's held-out split, or the products of another file."""
    if data:
        products, _report = load_products(data)
        return products
    return run.split(test=True)


def evaluate_run(run_path: str | Path, data: str | None = None, limit: int | None = None,
                 progress: Callable[[int, int, str], None] | None = None,
                 cancel: threading.Event | None = None) -> dict:
    """Price a test set with the run's adapter (its headline method first, then the other) and base model; compare to
    baselines."""
    from .inference import predictor_for

    run = RunFolder(Path(run_path))
    items = test_set(run, data)[: limit or None]
    if not items:
        raise DataError("the test set is empty")
    train = run.split()
    texts, truths = [p.text for p in items], [p.price for p in items]
    predictor = predictor_for(run.path)

    # The headline price is the run's own probe method (expected value by default), the other method labelled.
    headline = TrainConfig.from_yaml(run.config_file).probe_method
    other = "greedy" if headline == "expected" else "expected"
    passes = [(headline, False), (other, False), ("base", True)]
    guesses: dict[str, list] = {name: [] for name, _ in passes}
    for number, (name, base) in enumerate(passes, 1):
        for start in range(0, len(texts), BATCH):
            if cancel is not None and cancel.is_set():
                raise Cancelled("evaluation cancelled")
            batch = texts[start:start + BATCH]
            guesses[name] += [p.price for p in predictor.predict(batch, base=base, method="greedy" if base else name)]
            if progress:
                done = min(start + BATCH, len(texts))
                progress((number - 1) * len(texts) + done, len(passes) * len(texts),
                         f"pass {number} of {len(passes)} ({PASS_NAMES[name]}): {done} of {len(texts)} items")

    baselines = {OTHER_KEYS[other]: price_metrics(guesses[other], truths),
                 "base_model": price_metrics(guesses["base"], truths)}
    if train:
        baselines.update(constant_baselines(train, items))
        baselines["linear_bow"] = price_metrics(linear_bow(train)(texts), truths)
        # The run's own fitted baseline (a run from before it was stored: fitted now, on the same training split).
        text_model = load_text_baseline(run.text_baseline_file) or fit_text_baseline(train)
        baselines[TEXT_BASELINE] = price_metrics(predict_prices(text_model, texts), truths)
    result = {
        "run": run.name, "data": data or "held-out split", "count": len(items), "method": headline,
        "metrics": price_metrics(guesses[headline], truths),
        "baselines": baselines,
        "items": [{"text": t[:200], "truth": y, "guess": g, "method": headline, other: o, "base": b}
                  for t, y, g, o, b in zip(texts, truths, guesses[headline], guesses[other], guesses["base"])],
    }
    write_atomic(run.eval_file, json.dumps(result))
    return result


PASS_NAMES = {"expected": "fine-tuned, expected value", "greedy": "fine-tuned, greedy", "base": "base model, greedy"}
# eval.json's key for the fine-tuned model priced by the method that is not the headline.
OTHER_KEYS = {"expected": "expected_value", "greedy": "greedy"}
ROW_NAMES = {"base_model": "base model, greedy", "expected_value": PASS_NAMES["expected"],
             "greedy": PASS_NAMES["greedy"], "constant_mean": "constant (training mean)",
             "constant_median": "constant (training median)", "linear_bow": "bag-of-words linear regression",
             TEXT_BASELINE: TEXT_BASELINE_NAME}


def summary_table(result: dict) -> list[list]:
    """Rows of (model, error, RMSLE, hits %, MSE, r², unparseable) for display, the headline (fine-tuned) first."""
    headline = PASS_NAMES[result.get("method", "greedy")]
    rows = [(headline, result["metrics"])] + [(ROW_NAMES.get(k, k), v) for k, v in result["baselines"].items()]
    return [[name, round(m["error"], 2), round(m["rmsle"], 3), round(100 * m["hits"], 1),
             None if m.get("mse") is None else round(m["mse"], 1), None if m.get("r2") is None else round(m["r2"], 3),
             m["unparseable"]] for name, m in rows]


def one_line(result: dict) -> str:
    return (f"{result['run']} on {result['count']} items ({result['data']}), "
            f"{PASS_NAMES[result.get('method', 'greedy')]}: {summary_line(result['metrics'])}")
