"""Price a catalog: every row out in order with its columns untouched, ranges that hold their price, honest coverage,
the same prices from the CLI, and Cancel keeping what is done."""

import csv
import math
import re
import threading

import pandas as pd
import pytest

from trainer.__main__ import main
from trainer.catalog import ADDED_COLUMNS, price_catalog, write_catalog
from trainer.data import DataError, read_rows
from trainer.pricing.choice import PriceChoice
from trainer.pricing.ranges import (adjusted, covering, fit_range_adjustment, price_range, price_ranges,
                                    range_adjustment, range_scores, training_bounds)

LONG = "A very long description of a stainless steel kettle. " * 200  # far over any max length


EXTRA = [(f"sku-x{i}", f"Garden hose number {i}, {10 + i} metres", "green", "") for i in range(20)]


def catalog_file(tmp_path):
    """27 rows: 6 hard cases, 20 plain ones without a price, and (fourth) a line with too many fields (under the 5%
    share a reader drops as stray)."""
    rows = [("sku-1", "Stainless kettle, 1.7 l, auto shut-off", "silver", "34.99"),
            ("sku-2", "", "red", "12"),
            ("sku-3", "   ", "blue", ""),
            ("sku-4", LONG, "green", "n/a"),
            ("sku-5", "Kaffeemühle – café crème ☕, 200 g Bohnenbehälter", "schwarz", "€"),
            ("sku-6", "Stainless kettle, 1.7 l, auto shut-off", "silver", "34.99"),
            *EXTRA]
    path = tmp_path / "catalog.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sku", "title", "colour", "price"])
        writer.writerows(rows[:3])
        f.write("sku-7,a row,with,too,many,fields\n")  # between the rows: the rows after it keep their prices
        writer.writerows(rows[3:])
    return path


@pytest.mark.slow
def test_every_row_comes_back_in_order_with_its_columns_and_a_range(tmp_path, tiny_run):
    path = catalog_file(tmp_path)
    catalog = price_catalog(tiny_run.path, path, method="expected", level=0.8)
    out = catalog.frame
    assert list(out.columns) == ["sku", "title", "colour", "price", *ADDED_COLUMNS]
    skus = ["sku-1", "sku-2", "sku-3", None, "sku-4", "sku-5", "sku-6"] + [s for s, *_ in EXTRA]
    assert list(out["sku"]) == skus  # the unreadable line in its place
    source = pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="skip")
    readable = out.drop(index=3).reset_index(drop=True)
    assert list(readable["colour"]) == list(source["colour"]) and list(readable["price"]) == list(source["price"])
    assert list(readable["title"]) == list(source["title"])  # the text column too, untouched
    priced = out[out["predicted_price"].notna()]
    assert list(priced["sku"]) == ["sku-1", "sku-4", "sku-5", "sku-6"] + [s for s, *_ in EXTRA]
    assert (priced["price_low"] <= priced["predicted_price"]).all()
    assert (priced["predicted_price"] <= priced["price_high"]).all()
    assert set(priced["method"]) == {"expected"} and set(priced["note"]) == {""}
    assert list(out["note"][[1, 2]]) == ["no text to price"] * 2 and out["note"][3].startswith("unreadable row")
    assert out["predicted_price"][0] == out["predicted_price"][6]  # the same text, the same price
    # Measured against the file's own prices where it has one: sku-1 and sku-6 (the others are not prices).
    assert catalog.metrics["count"] == 2 and catalog.coverage["rows"] == 2
    assert catalog.metrics["error"] == pytest.approx(abs(out["predicted_price"][0] - 34.99), abs=0.01)
    assert "27 rows in, 24 priced, 3 not priced" in catalog.summary() and "; expected value (" in catalog.summary()
    low, high = training_bounds(tiny_run)
    own = priced["predicted_price"]  # a range always holds its row's price, even one outside the training prices
    assert ((priced["price_low"] >= low) | (priced["price_low"] == own)).all()
    assert ((priced["price_high"] <= high) | (priced["price_high"] == own)).all()
    assert f"80% ranges within the training prices, ${low:,.2f}–${high:,.2f}" in catalog.summary()
    # The CLI prices the same file the same way (the tab's path, checked over HTTP in test_app_client).
    cli_out = tmp_path / "priced.csv"
    assert main(["price", "--run", str(tiny_run.path), str(path), "--out", str(cli_out), "--method", "expected"]) == 0
    cli = pd.read_csv(cli_out)
    assert cli["predicted_price"].tolist() == pytest.approx(out["predicted_price"].astype(float).tolist(), nan_ok=True)
    # Every output format round-trips the same rows.
    for suffix in (".jsonl", ".parquet", ".tsv", ".json"):
        assert len(pd.read_json(p, lines=True) if (p := write_catalog(out, tmp_path / f"o{suffix}")).suffix == ".jsonl"
                   else pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_json(p) if p.suffix == ".json"
                   else pd.read_csv(p, sep="\t")) == 27


