"""trainer.data: reading real upload files, price parsing, cleaning, sample data, split, tokenization."""

import csv
import gzip
import io
import json
import math
import statistics
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.data.sample import BRANDS
from trainer.data import (
    COURSE_QUESTION,
    IGNORE_INDEX,
    PRICE_PREFIX,
    DataError,
    DataReport,
    PriceError,
    Product,
    build_prompt,
    clean_text,
    completion,
    fit_max_length,
    load_products,
    make_sample_products,
    parse_price,
    split_products,
    split_run,
    strip_course_prompt,
    tokenize_example,
)

ROWS = [(f"Widget number {i}, a sturdy steel thing", 10.0 + i) for i in range(12)]


def write(tmp_path, name, content) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def delimited(sep: str, rows=ROWS, header=("text", "price")) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=sep, lineterminator="\n").writerows([header, *rows])
    return out.getvalue()


def jsonl(records) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def course(text: str, answer: str = "") -> str:
    return f"{COURSE_QUESTION}\n\n{text}\n\n{PRICE_PREFIX}{answer}"


# ---------------------------------------------------------------------------
# parse_price


@pytest.mark.parametrize("value, expected", [
    ("$1,299.99", 1299.99), ("USD 12", 12.0), ("12.5", 12.5), ("  7 ", 7.0), (12, 12.0), (12.5, 12.5),
    ("12 USD", 12.0), ("1,299", 1299.0), (".5", 0.5),
])
def test_parse_price_accepts(value, expected):
    assert parse_price(value) == pytest.approx(expected)


@pytest.mark.parametrize("value, reason", [
    ("N/A", "missing price"), ("", "missing price"), (None, "missing price"), (float("nan"), "missing price"),
    (-5, "zero or negative"), ("-5", "zero or negative"), (0, "zero or negative"), ("$0.00", "zero or negative"),
    (float("inf"), "not finite"), (10**400, "not finite"), ("cheap", "not a price"), ("12 dollars", "not a price"),
    (True, "not a price"), ("1e3", "not a price"), ("1.299,99", "ambiguous decimal comma"),
    ("12,50", "ambiguous decimal comma"),
])
def test_parse_price_rejects_with_reason(value, reason):
    with pytest.raises(PriceError) as caught:
        parse_price(value)
    assert caught.value.reason == reason
    assert isinstance(caught.value, DataError) and isinstance(caught.value, ValueError)
    assert "price" in str(caught.value)


def test_parse_price_decimal_comma():
    assert parse_price("1.299,99", decimal_comma=True) == pytest.approx(1299.99)
    assert parse_price("12,5", decimal_comma=True) == pytest.approx(12.5)


@given(st.floats(min_value=0.01, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_formatted_price_round_trips(x):
    assert parse_price(f"${x:,.2f}") == pytest.approx(round(x, 2), abs=0.006)


@settings(max_examples=300)
@given(st.text(), st.booleans())
def test_any_text_is_a_price_or_a_price_error(text, decimal_comma):
    try:
        price = parse_price(text, decimal_comma=decimal_comma)
    except PriceError:
        return
    assert math.isfinite(price) and price > 0


# ---------------------------------------------------------------------------
# Text


def test_strip_course_prompt_with_and_without_completion():
    assert strip_course_prompt(course("Blue kettle\nsteel")) == ("Blue kettle\nsteel", None)
    assert strip_course_prompt(course("Blue kettle", "65.00")) == ("Blue kettle", 65.0)
    assert strip_course_prompt(build_prompt("Blue kettle").replace("\n", "\r\n")) == ("Blue kettle", None)
    assert strip_course_prompt("  Just a kettle \n") == ("Just a kettle", None)


def test_clean_text_removes_controls_and_bidi_keeps_newlines():
    assert clean_text("  Cafe\u0301 \u202eevil\u202c\x00\x07 line\r\nnext\tword  ") == "Café evil line\nnext word"
    # Every C0 and C1 control (Unicode's Cc) goes, and only those.
    controls = "".join(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)) if chr(c) not in "\t\n\r")
    assert clean_text(f"a{controls}b\u00a0c") == "ab\u00a0c"


