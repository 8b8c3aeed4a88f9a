"""Prices from numbers and text: currency signs, thousands separators, decimal commas, missing values."""

from __future__ import annotations

import math
import numbers
import re

from .core import PriceError

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


def looks_decimal_comma(values) -> bool:
    """True when a column writes cents after a comma ("12,50") and never after a dot: a European export."""
    comma = dot = False
    for value in values:
        if isinstance(value, str):
            text = value.strip()
            comma = comma or re.search(r"[0-9],[0-9]{1,2}\D*$", text) is not None
            dot = dot or re.search(r"[0-9]\.[0-9]{1,2}\D*$", text) is not None
    return comma and not dot
