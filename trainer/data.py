"""Product-price data: reading and cleaning uploads, prices, the course prompt, sample data, split, tokenization."""

from __future__ import annotations

import codecs
import csv
import importlib.util
import io
import json
import math
import numbers
import random
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import curate as C

COURSE_QUESTION = "How much does this cost to the nearest dollar?"
PRICE_PREFIX = "Price is $"
IGNORE_INDEX = -100  # label value the cross-entropy loss skips


@dataclass(frozen=True)
class Product:
    """One usable row: the product text (without the course prompt) and its price in dollars."""

    text: str
    price: float


def build_prompt(text: str) -> str:
    return f"{COURSE_QUESTION}\n\n{text}\n\n{PRICE_PREFIX}"


def completion(price: float) -> str:
    return f"{round(price)}.00"


def encode_prompt(tokenizer, text: str, max_prompt_tokens: int) -> list[int]:
    """Token ids of the course prompt around `text`, the text cut so the whole prompt fits max_prompt_tokens."""
    head = tokenizer(f"{COURSE_QUESTION}\n\n", add_special_tokens=True)["input_ids"]
    tail = tokenizer(f"\n\n{PRICE_PREFIX}", add_special_tokens=False)["input_ids"]
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    room = max_prompt_tokens - len(head) - len(tail)
    if room < 1:
        raise ValueError(f"max length {max_prompt_tokens} leaves no room for the product text "
                         f"(the prompt itself takes {len(head) + len(tail)} tokens)")
    return head + body[:room] + tail


def encode_completion(tokenizer, price: float) -> list[int]:
    return tokenizer(completion(price), add_special_tokens=False)["input_ids"]


def tokenize_example(tokenizer, text: str, price: float, max_length: int) -> dict:
    """input_ids / attention_mask / labels for one product: loss only on the price tokens."""
    answer = encode_completion(tokenizer, price)
    prompt = encode_prompt(tokenizer, text, max_length - len(answer))
    return {
        "input_ids": prompt + answer,
        "attention_mask": [1] * (len(prompt) + len(answer)),
        "labels": [IGNORE_INDEX] * len(prompt) + answer,
    }


# ---------------------------------------------------------------------------
# Errors


class DataError(ValueError):
    """Uploaded data that cannot be used, with a message a person can act on (file, line, column)."""

    def __init__(self, message: str, *, report: "DataReport | None" = None):
        super().__init__(message)
        self.report = report  # what was read before giving up, so the UI can still show it


class PriceError(DataError):
    """A value that is not a usable price; `reason` is the short label the cleaning report groups drops by."""

    def __init__(self, value, reason: str = "not a price", detail: str = ""):
        shown = repr(value)
        shown = shown if len(shown) <= 42 else shown[:40] + "…"  # a whole pasted paragraph helps nobody
        super().__init__(f"{shown} is not a usable price: {detail or reason}")
        self.value = value
        self.reason = reason


# ---------------------------------------------------------------------------
# Prices

_MISSING = {"", "n/a", "na", "nan", "none", "null", "-", "--", "?"}
_CURRENCY = re.compile(r"^(?:usd|us\$|\$)\s*|\s*(?:usd|\$)$", re.IGNORECASE)
# ASCII digits only: \d would also accept e.g. Arabic-Indic digits, which no price column means.
_DOT_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|[+-]?\.[0-9]+")
_COMMA_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,3}(?:\.[0-9]{3})+|[0-9]+)(?:,[0-9]+)?|[+-]?,[0-9]+")


def _to_float(text: str, decimal_comma: bool, original) -> float:
    if decimal_comma:
        if _COMMA_DECIMAL.fullmatch(text):
            return float(text.replace(".", "").replace(",", "."))
    else:
        if _DOT_DECIMAL.fullmatch(text):
            return float(text.replace(",", ""))
        if _COMMA_DECIMAL.fullmatch(text):
            # "1.299,99" or "12,50": a decimal comma, which we will not guess at one value at a time.
            raise PriceError(original, "ambiguous decimal comma",
                             "looks like a decimal comma; pass decimal_comma=True if commas mark decimals")
    raise PriceError(original, "not a price", "not a number")


def parse_price(value, *, decimal_comma: bool = False) -> float:
    """A positive, finite price in dollars from a number or text like "$1,299.99" or "USD 12"; else PriceError."""
    if value is None:
        raise PriceError(value, "missing price", "missing")
    if isinstance(value, bool):  # bool is an int, but True is no price
        raise PriceError(value, "not a price", "a yes/no value")
    if isinstance(value, numbers.Real):
        try:
            price = float(value)
        except OverflowError:
            raise PriceError(value, "not finite", "too large") from None
        if math.isnan(price):
            raise PriceError(value, "missing price", "missing (NaN)")
    elif isinstance(value, str):
        text = value.strip()
        if text.lower() in _MISSING:
            raise PriceError(value, "missing price", "missing")
        text = _CURRENCY.sub("", text).strip()
        price = _to_float(text, decimal_comma, value)
    else:
        raise PriceError(value, "not a price", f"a {type(value).__name__}, not a number")
    if not math.isfinite(price):
        raise PriceError(value, "not finite", "not a finite number")
    if price <= 0:
        raise PriceError(value, "zero or negative", "zero or negative")
    return price