# ---------------------------------------------------------------------------
# load_products: formats and encodings


@pytest.mark.parametrize("name, sep", [("a.csv", ","), ("b.csv", ";"), ("c.csv", "\t"), ("d.tsv", "\t")])
def test_delimited_files(tmp_path, name, sep):
    products, report = load_products(write(tmp_path, name, delimited(sep)))
    assert products == [Product(text, price) for text, price in ROWS]
    assert (report.rows_read, report.rows_kept, report.text_column, report.price_column) == (12, 12, "text", "price")


def test_semicolon_csv_with_decimal_commas(tmp_path):
    rows = [(f"Item {i}", f"{i},50") for i in range(1, 12)]
    products, report = load_products(write(tmp_path, "eu.csv", delimited(";", rows, ("Description", "Price"))))
    assert products[0] == Product("Item 1", 1.5)
    assert report.text_column == "Description" and "decimal comma" in report.warnings[0]


def test_csv_quoted_multiline_text_reports_file_lines(tmp_path):
    text = 'text,price\n"two\nlines, quoted",12\n' + delimited(",").split("\n", 1)[1] + "bad row,N/A\n"
    products, report = load_products(write(tmp_path, "m.csv", text))
    assert products[0].text == "two\nlines, quoted"
    assert report.dropped == {"missing price": [16]}  # header 1, a 2-line record, 12 rows: line 16


def test_json_array_and_jsonl(tmp_path):
    records = [{"title": text, "PRICE": price} for text, price in ROWS]
    for name, content in [("a.json", json.dumps(records)), ("a.jsonl", jsonl(records))]:
        products, report = load_products(write(tmp_path, name, content))
        assert products == [Product(text, price) for text, price in ROWS]
        assert (report.text_column, report.price_column) == ("title", "PRICE")


def test_utf8_bom_and_utf16(tmp_path):
    rows = [(f"Crème brûlée torch {i}", 20.0 + i) for i in range(12)]
    for name, data in [("bom.csv", delimited(",", rows).encode("utf-8-sig")),
                       ("u16.csv", delimited(",", rows).encode("utf-16"))]:
        products, report = load_products(write(tmp_path, name, data))
        assert report.text_column == "text" and products[0] == Product("Crème brûlée torch 0", 20.0)


def test_course_prompt_jsonl_is_unwrapped_and_embedded_price_checked(tmp_path):
    records = [{"prompt": course(f"Kettle {i}"), "price": 10.0 + i} for i in range(10)]
    records += [{"prompt": course("Toaster", "25.00"), "price": 25.4},
                {"prompt": course("Mixer", "80.00"), "price": 45.0}]
    products, report = load_products(write(tmp_path, "course.jsonl", jsonl(records)))
    assert products[0] == Product("Kettle 0", 10.0)
    assert Product("Toaster", 25.4) in products
    assert report.dropped == {"embedded price differs": [12]}
    assert not any(COURSE_QUESTION in p.text for p in products)


def test_duplicates_and_conflicts(tmp_path):
    rows = ROWS + [ROWS[0], ROWS[1], (ROWS[2][0], 99.0)]
    products, report = load_products(write(tmp_path, "dup.csv", delimited(",", rows)))
    assert len(products) == 12 and (report.duplicates, report.conflicting) == (2, 1)
    assert products[2] == Product(*ROWS[2])  # the first price wins


def test_drop_reasons_with_line_numbers_and_summary(tmp_path):
    bad = [("", 5), ("Free thing", 0), ("Pricey", 5000), ("Odd", "cheap"), ("Tiny", 0.1)]
    products, report = load_products(write(tmp_path, "mix.csv", delimited(",", ROWS + bad)))
    assert len(products) == 12
    assert report.dropped == {"empty text": [14], "zero or negative": [15], "price outside $0.50–$999.49": [16, 18],
                              "not a price": [17]}
    summary = report.summary()
    assert "12 of 17" in summary and "price outside $0.50–$999.49" in summary and "16, 18" in summary


