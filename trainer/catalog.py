"""Price a catalog: a whole file of products in; every row out, in order, its columns untouched, with a price, a
calibrated range, the method and a note. The Predict tab's "Price a file", `python -m trainer price` and the API
all call price_catalog."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from .data import FILE_FORMATS, OUTPUT_SUFFIXES, DataError, read_rows
from .inference import predictor_for
from .pricing import AUTO, DISTRIBUTION_METHODS, ENSEMBLE, METHOD_NAMES
from .pricing.choice import BATCH, Cancelled, Progress, method_choice, resolve_method
from .pricing.novelty import Novelty, novelty
from .metrics import price_metrics
from .pricing.ranges import bounds_note, price_ranges, range_scores, training_bounds
from .runs import RunFolder

ADDED_COLUMNS = ("predicted_price", "price_low", "price_high", "method", "note")
DEFAULT_LEVEL = 0.8


@dataclass
class Catalog:
    """A priced catalog: the output table and what happened."""

    frame: pd.DataFrame  # the input's columns untouched, then ADDED_COLUMNS
    method: str
    reason: str
    level: float
    seconds: float
    cancelled: bool = False
    metrics: dict | None = None  # the Tester's metrics, when the file has true prices
    coverage: dict | None = None  # range_scores of the ranges against the true prices
    text_columns: list[str] = field(default_factory=list)
    price_column: str = ""
    bounds: tuple[float, float] | None = None  # the training prices' lowest and highest: the ranges' limits
    novelty: Novelty | None = None  # the run's line between rows like its training rows and rows unlike them
    unlike: int = 0  # priced rows beyond it: a note, no range
    unlike_file: str = ""  # when the file as a whole is unlike the training rows, what shows it

    @property
    def priced(self) -> int:
        return int(self.frame["predicted_price"].notna().sum())

    def summary(self) -> str:
        """One line: rows in, priced, not priced, seconds (and against true prices, the metrics and coverage)."""
        rows = len(self.frame)
        line = (f"{rows:,} rows in, {self.priced:,} priced, {rows - self.priced:,} not priced, "
                f"{self.seconds:.1f} s; {METHOD_NAMES[self.method]} ({self.reason}); {100 * self.level:.0f}% ranges"
                + (f" {bounds_note(self.bounds)}" if self.bounds else ""))
        if self.cancelled:
            line += "; cancelled: the rows after the last priced batch are not priced"
        if self.unlike_file:
            line += f". This file: {self.unlike_file}"
        elif self.unlike:
            line += (f". Most of this file is unlike the training rows ({self.unlike:,} of {self.priced:,} priced rows)"
                     if self.unlike > self.priced / 2 else
                     f". {self.unlike:,} of the {self.priced:,} priced rows are unlike the training rows")
            line += f": {self.novelty.rule()}"
        if self.metrics:
            line += (f". Against the file's prices ({self.metrics['count']:,} rows): "
                     f"error ${self.metrics['error']:.2f}, "
                     f"RMSLE {self.metrics['rmsle']:.3f}, hits {100 * self.metrics['hits']:.1f}%")
        if self.coverage and self.coverage["coverage"] is not None:
            given = self.coverage["rows"]
            them = "them" if given == self.metrics["count"] else f"the {given:,} rows given one"
            line += (f"; the {100 * self.level:.0f}% range holds {100 * self.coverage['coverage']:.1f}% of {them} "
                     f"(median width ${self.coverage['median_width']:.0f})")
        return line


def price_catalog(run_path: str | Path, path: str | Path, *, text_column: str | list[str] | None = None,
                  price_column: str | None = None, level: float = DEFAULT_LEVEL, method: str = AUTO,
                  progress: Callable[[int, int, str], None] | None = None,
                  cancel: threading.Event | None = None) -> Catalog:
    """Every row of the file at `path` priced with the run's adapter by `method`, in batches on the evaluation path
    (one beam per batch gives every point estimate and the range). Cancel keeps the rows already priced."""

    if not 0 < level < 1:
        raise DataError(f"level: the range's level must be between 0 and 1 (got {level})")
    started = time.time()
    run = RunFolder(Path(run_path))
    rows = read_rows(path, text_column=text_column or None, price_column=price_column or None)
    predictor = predictor_for(run.path, progress)
    choice = method_choice(run, predictor, method, progress)
    used, why = resolve_method(method, choice, predictor.config.probe_method)
    model_methods = choice.ensemble_methods() if used == ENSEMBLE else (used,)
    unique = list(dict.fromkeys(t for t in rows.texts if t))  # a repeated text is priced once
    steps = Progress(len(unique), progress, cancel)
    priced: dict[str, tuple[dict, list]] = {}
    pricing_started = time.time()
    cancelled = False
    wanted = tuple(dict.fromkeys((DISTRIBUTION_METHODS[0], *model_methods)))  # its candidates give the range
    for start in range(0, len(unique), BATCH):
        try:
            steps.check()
        except Cancelled:
            cancelled = True
            break
        batch = unique[start:start + BATCH]
        out = predictor.predict_methods(batch, wanted)
        for i, text in enumerate(batch):
            beam = out[DISTRIBUTION_METHODS[0]][i].candidates
            priced[text] = ({m: out[m][i].price for m in model_methods}, list(beam))
        done = min(start + BATCH, len(unique))
        left = (time.time() - pricing_started) / done * (len(unique) - done)
        steps.add(len(batch), f"pricing: {done:,} of {len(unique):,} texts, about {_duration(left)} left")
    texts = [t for t in unique if t in priced]
    if used == ENSEMBLE and texts:
        prices = choice.ensemble_prices(run, {m: [priced[t][0][m] for t in texts] for m in model_methods}, texts)
    else:
        prices = [priced[t][0][used] for t in texts]
    bounds = training_bounds(run)
    ranges = price_ranges([priced[t][1] for t in texts], prices, level, choice, bounds)
    novel = novelty(run)
    notes, whole = novel.judge(texts, run) if novel and texts else ([""] * len(texts), "")
    by_text = {t: (p, None if n else r, n) for t, p, r, n in zip(texts, prices, ranges, notes)}
    per_row = [by_text.get(t) if t else None for t in rows.texts]  # aligned with the rows read; None: not priced
    frame = _output(rows, per_row, used, cancelled)
    catalog = Catalog(frame, used, why, level, time.time() - started, cancelled, text_columns=rows.text_columns,
                      price_column=rows.price_column, bounds=bounds, novelty=novel, unlike_file=whole,
                      unlike=sum(bool(by_text[t][2]) for t in rows.texts if t in by_text))
    known = [(row[0], row[1], t) for row, t in zip(per_row, rows.truths) if t is not None and row is not None]
    if known:
        catalog.metrics = {**price_metrics([p for p, _, _ in known], [t for _, _, t in known]), "count": len(known)}
        catalog.coverage = range_scores([span for _, span, _ in known], [t for _, _, t in known])
    return catalog


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _output(rows, per_row: list, method: str, cancelled: bool) -> pd.DataFrame:
    """The input table with the added columns (`per_row`: each row's (price, range, the novelty note), None where it
    was not priced);
    rows the reader could not split into fields come back too, in their place, with a note."""
    frame = rows.table.frame.copy()
    added = {name: [] for name in ADDED_COLUMNS}
    for text, row in zip(rows.texts, per_row):
        price, span, unlike = row or (None, None, "")
        span = span if price is not None else None  # no price, no range
        if not text:
            note = "no text to price"
        elif row is None:
            note = "not priced: cancelled" if cancelled else "not priced"
        elif price is None:
            note = "the model gave no price"
        elif span is None and not unlike:
            note = "no range: the model's own price distribution gave no price"
        else:
            note = unlike
        added["predicted_price"].append(None if price is None else round(price, 2))
        added["price_low"].append(None if span is None else round(span[0], 2))
        added["price_high"].append(None if span is None else round(span[1], 2))
        added["method"].append(method if price is not None else "")
        added["note"].append(note)
    for name in ADDED_COLUMNS:
        frame[_free_name(frame, name)] = added[name]
    if rows.table.bad_lines:
        note = frame.columns[-1]
        unreadable = pd.DataFrame([{**{c: None for c in frame.columns}, note: "unreadable row: not the header's "
                                    "number of fields"} for _ in rows.table.bad_lines])
        lines = list(rows.table.lines) + list(rows.table.bad_lines)
        frame = pd.concat([frame, unreadable], ignore_index=True)
        frame = frame.iloc[sorted(range(len(frame)), key=lines.__getitem__)].reset_index(drop=True)
    return frame


def _free_name(frame: pd.DataFrame, name: str) -> str:
    """The added column's name, suffixed when the input already has a column of that name (it stays untouched)."""
    while name in frame.columns:
        name += "_"
    return name


def write_catalog(frame: pd.DataFrame, out: str | Path) -> Path:
    """The priced table in the format its suffix names (CSV, TSV, JSON, JSONL or Parquet)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise DataError(f"{out.name}: write the result as {', '.join(OUTPUT_SUFFIXES)}")
    FILE_FORMATS[suffix].write(frame, out)
    return out