def _looks_decimal_comma(values) -> bool:
    """True when a column writes cents after a comma ("12,50") and never after a dot: a European export."""
    comma = dot = False
    for value in values:
        if isinstance(value, str):
            text = value.strip()
            comma = comma or re.search(r"[0-9],[0-9]{1,2}\D*$", text) is not None
            dot = dot or re.search(r"[0-9]\.[0-9]{1,2}\D*$", text) is not None
    return comma and not dot


# ---------------------------------------------------------------------------
# Text

_COURSE_PROMPT = re.compile(
    r"\s*" + re.escape(COURSE_QUESTION) + r"\n\n(?P<body>.*)\n\n" + re.escape(PRICE_PREFIX)
    + r"\s*(?P<answer>[0-9][0-9,]*(?:\.[0-9]+)?)?\s*", re.DOTALL)

# Bidi overrides/isolates can make a text display differently from what the model reads; zero-width
# characters and stray BOMs are invisible noise. Tabs become spaces so words on either side stay apart.
_INVISIBLE = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
                                    "\u200e\u200f\u061c\u200b\ufeff"))
_INVISIBLE[ord("\t")] = " "


def _unify_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def strip_course_prompt(text: str) -> tuple[str, float | None]:
    """(product text, embedded price or None): unwraps text already in the course prompt so it is never wrapped twice."""
    text = _unify_newlines(text)
    match = _COURSE_PROMPT.fullmatch(text)
    if match is None:
        return text.strip(), None
    answer = match["answer"]
    return match["body"].strip(), float(answer.replace(",", "")) if answer else None


def clean_text(text: str) -> str:
    """NFC text without control or bidi-override characters, newlines kept, ends trimmed."""
    text = unicodedata.normalize("NFC", _unify_newlines(text)).translate(_INVISIBLE)
    text = "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch) != "Cc")
    return text.strip()


# ---------------------------------------------------------------------------
# Sample data: prices that really follow from the text, so a model has something to learn

_CATEGORIES = {  # category: (base price, items, usage sentence)
    "kitchen": (28.0, ["chef knife", "frying pan", "mixing bowl set", "cutting board", "saucepan", "kettle"],
                "Made for everyday cooking and easy cleanup in a busy home kitchen."),
    "tools": (45.0, ["socket wrench set", "cordless drill", "hand saw", "tool box", "utility knife"],
              "Built for workshop projects, home repairs and weekend jobs around the house."),
    "appliance parts": (22.0, ["refrigerator water filter", "dryer belt", "dishwasher rack wheel",
                               "washer drain pump", "oven heating element"],
                        "A direct replacement part that installs in minutes without special tools."),
    "electronics accessories": (18.0, ["USB-C charging cable", "phone stand", "wireless charger",
                                       "laptop sleeve", "HDMI adapter"],
                                "Works with most phones, tablets and laptops from major brands."),
    "home": (35.0, ["table lamp", "throw blanket", "storage basket", "wall clock", "shower caddy"],
             "Adds comfort and order to a bedroom, living room or bathroom."),
    "outdoor": (60.0, ["camping lantern", "garden hose", "folding chair", "cooler", "grill cover"],
                "Ready for the backyard, the campsite or a long day at the beach."),
    "appliances": (140.0, ["countertop blender", "stand mixer", "air fryer", "espresso machine",
                           "microwave oven"],
                   "A dependable countertop appliance with simple controls for daily use."),
    "furniture": (120.0, ["office chair", "bookshelf", "side table", "bar stool", "shoe rack"],
                  "Assembles quickly and fits neatly into small apartments and offices."),
}
_BRANDS = {  # tier: (price multiplier, brand names)
    "budget": (0.6, ["ValueMax", "EcoBasics", "HandyHome", "QuickFix", "BrightBuy"]),
    "mid": (1.0, ["Northwind", "Crestline", "Harbor & Pine", "Meridian", "Fieldcraft"]),
    "premium": (1.8, ["Aurelian", "Stahlwerk Pro", "Maison Royale", "Summit Elite", "Kensington"]),
}
_SIZES = [("compact", 0.8), ("6-inch", 0.85), ("12-inch", 1.0), ("18-inch", 1.2), ("large", 1.3),
          ("pack of 2", 1.6), ("pack of 4", 2.4), ("set of 6", 3.0)]
