"""The course's Tester on a finished run: fine-tuned vs base model vs baselines on a test set; writes eval.json."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable

from .data import DataError, Product, load_products
from .baselines import (TEXT_BASELINE, TEXT_BASELINE_NAME, TEXT_NEIGHBOURS, TEXT_NEIGHBOURS_NAME, constant_baselines,
                        fit_text_baseline, fit_text_neighbours, linear_bow, load_text_baseline, predict_prices)
from .config import TrainConfig
from .estimates import (AUTO, CHOICES, DISTRIBUTION_METHODS, ENSEMBLE, LEVELS, METHOD_NAMES, METHODS, STATE_METHODS,
                        adjusted, covering, fit_range_adjustment, fit_stack, point_estimate, price_range, range_scores,
                        stacked)
from .evaluate import price_metrics, summary_line
from .runs import RunFolder, write_atomic

BATCH = 16
PASSES = 3
"""Passes over each row to price it every fine-tuned way: the beam (every point estimate), greedy, the head's states."""


class Cancelled(Exception):
    """The user cancelled a running evaluation."""


def test_set(run: RunFolder, data: str | None = None) -> list[Product]:
    """The run's held-out split, or the products of another file."""
    if data:
        products, _report = load_products(data)
        return products
    return run.split("test")


class Progress:
    """Items priced out of all the passes of an evaluation, reported with what is being priced; honours Cancel."""

    def __init__(self, total: int, report: Callable[[int, int, str], None] | None, cancel: threading.Event | None):
        self.total, self.done, self.report, self.cancel = max(total, 1), 0, report, cancel

    def check(self):
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("evaluation cancelled")

    def add(self, count: int, what: str):
        self.done += count
        if self.report:
            self.report(min(self.done, self.total), self.total, what)


def ready_head(predictor, progress: Progress) -> None:
    """The run's price head fitted now if it has none (minutes: one forward pass per training row it is fitted on),
    reported and cancellable through `progress`; its rows counted in progress.total by the caller
    (predictor.head_rows_to_fit())."""
    if predictor.head is not None:
        return
    reported = 0

    def report(done: int, total: int) -> None:
        nonlocal reported
        progress.add(done - reported, f"fitting the price head: {done} of {total} training rows")
        reported = done
        progress.check()

    predictor.ensure_head(report)


def _price_all(predictor, texts: list[str], progress: Progress, where: str, base: bool = True) -> dict[str, list]:
    """Every method's prices of the fine-tuned model, its distributions ("candidates"), and (with `base`) the base
    model's greedy prices, in batches (PASSES + 1 passes), after the head is fitted if the run has none."""
    ready_head(predictor, progress)
    guesses: dict[str, list] = {m: [] for m in (*METHODS, "candidates", *(["base"] if base else []))}
    for start in range(0, len(texts), BATCH):
        progress.check()
        batch = texts[start:start + BATCH]
        for method, preds in predictor.predict_methods(batch, METHODS).items():
            guesses[method] += [p.price for p in preds]
            if method == DISTRIBUTION_METHODS[0]:
                guesses["candidates"] += [list(p.candidates) for p in preds]
        done = min(start + BATCH, len(texts))
        progress.add(PASSES * len(batch), f"{where}: fine-tuned model, {done} of {len(texts)}")
        if not base:
            continue
        progress.check()
        guesses["base"] += [p.price for p in predictor.predict(batch, base=True, method="greedy")]
        progress.add(len(batch), f"{where}: base model, {min(start + BATCH, len(texts))} of {len(texts)}")
    return guesses


_TEXT_MODELS: dict[tuple, dict] = {}  # by run folder and stored baseline: fitted once per process


def text_models(run: RunFolder) -> dict:
    """The run's text baselines by key: its stored TF-IDF ridge (for a run from before it was stored: fitted now, on
    the same training split) and the nearest neighbours on that ridge's TF-IDF vectors of the training split."""
    stored = run.text_baseline_file
    key = (str(run.path), stored.stat().st_mtime_ns if stored.is_file() else None)
    if key not in _TEXT_MODELS:
        if len(_TEXT_MODELS) >= 4:
            _TEXT_MODELS.pop(next(iter(_TEXT_MODELS)))
        ridge = load_text_baseline(stored) or fit_text_baseline(run.split())
        _TEXT_MODELS[key] = {TEXT_BASELINE: ridge, TEXT_NEIGHBOURS: fit_text_neighbours(ridge, run.split())}
    return _TEXT_MODELS[key]


