"""The types every data module shares: a usable product, and the errors a person can act on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Product:
    """One usable row: the product text (without the course prompt) and its price in dollars."""

    text: str
    price: float
    category: str = field(default="", compare=False)
    """The data's own category of the product (Item records have one), for errors by category; empty: none."""
    split: str = field(default="", compare=False)
    """The data's own split the row came from ("train", "validation", "test"); empty: the data has none."""

    @property
    def id(self) -> str:
        """A stable id of the product's text (the first 12 hex digits of its SHA-1), to name a row without its text."""
        return hashlib.sha1(self.text.encode("utf-8")).hexdigest()[:12]


class DataError(ValueError):
    """Uploaded data that cannot be used, with a message a person can act on (file, line, column)."""

    def __init__(self, message: str, *, report=None):
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