_MATERIALS = [("plastic", 0.7), ("bamboo", 0.9), ("aluminum", 1.0), ("stainless steel", 1.3),
              ("cast iron", 1.4), ("solid oak", 1.6), ("carbon fiber", 1.9)]
_FEATURES = [("a lifetime warranty", 1.15), ("a dishwasher-safe finish", 1.05), ("a non-slip base", 1.03),
             ("smart app control", 1.35), ("a rechargeable battery", 1.25), ("a carrying case", 1.08),
             ("commercial-grade construction", 1.3), ("an ergonomic handle", 1.05)]


def _sample_product(rng: random.Random) -> Product:
    category = rng.choice(list(_CATEGORIES))
    base, items, usage = _CATEGORIES[category]
    tier = rng.choice(list(_BRANDS))
    multiplier, brands = _BRANDS[tier]
    size, size_x = rng.choice(_SIZES)
    material, material_x = rng.choice(_MATERIALS)
    features = rng.sample(_FEATURES, rng.randint(1, 3))
    item = rng.choice(items)
    model = f"{rng.choice('ABCDEFGHKLMNPRSTVX')}{rng.choice('ABCDEFGHKLMNPRSTVX')}-{rng.randint(100, 9999)}"
    price = base * multiplier * size_x * material_x * math.prod(x for _, x in features)
    price *= rng.uniform(0.85, 1.15)
    feature_words = ", ".join(name for name, _ in features[:-1])
    feature_words = f"{feature_words} and {features[-1][0]}" if feature_words else features[0][0]
    sentences = [f"{rng.choice(brands)} {size} {material} {item}, model {model}, from our {category} range.",
                 f"It comes with {feature_words}, and the {material} body is made to last for years.",
                 usage]
    return Product(" ".join(sentences), round(min(max(price, 1.0), 999.0), 2))


def make_sample_products(n: int = 3000, seed: int = 42) -> list[Product]:
    """A deterministic synthetic data set: category, brand tier, size, material and features set the price."""
    rng = random.Random(seed)
    products: list[Product] = []
    seen: set[str] = set()
    while len(products) < n:
        product = _sample_product(rng)
        if product.text not in seen:  # unique texts, so the sample never trips the duplicate check
            seen.add(product.text)
            products.append(product)
    return products


# ---------------------------------------------------------------------------
# Loading uploads

TEXT_COLUMNS = ("text", "prompt", "description", "title")
# Without a text/prompt column these are combined, in this order, the way the course builds its product text.
COMBINED_TEXT_COLUMNS = ("title", "description", "features", "details")
PRICE_COLUMNS = ("price",)
FORMATS = "CSV, TSV, JSON, JSONL or Parquet"
MAX_FILE_BYTES = 200_000_000  # the same default as the app's Gradio max_file_size ("200mb")
MAX_BAD_FIELD_SHARE = 0.05  # CSV rows with the wrong number of fields: a few are dropped, more mean a bad parse
MAX_JSON_DEPTH = 8  # the Amazon metadata nests 3 deep; deeper means this is not a table of products
COMPRESSED_SUFFIXES = (".gz", ".zip", ".bz2", ".xz", ".zst", ".7z", ".tgz", ".rar")


@dataclass
class DataReport:
    """What loading a file did: counts, dropped rows by reason (with their line numbers), warnings."""

    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict[str, list[int]] = field(default_factory=dict)
    duplicates: int = 0
    conflicting: int = 0
    text_column: str = ""  # the text column(s), comma-joined in the order they are combined
    price_column: str = ""
    warnings: list[str] = field(default_factory=list)
    row_unit: str = "line"  # "line" for text files; "record" for JSON arrays and Parquet, which have no lines
    columns: list[str] = field(default_factory=list)  # every column the file has, for the mapping step
    schema: str = "table"  # "table", or "amazon" for raw Amazon Reviews 2023 metadata (curated)
    text_columns: list[str] = field(default_factory=list)  # the same as text_column, as a list (names may hold commas)

    def drop(self, reason: str, row: int) -> None:
        self.dropped.setdefault(reason, []).append(row)

    def summary(self) -> str:
        curated = " — raw Amazon metadata, curated the course's way" if self.schema == "amazon" else ""
        lines = [f"**{self.rows_kept:,} of {self.rows_read:,} rows kept** "
                 f"(text: `{' + '.join(self.text_columns)}`, price: `{self.price_column}`){curated}"]
        for reason, rows in self.dropped.items():
            shown = ", ".join(map(str, rows[:5])) + (", …" if len(rows) > 5 else "")
            lines.append(f"- dropped {len(rows):,} × {reason} ({self.row_unit}s {shown})")
        if self.duplicates:
            lines.append(f"- removed {self.duplicates:,} exact duplicates")
        if self.conflicting:
            lines.append(f"- {self.conflicting:,} repeated texts with a different price (kept the first)")
        lines += [f"- ⚠ {warning}" for warning in self.warnings]
        return "\n".join(lines)


