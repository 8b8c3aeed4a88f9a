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
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

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
PRICE_COLUMNS = ("price",)
FORMATS = "CSV, TSV, JSON, JSONL or Parquet"


@dataclass
class DataReport:
    """What loading a file did: counts, dropped rows by reason (with their line numbers), warnings."""

    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict[str, list[int]] = field(default_factory=dict)
    duplicates: int = 0
    conflicting: int = 0
    text_column: str = ""
    price_column: str = ""
    warnings: list[str] = field(default_factory=list)
    row_unit: str = "line"  # "line" for text files; "record" for JSON arrays and Parquet, which have no lines

    def drop(self, reason: str, row: int) -> None:
        self.dropped.setdefault(reason, []).append(row)

    def summary(self) -> str:
        lines = [f"**{self.rows_kept:,} of {self.rows_read:,} rows kept** "
                 f"(text: `{self.text_column}`, price: `{self.price_column}`)"]
        for reason, rows in self.dropped.items():
            shown = ", ".join(map(str, rows[:5])) + (", …" if len(rows) > 5 else "")
            lines.append(f"- dropped {len(rows):,} × {reason} ({self.row_unit}s {shown})")
        if self.duplicates:
            lines.append(f"- removed {self.duplicates:,} exact duplicates")
        if self.conflicting:
            lines.append(f"- {self.conflicting:,} repeated texts with a different price (kept the first)")
        lines += [f"- ⚠ {warning}" for warning in self.warnings]
        return "\n".join(lines)


def _decode(raw: bytes, name: str) -> str:
    """File bytes as text: UTF-8 (BOM or not), or UTF-16 when its BOM says so."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: invalid UTF-16 at byte {exc.start}; re-save the file as UTF-8") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not valid UTF-8 at byte {exc.start} (0x{raw[exc.start]:02x}); "
                        f"re-save the file as UTF-8 (in Excel: 'CSV UTF-8')") from None
    if "\x00" in text:
        raise DataError(f"{name}: looks like a binary file, not text (or UTF-16 without a byte-order mark); "
                        f"upload {FORMATS} saved as UTF-8")
    return text


def _check_not_binary(raw: bytes, name: str) -> None:
    if raw.startswith(b"\x1f\x8b"):
        raise DataError(f"{name}: is gzip-compressed; decompress it first (e.g. `gunzip`) and upload the result")
    if raw.startswith(b"PK\x03\x04") or raw.startswith(b"\xd0\xcf\x11\xe0"):
        raise DataError(f"{name}: is an Excel workbook or a zip archive, not a text file; "
                        f"in Excel, export it as CSV (File → Save As → CSV UTF-8)")
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


def _record_lines(text: str, sep: str) -> list[int]:
    """First file line of each data record, counting quoted multi-line fields the way pandas does."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    starts, previous = [], 0
    for record in reader:
        if record and not (len(record) == 1 and not record[0].strip()):  # pandas skips blank lines
            starts.append(previous + 1)
        previous = reader.line_num
    return starts[1:]  # the first record is the header


def _read_csv(text: str, name: str, sep: str) -> tuple[pd.DataFrame, list[int]]:
    try:
        with warnings.catch_warnings():
            # pandas only warns (and silently drops data) when a row has more fields than the header.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False,
                                index_col=False, skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{name}: the file is empty") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError) as exc:
        shown = {",": "comma", ";": "semicolon", "\t": "tab"}[sep]
        raise DataError(f"{name}: cannot read it as {shown}-separated values ({str(exc).strip()}); "
                        f"check that text containing the delimiter is in double quotes") from None
    lines = _record_lines(text, sep)
    if len(lines) != len(frame):  # an oddity the two readers see differently: fall back to header + row
        lines = [index + 2 for index in range(len(frame))]
    return frame, lines


def _read_jsonl(text: str, name: str) -> tuple[pd.DataFrame, list[int]]:
    records, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{name}: line {number} is not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{name}: line {number} is a JSON {type(record).__name__}, "
                            f"not an object like {{\"text\": ..., \"price\": ...}}")
        records.append(record)
        lines.append(number)
    return pd.DataFrame.from_records(records), lines


