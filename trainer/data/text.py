"""Product text: unwrapping text already in the course prompt, and cleaning invisible or control characters."""

from __future__ import annotations

import re
import unicodedata

from .prompt import PROMPT_TAIL, QUESTIONS

# Either of the course's questions, with the price after "Price is $" or without (a prompt/completion record).
_COURSE_PROMPT = re.compile(
    r"\s*(?P<question>" + "|".join(map(re.escape, QUESTIONS)) + r")\s*\n(?P<body>.*)" + re.escape(PROMPT_TAIL.strip())
    + r"\s*(?P<answer>[0-9][0-9,]*(?:\.[0-9]+)?)?\s*", re.DOTALL)

# Bidi overrides/isolates can make a text display differently from what the model reads; zero-width
# characters and stray BOMs are invisible noise. Tabs become spaces so words on either side stay apart.
_INVISIBLE = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
                                    "\u200e\u200f\u061c\u200b\ufeff"))
_INVISIBLE[ord("\t")] = " "
# Unicode's Cc category is exactly the C0 and C1 controls; newlines are kept.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _unify_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def strip_course_prompt(text: str) -> tuple[str, float | None]:
    """(product text, embedded price or None): unwraps text already in the course prompt so it is never wrapped twice."""
    body, price, _ = unwrap_course_prompt(text)
    return body, price


def unwrap_course_prompt(text: str) -> tuple[str, float | None, str | None]:
    """(product text, embedded price or None, the course question it asked or None) of a text, unwrapped."""
    text = _unify_newlines(text)
    match = _COURSE_PROMPT.fullmatch(text)
    if match is None:
        return text.strip(), None, None
    answer = match["answer"]
    return match["body"].strip(), float(answer.replace(",", "")) if answer else None, match["question"]


def clean_text(text: str) -> str:
    """NFC text without control or bidi-override characters, newlines kept, ends trimmed."""
    text = unicodedata.normalize("NFC", _unify_newlines(text)).translate(_INVISIBLE)
    return _CONTROL.sub("", text).strip()