@dataclass
class _Table:
    """A file read into raw values: the frame, each row's line (or record) number, and rows refused on reading."""

    frame: pd.DataFrame
    lines: list[int]
    unit: str = "line"
    bad_lines: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # from reading (e.g. the encoding), copied into the report


FALLBACK_ENCODING = "cp1252"
CP1252_WARNING = "not UTF-8; read as Windows-1252 (cp1252) — check accented characters"


def _decode(raw: bytes, name: str, warnings: list[str] | None = None) -> str:
    """File bytes as text: UTF-8 (BOM or not), UTF-16 when its BOM says so, else cp1252 with a warning appended."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: invalid UTF-16 at byte {exc.start}; re-save the file as UTF-8") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as utf8:
        # The declared fallback: Windows-1252, what Excel on Windows writes as plain "CSV". It decodes every byte
        # but five, so a file that fails it too is no text we can guess at.
        try:
            text = raw.decode(FALLBACK_ENCODING)
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: neither UTF-8 (invalid byte 0x{raw[utf8.start]:02x} at byte {utf8.start}) "
                            f"nor Windows-1252 (invalid byte 0x{raw[exc.start]:02x} at byte {exc.start}); "
                            f"re-save the file as UTF-8 (in Excel: 'CSV UTF-8')") from None
        if warnings is not None:
            warnings.append(CP1252_WARNING)
    if "\x00" in text:
        raise DataError(f"{name}: looks like a binary file, not text (or UTF-16 without a byte-order mark); "
                        f"upload {FORMATS} saved as UTF-8")
    return text


_COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd",
                     b"7z\xbc\xaf\x27\x1c": "7-Zip", b"Rar!": "RAR"}


def _check_not_binary(raw: bytes, name: str) -> None:
    for magic, kind in _COMPRESSED_MAGIC.items():
        if raw.startswith(magic):
            raise DataError(f"{name}: is {kind}-compressed; decompress it first and upload the {FORMATS} file inside")
    if raw.startswith(b"PK\x03\x04") or raw.startswith(b"\xd0\xcf\x11\xe0"):
        if b"xl/" in raw[:4096] or b"[Content_Types]" in raw[:4096] or raw.startswith(b"\xd0\xcf"):
            raise DataError(f"{name}: is an Excel workbook, not a text file; "
                            f"in Excel, export it as CSV (File → Save As → CSV UTF-8)")
        raise DataError(f"{name}: is a zip archive; decompress it first and upload the {FORMATS} file inside "
                        f"(a spreadsheet renamed .csv is also a zip: export it as CSV)")
    if raw.startswith(b"PAR1"):
        raise DataError(f"{name}: is a Parquet file; give it the .parquet extension")


def _sniff_delimiter(text: str) -> str:
    header = next((line for line in text.splitlines() if line.strip()), "")
    sample = "\n".join(text.splitlines()[:20])
    try:
        sep = csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
    except csv.Error:
        sep = ""
    # The sniffer can be fooled by punctuation inside the text; the header names are a safer witness.
    if not sep or sep not in header:
        sep = max(",;\t", key=header.count)
    return sep


def _csv_records(text: str, name: str, sep: str) -> list[tuple[int, list[str]]]:
    """(first file line, fields) of each non-blank record; a quote left open to the end of the file is refused."""
    def read(strict: bool):
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=strict)
        records, previous = [], 0
        try:
            for record in reader:
                if record and not (len(record) == 1 and not record[0].strip()):  # blank lines are skipped
                    records.append((previous + 1, record))
                previous = reader.line_num
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                raise DataError(f"{name}: a field starting on line {previous + 1} is over "
                                f"{csv.field_size_limit():,} characters; is a quote left open?") from None
            # A quote never closed runs to the end of the file, or on to the next quote, several lines on.
            if strict and ("unexpected end of data" in str(exc) or reader.line_num > previous + 1):
                raise DataError(f"{name}: the quote opened on line {previous + 1} is never closed "
                                f"(the lines after it would become one field); close or remove it") from None
            if strict:  # a stray quote inside a field ("12"x): read it leniently, as pandas would
                return None
            raise DataError(f"{name}: cannot read line {previous + 1} as CSV ({exc})") from None
        return records
    return read(True) or read(False) or []


def _read_csv(text: str, name: str, sep: str) -> _Table:
    records = _csv_records(text, name, sep)
    if not records:
        raise DataError(f"{name}: the file is empty")
    (_, header), body = records[0], records[1:]
    good = [(line, fields) for line, fields in body if len(fields) == len(header)]
    bad = [line for line, fields in body if len(fields) != len(header)]
    if bad and len(bad) > MAX_BAD_FIELD_SHARE * len(body):
        shown = {",": "comma", ";": "semicolon", "\t": "tab"}[sep]
        raise DataError(f"{name}: {len(bad)} of {len(body)} rows do not have the header's {len(header)} "
                        f"{shown}-separated fields (first on line {bad[0]}); check the delimiter and that text "
                        f"containing it is in double quotes")
    frame = pd.DataFrame([fields for _, fields in good], columns=header, dtype=object)
    return _Table(frame, [line for line, _ in good], "line", bad)


def _depth(value, limit: int) -> int:
    """Nesting depth of a JSON value, counted only up to limit + 1 (enough to refuse it)."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(item, limit - 1) for item in items), default=0)


