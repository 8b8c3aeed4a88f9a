"""One file per case a user may upload, each made here: cleaned with exact counts, or refused with the exact reason.

Also the Amazon-metadata curation and `python -m trainer check-data`.
"""

import bz2
import csv
import gzip
import io
import json
import zipfile

import pandas as pd
import pytest

from trainer import curate as C
from trainer.__main__ import main
from trainer.data import COURSE_QUESTION, PRICE_PREFIX, DataError, Product, load_products

GOOD = [(f"Widget number {i}, a sturdy steel thing", 10.0 + i) for i in range(12)]


def delimited(rows=GOOD, sep=",", header=("text", "price")) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=sep, lineterminator="\n").writerows([header, *rows])
    return out.getvalue()


def jsonl(records) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def records(rows=GOOD, text="text", price="price"):
    return [{text: t, price: p} for t, p in rows]


def zipped(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def parquet(rows=GOOD) -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame(records(rows)).to_parquet(buffer)
    return buffer.getvalue()


def nested(depth: int):
    value = "deep"
    for _ in range(depth):
        value = {"x": value}
    return value


def amazon(i: int, *, details=None, description_words=60) -> dict:
    """A raw Amazon Reviews 2023 metadata record (the fields the course uses, plus some it ignores)."""
    return {"main_category": "Appliances", "title": f"Frost-free refrigerator water filter model {i}",
            "average_rating": 4.5, "rating_number": 120,
            "features": [f"Fits most side-by-side refrigerators, pack of {i + 1}", "Removes chlorine taste and odor"],
            "description": [" ".join(["Replacement filter cartridge for clean tasting water."] * (description_words // 8))],
            "price": 20.0 + i, "images": [], "videos": [], "store": "PureFlow", "categories": [],
            "details": details if details is not None else {"Brand": "PureFlow", "Part Number": f"WF-{i}ABCDEF9",
                                                            "Item Weight": "1.2 pounds", "Date First Available": "2021"},
            "parent_asin": f"B0{i:08d}", "bought_together": None}


BAD_PRICES = [("Free thing", "0"), ("Debt", "-5"), ("Nothing", "N/A"), ("Blank", ""), ("Words", "cheap"),
              ("Not a number", "nan"), ("Endless", "inf"), ("Pricey", "5000"), ("Tiny", "0.10")]
AMAZON_OK = [amazon(i) for i in range(11)]
AMAZON_SHORT = {**amazon(99, details={}, description_words=8), "features": []}
TWO_COLUMN = delimited([(f"Bolt {i}", f"steel bolt size {i}", 1.5 + i) for i in range(12)],
                       header=("title", "description", "price"))
OK = dict  # expected (rows_read, rows_kept, dropped, duplicates, conflicting) and extra checks, by keyword

CASES = [
    # --- formats and encodings: all cleaned
    ("comma.csv", delimited(), {}, OK(read=12, kept=12)),
    ("semicolon.csv", delimited(sep=";"), {}, OK(read=12, kept=12)),
    ("tab.csv", delimited(sep="\t"), {}, OK(read=12, kept=12)),
    ("data.tsv", delimited(sep="\t"), {}, OK(read=12, kept=12)),
    ("array.json", json.dumps(records()), {}, OK(read=12, kept=12)),
    ("lines.jsonl", jsonl(records()), {}, OK(read=12, kept=12)),
    ("lines-in.json", jsonl(records()), {}, OK(read=12, kept=12)),
    ("table.parquet", parquet(), {}, OK(read=12, kept=12)),
    ("bom.csv", delimited().encode("utf-8-sig"), {}, OK(read=12, kept=12)),
    ("utf16.csv", delimited().encode("utf-16"), {}, OK(read=12, kept=12)),
    ("crlf.csv", delimited().replace("\n", "\r\n"), {}, OK(read=12, kept=12)),
    ("cp1252.csv", delimited([(f"Café crème n° {i} – €", 10 + i) for i in range(12)]).encode("cp1252"), {},
     OK(read=12, kept=12, warning="not UTF-8; read as Windows-1252 (cp1252)", has_text="Café crème n° 0 – €")),
    ("blank-lines.csv", delimited().replace("\n", "\n\n", 3), {}, OK(read=12, kept=12)),
    # --- prices
    ("formatted.csv", delimited([(f"Lamp {i}", p) for i, p in enumerate(
        ["$1,299.99", "USD 12", "12.5", "  7 ", "12 USD", "$0.99", "45", "3.50", "$ 8", "100.00", "99", "1,000"])]),
     {}, OK(read=12, kept=10, dropped={"price outside $0.50–$999.49": [2, 13]})),
    ("euro.csv", delimited([(f"Lamp {i}", f"{i},50") for i in range(1, 13)], sep=";"), {},
     OK(read=12, kept=12, warning="decimal comma")),
    ("euro-forced.csv", delimited([(f"Lamp {i}", f"{i},50") for i in range(11)] + [("Sofa", "1.299,99")], sep=";"),
     {"decimal_comma": True}, OK(read=12, kept=11, dropped={"price outside $0.50–$999.49": [13]})),
    ("ambiguous.csv", delimited(GOOD + [("Sofa", "1.299,99")]), {},
     OK(read=13, kept=12, dropped={"ambiguous decimal comma": [14]})),
    ("bad-prices.csv", delimited(GOOD + BAD_PRICES), {},
     OK(read=21, kept=12, dropped={"zero or negative": [14, 15], "missing price": [16, 17, 19],
                                   "not a price": [18, 20], "price outside $0.50–$999.49": [21, 22]})),
    # --- text
    ("empty-text.csv", delimited(GOOD + [("", 5), ("   ", 6)]), {}, OK(read=14, kept=12,
                                                                       dropped={"empty text": [14, 15]})),
    ("formula.csv", delimited(GOOD + [('=HYPERLINK("http://x.example","click")', 9), ("<b>Bold</b> mug", 8)]), {},
     OK(read=14, kept=14, has_text='=HYPERLINK("http://x.example","click")')),
    ("bidi.jsonl", jsonl(records(GOOD + [("Safe\u202e kettle\x07", 30)])), {},
     OK(read=13, kept=13, has_text="Safe kettle")),
    ("dupes.csv", delimited(GOOD + [GOOD[0], GOOD[1], (GOOD[2][0], 99.0)]), {},
     OK(read=15, kept=12, duplicates=2, conflicting=1)),
    ("course.jsonl", jsonl([{"prompt": f"{COURSE_QUESTION}\n\nKettle {i}\n\n{PRICE_PREFIX}{10 + i}.00",
                             "price": 10.0 + i} for i in range(12)]
                           + [{"prompt": f"{COURSE_QUESTION}\n\nMixer\n\n{PRICE_PREFIX}80.00", "price": 45.0}]),
     {}, OK(read=13, kept=12, dropped={"embedded price differs": [13]}, has_text="Kettle 0")),
    # --- columns
    ("two-columns.csv", TWO_COLUMN, {}, OK(read=12, kept=12, columns="title,description",
                                           has_text="Bolt 0\nsteel bolt size 0")),
    ("picked.csv", TWO_COLUMN, {"text_column": "description,title"},
     OK(read=12, kept=12, columns="description,title", has_text="steel bolt size 0\nBolt 0")),
    ("picked-list.csv", TWO_COLUMN, {"text_column": ["description"]}, OK(read=12, kept=12, columns="description")),
    ("lists.jsonl", jsonl({"title": f"Pan {i}", "features": ["steel", f"{i} inch"], "price": 5 + i} for i in range(12)),
     {}, OK(read=12, kept=12, columns="title,features", has_text="Pan 0\nsteel\n0 inch")),
    ("amazon.jsonl", jsonl(AMAZON_OK + [AMAZON_SHORT, {**amazon(50), "price": None}]), {},
     OK(read=13, kept=11, dropped={"under 300 characters of description": [12], "missing price": [13]},
        schema="amazon")),
    ("amazon-str.jsonl", jsonl({**r, "details": json.dumps(r["details"])} for r in AMAZON_OK), {},
     OK(read=11, kept=11, schema="amazon")),
    ("few-bad-fields.csv", delimited(GOOD * 2 + [(f"Extra {i}", 3, "x") for i in range(1)]).replace(
        "Widget number 0,", "Widget zero,", 1), {}, OK(read=25, kept=13, duplicates=11,
                                                        dropped={"wrong number of fields": [26]})),
    # --- refusals
    ("empty.csv", "", {}, "the file is empty"),
    ("spaces.jsonl", "\n  \n", {}, "the file is empty"),
    ("header.csv", "text,price\n", {}, "has no data rows (only a header: text, price)"),
    ("few.csv", delimited(GOOD[:5] + [("x", "N/A")] * 3), {}, "only 5 usable rows of 8 (need at least 10)"),
    ("no-price.csv", delimited(header=("name", "cost")), {}, "no text column 'text' or 'summary' or 'prompt' or "
                                                             "'description' or 'title'; the columns are: 'name', 'cost'"),
    ("no-price2.csv", delimited(header=("text", "cost")), {}, "no price column 'price' or 'completion'; the columns are: "
                                                              "'text', "
                                                              "'cost'"),
    ("not-cp1252.csv", "text,price\ncafé,12\n".encode("cp1252") + b"\x90,1\n" + delimited().encode()[11:], {},
     "neither UTF-8 (invalid byte 0xe9 at byte 14) nor Windows-1252 (invalid byte 0x90 at byte 19)"),
    ("nul.csv", b"text\x00,price\x00\n", {}, "looks like a binary file"),
    ("workbook.csv", zipped({"[Content_Types].xml": "<Types/>", "xl/workbook.xml": "<workbook/>"}), {},
     "is an Excel workbook, not a text file; in Excel, export it as CSV"),
    ("archive.csv", zipped({"data.csv": delimited()}), {}, "is a zip archive; decompress it first"),
    ("gzipped.csv", gzip.compress(delimited().encode()), {}, "is gzip-compressed; decompress it first"),
    ("bzipped.jsonl", bz2.compress(jsonl(records()).encode()), {}, "is bzip2-compressed; decompress it first"),
    ("data.csv.gz", gzip.compress(delimited().encode()), {}, "is a compressed file; decompress it first"),
    ("data.zip", zipped({"data.csv": delimited()}), {}, "is a compressed file; decompress it first"),
    ("sheet.xlsx", b"PK\x03\x04", {}, "spreadsheets are not read directly; export it as CSV"),
    ("notes.pdf", b"%PDF-1.4", {}, "unsupported file type '.pdf'"),
    ("unclosed.csv", delimited(GOOD[:3]) + '"Open quote never ends,5\n' + delimited(GOOD[3:]).split("\n", 1)[1], {},
     "the quote opened on line 5 is never closed"),
    ("unclosed-end.csv", "text,price\n" + "".join(f"Bolt {i},{i + 1}\n" for i in range(12)) + '"Open,5\nx,1\n', {},
     "the quote opened on line 14 is never closed"),
    ("stray-quote.csv", "text,price\n" + "".join(f'"Bolt" {i}x,{i + 1}\n' for i in range(12)), {},
     OK(read=12, kept=12, has_text="Bolt 0x")),  # read leniently, as pandas and Excel do
    ("ragged.csv", delimited(GOOD) + "a,1,2\nb,2,3\n", {}, "2 of 14 rows do not have the header's 2 comma-separated "
                                                           "fields (first on line 14)"),
    ("big.csv", delimited(), {"max_bytes": 100}, "over the 0 MB limit"),
    ("many.csv", delimited(), {"max_rows": 5}, "has 12 rows, more than the limit of 5"),
    ("deep.json", "[" * 100_000 + "]" * 100_000, {}, "JSON nested too deeply to be a table of products"),
    ("deep.jsonl", jsonl([{"text": "a", "price": 1, "x": nested(12)}]), {},
     "line 1 is nested more than 8 levels deep"),
    ("broken.jsonl", '{"text": "a", "price": 1}\n\n{"text": "b", price: 2}\n', {}, "line 3 is not valid JSON"),
    ("object.json", '{"text": "a", "price": 1}', {}, "holds one JSON object; expected an array"),
    ("scalar-lines.jsonl", '{"text": "a", "price": 1}\n[1, 2]\n', {}, "line 2 is a JSON list"),
]


@pytest.mark.parametrize("name, content, options, expected", CASES, ids=[case[0] for case in CASES])
def test_each_upload_case(tmp_path, name, content, options, expected):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    if isinstance(expected, str):
        with pytest.raises(DataError) as caught:
            load_products(path, **options)
        assert str(caught.value).startswith(f"{name}: ") and expected in str(caught.value)
        return
    products, report = load_products(path, **options)
    counts = (report.rows_read, report.rows_kept, report.dropped, report.duplicates, report.conflicting)
    assert counts == (expected["read"], expected["kept"], expected.get("dropped", {}), expected.get("duplicates", 0),
                      expected.get("conflicting", 0))
    assert len(products) == report.rows_kept and len({p.text for p in products}) == len(products)
    if "has_text" in expected:
        assert expected["has_text"] in [p.text for p in products]
    if "columns" in expected:
        assert report.text_column == expected["columns"]
    assert report.schema == expected.get("schema", "table")
    assert ("warning" in expected) == bool(report.warnings)
    if "warning" in expected:
        assert any(expected["warning"] in w for w in report.warnings)
        assert expected["warning"] in report.summary()  # the UI shows the summary


def test_there_are_at_least_35_files():
    assert len(CASES) >= 35


# ---------------------------------------------------------------------------
# Amazon metadata curation


def test_scrub_drops_part_numbers_and_odd_runs():
    assert C.scrub('Filter WF-12ABCDEF9 fits 2021 models ★★★ {"Brand": "X"}') == "Filter fits 2021 models Brand X"


def test_curate_joins_the_course_way_and_details_dict_equals_string():
    record = amazon(3)
    text = C.curate(record)
    assert text.startswith("Frost-free refrigerator water filter model 3\nReplacement filter cartridge")
    assert "pack of 4" in text and "Brand PureFlow" in text
    assert "WF-3ABCDEF9" not in text and "Date First" not in text and "Available" in text
    assert C.curate({**record, "details": json.dumps(record["details"])}) == text


def test_curate_requires_300_characters():
    assert C.curate(AMAZON_SHORT) is None
    assert C.curate({"title": "x", "description": ["y" * 300], "features": None, "details": None}) is not None


def test_curate_cuts_to_the_token_budget(demo_tokenizer):
    long = amazon(1, description_words=400)
    for budget in (160, 40):
        text = C.curate(long, demo_tokenizer, budget)
        assert len(demo_tokenizer(text, add_special_tokens=False)["input_ids"]) <= budget
        assert text.startswith("Frost-free refrigerator")


def test_amazon_metadata_loads_with_tokenizer_budget(tmp_path, demo_tokenizer):
    path = tmp_path / "meta.jsonl"
    path.write_text(jsonl(amazon(i, description_words=400) for i in range(12)))
    products, report = load_products(path, tokenizer=demo_tokenizer, token_budget=50)
    assert report.schema == "amazon" and report.text_columns == list(C.AMAZON_FIELDS)
    assert all(len(demo_tokenizer(p.text, add_special_tokens=False)["input_ids"]) <= 50 for p in products)
    # Picking other columns turns curation off: the columns are then joined as they are.
    _, plain = load_products(path, text_column="title,description")
    assert plain.schema == "table"


def test_report_lists_all_columns(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(TWO_COLUMN)
    assert load_products(path)[1].columns == ["title", "description", "price"]
    assert load_products(path)[0][0] == Product("Bolt 0\nsteel bolt size 0", 1.5)


# ---------------------------------------------------------------------------
# python -m trainer check-data


def test_check_data_reports_and_exits_0(tmp_path, capsys):
    path = tmp_path / "dupes.csv"
    path.write_text(delimited(GOOD + [GOOD[0], GOOD[0], ("Odd", "N/A")]))
    assert main(["check-data", str(path)]) == 0
    out = capsys.readouterr().out
    for line in ("rows read:      15", "rows kept:      12", "dropped:        1 × missing price (line 16)",
                 "duplicates:     2 exact duplicates removed", "prices:         min $10.00, median $15.50, max $21.00",
                 "0 texts in both training and held out", "◀ cut-off", "usable: yes"):
        assert line in out
    assert "texts get truncated" in out


def test_check_data_shows_the_encoding_warning(tmp_path, capsys):
    path = tmp_path / "excel.csv"
    path.write_bytes(delimited([(f"Café {i}", 10 + i) for i in range(12)]).encode("cp1252"))
    assert main(["check-data", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning:        not UTF-8; read as Windows-1252 (cp1252) — check accented characters" in out
    assert "usable: yes" in out


def test_check_data_refuses_with_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text(delimited(header=("text", "cost")))
    assert main(["check-data", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("not usable: bad.csv: no price column") and err.count("\n") == 1
    assert main(["check-data", str(path), "--price-column", "cost"]) == 0


# ---------------------------------------------------------------------------
# Hugging Face datasets: a local folder, or a Hub id (only the offline path is tested)


def test_a_save_to_disk_folder_loads_like_a_file(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = GOOD + [GOOD[0], ("Odd", "N/A"), ("Pricey", "5000")]
    datasets.Dataset.from_dict({"text": [t for t, _ in rows], "price": [str(p) for _, p in rows]}).save_to_disk(
        str(tmp_path / "products"))
    products, report = load_products(tmp_path / "products")
    assert (report.rows_read, report.rows_kept, report.duplicates) == (15, 12, 1)
    assert report.dropped == {"missing price": [14], "price outside $0.50–$999.49": [15]}
    assert report.row_unit == "record" and products[0] == Product(GOOD[0][0], GOOD[0][1])


def test_a_dataset_dict_folder_reads_every_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    split = lambda rows: datasets.Dataset.from_dict({"title": [t for t, _ in rows], "price": [p for _, p in rows]})
    datasets.DatasetDict({"test": split(GOOD[:3]), "train": split(GOOD[3:])}).save_to_disk(str(tmp_path / "dd"))
    products, report = load_products(str(tmp_path / "dd"))
    assert (report.rows_read, report.rows_kept, report.text_columns) == (12, 12, ["title"])
    assert report.splits == {"test": 3, "train": 9}


def test_a_folder_of_data_files_loads_through_datasets(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "train.jsonl").write_text(jsonl(records()))
    products, report = load_products(folder)
    assert (report.rows_read, report.rows_kept) == (12, 12)


def test_a_folder_that_is_no_dataset_is_a_clear_error(tmp_path):
    pytest.importorskip("datasets")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="^empty: cannot read the folder as a Hugging Face dataset"):
        load_products(tmp_path / "empty")


def test_a_hub_id_offline_is_a_clear_error(monkeypatch, capsys):
    pytest.importorskip("datasets")
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at import; set the constants too, in case they were imported
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError) as caught:
        load_products("someone/no-such-products")
    assert str(caught.value).startswith("someone/no-such-products: cannot reach the Hugging Face Hub to load "
                                        "dataset someone/no-such-products: ")
    assert main(["check-data", "someone/no-such-products"]) == 2
    assert "cannot reach the Hugging Face Hub" in capsys.readouterr().err


def test_a_missing_file_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(DataError, match="cannot open it"):
        load_products("nowhere/products.csv")
