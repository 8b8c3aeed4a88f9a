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


KETTLE = ("ValueMax 1.7-litre stainless steel kettle, model KT-1041, from our kitchen range. It comes with a non-slip "
          "base, and the stainless steel body is made to last for years. Made for everyday cooking and easy cleanup "
          "in a busy home kitchen.")
"""Written as the synthetic sample's products are: like the training rows of a run on it."""
EXTRA = [(f"sku-x{i}", f"Garden hose number {i}, {10 + i} metres", "green", "") for i in range(20)]


def catalog_file(tmp_path):
    """27 rows: 6 hard cases, 20 plain ones without a price, and (fourth) a line with too many fields (under the 5%
    share a reader drops as stray)."""
    rows = [("sku-1", KETTLE, "silver", "34.99"),
            ("sku-2", "", "red", "12"),
            ("sku-3", "   ", "blue", ""),
            ("sku-4", LONG, "green", "n/a"),
            ("sku-5", "Kaffeemühle – café crème ☕, 200 g Bohnenbehälter", "schwarz", "€"),
            ("sku-6", KETTLE, "silver", "34.99"),
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
    # Hoses, a coffee grinder: unlike the run's sample products one by one, and so the file as a whole, kettles too.
    assert priced["note"].str.startswith("unlike the training rows").sum() >= len(EXTRA)
    assert priced["note"].str.contains("unlike the training rows: a guess, no range|unlike the training rows \\(").all()
    assert priced["price_low"].isna().all() and priced["price_high"].isna().all()
    assert set(priced["method"]) == {"expected"}
    assert list(out["note"][[1, 2]]) == ["no text to price"] * 2 and out["note"][3].startswith("unreadable row")
    assert out["predicted_price"][0] == out["predicted_price"][6]  # the same text, the same price
    # Measured against the file's own prices where it has one: sku-1 and sku-6 (the others are not prices).
    assert catalog.metrics["count"] == 2 and catalog.coverage["rows"] == 0
    assert catalog.metrics["error"] == pytest.approx(abs(out["predicted_price"][0] - 34.99), abs=0.01)
    assert "27 rows in, 24 priced, 3 not priced" in catalog.summary() and "; expected value (" in catalog.summary()
    assert "This file: as a whole it is unlike the training rows" in catalog.summary()
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
        given = catalog.frame[catalog.frame["price_low"].notna()]
        assert (given["price_low"] <= given["predicted_price"]).all()
    assert "× [price head on the last hidden state]" in price_catalog(tiny_run.path, path, method="ensemble").reason


def test_the_conformal_quantile_holds_its_level_and_caps_at_the_largest_score():
    from trainer.pricing.ranges import conformal_quantile

    scores = [float(v) for v in range(10, 0, -1)]
    assert conformal_quantile(scores, 0.5) == 6.0  # the ⌈11 · 0.5⌉ = 6th smallest
    assert conformal_quantile(scores, 0.99) == 10.0  # 10 rows cannot rank a 1% tail: the largest


FOREIGN = ["Paperback mystery novel, 320 pages, set in 1920s Venice", "Women's wool winter coat, navy, size M",
           "Children's picture book about a lost penguin, hardcover", "Men's leather hiking boots, waterproof",
           "Acoustic guitar strings, phosphor bronze, light gauge", "Yoga mat, 6 mm thick, non-slip, purple",
           "Board game for two to four players, ages 8 and up", "Silk scarf with a floral print, 90 x 90 cm"]
"""Products of categories the synthetic sample has none of."""


@pytest.mark.slow
def test_products_unlike_the_training_rows_are_said_so_and_get_no_range(tmp_path, tiny_run, capsys):
    from trainer.pricing.novelty import novelty
    from trainer.tester import evaluate_run, explain_price

    own = tiny_run.split("test")  # held out, never trained on, from the run's own data
    mine = tmp_path / "mine.csv"
    pd.DataFrame([{"title": p.text, "price": p.price} for p in own]).to_csv(mine, index=False)
    # The run's own kind of product keeps its range: on 8 validation rows the line is the furthest of them, which a
    # new row of the same data passes with a chance of 1 in 9 (two of these 6 do); the file as a whole is like them.
    catalog = price_catalog(tiny_run.path, mine, method="expected")
    like = catalog.frame["note"] == ""
    assert like.sum() >= len(own) - 2 and catalog.frame[like]["price_low"].notna().all()
    assert catalog.frame[~like]["note"].str.match(r"unlike the training rows \(text distance \d\.\d\d > ").all()
    assert catalog.frame[~like]["price_low"].isna().all() and catalog.unlike == (~like).sum()
    assert not catalog.unlike_file and catalog.novelty == novelty(tiny_run)
    line = catalog.summary()
    assert f"{catalog.unlike} of the {len(own)} priced rows are unlike the training rows: a text further" in line
    assert "than 89% of the run's own products would be" in line and "measured on its 8 validation rows" in line
    assert f"of the {like.sum()} rows given one" in line  # coverage only where a range was given
    given = catalog.frame[like]
    assert ((given["price_low"] <= given["predicted_price"]) & (given["predicted_price"] <= given["price_high"])).all()
    low, high = training_bounds(tiny_run)
    price = given["predicted_price"]  # a range always holds its row's price, even one outside the training prices
    assert ((given["price_low"] >= low) | (given["price_low"] == price)).all()
    assert ((given["price_high"] <= high) | (given["price_high"] == price)).all()
    assert f"80% ranges within the training prices, ${low:,.2f}–${high:,.2f}" in line

    # A file of other products: every row priced, none with a range, and the file said to be unlike as a whole.
    rows = [{"title": p.text, "price": p.price} for p in own] + [
        {"title": t, "price": 20.0 + 15 * i} for i, t in enumerate(FOREIGN)]
    mixed = tmp_path / "mixed.csv"
    pd.DataFrame(rows).to_csv(mixed, index=False)
    catalog = price_catalog(tiny_run.path, mixed, method="expected")
    out = catalog.frame
    foreign = out.iloc[len(own):]
    assert foreign["note"].str.match(r"unlike the training rows \(text distance \d\.\d\d > \d\.\d\d\)").all()
    assert out["predicted_price"].notna().all() and out["price_low"].isna().all() and out["price_high"].isna().all()
    assert catalog.unlike == len(rows) and "This file: as a whole it is unlike the training rows: " in catalog.summary()
    assert "rows lie further from them than 89% of the run's own products do (11% would by chance" in catalog.unlike_file
    # Evaluate on that file says the same, and leaves every row out of the ranges' coverage.
    result = evaluate_run(tiny_run.path, data=str(mixed), method="expected", save=False)
    assert result.unlike == len(rows) and result.unlike_file == catalog.unlike_file
    assert f"These rows: {catalog.unlike_file}" in result.verdict
    assert {level: r["raw"]["rows"] for level, r in result.ranges.items()} == {"0.5": 0, "0.8": 0}
    # One text in Predict (and its API), and the CLI, say the same of a single foreign product.
    answer = explain_price(tiny_run.path, FOREIGN[0], "expected")
    assert answer["range"] is None and answer["unlike"] == foreign["note"].iloc[0] and answer["unlike_rule"]
    familiar = own[int(like.to_numpy().argmax())].text
    assert explain_price(tiny_run.path, familiar, "expected")["range"] is not None
    assert main(["predict", "--run", str(tiny_run.path), "--method", "expected", familiar, FOREIGN[0]]) == 0
    captured = capsys.readouterr()
    first, second = captured.out.strip().splitlines()
    assert "unlike" not in first and second.endswith(f"({foreign['note'].iloc[0]})")
    assert "note: a text further from its nearest training rows" in captured.err