def _json_value(text: str, name: str, where: str):
    try:
        return json.loads(text)
    except RecursionError:
        raise DataError(f"{name}: {where}JSON nested too deeply to be a table of products; flatten it") from None


def _check_depth(record, name: str, where: str) -> None:
    if _depth(record, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise DataError(f"{name}: {where}is nested more than {MAX_JSON_DEPTH} levels deep; "
                        f"expected flat records like {{\"text\": ..., \"price\": ...}}")


def _read_jsonl(text: str, name: str) -> _Table:
    records, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = _json_value(line, name, f"line {number}: ")
        except json.JSONDecodeError as exc:
            raise DataError(f"{name}: line {number} is not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{name}: line {number} is a JSON {type(record).__name__}, "
                            f"not an object like {{\"text\": ..., \"price\": ...}}")
        _check_depth(record, name, f"line {number} ")
        records.append(record)
        lines.append(number)
    return _Table(pd.DataFrame.from_records(records), lines, "line")


def _read_json(text: str, name: str) -> _Table:
    try:
        data = _json_value(text, name, "")
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # one object per line in a file named .json
            return _read_jsonl(text, name)
        raise DataError(f"{name}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if isinstance(data, dict):
        raise DataError(f"{name}: holds one JSON object; expected an array of objects "
                        f"like [{{\"text\": ..., \"price\": ...}}, ...]")
    if not isinstance(data, list):
        raise DataError(f"{name}: expected a JSON array of objects, found a {type(data).__name__}")
    for number, record in enumerate(data, start=1):
        if not isinstance(record, dict):
            raise DataError(f"{name}: item {number} of the array is a {type(record).__name__}, not an object")
        _check_depth(record, name, f"item {number} of the array ")
    return _Table(pd.DataFrame.from_records(data), list(range(1, len(data) + 1)), "record")


def _read_parquet(path: Path) -> pd.DataFrame:
    if importlib.util.find_spec("pyarrow") is None:
        raise DataError(f"{path.name}: reading Parquet needs the pyarrow package; install it "
                        f"(`pip install pyarrow`) or upload CSV or JSONL instead")
    try:
        return pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # pyarrow raises many types; any of them means the same to the user
        raise DataError(f"{path.name}: cannot read it as Parquet ({exc})") from None


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in COMPRESSED_SUFFIXES:
        raise DataError(f"{path.name}: is a compressed file; decompress it first and upload the {FORMATS} inside")
    if suffix in (".xlsx", ".xls", ".ods"):
        raise DataError(f"{path.name}: spreadsheets are not read directly; export it as CSV")
    if suffix not in (".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".parquet"):
        raise DataError(f"{path.name}: unsupported file type '{suffix}'; upload {FORMATS}")
    return suffix


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:  # checked before reading, so a huge file never lands in memory
            raise DataError(f"{path.name}: is {size / 1e6:,.1f} MB, over the {max_bytes / 1e6:,.0f} MB limit; "
                            f"upload a sample of the data")
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path.name}: cannot open it ({exc.strerror})") from None


def _read_frame(path: Path, max_bytes: int = MAX_FILE_BYTES) -> _Table:
    """The file as a table of raw values with the line (or record) number of each row."""
    suffix = _check_suffix(path)
    raw = _read_bytes(path, max_bytes)
    if not raw.strip():
        raise DataError(f"{path.name}: the file is empty")
    if suffix == ".parquet":
        frame = _read_parquet(path)
        return _Table(frame, list(range(1, len(frame) + 1)), "record")
    _check_not_binary(raw, path.name)
    warnings: list[str] = []
    text = _decode(raw, path.name, warnings)
    if not text.strip():
        raise DataError(f"{path.name}: the file is empty")
    if suffix in (".jsonl", ".ndjson"):
        table = _read_jsonl(text, path.name)
    elif suffix == ".json":
        table = _read_json(text, path.name)
    else:
        sep = "\t" if suffix == ".tsv" else _sniff_delimiter(text)
        table = _read_csv(text, path.name, sep)
    table.warnings[:0] = warnings
    return table


# ---------------------------------------------------------------------------
# Hugging Face datasets: a local folder (save_to_disk, or a folder of data files) or a Hub id like "owner/name"

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_FILE_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".parquet", ".xlsx", ".xls", ".ods")


def is_hub_id(source) -> bool:
    """True for "owner/name" that is no local path and not a data file's name."""
    text = str(source)
    return (bool(_HUB_ID.fullmatch(text)) and not Path(text).exists()
            and not text.lower().endswith(_FILE_SUFFIXES + COMPRESSED_SUFFIXES))


def _datasets(name: str):
    try:
        import datasets
    except ImportError:
        raise DataError(f"{name}: reading a Hugging Face dataset needs the datasets package; "
                        f"install it (`pip install 'datasets>=3'`) or upload a {FORMATS} file") from None
    return datasets


def _train_split(data, name: str):
    """The "train" split of a DatasetDict (else its only, or first, split); a Dataset as it is."""
    if isinstance(data, dict):  # DatasetDict is a dict of split name → Dataset
        splits = list(data.keys())
        if not splits:
            raise DataError(f"{name}: the dataset has no splits")
        return data["train" if "train" in splits else splits[0]]
    return data


def _dataset_table(data, name: str, max_rows: int) -> _Table:
    if data.num_rows > max_rows:  # before converting, so a huge dataset never becomes a DataFrame
        raise DataError(f"{name}: has {data.num_rows:,} rows, more than the limit of {max_rows:,}; "
                        f"upload a sample of the data")
    frame = data.to_pandas()
    return _Table(frame, list(range(1, len(frame) + 1)), "record")


def _read_dataset_folder(path: Path, max_rows: int) -> _Table:
    """A folder written by Dataset(Dict).save_to_disk, or a folder of data files, through `datasets`."""
    datasets = _datasets(path.name)
    try:
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            data = datasets.load_from_disk(str(path))
        else:
            data = datasets.load_dataset(str(path))
    except DataError:
        raise
    except Exception as exc:  # datasets raises many types (FileNotFoundError, ValueError, DatasetGenerationError…)
        raise DataError(f"{path.name}: cannot read the folder as a Hugging Face dataset "
                        f"({' '.join(str(exc).split()) or type(exc).__name__})") from None
    return _dataset_table(_train_split(data, path.name), path.name, max_rows)


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants
        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


def _read_hub_dataset(dataset_id: str, max_rows: int) -> _Table:
    datasets = _datasets(dataset_id)
    try:
        data = datasets.load_dataset(dataset_id, split="train")
    except Exception as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, (ConnectionError, TimeoutError)) or _hub_offline() or "offline" in detail.lower():
            raise DataError(f"{dataset_id}: cannot reach the Hugging Face Hub to load dataset {dataset_id}: "
                            f"{detail}") from None
        raise DataError(f"{dataset_id}: cannot load dataset {dataset_id} from the Hugging Face Hub: "
                        f"{detail}") from None
    return _dataset_table(data, dataset_id, max_rows)


