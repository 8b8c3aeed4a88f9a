"""Raw Amazon Reviews 2023 product metadata → product text, curated the way the course's "Price is Right" project does.

A raw record has `title`, `description` (a list of strings), `features` (a list), `details` (a dict, or the dict
as a JSON string, as the Hugging Face dataset stores it) and `price`. The course joins description, features and
scrubbed details, requires enough text to judge the product by, scrubs the result and cuts it to a token budget.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping

AMAZON_FIELDS = ("title", "description", "features", "details")
MIN_CHARS = 300  # the course drops items with less text than this: too little to price them by
TOKEN_BUDGET = 160  # the course's MAX_TOKENS
CHARS_PER_TOKEN = 7  # the course cuts the characters to budget × 7 before tokenizing, to keep tokenizing cheap

# Boilerplate keys and values of `details` that say nothing about the price (the course's list).
REMOVALS = ('"Batteries Included?": "No"', '"Batteries Included?": "Yes"', '"Batteries Required?": "No"',
            '"Batteries Required?": "Yes"', "By Manufacturer", "Item", "Date First", "Package", ":", "Number of",
            "Best Sellers", "Number", "Product ")

# JSON punctuation and decorative brackets the course turns into spaces, plus runs of two or more other odd
# characters (★★★, ~~~~, ====, emoji strings) that carry no meaning for a price.
_PUNCTUATION = re.compile(r'[:\[\]"{}【】\s]+')
_ODD_RUN = re.compile(r"[^\w\s,.;!?'()&/+%$#*-]{2,}")


def is_amazon_metadata(columns: Iterable[str]) -> bool:
    """True when the columns are those of the raw Amazon metadata (title, description, features, details, price)."""
    present = {str(c).strip().lower() for c in columns}
    return set(AMAZON_FIELDS) <= present and "price" in present


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_lines(value) -> list[str]:
    """A description or features value as a list of strings: lists (or numpy arrays from Parquet) or one string."""
    if _missing(value):
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value if not _missing(item) and str(item).strip()]
    return [str(value)]


def _details_text(value) -> str:
    """`details` as the JSON string the course scrubs (the Hugging Face dataset already stores it that way)."""
    if _missing(value):
        return ""
    if isinstance(value, Mapping):
        return json.dumps(dict(value), ensure_ascii=False, default=str) if value else ""
    return str(value) if str(value).strip() not in ("", "{}") else ""


def scrub_details(details: str) -> str:
    for remove in REMOVALS:
        details = details.replace(remove, "")
    return details


def scrub(text: str) -> str:
    """The course's scrub: JSON punctuation to spaces, odd-character runs gone, and no 7+-character words with
    digits (part numbers and SKUs, which the tokenizer splits into many tokens and which tell nothing of price)."""
    text = _ODD_RUN.sub(" ", text)
    text = _PUNCTUATION.sub(" ", text).strip()
    text = text.replace(" ,", ",").replace(",,,", ",").replace(",,", ",")
    words = [w for w in text.split(" ") if len(w) < 7 or not any(ch.isdigit() for ch in w)]
    return " ".join(words)


def contents(record: Mapping) -> str:
    """Description, features and scrubbed details, each part on its own line(s), in the course's order."""
    parts = _as_lines(record.get("description")) + _as_lines(record.get("features"))
    details = _details_text(record.get("details"))
    if details:
        parts.append(scrub_details(details))
    return "".join(part + "\n" for part in parts)


def cut_to_tokens(text: str, tokenizer, budget: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= budget else tokenizer.decode(ids[:budget]).strip()


def curate(record: Mapping, tokenizer=None, budget: int = TOKEN_BUDGET, min_chars: int = MIN_CHARS) -> str | None:
    """The product text of one raw record, or None when it has under `min_chars` characters of contents.

    Without a tokenizer the text is cut to budget × 7 characters only; training cuts it to fit again anyway.
    """
    body = contents(record)
    if len(body) < min_chars:
        return None
    title = "" if _missing(record.get("title")) else str(record.get("title"))
    text = f"{scrub(title)}\n{scrub(body[:budget * CHARS_PER_TOKEN])}".strip()
    return cut_to_tokens(text, tokenizer, budget) if tokenizer is not None else text
