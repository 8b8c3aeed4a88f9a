"""The digit beam: a small beam search over "number tokens" (tokens that decode to digits only) gives each text's
complete integer prices with their probabilities, renormalised over the candidates kept; a point estimate reads one
price from them. It works for tokenizers with one token per digit (SmolLM2: "1","2","3") and one token per number
(Llama 3: "123").

The expected value is the one point estimate kept: the median and the mean in log price never beat it in a measured
run (docs/benchmarks.md). A beam of 8 is a truncated, imperfectly calibrated distribution, so a new estimate earns its
place on a run's validation rows, never in theory.
"""

from __future__ import annotations

import inspect
import math
import re
import weakref
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from ..data import COURSE_QUESTION, encode_prompt
from . import DISTRIBUTION_METHODS
from .prompts import EvalMode, Prediction, device_of, left_padded, pad_id


def expected_value(candidates: list[tuple[float, float]]) -> float:
    """The probability-weighted mean of the candidates' prices."""
    return sum(price * p for price, p in candidates) / sum(p for _, p in candidates)


POINT_ESTIMATES = {"expected": expected_value}
"""Each distribution method's reading of the (price, probability) candidates, by its registry name."""

def point_estimate(candidates: list[tuple[float, float]], method: str) -> float | None:
    """One price from (price, probability) candidates by `method` (one of DISTRIBUTION_METHODS); None without any."""
    if method not in POINT_ESTIMATES:
        raise ValueError(f"unknown point estimate {method!r}; one of {', '.join(POINT_ESTIMATES)}")
    if not candidates or sum(p for _, p in candidates) <= 0:
        return None
    return POINT_ESTIMATES[method](candidates)


_DIGITS = re.compile(r"[0-9]+")

_number_token_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def number_tokens(tokenizer) -> dict[int, str]:
    """Token id → digit string for every token that decodes to ASCII digits only ("7"; "123" in Llama 3)."""
    try:
        return _number_token_cache[tokenizer]
    except (KeyError, TypeError):
        pass
    ids = list(range(len(tokenizer)))
    decoded = tokenizer.batch_decode([[i] for i in ids]) if hasattr(tokenizer, "batch_decode") else \
        [tokenizer.decode([i]) for i in ids]
    table = {i: s for i, s in zip(ids, decoded) if _DIGITS.fullmatch(s)}
    try:
        _number_token_cache[tokenizer] = table
    except TypeError:  # not weak-referenceable: just recompute next time
        pass
    return table


