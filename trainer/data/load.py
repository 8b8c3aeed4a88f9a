"""A table to clean products: the text and price columns, row cleaning, duplicates, the report, and the split."""

from __future__ import annotations

import math
import numbers
import random
from dataclasses import dataclass, field

import pandas as pd

from .. import curate
from .core import DataError, PriceError, Product
from .prices import looks_decimal_comma, parse_price
from .readers import MAX_FILE_BYTES, Table, read_source
from .text import clean_text, unwrap_course_prompt

TEXT_COLUMNS = ("text", "summary", "prompt", "description", "title")
# Without a text/summary/prompt column these are combined, in this order, the way the course builds its product text.
COMBINED_TEXT_COLUMNS = ("title", "description", "features", "details")
ITEM_TEXT_COLUMNS = ("title", "full")  # the course's Item records without a summary
PRICE_COLUMNS = ("price", "completion")  # a prompt/completion record's price is its completion
CATEGORY_COLUMN = "category"
CONVERSATION_COLUMN = "messages"  # TRL's conversational records: a user turn (the prompt), an assistant turn (the price)


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
    question: str = ""  # the course question the data's prompts asked (the most common one); empty: none
    splits: dict[str, int] = field(default_factory=dict)  # rows kept per split of the data's own; empty: it has none
    category_column: str = ""  # the column categories were read from; empty: none

    def drop(self, reason: str, row: int) -> None:
        self.dropped.setdefault(reason, []).append(row)

    def dropped_lines(self) -> list[str]:
        """One line a reason: '3 × empty text (lines 4, 9, 12)', the first five rows named, one row in the singular."""
        lines = []
        for reason, rows in self.dropped.items():
            shown = ", ".join(map(str, rows[:5])) + (", …" if len(rows) > 5 else "")
            lines.append(f"{len(rows):,} × {reason} ({self.row_unit}{'s' if len(rows) > 1 else ''} {shown})")
        return lines

    def summary(self) -> str:
        curated = " — raw Amazon metadata, curated the course's way" if self.schema == "amazon" else ""
        category = f", category: `{self.category_column}`" if self.category_column else ""
        lines = [f"**{self.rows_kept:,} of {self.rows_read:,} rows kept** "
                 f"(text: `{' + '.join(self.text_columns)}`, price: `{self.price_column}`{category}){curated}"]
        lines.append("- split: " + split_description(self.splits))
        if self.question:
            lines.append(f"- prompts asked “{self.question}” (unwrapped; the run asks it unless set otherwise)")
        lines += [f"- dropped {line}" for line in self.dropped_lines()]
        if self.duplicates:
            lines.append(f"- removed {self.duplicates:,} exact duplicates")
        if self.conflicting:
            lines.append(f"- {self.conflicting:,} repeated texts with a different price (kept the first)")
        lines += [f"- ⚠ {warning}" for warning in self.warnings]
        return "\n".join(lines)


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
    for single in ("text", "summary"):  # text already written for the model
        if _has_column(frame, single):
            return [_find_column(frame, single, (), "text", name)]
    if all(_has_column(frame, c) for c in ITEM_TEXT_COLUMNS):  # an Item record's own text before its prompt
        return [_find_column(frame, c, (), "text", name) for c in ITEM_TEXT_COLUMNS]
    if _has_column(frame, "prompt"):  # the course prompt around the text, unwrapped later
        return [_find_column(frame, "prompt", (), "text", name)]
    combined = [c for c in curate.AMAZON_FIELDS if _has_column(frame, c)]
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
        return [curate.curate(record, tokenizer, token_budget) for record in records]
    values = zip(*(frame[column].tolist() for column in columns))
    return ["\n".join(part for part in map(_raw_text, row) if part.strip()) for row in values]


def _turn_text(value, roles: tuple[str, ...]) -> str | None:
    """The content of the last turn by one of `roles` in a conversation (a list of {"role", "content"}); a plain
    value as it is; None when it is a conversation without such a turn."""
    if hasattr(value, "tolist") and not isinstance(value, (str, numbers.Number)):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        return value
    turns = [turn for turn in value if isinstance(turn, dict) and turn.get("role") in roles]
    return _raw_text(turns[-1].get("content")) if turns else None