# ---------------------------------------------------------------------------
# load_products: failures are DataErrors a person can act on


@pytest.mark.parametrize("name, content, words", [
    ("empty.csv", "", "empty"),
    ("blank.jsonl", "\n  \n", "empty"),
    ("header.csv", "text,price\n", "no data rows"),
    ("book.csv", None, "export it as CSV"),
    ("data.csv", gzip.compress(b"text,price\na,1\n"), "gzip"),
    ("bad.csv", b"text,price\ncaf\xe9\x81,12\n", "0x81 at byte 15"),  # cp1252 (the fallback) fails too
    ("nul.csv", b"text\x00,price\x00\n", "binary"),
    ("bad.jsonl", '{"text": "a", "price": 1}\n\n{"text": "b", price: 2}\n', "line 3"),
    ("list.jsonl", '{"text": "a", "price": 1}\n[1, 2]\n', "line 2"),
    ("obj.json", '{"text": "a", "price": 1}', "array"),
    ("cols.csv", "name,cost\na,1\n", "'name', 'cost'"),
    ("ragged.csv", "text,price\na,1\nb,2,3\n", "line 3"),
    ("sheet.xlsx", b"PK\x03\x04", "export it as CSV"),
])
def test_unreadable_files_raise_clear_data_errors(tmp_path, name, content, words):
    if content is None:  # a real (if tiny) zip archive, as an .xlsx renamed to .csv would be
        with zipfile.ZipFile(tmp_path / name, "w") as archive:
            archive.writestr("xl/workbook.xml", "<workbook/>")
        path = str(tmp_path / name)
    else:
        path = write(tmp_path, name, content)
    with pytest.raises(DataError) as caught:
        load_products(path)
    assert words in str(caught.value)


def test_parquet_without_pyarrow_says_to_install_it(tmp_path):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="pyarrow"):
            load_products(write(tmp_path, "d.parquet", b"PAR1"))
    else:
        with pytest.raises(DataError):
            load_products(write(tmp_path, "d.parquet", b"PAR1 not really"))


def test_missing_named_column_lists_columns(tmp_path):
    with pytest.raises(DataError, match="'text', 'price'"):
        load_products(write(tmp_path, "a.csv", delimited(",")), price_column="cost")


def test_too_few_usable_rows_says_why(tmp_path):
    rows = ROWS[:5] + [("x", "N/A")] * 3
    with pytest.raises(DataError) as caught:
        load_products(write(tmp_path, "few.csv", delimited(",", rows)))
    message = str(caught.value)
    assert "only 5 usable rows of 8" in message and "missing price ×3" in message
    assert caught.value.report.rows_kept == 5


def test_too_many_rows(tmp_path):
    with pytest.raises(DataError, match="more than the limit of 5"):
        load_products(write(tmp_path, "a.csv", delimited(",")), max_rows=5)


# ---------------------------------------------------------------------------
# Sample data and split


def test_sample_products_deterministic_and_realistic():
    products = make_sample_products(300, seed=7)
    assert products == make_sample_products(300, seed=7) != make_sample_products(300, seed=8)
    assert len({p.text for p in products}) == 300
    assert all(1 <= p.price <= 999 and round(p.price, 2) == p.price for p in products)
    assert all(25 <= len(p.text.split()) <= 60 for p in products)


def test_sample_prices_follow_brand_tier():
    products = make_sample_products(600)

    def mean_price(tier):
        return statistics.mean(p.price for p in products if any(p.text.startswith(b) for b in BRANDS[tier][1]))

    assert mean_price("premium") > mean_price("mid") > mean_price("budget")