def _read_source(source, max_bytes: int, max_rows: int) -> tuple[_Table, str]:
    """(table, name for messages) of a file, a dataset folder, or a Hub dataset id."""
    path = Path(source)
    if path.is_dir():
        return _read_dataset_folder(path, max_rows), path.name
    if is_hub_id(source):
        return _read_hub_dataset(str(source), max_rows), str(source)
    return _read_frame(path, max_bytes), path.name


def _find_column(frame: pd.DataFrame, wanted: str | None, candidates: tuple[str, ...], role: str, name: str) -> str:
    columns = [str(column) for column in frame.columns]
    by_lower = {}
    for column in columns:
        by_lower.setdefault(column.strip().lower(), column)
    for candidate in ([wanted] if wanted else candidates):
        if candidate.strip().lower() in by_lower:
            return by_lower[candidate.strip().lower()]
    looked_for = f"'{wanted}'" if wanted else " or ".join(f"'{c}'" for c in candidates)
    raise DataError(f"{name}: no {role} column {looked_for}; the columns are: "
                    f"{', '.join(repr(c) for c in columns) or '(none)'}. Name the {role} column to use.")


def _has_column(frame: pd.DataFrame, wanted: str) -> bool:
    return any(str(c).strip().lower() == wanted.strip().lower() for c in frame.columns)