def _unfold_conversations(frame: pd.DataFrame) -> pd.DataFrame:
    """TRL's conversational records as prompt and completion columns: `messages` (user turn → prompt, assistant
    turn → completion), and prompt/completion columns that hold turns instead of text."""
    columns = {str(c).strip().lower(): c for c in frame.columns}
    frame = frame.copy()
    if CONVERSATION_COLUMN in columns and "prompt" not in columns:
        turns = frame[columns[CONVERSATION_COLUMN]]
        frame["prompt"] = [_turn_text(t, ("user",)) for t in turns]
        if "completion" not in columns:
            frame["completion"] = [_turn_text(t, ("assistant",)) for t in turns]
        return frame
    for column, roles in (("prompt", ("user",)), ("completion", ("assistant",))):
        if column in columns:
            frame[columns[column]] = [_turn_text(v, roles) for v in frame[columns[column]]]
    return frame


def _decimal_comma(prices, forced: bool | None, price_column: str, report: DataReport) -> bool:
    if forced is not None:
        return forced
    if looks_decimal_comma(prices):
        report.warnings.append(f"prices in '{price_column}' use a decimal comma (e.g. '12,50'); read as 12.50")
        return True
    return False


def _clean_rows(lines, texts, prices, extras, decimal_comma, min_price, max_price, report) -> list[Product]:
    """Usable, unique products of the rows; `extras` are each row's (category, split)."""
    kept: dict[str, Product] = {}
    questions: dict[str, int] = {}
    for line, raw_text, raw_price, (category, split) in zip(lines, texts, prices, extras):
        if raw_text is None:
            report.drop(f"under {curate.MIN_CHARS} characters of description", line)
            continue
        text, embedded, question = unwrap_course_prompt(raw_text)
        if question:
            questions[question] = questions.get(question, 0) + 1
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
            report.drop(f"price outside ${min_price:,.2f}–${max_price:,.2f}", line)
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
        kept[text] = Product(text, price, category, split)
    report.question = max(questions, key=questions.get) if questions else ""
    return list(kept.values())


def _drop_reasons(report: DataReport) -> str:
    reasons = [f"{reason} ×{len(rows)}" for reason, rows in report.dropped.items()]
    if report.duplicates:
        reasons.append(f"duplicates ×{report.duplicates}")
    if report.conflicting:
        reasons.append(f"same text with another price ×{report.conflicting}")
    return "; ".join(reasons) or "nothing was dropped"


def _new_report(table: Table, text_column, price_column, name: str) -> DataReport:
    frame = table.frame
    columns = [str(c) for c in frame.columns]
    texts = _text_columns(frame, text_column, name)
    report = DataReport(rows_read=len(frame) + len(table.bad_lines), row_unit=table.unit, columns=columns,
                        text_column=",".join(texts), text_columns=texts,
                        price_column=_find_column(frame, price_column, PRICE_COLUMNS, "price", name),
                        category_column=(_find_column(frame, CATEGORY_COLUMN, (), "category", name)
                                         if _has_column(frame, CATEGORY_COLUMN) else ""))
    # Raw Amazon metadata is curated only when its four fields are the text, as they are when detected.
    amazon = {c.lower() for c in texts} == set(curate.AMAZON_FIELDS) and curate.is_amazon_metadata(columns)
    report.schema = "amazon" if amazon else "table"
    report.warnings.extend(table.warnings)
    for line in table.bad_lines:
        report.drop("wrong number of fields", line)
    return report



def load_products(path, *, text_column: str | list[str] | None = None, price_column: str | None = None,
                  min_price: float = 0.5, max_price: float = 999.49, max_rows: int = 200_000,
                  min_rows: int = 10, decimal_comma: bool | None = None, max_bytes: int = MAX_FILE_BYTES,
                  tokenizer=None, token_budget: int = curate.TOKEN_BUDGET) -> tuple[list[Product], DataReport]:
    """Read an uploaded CSV/TSV/JSON/JSONL/Parquet file into clean, unique products; every failure is a DataError.

    `path` may also be a local Hugging Face dataset folder (save_to_disk, or a folder of data files) or a Hub
    dataset id like "owner/name" (its train split; needs the Hub to be reachable).

    text_column may name several columns (a list, or comma-separated), joined in order. decimal_comma None detects
    it per file. tokenizer and token_budget only cut curated raw Amazon metadata.
    """
    table, name = read_source(path, max_bytes, max_rows)
    if len(table.frame) == 0:
        columns = ", ".join(map(str, table.frame.columns))
        raise DataError(f"{name}: has no data rows" + (f" (only a header: {columns})" if columns else ""))
    if len(table.frame) > max_rows:
        raise DataError(f"{name}: has {len(table.frame):,} rows, more than the limit of {max_rows:,}; "
                        f"upload a sample of the data")
    table.frame = _unfold_conversations(table.frame)
    report = _new_report(table, text_column, price_column, name)
    texts = _row_texts(table.frame, report.text_columns, report.schema, tokenizer, token_budget)
    prices = [_turn_text(p, ("assistant",)) for p in table.frame[report.price_column].tolist()]
    comma = _decimal_comma(prices, decimal_comma, report.price_column, report)
    categories = ([_raw_text(c).strip()[:100] for c in table.frame[report.category_column]]
                  if report.category_column else [""] * len(texts))
    extras = zip(categories, table.splits or [""] * len(texts))
    products = _clean_rows(table.lines, texts, prices, extras, comma, min_price, max_price, report)
    report.rows_kept = len(products)
    if table.splits:
        for product in products:
            report.splits[product.split] = report.splits.get(product.split, 0) + 1
    if len(products) < min_rows:
        raise DataError(f"{name}: only {len(products)} usable rows of {report.rows_read} "
                        f"(need at least {min_rows}); dropped: {_drop_reasons(report)}", report=report)
    return products, report