def test_sample_products_load_back(tmp_path):
    products = make_sample_products(50)
    content = jsonl({"text": p.text, "price": p.price} for p in products)
    loaded, report = load_products(write(tmp_path, "s.jsonl", content))
    assert loaded == products and report.duplicates == report.conflicting == 0


def test_split_products():
    products = make_sample_products(100)
    train, test = split_products(products, 0.1, seed=1)
    assert (len(train), len(test)) == (90, 10)
    assert sorted(train + test, key=id) == sorted(products, key=id)
    assert (train, test) == split_products(products, 0.1, seed=1)
    assert len(split_products(products, 25)[1]) == 25
    assert tuple(map(len, split_products(products[:2], 0.01))) == (1, 1)
    assert tuple(map(len, split_products(products[:3], 0.9))) == (1, 2)
    assert tuple(map(len, split_products(products[:1], 0.5))) == (1, 0)
    with pytest.raises(ValueError):
        split_products(products, 1.5)


def test_split_run_keeps_validation_out_of_training_and_test():
    products = make_sample_products(100)
    train, validation, test = split_run(products, 0.1, 0.1, seed=1)
    assert (len(train), len(validation), len(test)) == (81, 9, 10)
    assert test == split_products(products, 0.1, seed=1)[1]  # the held-out rows do not move with validation_size
    assert not {p.text for p in validation} & {p.text for p in train + test}
    assert sorted(train + validation + test, key=id) == sorted(products, key=id)
    # Sizes from YAML or a form are floats: from 1 they are counts.
    assert tuple(map(len, split_run(products, 20.0, 30.0))) == (50, 30, 20)
    assert tuple(map(len, split_run(products[:10], 0.1, 0.1))) == (8, 1, 1)  # the smallest upload keeps one of each


# ---------------------------------------------------------------------------
# Tokenization with the real demo tokenizer


def test_tokenize_example_masks_prompt(demo_tokenizer):
    example = tokenize_example(demo_tokenizer, "Blue steel kettle", 65.2, max_length=512)
    answer = [t for t in example["labels"] if t != IGNORE_INDEX]
    assert demo_tokenizer.decode(answer) == "65.00"
    assert example["labels"][: -len(answer)] == [IGNORE_INDEX] * (len(example["labels"]) - len(answer))
    assert example["input_ids"][-len(answer):] == answer
    assert len(example["attention_mask"]) == len(example["input_ids"])


def test_long_text_is_cut_but_price_kept(demo_tokenizer):
    tail = demo_tokenizer(f"\n\n{PRICE_PREFIX}", add_special_tokens=False)["input_ids"]
    example = tokenize_example(demo_tokenizer, "very long description " * 500, 123.0, max_length=64)
    answer = demo_tokenizer("123.00", add_special_tokens=False)["input_ids"]
    assert len(example["input_ids"]) == 64
    assert example["input_ids"][-len(answer):] == answer
    assert example["input_ids"][-len(answer) - len(tail):-len(answer)] == tail
    assert demo_tokenizer.decode([t for t in example["labels"] if t != IGNORE_INDEX]) == "123.00"


def test_fit_max_length(demo_tokenizer):
    products = [Product("short " * n, 10.0 + n) for n in range(1, 101)]
    full = sorted(len(tokenize_example(demo_tokenizer, p.text, p.price, 10**6)["input_ids"]) for p in products)
    assert fit_max_length(demo_tokenizer, products) == full[94]  # 95th of 100
    assert fit_max_length(demo_tokenizer, products, quantile=1.0) == full[-1]
    assert fit_max_length(demo_tokenizer, products, cap=40) == 40
    uncut = sum(n <= full[94] for n in full)
    assert uncut == 95
    with pytest.raises(ValueError):
        fit_max_length(demo_tokenizer, products, cap=5)


def test_report_summary_empty_report():
    assert "0 of 0" in DataReport().summary()
    assert completion(64.6) == "65.00"
