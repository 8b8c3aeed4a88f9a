"""The course prompt around a product text, its price completion, tokenization, and the sequence length."""

from __future__ import annotations

import math

COURSE_QUESTION = "What does this cost to the nearest dollar?"
"""The question of the course's current data (items_prompts_*, late 2025): the default for data that asks none."""
COURSE_2024_QUESTION = "How much does this cost to the nearest dollar?"
"""The question of the course's first version (Llama 3.1 8B): what a run recorded without a question asked."""
QUESTIONS = (COURSE_QUESTION, COURSE_2024_QUESTION)
PRICE_PREFIX = "Price is $"
PROMPT_TAIL = f"\n\n{PRICE_PREFIX}"
IGNORE_INDEX = -100  # label value the cross-entropy loss skips


def prompt_head(question: str) -> str:
    return f"{question}\n\n"


def build_prompt(text: str, question: str = COURSE_QUESTION) -> str:
    return f"{prompt_head(question)}{text}{PROMPT_TAIL}"


def completion(price: float) -> str:
    return f"{round(price)}.00"


def prompt_pieces(tokenizer, question: str = COURSE_QUESTION) -> tuple[list[int], list[int]]:
    """Token ids of the prompt before the product text (with the tokenizer's special tokens) and after it."""
    return (tokenizer(prompt_head(question), add_special_tokens=True)["input_ids"],
            tokenizer(PROMPT_TAIL, add_special_tokens=False)["input_ids"])


def encode_prompt(tokenizer, text: str, max_prompt_tokens: int, question: str = COURSE_QUESTION) -> list[int]:
    """Token ids of the course prompt around `text`, the text cut so the whole prompt fits max_prompt_tokens."""
    head, tail = prompt_pieces(tokenizer, question)
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    room = max_prompt_tokens - len(head) - len(tail)
    if room < 1:
        raise ValueError(f"max length {max_prompt_tokens} leaves no room for the product text "
                         f"(the prompt itself takes {len(head) + len(tail)} tokens)")
    return head + body[:room] + tail


def encode_completion(tokenizer, price: float) -> list[int]:
    return tokenizer(completion(price), add_special_tokens=False)["input_ids"]


def tokenize_example(tokenizer, text: str, price: float, max_length: int, question: str = COURSE_QUESTION) -> dict:
    """input_ids / attention_mask / labels for one product: loss only on the price tokens."""
    answer = encode_completion(tokenizer, price)
    prompt = encode_prompt(tokenizer, text, max_length - len(answer), question)
    return {
        "input_ids": prompt + answer,
        "attention_mask": [1] * (len(prompt) + len(answer)),
        "labels": [IGNORE_INDEX] * len(prompt) + answer,
    }


def _example_lengths(tokenizer, products, question: str) -> tuple[list[int], int]:
    """Full example length (prompt + price) of each product, and the least length that leaves one text token."""
    # Same pieces tokenize_example joins (head + body + tail + answer), but batched: one call for all texts.
    head, tail = (len(ids) for ids in prompt_pieces(tokenizer, question))
    bodies = tokenizer([p.text for p in products], add_special_tokens=False)["input_ids"]
    answers = tokenizer([completion(p.price) for p in products], add_special_tokens=False)["input_ids"]
    lengths = [head + len(body) + tail + len(answer) for body, answer in zip(bodies, answers)]
    return lengths, head + tail + 1 + max(len(answer) for answer in answers)


def example_lengths(tokenizer, products, question: str = COURSE_QUESTION) -> list[int]:
    """Tokens of each product's full training example (course prompt + price), before any cut."""
    products = list(products)
    return _example_lengths(tokenizer, products, question)[0] if products else []


def fit_max_length(tokenizer, products, cap: int = 512, quantile: float = 0.95, question: str = COURSE_QUESTION) -> int:
    """Max sequence length covering `quantile` of the full examples (prompt + price), at most `cap`."""
    products = list(products)
    if not products:
        raise ValueError("no products to size the sequence length from")
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile {quantile} must be in (0, 1]")
    lengths, floor = _example_lengths(tokenizer, products, question)
    lengths = sorted(lengths)
    needed = lengths[max(math.ceil(quantile * len(lengths)) - 1, 0)]  # nearest-rank quantile
    if cap < floor:
        raise ValueError(f"cap {cap} is too small: the prompt and price alone take {floor - 1} tokens")
    return max(min(needed, cap), floor)