def _cache_kwarg(model) -> str:
    """The forward() keyword that takes the KV cache: "cache" in recent transformers, "past_key_values" before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


@dataclass
class _Beam:
    item: int  # which text
    digits: str  # digits so far
    logprob: float  # log P(prompt → these digit tokens)
    row: int  # row of the KV cache / logits this beam's next-token distribution is in


def _candidates(model, tokenizer, texts: list[str], *, beam: int, max_digits: int,
                max_prompt_tokens: int, question: str) -> list[list[tuple[float, float]]]:
    """For each text, up to `beam` (integer price, probability) candidates, renormalised, most likely first.

    One batched forward pass per beam step over all (items × beams) rows, last position only, reusing the
    prompt's KV cache (reordered to the surviving beams).
    """

    if beam < 1 or max_digits < 1:
        raise ValueError("beam and max_digits must be at least 1")
    table = number_tokens(tokenizer)
    results: list[list[tuple[float, float]]] = [[] for _ in texts]
    if not table or not texts:
        return results
    device = device_of(model)
    token_ids = torch.tensor(sorted(table), dtype=torch.long, device=device)
    token_digits = [table[i] for i in token_ids.tolist()]
    token_lengths = torch.tensor([len(s) for s in token_digits], dtype=torch.long, device=device)

    prompts = [encode_prompt(tokenizer, t, max_prompt_tokens, question) for t in texts]
    ids, mask = left_padded(prompts, pad_id(tokenizer), device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config) if _accepts_config(DynamicCache) else DynamicCache()
    cache_kw = _cache_kwarg(model)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                **{cache_kw: cache})
    next_position = mask.sum(-1)  # per row: position of the next token
    vocab = out.logits.shape[-1]
    keep = (token_ids < vocab).tolist()
    token_digits = [d for d, k in zip(token_digits, keep) if k]
    token_ids, token_lengths = token_ids[token_ids < vocab], token_lengths[token_ids < vocab]
    is_number = torch.zeros(vocab, dtype=torch.bool, device=device)
    is_number[token_ids] = True
    finished: list[dict[str, float]] = [dict() for _ in texts]  # item → digits → logprob
    active = [_Beam(i, "", 0.0, i) for i in range(len(texts))]

    while active:
        logprobs = out.logits[:, -1, :].float().log_softmax(-1)
        stop_lp = logprobs.masked_fill(is_number, -math.inf).logsumexp(-1).tolist()  # a non-digit token next
        number_lp = logprobs[:, token_ids]

        # A beam may stop here (if it has digits) or grow by one number token within max_digits.
        extensions: dict[int, list[tuple[float, str, int, int]]] = {}
        for b in active:
            if b.digits:
                lp = b.logprob + stop_lp[b.row]
                finished[b.item][b.digits] = _logaddexp(finished[b.item].get(b.digits, -math.inf), lp)
            room = max_digits - len(b.digits)
            scores = number_lp[b.row].masked_fill(token_lengths > room, -math.inf) + b.logprob
            k = min(beam, scores.numel())
            top_lp, top_idx = scores.topk(k)
            for lp, idx in zip(top_lp.tolist(), top_idx.tolist()):
                if lp > -math.inf:
                    extensions.setdefault(b.item, []).append((lp, b.digits + token_digits[idx], idx, b.row))

        new_active: list[_Beam] = []
        new_tokens: list[int] = []
        parents: list[int] = []
        for item, options in extensions.items():
            options.sort(key=lambda o: o[0], reverse=True)
            done = sorted(finished[item].values(), reverse=True)
            floor = done[beam - 1] if len(done) >= beam else -math.inf
            for lp, digits, idx, parent in options[:beam]:
                if lp <= floor:  # no continuation of it can beat `beam` prices already complete
                    break
                if len(digits) >= max_digits:  # full: complete with all its probability
                    finished[item][digits] = _logaddexp(finished[item].get(digits, -math.inf), lp)
                    continue
                new_active.append(_Beam(item, digits, lp, len(parents)))
                new_tokens.append(int(token_ids[idx]))
                parents.append(parent)
        active = new_active
        if not active:
            break
        parent_idx = torch.tensor(parents, dtype=torch.long, device=device)
        cache.reorder_cache(parent_idx)
        mask = torch.cat([mask.index_select(0, parent_idx), mask.new_ones((len(parents), 1))], dim=-1)
        positions = next_position.index_select(0, parent_idx)
        next_position = positions + 1
        out = model(input_ids=torch.tensor(new_tokens, dtype=torch.long, device=device)[:, None],
                    attention_mask=mask, position_ids=positions[:, None], use_cache=True, logits_to_keep=1,
                    **{cache_kw: cache})

    for item, complete in enumerate(finished):
        merged: dict[int, float] = {}
        for digits, lp in complete.items():  # "05" and "5" are the same price
            merged[int(digits)] = _logaddexp(merged.get(int(digits), -math.inf), lp)
        kept = sorted(merged.items(), key=lambda kv: kv[1], reverse=True)[:beam]
        if not kept:
            continue
        top = kept[0][1]
        # Prices a billion times less likely than the best change nothing but clutter the chart.
        kept = [(price, lp) for price, lp in kept if lp - top > _NEGLIGIBLE]
        weights = [math.exp(lp - top) for _, lp in kept]
        total = sum(weights)
        results[item] = [(float(price), w / total) for (price, _), w in zip(kept, weights)]
    return results


_NEGLIGIBLE = math.log(1e-9)


def _accepts_config(cls) -> bool:
    try:
        return "config" in inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


def _describe(candidates: list[tuple[float, float]], shown: int = 3) -> str:
    if not candidates:
        return "no number tokens"
    return ", ".join(f"${price:.0f} ({100 * p:.0f}%)" for price, p in candidates[:shown])


def price_distributions(model, tokenizer, texts: list[str], *, batch_size: int = 16, max_prompt_tokens: int = 256,
                        beam: int = 8, max_digits: int = 4,
                        question: str = COURSE_QUESTION) -> list[list[tuple[float, float]]]:
    """Each text's (candidate price, probability) pairs from a small beam search over digits, most likely first."""
    # Batches of similar lengths: a left-padded prompt costs its batch's longest, and the beam copies the padding too.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    results: list[list[tuple[float, float]]] = [[] for _ in texts]
    with EvalMode(model), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            found = _candidates(model, tokenizer, [texts[i] for i in rows], beam=beam, max_digits=max_digits,
                                max_prompt_tokens=max_prompt_tokens, question=question)
            for i, candidates in zip(rows, found):
                results[i] = candidates
    return results


def predict(model, tokenizer, texts: list[str], methods=DISTRIBUTION_METHODS, *, head=None,
            **beam_args) -> dict[str, list[Prediction]]:
    """Each of `methods` (DISTRIBUTION_METHODS) for every text, from one beam search."""
    distributions = price_distributions(model, tokenizer, texts, **beam_args)
    return {method: [Prediction(point_estimate(c, method), method, _describe(c), tuple(c)) for c in distributions]
            for method in methods}


def predict_expected(model, tokenizer, texts: list[str], **beam_args) -> list[Prediction]:
    """Expected-value price: the probability-weighted average of the integer prices a small beam search finds."""
    return predict(model, tokenizer, texts, ("expected",), **beam_args)["expected"]


def price_distribution(model, tokenizer, text: str, *, beam: int = 8, max_digits: int = 4,
                       max_prompt_tokens: int = 256, question: str = COURSE_QUESTION) -> list[tuple[float, float]]:
    """(candidate price, probability) pairs for one text, most likely first; probabilities sum to 1."""
    with EvalMode(model), torch.inference_mode():
        return _candidates(model, tokenizer, [text], beam=beam, max_digits=max_digits,
                           max_prompt_tokens=max_prompt_tokens, question=question)[0]