def _text_columns(frame: pd.DataFrame, wanted, name: str) -> list[str]:
    """The text column(s), in the order they are joined: named (a list, or comma-separated), or detected."""
    if isinstance(wanted, str) and wanted.strip() and not _has_column(frame, wanted):
        wanted = [part for part in wanted.split(",") if part.strip()]  # "title,description"
    if isinstance(wanted, (list, tuple)) and wanted:
        return [_find_column(frame, column, (), "text", name) for column in wanted]
    if isinstance(wanted, str) and wanted.strip():
        return [_find_column(frame, wanted, (), "text", name)]
    for single in ("text", "prompt"):  # text already written for the model (perhaps in the course prompt)
        if _has_column(frame, single):
            return [_find_column(frame, single, (), "text", name)]
    combined = [c for c in C.AMAZON_FIELDS if _has_column(frame, c)]
    if combined:
        return [_find_column(frame, c, (), "text", name) for c in combined]
    return [_find_column(frame, None, TEXT_COLUMNS, "text", name)]


def _raw_text(value) -> str:
    """One cell as text: lists (JSON arrays, Parquet lists) one item a line, dicts as 'key: value' pairs."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if hasattr(value, "tolist") and not isinstance(value, numbers.Number):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return "\n".join(filter(None, map(_raw_text, value)))
    if isinstance(value, dict):
        return ", ".join(f"{key}: {_raw_text(item)}" for key, item in value.items() if _raw_text(item))
    return str(value)


def _row_texts(frame, columns: list[str], schema: str, tokenizer, token_budget: int) -> list[str | None]:
    """The product text of every row: the columns joined in order, or curated Amazon metadata (None: too short)."""
    if schema == "amazon":
        by_field = {c.strip().lower(): c for c in columns}
        records = frame[columns].rename(columns={v: k for k, v in by_field.items()}).to_dict("records")
        return [C.curate(record, tokenizer, token_budget) for record in records]
    values = zip(*(frame[column].tolist() for column in columns))
    return ["\n".join(part for part in map(_raw_text, row) if part.strip()) for row in values]


def _decimal_comma(prices, forced: bool | None, price_column: str, report: DataReport) -> bool:
    if forced is not None:
        return forced
    if _looks_decimal_comma(prices):
        report.warnings.append(f"prices in '{price_column}' use a decimal comma (e.g. '12,50'); read as 12.50")
        return True
    return False


def _clean_rows(lines, texts, prices, decimal_comma, min_price, max_price, report) -> list[Product]:
    kept: dict[str, Product] = {}
    for line, raw_text, raw_price in zip(lines, texts, prices):
        if raw_text is None:
            report.drop(f"under {C.MIN_CHARS} characters of description", line)
            continue
        text, embedded = strip_course_prompt(raw_text)
        text = clean_text(text)
        if not text:
            report.drop("empty text", line)
            continue
        try:
            price = parse_price(raw_price, decimal_comma=decimal_comma)
        except PriceError as exc:
            report.drop(exc.reason, line)
            continue
        if not min_price <= price <= max_price:
            report.drop("price out of range", line)
            continue
        if embedded is not None and abs(embedded - price) > 1:
            report.drop("embedded price differs", line)
            continue
        if text in kept:
            # Repeats would leak between train and test; a repeat with another price is also a label conflict.
            if round(kept[text].price, 2) == round(price, 2):
                report.duplicates += 1
            else:
                report.conflicting += 1
            continue
        kept[text] = Product(text, price)
    return list(kept.values())


def _drop_reasons(report: DataReport) -> str:
    reasons = [f"{reason} ×{len(rows)}" for reason, rows in report.dropped.items()]
    if report.duplicates:
        reasons.append(f"duplicates ×{report.duplicates}")
    if report.conflicting:
        reasons.append(f"same text with another price ×{report.conflicting}")
    return "; ".join(reasons) or "nothing was dropped"


def _new_report(table: _Table, text_column, price_column, name: str) -> DataReport:
    frame = table.frame
    columns = [str(c) for c in frame.columns]
    texts = _text_columns(frame, text_column, name)
    report = DataReport(rows_read=len(frame) + len(table.bad_lines), row_unit=table.unit, columns=columns,
                        text_column=",".join(texts), text_columns=texts,
                        price_column=_find_column(frame, price_column, PRICE_COLUMNS, "price", name))
    # Raw Amazon metadata is curated only when its four fields are the text, as they are when detected.
    amazon = {c.lower() for c in texts} == set(C.AMAZON_FIELDS) and C.is_amazon_metadata(columns)
    report.schema = "amazon" if amazon else "table"
    report.warnings.extend(table.warnings)
    for line in table.bad_lines:
        report.drop("wrong number of fields", line)
    return report


def read_columns(path, max_bytes: int = MAX_FILE_BYTES) -> list[str]:
    """The column names of a file, for the mapping step when the detected columns did not work; [] if unreadable."""
    try:
        return [str(c) for c in _read_source(path, max_bytes, 10**12)[0].frame.columns]
    except DataError:
        return []


def load_products(path, *, text_column: str | list[str] | None = None, price_column: str | None = None,
                  min_price: float = 0.5, max_price: float = 999.49, max_rows: int = 200_000,
                  min_rows: int = 10, decimal_comma: bool | None = None, max_bytes: int = MAX_FILE_BYTES,
                  tokenizer=None, token_budget: int = C.TOKEN_BUDGET) -> tuple[list[Product], DataReport]:
    """Read an uploaded CSV/TSV/JSON/JSONL/Parquet file into clean, unique products; every failure is a DataError.

    `path` may also be a local Hugging Face dataset folder (save_to_disk, or a folder of data files) or a Hub
    dataset id like "owner/name" (its train split; needs the Hub to be reachable).

    text_column may name several columns (a list, or comma-separated), joined in order. decimal_comma None detects
    it per file. tokenizer and token_budget only cut curated raw Amazon metadata.
    """
    table, name = _read_source(path, max_bytes, max_rows)
    if len(table.frame) == 0:
        columns = ", ".join(map(str, table.frame.columns))
        raise DataError(f"{name}: has no data rows" + (f" (only a header: {columns})" if columns else ""))
    if len(table.frame) > max_rows:
        raise DataError(f"{name}: has {len(table.frame):,} rows, more than the limit of {max_rows:,}; "
                        f"upload a sample of the data")
    report = _new_report(table, text_column, price_column, name)
    texts = _row_texts(table.frame, report.text_columns, report.schema, tokenizer, token_budget)
    prices = table.frame[report.price_column].tolist()
    comma = _decimal_comma(prices, decimal_comma, report.price_column, report)
    products = _clean_rows(table.lines, texts, prices, comma, min_price, max_price, report)
    report.rows_kept = len(products)
    if len(products) < min_rows:
        raise DataError(f"{name}: only {len(products)} usable rows of {report.rows_read} "
                        f"(need at least {min_rows}); dropped: {_drop_reasons(report)}", report=report)
    return products, report


# ---------------------------------------------------------------------------
# Split and sequence length


def split_products(products, test_size: float | int = 0.1, seed: int = 42) -> tuple[list[Product], list[Product]]:
    """(train, test) after a seeded shuffle; test_size is a fraction (0–1) or a count; both non-empty from 2 items."""
    is_count = isinstance(test_size, numbers.Integral)  # numpy ints count too
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        raise ValueError(f"test_size must be a fraction or a count, not {test_size!r}")
    if not is_count and not 0 < test_size < 1:
        raise ValueError(f"test_size {test_size} must be a fraction between 0 and 1, or a whole count")
    if is_count and test_size < 1:
        raise ValueError(f"test_size {test_size} must be at least 1")
    items = list(products)
    random.Random(seed).shuffle(items)
    if len(items) < 2:
        return items, []
    count = int(test_size) if is_count else round(len(items) * test_size)
    count = min(max(count, 1), len(items) - 1)
    return items[:-count], items[-count:]


def _example_lengths(tokenizer, products) -> tuple[list[int], int]:
    """Full example length (prompt + price) of each product, and the least length that leaves one text token."""
    # Same pieces tokenize_example joins (head + body + tail + answer), but batched: one call for all texts.
    head = len(tokenizer(f"{COURSE_QUESTION}\n\n", add_special_tokens=True)["input_ids"])
    tail = len(tokenizer(f"\n\n{PRICE_PREFIX}", add_special_tokens=False)["input_ids"])
    bodies = tokenizer([p.text for p in products], add_special_tokens=False)["input_ids"]
    answers = tokenizer([completion(p.price) for p in products], add_special_tokens=False)["input_ids"]
    lengths = [head + len(body) + tail + len(answer) for body, answer in zip(bodies, answers)]
    return lengths, head + tail + 1 + max(len(answer) for answer in answers)


def example_lengths(tokenizer, products) -> list[int]:
    """Tokens of each product's full training example (course prompt + price), before any cut."""
    products = list(products)
    return _example_lengths(tokenizer, products)[0] if products else []


def fit_max_length(tokenizer, products, cap: int = 512, quantile: float = 0.95) -> int:
    """Max sequence length covering `quantile` of the full examples (prompt + price), at most `cap`."""
    products = list(products)
    if not products:
        raise ValueError("no products to size the sequence length from")
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile {quantile} must be in (0, 1]")
    lengths, floor = _example_lengths(tokenizer, products)
    lengths = sorted(lengths)
    needed = lengths[max(math.ceil(quantile * len(lengths)) - 1, 0)]  # nearest-rank quantile
    if cap < floor:
        raise ValueError(f"cap {cap} is too small: the prompt and price alone take {floor - 1} tokens")
    return max(min(needed, cap), floor)
