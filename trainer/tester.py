"""The course's Tester on a finished run: every price method of the fine-tuned model, the ensemble, the base model
and the baselines on a test set, in one table and one verdict; writes eval.json. Pricing a few texts (`price_texts`,
`explain_price`) shares its method choice."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from .baselines import (TEXT_BASELINE, TEXT_BASELINE_NAME, TEXT_NEIGHBOURS, TEXT_NEIGHBOURS_NAME, constant_baselines,
                        linear_bow, text_prices)
from .data import DataError, Product, load_products
from .inference import predictor_for
from .pricing import AUTO, DISTRIBUTION_METHODS, ENSEMBLE, METHOD_NAMES, METHODS, PASSES
from .pricing.choice import Progress, method_choice, price_all, price_choice, ready_head, resolve_method
from .pricing.distribution import point_estimate
from .pricing.novelty import novelty
from .metrics import price_metrics, summary_line
from .pricing.ranges import price_ranges, range_adjustment, range_report, training_bounds
from .runs import Evaluation, RunFolder


def test_set(run: RunFolder, data: str | None = None) -> list[Product]:
    """The run's held-out split, or the products of another file."""
    if data:
        products, _report = load_products(data)
        return products
    return run.split("test")



def price_texts(run_path: str | Path, texts: list[str], method: str = AUTO,
                progress: Callable[[int, int, str], None] | None = None) -> tuple[list[float | None], str, str]:
    """(prices, method used, why) for texts with a run's adapter, by any method, `auto` and `ensemble` included."""

    run = RunFolder(Path(run_path))
    predictor = predictor_for(run.path, progress)
    choice = method_choice(run, predictor, method, progress)
    used, why = resolve_method(method, choice, predictor.config.probe_method)
    if used != ENSEMBLE:
        return [p.price for p in predictor.predict(texts, method=used)], used, why
    priced = predictor.predict_methods(texts, choice.ensemble_methods())
    prices = {m: [p.price for p in preds] for m, preds in priced.items()}
    return choice.ensemble_prices(run, prices, texts), used, why



def explain_price(run_path: str | Path, text: str, method: str = AUTO,
                  progress: Callable[[int, int, str], None] | None = None, level: float = 0.8) -> dict:
    """One text priced every way: the headline by `method` and why, each method's price, the ensemble's (when the
    run has validation rows), the `level` range (as a catalog's; None for a text unlike the training rows, and
    "unlike" and "unlike_rule" say why), the base model's, and the candidates of the model's distribution."""

    run = RunFolder(Path(run_path))
    predictor = predictor_for(run.path, progress)
    choice = method_choice(run, predictor, method, progress)
    used, why = resolve_method(method, choice, predictor.config.probe_method)
    ready_head(predictor, Progress(predictor.head_rows_to_fit(), progress, None))
    candidates = predictor.distribution(text)  # one beam search: every point estimate and the chart
    prices = {m: point_estimate(candidates, m) for m in DISTRIBUTION_METHODS}
    others = [m for m in METHODS if m not in DISTRIBUTION_METHODS]
    prices.update({m: p[0].price for m, p in predictor.predict_methods([text], others).items()})
    if choice:
        prices[ENSEMBLE] = choice.ensemble_prices(run, {m: [prices[m]] for m in METHODS}, [text])[0]
    bounds = training_bounds(run)
    novel = novelty(run)
    unlike = novel.judge([text], run)[0][0] if novel else ""
    span = None if unlike else price_ranges([candidates], [prices[used]], level, choice, bounds)[0]
    return {"method": used, "reason": why, "price": prices[used], "prices": prices, "range": span, "level": level,
            "bounds": bounds, "unlike": unlike, "unlike_rule": novel.rule() if unlike else "",
            "calibrated": range_adjustment(choice, level) is not None,
            "base": predictor.predict([text], base=True, method="greedy")[0], "candidates": candidates}