def text_prices(run: RunFolder, texts: list[str]) -> dict[str, list[float]]:
    """Each text baseline's prices of `texts`, by key."""
    return {key: predict_prices(model, texts) for key, model in text_models(run).items()}


def ensemble_members(best_method: str) -> tuple[str, ...]:
    """What the ensemble stacks: the tuned model's two read-outs of its states, its best method on the validation
    rows when that is another, and both text baselines (bench/ensemble_members.py measured what each adds)."""
    return (*STATE_METHODS, *(() if best_method in STATE_METHODS else (best_method,)), TEXT_BASELINE,
            TEXT_NEIGHBOURS)


def ensemble_methods(choice: dict) -> tuple[str, ...]:
    """The fine-tuned model's methods the run's ensemble needs prices by."""
    return tuple(m for m in choice["ensemble_stack"]["members"] if m in METHODS)


def price_choice(run: RunFolder, predictor=None, progress: Progress | None = None,
                 measure: bool = True) -> dict | None:
    """Every price method scored on the run's validation rows, the best by $ error, and the ensemble's weight fitted
    there: price_choice.json, measured once per adapter step (with `measure` False: only if it already was). None for
    a run without validation rows.

    Only validation rows are priced here (their ids are recorded): the held-out rows never choose anything.
    """
    from .inference import predictor_for

    validation = run.split("validation")
    if not validation:
        return None
    step = run.status().get("step")
    cached = run.price_choice()
    # A choice from before the stacked ensemble, the ranges or a method is measured again.
    if (cached and cached.get("step") == step and cached.get("rows") == len(validation)
            and {"ensemble_stack", "candidates"} <= set(cached) and set(METHODS) <= set(cached.get("methods", {}))
            and "members" in cached["ensemble_stack"]):
        return cached
    if not measure:
        return None
    predictor = predictor or predictor_for(run.path)
    progress = progress or Progress(PASSES * len(validation) + predictor.head_rows_to_fit(), None, None)
    texts, truths = [p.text for p in validation], [p.price for p in validation]
    guesses = _price_all(predictor, texts, progress, f"choosing the price method on {len(texts)} validation rows",
                         base=False)
    guesses.update(text_prices(run, texts))
    scores = {m: price_metrics(guesses[m], truths) for m in METHODS}
    best = min(METHODS, key=lambda m: (scores[m]["error"], METHODS.index(m)))
    stack = fit_stack({m: guesses[m] for m in ensemble_members(best)}, truths)
    choice = {"step": step, "rows": len(validation), "row_ids": [p.id for p in validation], "methods": scores,
              "best_method": best, "ensemble_stack": stack,
              "ensemble": price_metrics(_stacked_all(stack, guesses, len(texts)), truths),
              **{k: price_metrics(guesses[k], truths) for k in (TEXT_BASELINE, TEXT_NEIGHBOURS)}, "truths": truths,
              "candidates": [[[round(v, 2), round(p, 5)] for v, p in c] for c in guesses["candidates"]]}
    write_atomic(run.choice_file, json.dumps(choice))
    return choice


def resolve_method(run: RunFolder, method: str, choice: dict | None) -> tuple[str, str]:
    """(method, why) for a method asked for: `auto` is the validation rows' best, else the run's probe method."""
    if method != AUTO:
        if method not in CHOICES:
            raise ValueError(f"unknown price method {method!r}; one of {', '.join(CHOICES)}")
        return method, "as asked"
    if choice:
        return choice["best_method"], f"the lowest $ error on {choice['rows']} validation rows"
    return TrainConfig.from_yaml(run.config_file).probe_method, "the run's probe method (it has no validation rows)"


def method_choice(run: RunFolder, predictor, method: str, progress) -> dict | None:
    """The run's price choice: measured now if `method` needs it (auto, ensemble) and it is not yet."""
    if method not in (AUTO, ENSEMBLE):
        choice = price_choice(run, measure=False)
    else:
        to_fit = 0 if price_choice(run, measure=False) else predictor.head_rows_to_fit()
        choice = price_choice(run, predictor, Progress(PASSES * len(run.split("validation")) + to_fit, progress, None))
        if method == ENSEMBLE and choice is None:
            raise DataError(f"run {run.name} has no validation rows to fit the ensemble weight on")
    # Only the head asked for, needed by the ensemble or chosen by auto, is worth minutes of fitting here.
    if (method in STATE_METHODS or (method == ENSEMBLE and choice)
            or (method == AUTO and choice and choice["best_method"] in STATE_METHODS)):
        ready_head(predictor, Progress(predictor.head_rows_to_fit(), progress, None))
    return choice


