"""Greedy decoding: generate a few tokens after "Price is $" and parse the first number (what the course's
fine-tuned model does)."""

from __future__ import annotations

import re

import torch

from ..data import COURSE_QUESTION, encode_prompt
from .prompts import EvalMode, Prediction, device_of, left_padded, pad_id

# A number with thousands separators ("1,299.50"), a plain one ("45", "12.5") or a bare fraction (".5").
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)")


def parse_price_output(text: str) -> float | None:
    """The first number in a model's output ("123.00", " 45", "1,299.50", "$12"); None when there is none."""
    if not text:
        return None
    match = _NUMBER.search(text)
    if match is None:
        return None
    return float(match.group(0).replace(",", ""))


def predict_greedy(model, tokenizer, texts: list[str], *, max_new_tokens: int = 6, batch_size: int = 16,
                   max_prompt_tokens: int = 256, question: str = COURSE_QUESTION) -> list[Prediction]:
    """Greedy decoding of a few tokens after "Price is $", batched and left-padded; the first number is the price."""
    device = device_of(model)
    pad = pad_id(tokenizer)
    predictions: list[Prediction] = []
    with EvalMode(model), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            prompts = [encode_prompt(tokenizer, t, max_prompt_tokens, question)
                       for t in texts[start:start + batch_size]]
            ids, mask = left_padded(prompts, pad, device)
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad, use_cache=True, temperature=None, top_p=None, top_k=None)
            for row in out[:, ids.shape[1]:].tolist():
                decoded = tokenizer.decode(row, skip_special_tokens=True)
                predictions.append(Prediction(parse_price_output(decoded), "greedy", decoded))
    return predictions


def predict(model, tokenizer, texts: list[str], methods=("greedy",), *, head=None, **prompt) -> dict[str, list]:
    """The decoding methods' predictions (greedy is the one), by name."""
    return {"greedy": predict_greedy(model, tokenizer, texts, **prompt)}