def _read_json(text: str, name: str) -> tuple[pd.DataFrame, list[int], str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # one object per line in a file named .json
            frame, lines = _read_jsonl(text, name)
            return frame, lines, "line"
        raise DataError(f"{name}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if isinstance(data, dict):
        raise DataError(f"{name}: holds one JSON object; expected an array of objects "
                        f"like [{{\"text\": ..., \"price\": ...}}, ...]")
    if not isinstance(data, list):
        raise DataError(f"{name}: expected a JSON array of objects, found a {type(data).__name__}")
    for number, record in enumerate(data, start=1):
        if not isinstance(record, dict):
            raise DataError(f"{name}: item {number} of the array is a {type(record).__name__}, not an object")
    return pd.DataFrame.from_records(data), list(range(1, len(data) + 1)), "record"


def _read_parquet(path: Path) -> pd.DataFrame:
    if importlib.util.find_spec("pyarrow") is None:
        raise DataError(f"{path.name}: reading Parquet needs the pyarrow package; install it "
                        f"(`pip install pyarrow`) or upload CSV or JSONL instead")
    try:
        return pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # pyarrow raises many types; any of them means the same to the user
        raise DataError(f"{path.name}: cannot read it as Parquet ({exc})") from None


def _read_frame(path: Path) -> tuple[pd.DataFrame, list[int], str]:
    """The file as a DataFrame of raw values, the line (or record) number of each row, and which it is."""
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xls", ".ods"):
        raise DataError(f"{path.name}: spreadsheets are not read directly; export it as CSV")
    if suffix not in (".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".parquet"):
        raise DataError(f"{path.name}: unsupported file type '{suffix}'; upload {FORMATS}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path.name}: cannot open it ({exc.strerror})") from None
    if not raw.strip():
        raise DataError(f"{path.name}: the file is empty")
    if suffix == ".parquet":
        frame = _read_parquet(path)
        return frame, list(range(1, len(frame) + 1)), "record"
    _check_not_binary(raw, path.name)
    text = _decode(raw, path.name)
    if not text.strip():
        raise DataError(f"{path.name}: the file is empty")
    if suffix in (".jsonl", ".ndjson"):
        return *_read_jsonl(text, path.name), "line"
    if suffix == ".json":
        return _read_json(text, path.name)
    sep = "\t" if suffix == ".tsv" else _sniff_delimiter(text)
    return *_read_csv(text, path.name, sep), "line"


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


def _raw_text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value if isinstance(value, str) else str(value)


def _clean_rows(frame, lines, text_column, price_column, min_price, max_price, report) -> list[Product]:
    prices = frame[price_column].tolist()
    decimal_comma = _looks_decimal_comma(prices)
    if decimal_comma:
        report.warnings.append(f"prices in '{price_column}' use a decimal comma (e.g. '12,50'); read as 12.50")
    kept: dict[str, Product] = {}
    for line, raw_text, raw_price in zip(lines, frame[text_column].tolist(), prices):
        text, embedded = strip_course_prompt(_raw_text(raw_text))
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


def load_products(path, *, text_column: str | None = None, price_column: str | None = None,
                  min_price: float = 0.5, max_price: float = 999.49, max_rows: int = 200_000,
                  min_rows: int = 10) -> tuple[list[Product], DataReport]:
    """Read an uploaded CSV/TSV/JSON/JSONL/Parquet file into clean, unique products; every failure is a DataError."""
    path = Path(path)
    frame, lines, unit = _read_frame(path)
    if len(frame) == 0:
        columns = ", ".join(map(str, frame.columns))
        raise DataError(f"{path.name}: has no data rows" + (f" (only a header: {columns})" if columns else ""))
    if len(frame) > max_rows:
        raise DataError(f"{path.name}: has {len(frame):,} rows, more than the limit of {max_rows:,}; "
                        f"upload a sample of the data")
    report = DataReport(rows_read=len(frame), row_unit=unit,
                        text_column=_find_column(frame, text_column, TEXT_COLUMNS, "text", path.name),
                        price_column=_find_column(frame, price_column, PRICE_COLUMNS, "price", path.name))
    products = _clean_rows(frame, lines, report.text_column, report.price_column, min_price, max_price, report)
    report.rows_kept = len(products)
    if len(products) < min_rows:
        raise DataError(f"{path.name}: only {len(products)} usable rows of {report.rows_read} "
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


def fit_max_length(tokenizer, products, cap: int = 512, quantile: float = 0.95) -> int:
    """Max sequence length covering `quantile` of the full examples (prompt + price), at most `cap`."""
    products = list(products)
    if not products:
        raise ValueError("no products to size the sequence length from")
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile {quantile} must be in (0, 1]")
    # Same pieces tokenize_example joins (head + body + tail + answer), but batched: one call for all texts.
    head = len(tokenizer(f"{COURSE_QUESTION}\n\n", add_special_tokens=True)["input_ids"])
    tail = len(tokenizer(f"\n\n{PRICE_PREFIX}", add_special_tokens=False)["input_ids"])
    bodies = tokenizer([p.text for p in products], add_special_tokens=False)["input_ids"]
    answers = tokenizer([completion(p.price) for p in products], add_special_tokens=False)["input_ids"]
    lengths = sorted(head + len(body) + tail + len(answer) for body, answer in zip(bodies, answers))
    needed = lengths[max(math.ceil(quantile * len(lengths)) - 1, 0)]  # nearest-rank quantile
    # The shortest length that still leaves one text token beside the prompt and the longest price.
    floor = head + tail + 1 + max(len(answer) for answer in answers)
    if cap < floor:
        raise ValueError(f"cap {cap} is too small: the prompt and price alone take {floor - 1} tokens")
    return max(min(needed, cap), floor)