def ensemble_prices(run: RunFolder, choice: dict, model_prices: dict[str, list], texts: list[str]) -> list[float]:
    """The ensemble's prices of `texts`, given the fine-tuned model's prices by (at least) ensemble_methods(choice)."""
    return _stacked_all(choice["ensemble_stack"], {**model_prices, **text_prices(run, texts)}, len(texts))


def _stacked_all(stack: dict, prices: dict[str, list], count: int) -> list[float]:
    return [stacked({m: prices[m][i] for m in stack["members"]}, stack, TEXT_BASELINE) for i in range(count)]


def range_adjustment(choice: dict | None, level: float) -> float | None:
    """How much the model's raw `level` ranges are widened (log(1+price)) to hold `level` of the validation rows' true
    prices (estimates.fit_range_adjustment); None without validation rows the model gave a distribution for."""
    if not choice:
        return None
    ranges = [price_range([tuple(c) for c in cands], level) for cands in choice["candidates"]]
    if not any(ranges):
        return None
    return fit_range_adjustment(ranges, choice["truths"], level)


def price_ranges(candidates: list, prices: list, level: float, choice: dict | None,
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


def _range_report(candidates: list, prices: list, truths: list, choice: dict | None,
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


def range_line(result: dict) -> str:
    """The ranges' coverage in words: nominal level, raw and calibrated coverage and median width."""
    parts = []
    for level, r in (result.get("ranges") or {}).items():
        if r["raw"]["coverage"] is None:
            continue
        part = (f"{100 * float(level):.0f}% range covers {100 * r['raw']['coverage']:.0f}% raw "
                f"(median width ${r['raw']['median_width']:.0f})")
        if "calibrated" in r:
            part += (f", {100 * r['calibrated']['coverage']:.0f}% calibrated on the validation rows "
                     f"(${r['calibrated']['median_width']:.0f})")
        parts.append(part)
    return "; ".join(parts)




MEMBER_NAMES = {**METHOD_NAMES, TEXT_BASELINE: TEXT_BASELINE_NAME, TEXT_NEIGHBOURS: TEXT_NEIGHBOURS_NAME}
"""The ensemble's members by the names every table and chart gives them."""


def ensemble_reason(choice: dict) -> str:
    s = choice["ensemble_stack"]
    terms = " ".join(f"{'+' if w >= 0 else '−'} {abs(w):.2f} × [{MEMBER_NAMES[m]}]"
                     for m, w in s["members"].items()).removeprefix("+ ")
    return (f"log(1+price) = {terms} {'+' if s['intercept'] >= 0 else '−'} {abs(s['intercept']):.2f}, each [member] "
            f"its log(1+price): a linear regression fitted on {choice['rows']} validation rows")


def price_texts(run_path: str | Path, texts: list[str], method: str = AUTO,
                progress: Callable[[int, int, str], None] | None = None) -> tuple[list[float | None], str, str]:
    """(prices, method used, why) for texts with a run's adapter, by any method, `auto` and `ensemble` included."""
    from .inference import predictor_for

    run = RunFolder(Path(run_path))
    predictor = predictor_for(run.path, progress)
    choice = method_choice(run, predictor, method, progress)
    used, why = resolve_method(run, method, choice)
    if used != ENSEMBLE:
        return [p.price for p in predictor.predict(texts, method=used)], used, why
    priced = predictor.predict_methods(texts, ensemble_methods(choice))
    prices = {m: [p.price for p in preds] for m, preds in priced.items()}
    return ensemble_prices(run, choice, prices, texts), used, ensemble_reason(choice)


def explain_price(run_path: str | Path, text: str, method: str = AUTO,
                  progress: Callable[[int, int, str], None] | None = None, level: float = 0.8) -> dict:
    """One text priced every way: the headline by `method` and why, each method's price, the ensemble's (when the
    run has validation rows), the `level` range (as a catalog's), the base model's, and the candidates of the model's
    distribution."""
    from .inference import predictor_for

    run = RunFolder(Path(run_path))
    predictor = predictor_for(run.path, progress)
    choice = method_choice(run, predictor, method, progress)
    used, why = resolve_method(run, method, choice)
    ready_head(predictor, Progress(predictor.head_rows_to_fit(), progress, None))
    candidates = predictor.distribution(text)  # one beam search: every point estimate and the chart
    prices = {m: point_estimate(candidates, m) for m in DISTRIBUTION_METHODS}
    prices["greedy"] = predictor.predict([text], method="greedy")[0].price
    prices.update({m: p[0].price for m, p in predictor.predict_methods([text], STATE_METHODS).items()})
    if choice:
        prices[ENSEMBLE] = ensemble_prices(run, choice, {m: [prices[m]] for m in METHODS}, [text])[0]
        if used == ENSEMBLE:
            why = ensemble_reason(choice)
    bounds = training_bounds(run)
    span = price_ranges([candidates], [prices[used]], level, choice, bounds)[0]
    return {"method": used, "reason": why, "price": prices[used], "prices": prices, "range": span, "level": level,
            "bounds": bounds,
            "calibrated": range_adjustment(choice, level) is not None,
            "base": predictor.predict([text], base=True, method="greedy")[0], "candidates": candidates}


def evaluate_run(run_path: str | Path, data: str | None = None, limit: int | None = None,
                 progress: Callable[[int, int, str], None] | None = None,
                 cancel: threading.Event | None = None, method: str = AUTO, save: bool = True) -> dict:
    """Price a test set by every method of the run's adapter, the ensemble and the base model; compare to baselines.

    The headline is `method`; `auto` takes the method with the lowest $ error on the run's validation rows (priced
    first when not yet measured for this adapter), so nothing about the headline is chosen on the test rows. With
    `save`, the result is the run's eval.json.
    """
    from .inference import predictor_for

    run = RunFolder(Path(run_path))
    items = test_set(run, data)[: limit or None]
    if not items:
        raise DataError("the test set is empty")
    train = run.split()
    texts, truths = [p.text for p in items], [p.price for p in items]
    predictor = predictor_for(run.path, progress)
    to_choose = 0 if price_choice(run, measure=False) else len(run.split("validation"))
    steps = Progress(PASSES * to_choose + (PASSES + 1) * len(texts) + predictor.head_rows_to_fit(), progress, cancel)
    choice = price_choice(run, predictor, steps)
    headline, why = resolve_method(run, method, choice)
    if headline == ENSEMBLE:
        if choice is None:
            raise DataError(f"run {run.name} has no validation rows to fit the ensemble weight on")
        why = ensemble_reason(choice)

    guesses = _price_all(predictor, texts, steps, f"pricing {len(texts)} test rows")
    guesses.update(text_prices(run, texts))
    methods = {m: price_metrics(guesses[m], truths) for m in METHODS}
    if choice:
        guesses[ENSEMBLE] = ensemble_prices(run, choice, guesses, texts)
        methods[ENSEMBLE] = price_metrics(guesses[ENSEMBLE], truths)
    baselines = {"base_model": price_metrics(guesses["base"], truths)}
    if train:
        baselines.update(constant_baselines(train, items))
        baselines["linear_bow"] = price_metrics(linear_bow(train)(texts), truths)
    baselines.update({k: price_metrics(guesses[k], truths) for k in (TEXT_BASELINE, TEXT_NEIGHBOURS)})
    result = {
        "run": run.name, "data": data or "held-out split", "count": len(items), "method": headline,
        "method_reason": why, "metrics": methods[headline], "methods": methods, "baselines": baselines,
        "ensemble": {"method": choice["best_method"], **choice["ensemble_stack"]} if choice else None,
        "validation": None if choice is None else {k: choice[k] for k in ("rows", "methods", "best_method", "ensemble")},
        "items": [{"text": t[:200], "truth": y, "guess": guesses[headline][i], "method": headline,
                   **({"category": items[i].category} if items[i].category else {}),
                   **{k: guesses[k][i] for k in (*methods, "base", TEXT_BASELINE, TEXT_NEIGHBOURS)}}
                  for i, (t, y) in enumerate(zip(texts, truths))],
    }
    result["categories"] = by_category(result["items"])
    result["verdict"] = verdict(result)
    result["ranges"] = _range_report(guesses["candidates"], guesses[headline], truths, choice, training_bounds(run))
    if save:
        write_atomic(run.eval_file, json.dumps(result))
    return result


def by_category(items: list[dict]) -> dict:
    """category → {count, the headline's metrics, the text baseline's}, largest first; {} when no item has one."""
    groups: dict[str, list[dict]] = {}
    for item in items:
        if item.get("category"):
            groups.setdefault(item["category"], []).append(item)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return {name: {"count": len(rows),
                   "model": price_metrics([r["guess"] for r in rows], [r["truth"] for r in rows]),
                   TEXT_BASELINE: price_metrics([r[TEXT_BASELINE] for r in rows], [r["truth"] for r in rows])}
            for name, rows in ordered}


CATEGORY_COLUMNS = ["category", "items", "fine-tuned error $", "text baseline error $", "fine-tuned hits %"]


def category_table(result: dict) -> list[list]:
    """Rows of CATEGORY_COLUMNS: the headline's and the text baseline's $ error in each category."""
    return [[name, c["count"], round(c["model"]["error"], 2), round(c[TEXT_BASELINE]["error"], 2),
             round(100 * c["model"]["hits"], 1)] for name, c in (result.get("categories") or {}).items()]


ROW_NAMES = {"base_model": "base model, greedy", "constant_mean": "constant (training mean)",
             "constant_median": "constant (training median)", "linear_bow": "bag-of-words linear regression",
             TEXT_BASELINE: TEXT_BASELINE_NAME, TEXT_NEIGHBOURS: TEXT_NEIGHBOURS_NAME}


def method_name(method: str) -> str:
    return "fine-tuned + text baselines (ensemble)" if method == ENSEMBLE else f"fine-tuned, {METHOD_NAMES[method]}"


CONSTANTS = ("constant_mean", "constant_median")
SIMPLE_BASELINES = (TEXT_BASELINE, TEXT_NEIGHBOURS, "linear_bow", *CONSTANTS)
"""The baselines a fine-tune must beat to be worth it (the base model is not one: it is the starting point)."""


def _rows(result: dict) -> tuple[dict, dict]:
    """The fine-tuned model's methods (the ensemble included) and the baselines, each key → metrics."""
    headline = result.get("method", "greedy")
    baselines = dict(result["baselines"])
    # eval.json from before every method had its entry kept the other method among the baselines.
    older = {m: baselines.pop(k) for k, m in (("expected_value", "expected"), ("greedy", "greedy")) if k in baselines}
    return result.get("methods") or {headline: result["metrics"], **older}, baselines


def _best(rows: dict, keys) -> tuple[str, dict] | None:
    found = [(k, rows[k]) for k in keys if k in rows]
    return min(found, key=lambda kv: kv[1]["error"]) if found else None


def verdict(result: dict) -> str:
    """One plain sentence: which method of the fine-tune priced best on these rows, and how it stands against the
    strongest simple baseline and a constant (ratios of $ error)."""
    methods, baselines = _rows(result)
    best, metrics = _best(methods, methods)
    short = lambda method: method_name(method).removeprefix("fine-tuned, ")  # noqa: E731
    line = (f"On these {result['count']} rows the fine-tune's best method, {short(best)}, is off by "
            f"${metrics['error']:.2f}")
    strongest, constant = _best(baselines, SIMPLE_BASELINES), _best(baselines, CONSTANTS)
    if strongest:
        name, m = strongest
        ratio = metrics["error"] / m["error"] if m["error"] else float("inf")
        word = "beats" if ratio < 1 else "does not beat"
        line += (f": it {word} the strongest baseline, {ROW_NAMES[name]} (${m['error']:.2f}; "
                 f"{ratio:.2f}× its error)")
    if constant and constant[0] != (strongest or ("",))[0]:
        ratio = metrics["error"] / constant[1]["error"] if constant[1]["error"] else float("inf")
        line += f", and {'beats' if ratio < 1 else 'does not beat'} a {ROW_NAMES[constant[0]]} ({ratio:.2f}×)"
    headline = result.get("method", "greedy")
    if headline != best:
        line += (f". The headline, {short(headline)}, was chosen before these rows were priced "
                 f"(${result['metrics']['error']:.2f} here)")
    return line + "."


def summary_table(result: dict) -> list[list]:
    """Rows of (model, error, RMSLE, hits %, MSE, r², unparseable), by $ error: every method of the fine-tuned model
    (the headline and the best marked), the ensemble, the base model and the baselines (the strongest marked)."""
    headline = result.get("method", "greedy")
    methods, baselines = _rows(result)
    strongest = (_best(baselines, SIMPLE_BASELINES) or ("",))[0]
    rows = [(method_name(k) + (" ◀ headline" if k == headline else ""), v) for k, v in methods.items()]
    rows += [(ROW_NAMES.get(k, k) + (" ◀ strongest baseline" if k == strongest else ""), v)
             for k, v in baselines.items()]
    rows.sort(key=lambda row: row[1]["error"])
    return [[name, round(m["error"], 2), round(m["rmsle"], 3), round(100 * m["hits"], 1),
             None if m.get("mse") is None else round(m["mse"], 1), None if m.get("r2") is None else round(m["r2"], 3),
             m["unparseable"]] for name, m in rows]


def one_line(result: dict) -> str:
    why = f" ({result['method_reason']})" if result.get("method_reason") else ""
    return (f"{result['run']} on {result['count']} items ({result['data']}), "
            f"{method_name(result.get('method', 'greedy'))}{why}: {summary_line(result['metrics'])}")