@pytest.mark.slow
def test_cancel_keeps_the_rows_already_priced(tmp_path, tiny_run):
    path = catalog_file(tmp_path)
    cancel = threading.Event()

    reports = []

    def progress(done, total, what):
        reports.append((done, total, what))
        if done >= 16:  # after the first batch
            cancel.set()

    catalog = price_catalog(tiny_run.path, path, method="expected", progress=progress, cancel=cancel)
    out = catalog.frame
    assert catalog.cancelled and len(out) == 27
    assert out["predicted_price"].notna().sum() == 16 + 1  # 16 texts priced, one of them on two rows
    assert (out["note"] == "not priced: cancelled").sum() == 27 - 17 - 3  # less the rows with no text to price
    assert "cancelled" in catalog.summary()
    assert reports[0][:2] == (16, 23) and re.fullmatch(r"pricing: 16 of 23 texts, about \d+ s left", reports[0][2])


def test_a_ten_thousand_row_file_is_read_whole_and_a_bigger_one_refused_by_name(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("title,price\n" + "".join(f"Product {i} in steel,{i % 500 + 1}\n" for i in range(10_000)))
    rows = read_rows(path)
    assert len(rows.texts) == 10_000 and rows.texts[9_999] == "Product 9999 in steel" and rows.truths[0] == 1.0
    with pytest.raises(DataError, match="big.csv: has 10,000 rows, more than the limit of 9,999; price it in parts"):
        read_rows(path, max_rows=9_999)


def test_ranges_and_their_coverage_by_hand():
    dist = [(30.0, 0.4), (20.0, 0.25), (40.0, 0.25), (10.0, 0.05), (50.0, 0.05)]  # CDF .05 .30 .70 .95 1
    assert price_range(dist, 0.8) == (20.0, 40.0)  # the 10% and 90% quantiles of the inverted CDF
    assert price_range(dist, 0.5) == (20.0, 40.0) and price_range(dist, 0.95) == (10.0, 50.0)
    assert price_range([(7.0, 1.0)], 0.8) == (7.0, 7.0)
    assert price_range([], 0.8) is None
    with pytest.raises(ValueError):
        price_range(dist, 1.0)
    ranges = [(10.0, 20.0), (10.0, 20.0), (10.0, 20.0), (10.0, 20.0), None]
    truths = [15.0, 10.0, 25.0, 5.0, 99.0]
    assert range_scores(ranges, truths) == {"coverage": 0.5, "median_width": 10.0, "rows": 4}  # 15, 10 in; 25, 5 out
    # CQR: the scores are [-log(16/11)… ] — at level 0.5 the 3rd of 4 (ceil(5 × 0.5)), 25 above 20: log(26/21).
    assert fit_range_adjustment(ranges, truths, 0.5) == pytest.approx(math.log(26 / 21))
    low, high = adjusted((10.0, 20.0), math.log(26 / 21))
    assert high == pytest.approx(25.0) and low == pytest.approx(11 * 21 / 26 - 1)
    assert adjusted((10.0, 20.0), -10.0)[0] == pytest.approx(adjusted((10.0, 20.0), -10.0)[1])  # never past the middle
    assert covering((10.0, 20.0), 25.0) == (10.0, 25.0) and covering(None, 5.0) is None
    # Validation rows without any distribution (a model that never wrote digits): no calibration, raw ranges.
    def chosen(candidates, truths):  # a price choice whose rows gave these candidates
        return PriceChoice(step=1, rows=len(truths), row_ids=[], methods={}, best_method="expected", ensemble_stack={},
                           ensemble={}, ensemble_out_of_fold=None, headline="expected", tfidf_ridge={},
                           tfidf_neighbours={}, truths=truths, candidates=candidates)

    assert range_adjustment(chosen([[], []], [1.0, 2.0]), 0.8) is None
    assert price_ranges([[(10.0, 1.0)]], [10.0], 0.8, chosen([[]], [3.0])) == [(10.0, 10.0)]
    # Clipped to the training prices (a beam over digits reaches $0), yet always holding the row's own price.
    wide = [[(0.0, 0.5), (900.0, 0.5)]]
    assert price_ranges(wide, [5.0], 0.8, None, bounds=(2.5, 80.0)) == [(2.5, 80.0)]
    assert price_ranges(wide, [95.0], 0.8, None, bounds=(2.5, 80.0)) == [(2.5, 95.0)]


@pytest.mark.slow
def test_a_catalog_priced_by_the_ensemble_or_the_neighbours_matches_single_texts(tmp_path, tiny_run):
    from trainer.tester import price_texts

    texts = ["Stainless kettle, 1.7 l, auto shut-off", "Garden hose, 20 metres", "Oak shelf bracket, pack of 4"]
    path = tmp_path / "few.csv"
    pd.DataFrame({"title": texts}).to_csv(path, index=False)
    for method in ("ensemble", "neighbours"):
        catalog = price_catalog(tiny_run.path, path, method=method)
        alone, used, _ = price_texts(tiny_run.path, texts, method=method)
        assert used == method and set(catalog.frame["method"]) == {method}
        assert catalog.frame["predicted_price"].tolist() == pytest.approx(alone, abs=0.006)  # to the cent
        assert (catalog.frame["price_low"] <= catalog.frame["predicted_price"]).all()
    assert "× [price head on the last hidden state]" in price_catalog(tiny_run.path, path, method="ensemble").reason