def evaluate_run(run_path: str | Path, data: str | None = None, limit: int | None = None,
                 progress: Callable[[int, int, str], None] | None = None,
                 cancel: threading.Event | None = None, method: str = AUTO, save: bool = True) -> Evaluation:
    """Price a test set by every method of the run's adapter, the ensemble and the base model; compare to baselines.

    The headline is `method`; `auto` takes the method with the lowest $ error on the run's validation rows (priced
    first when not yet measured for this adapter), so nothing about the headline is chosen on the test rows. With
    `save`, the result is the run's eval.json.
    """

    run = RunFolder(Path(run_path))
    items = test_set(run, data)[: limit or None]
    if not items:
        raise DataError("the test set is empty")
    train = run.split()
    texts, truths = [p.text for p in items], [p.price for p in items]
    predictor = predictor_for(run.path, progress)
    to_choose = 0 if price_choice(run) else len(run.split("validation"))
    steps = Progress(PASSES * to_choose + (PASSES + 1) * len(texts) + predictor.head_rows_to_fit(), progress, cancel)
    choice = price_choice(run, predictor, steps)
    headline, why = resolve_method(method, choice, predictor.config.probe_method)

    guesses = price_all(predictor, texts, steps, f"pricing {len(texts)} test rows")
    guesses.update(text_prices(run, texts))
    methods = {m: price_metrics(guesses[m], truths) for m in METHODS}
    if choice:
        guesses[ENSEMBLE] = choice.ensemble_prices(run, guesses, texts)
        methods[ENSEMBLE] = price_metrics(guesses[ENSEMBLE], truths)
    baselines = {"base_model": price_metrics(guesses["base"], truths)}
    if train:
        baselines.update(constant_baselines(train, items))
        baselines["linear_bow"] = price_metrics(linear_bow(train)(texts), truths)
    baselines.update({k: price_metrics(guesses[k], truths) for k in (TEXT_BASELINE, TEXT_NEIGHBOURS)})
    novel = novelty(run)
    notes, whole = novel.judge(texts, run) if novel else ([""] * len(texts), "")
    like = [not note for note in notes]

    def ranged(values: list) -> list:  # the rows given a range
        return [v for v, ok in zip(values, like) if ok]

    rows = [{"text": t[:200], "truth": y, "guess": guesses[headline][i], "method": headline,
             **({"category": items[i].category} if items[i].category else {}),
             **{k: guesses[k][i] for k in (*methods, "base", TEXT_BASELINE, TEXT_NEIGHBOURS)}}
            for i, (t, y) in enumerate(zip(texts, truths))]
    result = Evaluation(
        run=run.name, data=data or "held-out split", count=len(items), method=headline, method_reason=why,
        metrics=methods[headline], methods=methods, baselines=baselines, items=rows,
        ensemble={"method": choice.best_method, **choice.ensemble_stack} if choice else None,
        validation=None if choice is None else {k: getattr(choice, k) for k in ("rows", "methods", "best_method",
                                                                               "ensemble", "ensemble_out_of_fold",
                                                                               "headline")},
        categories=by_category(rows),
        ranges=range_report(ranged(guesses["candidates"]), ranged(guesses[headline]), ranged(truths), choice,
                            training_bounds(run)), unlike=like.count(False), unlike_file=whole)
    result.verdict = verdict(result)
    if save:
        run.write_evaluation(result)
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



def category_table(categories: dict) -> list[list]:
    """Rows of CATEGORY_COLUMNS from an Evaluation's categories: the headline's and the text baseline's $ error in each."""
    return [[name, c["count"], round(c["model"]["error"], 2), round(c[TEXT_BASELINE]["error"], 2),
             round(100 * c["model"]["hits"], 1)] for name, c in categories.items()]



ROW_NAMES = {"base_model": "base model, greedy", "constant_mean": "constant (training mean)",
             "constant_median": "constant (training median)", "linear_bow": "bag-of-words linear regression",
             TEXT_BASELINE: TEXT_BASELINE_NAME, TEXT_NEIGHBOURS: TEXT_NEIGHBOURS_NAME}



def method_name(method: str) -> str:
    # An eval.json from before a method was retired names it by its key.
    return ("fine-tuned + text baselines (ensemble)" if method == ENSEMBLE
            else f"fine-tuned, {METHOD_NAMES.get(method, method)}")



CONSTANTS = ("constant_mean", "constant_median")

SIMPLE_BASELINES = (TEXT_BASELINE, TEXT_NEIGHBOURS, "linear_bow", *CONSTANTS)
"""The baselines a fine-tune must beat to be worth it (the base model is not one: it is the starting point)."""

def _best(rows: dict, keys) -> tuple[str, dict] | None:
    found = [(k, rows[k]) for k in keys if k in rows]
    return min(found, key=lambda kv: kv[1]["error"]) if found else None



def verdict(result: Evaluation) -> str:
    """One plain sentence: which method of the fine-tune priced best on these rows, and how it stands against the
    strongest simple baseline and a constant (ratios of $ error)."""
    methods, baselines = result.methods, result.baselines
    best, metrics = _best(methods, methods)
    short = lambda method: method_name(method).removeprefix("fine-tuned, ")  # noqa: E731
    line = (f"On these {result.count} rows the fine-tune's best method, {short(best)}, is off by "
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
    if result.method != best:
        line += (f". The headline, {short(result.method)}, was chosen before these rows were priced "
                 f"(${result.metrics['error']:.2f} here)")
    if result.unlike_file:
        line += f". These rows: {result.unlike_file}"
    elif result.unlike:
        line += (f". {result.unlike} of them are unlike the training rows: their prices are guesses outside what the "
                 "run learned, and they get no range")
    return line + "."



def summary_table(result: Evaluation) -> list[list]:
    """Rows of (model, error, RMSLE, hits %, MSE, r², unparseable), by $ error: every method of the fine-tuned model
    (the headline and the best marked), the ensemble, the base model and the baselines (the strongest marked)."""
    strongest = (_best(result.baselines, SIMPLE_BASELINES) or ("",))[0]
    rows = [(method_name(k) + (" ◀ headline" if k == result.method else ""), v) for k, v in result.methods.items()]
    rows += [(ROW_NAMES.get(k, k) + (" ◀ strongest baseline" if k == strongest else ""), v)
             for k, v in result.baselines.items()]
    rows.sort(key=lambda row: row[1]["error"])
    return [[name, round(m["error"], 2), round(m["rmsle"], 3), round(100 * m["hits"], 1),
             None if m.get("mse") is None else round(m["mse"], 1), None if m.get("r2") is None else round(m["r2"], 3),
             m["unparseable"]] for name, m in rows]



def one_line(result: Evaluation) -> str:
    why = f" ({result.method_reason})" if result.method_reason else ""
    return (f"{result.run} on {result.count} items ({result.data}), {method_name(result.method)}{why}: "
            f"{summary_line(result.metrics)}")