@dataclass
class Rows:
    """A file to price, row by row: the table as read (every column untouched), each row's product text (None when
    it has none) and true price (None when the file has no price column or the cell is not a price)."""

    table: Table
    name: str
    text_columns: list[str]
    texts: list[str | None]
    truths: list[float | None]
    price_column: str = ""


def read_rows(path, *, text_column: str | list[str] | None = None, price_column: str | None = None,
              max_rows: int = 200_000, max_bytes: int = MAX_FILE_BYTES) -> Rows:
    """Read a file (the same readers and refusals as training data) without dropping a row: a catalog to price.
    The text is found and cleaned as for training; a price column is optional."""
    table, name = read_source(path, max_bytes, max_rows)
    if len(table.frame) == 0:
        raise DataError(f"{name}: has no data rows")
    if len(table.frame) > max_rows:
        raise DataError(f"{name}: has {len(table.frame):,} rows, more than the limit of {max_rows:,}; "
                        f"price it in parts")
    frame = _unfold_conversations(table.frame)
    columns = _text_columns(frame, text_column, name)
    texts = []
    for raw in _row_texts(frame, columns, "table", None, 0):
        text = clean_text(unwrap_course_prompt(raw)[0])
        texts.append(text or None)
    truths: list[float | None] = [None] * len(texts)
    found = ""
    if price_column or any(_has_column(frame, c) for c in PRICE_COLUMNS):
        found = _find_column(frame, price_column, PRICE_COLUMNS, "price", name)
        values = [_turn_text(v, ("assistant",)) for v in frame[found].tolist()]
        comma = looks_decimal_comma(values)
        for i, value in enumerate(values):
            try:
                truths[i] = parse_price(value, decimal_comma=comma)
            except PriceError:
                pass
    return Rows(table, name, columns, texts, truths, found)


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


def split_run(products, test_size: float = 0.1, validation_size: float = 0.1,
              seed: int = 42) -> tuple[list[Product], list[Product], list[Product]]:
    """A run's (train, validation, test): the held-out test rows first, then the validation slice out of the rest.

    Each size is a share (<1) or a count (>=1, a float from YAML or a form counts too). Validation rows are not
    trained on: they are the probe, and where a price method and the ensemble are chosen. Data with its own
    splits (Product.split) keeps them: its test rows are held out, its validation rows validate; only a part it
    lacks is carved at random.
    """
    products = list(products)
    own = {p.split for p in products}
    if "test" in own:
        test = [p for p in products if p.split == "test"]
        train = [p for p in products if p.split != "test"]
    else:
        train, test = split_products(products, test_size=as_size(test_size), seed=seed)
    if "validation" in own:
        validation = [p for p in train if p.split == "validation"]
        train = [p for p in train if p.split != "validation"]
    else:
        train, validation = split_products(train, test_size=as_size(validation_size), seed=seed)
    return train, validation, test


def split_description(splits: dict[str, int]) -> str:
    """How split_run splits data with these own splits (rows per split name), in words for the data summary."""
    if "test" not in splits and "validation" not in splits:
        return "random (seeded), held-out and validation shares as set"
    own = " / ".join(f"{name} {splits[name]:,}" for name in ("train", "validation", "test") if name in splits)
    missing = [part for part, name in (("held-out", "test"), ("validation", "validation")) if name not in splits]
    carved = f"; the {missing[0]} rows carved at random from train" if missing else ""
    return f"the data's own ({own}): its test split is held out, its validation split is the probe{carved}"


def as_size(value: float) -> float | int:
    """A config's split size as split_products takes it: a share below 1, a whole count from 1 (100.0 → 100)."""
    return int(value) if value >= 1 else value
