"""The course's Tester on a finished run: fine-tuned vs base model vs baselines on a test set; writes eval.json."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable

from . import data as D
from .baselines import constant_guesses, linear_bow
from .evaluate import price_metrics, summary_line
from .runs import RunFolder, read_jsonl, write_atomic

BATCH = 16


class Cancelled(Exception):
    """The user cancelled a running evaluation."""


def _products(path: Path) -> list[D.Product]:
    return [D.Product(row["text"], float(row["price"])) for row in read_jsonl(path)]


def test_set(run: RunFolder, data: str | None = None) -> list[D.Product]:
    """The run's held-out split, or the products of another file."""
    if data:
        products, _report = D.load_products(data)
        return products
    return _products(run.test_file)


def evaluate_run(run_path: str | Path, data: str | None = None, limit: int | None = None,
                 progress: Callable[[int, int, str], None] | None = None,
                 cancel: threading.Event | None = None) -> dict:
    """Price a test set with the run's adapter (greedy and expected value) and base model; compare to baselines."""
    from .inference import predictor_for

    run = RunFolder(Path(run_path))
    items = test_set(run, data)[: limit or None]
    if not items:
        raise D.DataError("the test set is empty")
    train = _products(run.train_file)
    texts, truths = [p.text for p in items], [p.price for p in items]
    predictor = predictor_for(run.path)

    passes = [("greedy", False), ("expected", False), ("base", True)]
    guesses: dict[str, list] = {name: [] for name, _ in passes}
    total, done = len(passes) * len(items), 0
    for name, base in passes:
        method = "expected" if name == "expected" else "greedy"
        for start in range(0, len(texts), BATCH):
            if cancel is not None and cancel.is_set():
                raise Cancelled("evaluation cancelled")
            batch = texts[start:start + BATCH]
            guesses[name] += [p.price for p in predictor.predict(batch, base=base, method=method)]
            done += len(batch)
            if progress:
                progress(done, total, f"{name}: {min(start + BATCH, len(texts))}/{len(texts)}")

    baselines = {"base_model": price_metrics(guesses["base"], truths),
                 "expected_value": price_metrics(guesses["expected"], truths)}
    if train:
        for name, value in constant_guesses(train).items():
            baselines[name] = {"guess": value, **price_metrics([value] * len(truths), truths)}
        baselines["linear_bow"] = price_metrics(linear_bow(train)(texts), truths)
    result = {
        "run": run.name, "data": data or "held-out split", "count": len(items),
        "metrics": price_metrics(guesses["greedy"], truths),
        "baselines": baselines,
        "items": [{"text": t[:200], "truth": y, "guess": g, "method": "greedy", "expected": e, "base": b}
                  for t, y, g, e, b in zip(texts, truths, guesses["greedy"], guesses["expected"], guesses["base"])],
    }
    write_atomic(run.eval_file, json.dumps(result))
    return result


def summary_table(result: dict) -> list[list]:
    """Rows of (model, error, RMSLE, hits %, unparseable) for display, fine-tuned first."""
    names = {"base_model": "base model", "expected_value": "fine-tuned, expected value",
             "constant_mean": "constant (training mean)", "constant_median": "constant (training median)",
             "linear_bow": "bag-of-words linear regression"}
    rows = [("fine-tuned, greedy", result["metrics"])] + [(names.get(k, k), v) for k, v in result["baselines"].items()]
    return [[name, round(m["error"], 2), round(m["rmsle"], 3), round(100 * m["hits"], 1), m["unparseable"]]
            for name, m in rows]


def one_line(result: dict) -> str:
    return f"{result['run']} on {result['count']} items ({result['data']}): {summary_line(result['metrics'])}"
