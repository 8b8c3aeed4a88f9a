"""Price prediction (greedy decoding and the digit beam's distribution) and the course "Tester" metrics.

Two ways to read a price out of a causal LM whose prompt ends in "Price is $":

- greedy: generate a few tokens and parse the first number (what the course's fine-tuned model does);
- a distribution: a small beam search over "number tokens" (tokens that decode to digits only), each complete
  integer with its probability, renormalised over the candidates kept; estimates.py reads one price from it
  (expected value, median, mean in log price). It works for tokenizers with
  one token per digit (SmolLM2: "1","2","3") and one token per number (Llama 3: "123").
"""

from __future__ import annotations

import inspect
import math
import re
import weakref
from dataclasses import dataclass

import torch

from .data import COURSE_QUESTION, encode_prompt
from .estimates import DISTRIBUTION_METHODS, HEAD, METHODS, NEIGHBOURS, STATE_METHODS, point_estimate

# ---------------------------------------------------------------------------------------------------------
# Parsing and metrics
# ---------------------------------------------------------------------------------------------------------

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


def _as_guess(guess: float | None) -> float:
    """The value a guess counts as in the metrics: None, negative and non-finite guesses count as 0."""
    if guess is None or not math.isfinite(guess) or guess < 0:
        return 0.0
    return float(guess)


def _unparseable(guess: float | None) -> bool:
    return guess is None or not math.isfinite(guess) or guess < 0


def hit_color(guess: float | None, truth: float) -> str:
    """Course Tester colours: green if error < $40 or < 20% of truth; orange if < $80 or < 40%; else red."""
    error = abs(_as_guess(guess) - truth)
    relative = error / truth if truth > 0 else (0.0 if error == 0 else math.inf)
    if error < 40 or relative < 0.2:
        return "green"
    if error < 80 or relative < 0.4:
        return "orange"
    return "red"


def price_metrics(guesses: list[float | None], truths: list[float]) -> dict:
    """The Tester's metrics: mean absolute $ error, RMSLE, share of green hits, and the current course's mean squared
    error and r², plus the count of unparseable guesses and the count.

    Unparseable guesses (None or negative) count as 0 in every metric. With no rows the metrics are None; r² needs
    two rows.
    """
    from sklearn.metrics import mean_squared_error, r2_score

    if len(guesses) != len(truths):
        raise ValueError(f"{len(guesses)} guesses for {len(truths)} truths")
    count = len(truths)
    unparseable = sum(1 for g in guesses if _unparseable(g))
    if count == 0:
        return {"error": None, "rmsle": None, "hits": None, "mse": None, "r2": None, "unparseable": 0, "count": 0}
    values = [_as_guess(g) for g in guesses]
    error = sum(abs(g - t) for g, t in zip(values, truths)) / count
    squared_log = sum((math.log(max(t, 0.0) + 1) - math.log(g + 1)) ** 2 for g, t in zip(values, truths)) / count
    hits = sum(1 for g, t in zip(values, truths) if hit_color(g, t) == "green") / count
    return {"error": error, "rmsle": math.sqrt(squared_log), "hits": hits,
            "mse": float(mean_squared_error(truths, values)),
            "r2": float(r2_score(truths, values)) if count >= 2 and len(set(truths)) > 1 else None,
            "unparseable": unparseable, "count": count}


def summary_line(metrics: dict) -> str:
    """The Tester title: "Error=$44.95 RMSLE=1.01 Hits=79.5%", then MSE and r² where measured (and the unparseable
    count when there are any)."""
    if not metrics or not metrics.get("count"):
        return "No predictions yet"
    line = f"Error=${metrics['error']:,.2f} RMSLE={metrics['rmsle']:.2f} Hits={100 * metrics['hits']:.1f}%"
    if metrics.get("mse") is not None:
        line += f" MSE={metrics['mse']:,.0f}"
    if metrics.get("r2") is not None:
        line += f" r²={metrics['r2']:.2f}"
    if metrics.get("unparseable"):
        line += f" Unparseable={metrics['unparseable']}"
    return line


# ---------------------------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    price: float | None
    method: str  # one of estimates.METHODS
    text: str  # raw decoded output (greedy) or a short description of the candidates (expected)
    candidates: tuple = ()  # the beam's (price, probability) pairs the point estimate was read from; () for greedy


def _device(model) -> torch.device:
    try:
        return model.get_input_embeddings().weight.device
    except Exception:
        return next(model.parameters()).device


def _left_padded(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    return 0 if pad is None else int(pad)


class _EvalMode:
    """model.eval() for the block, the previous training mode restored after (the model may be mid-training)."""

    def __init__(self, model):
        self.model = model
        self.was_training = model.training

    def __enter__(self):
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was_training)
        return False


def predict_greedy(model, tokenizer, texts: list[str], *, max_new_tokens: int = 6, batch_size: int = 16,
                   max_prompt_tokens: int = 256, question: str = COURSE_QUESTION) -> list[Prediction]:
    """Greedy decoding of a few tokens after "Price is $", batched and left-padded; the first number is the price."""
    device = _device(model)
    pad_id = _pad_id(tokenizer)
    predictions: list[Prediction] = []
    with _EvalMode(model), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            prompts = [encode_prompt(tokenizer, t, max_prompt_tokens, question)
                       for t in texts[start:start + batch_size]]
            ids, mask = _left_padded(prompts, pad_id, device)
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad_id, use_cache=True, temperature=None, top_p=None, top_k=None)
            for row in out[:, ids.shape[1]:].tolist():
                decoded = tokenizer.decode(row, skip_special_tokens=True)
                predictions.append(Prediction(parse_price_output(decoded), "greedy", decoded))
    return predictions


# --- expected value --------------------------------------------------------------------------------------

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
    from transformers import DynamicCache

    if beam < 1 or max_digits < 1:
        raise ValueError("beam and max_digits must be at least 1")
    table = number_tokens(tokenizer)
    results: list[list[tuple[float, float]]] = [[] for _ in texts]
    if not table or not texts:
        return results
    device = _device(model)
    token_ids = torch.tensor(sorted(table), dtype=torch.long, device=device)
    token_digits = [table[i] for i in token_ids.tolist()]
    token_lengths = torch.tensor([len(s) for s in token_digits], dtype=torch.long, device=device)

    prompts = [encode_prompt(tokenizer, t, max_prompt_tokens, question) for t in texts]
    ids, mask = _left_padded(prompts, _pad_id(tokenizer), device)
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
    with _EvalMode(model), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            found = _candidates(model, tokenizer, [texts[i] for i in rows], beam=beam, max_digits=max_digits,
                                max_prompt_tokens=max_prompt_tokens, question=question)
            for i, candidates in zip(rows, found):
                results[i] = candidates
    return results


def predict_estimates(model, tokenizer, texts: list[str], methods=DISTRIBUTION_METHODS,
                      **beam_args) -> dict[str, list[Prediction]]:
    """Each of `methods` (point estimates of DISTRIBUTION_METHODS) for every text, from one beam search."""
    distributions = price_distributions(model, tokenizer, texts, **beam_args)
    return {method: [Prediction(point_estimate(c, method), method, _describe(c), tuple(c)) for c in distributions]
            for method in methods}


def predict_expected(model, tokenizer, texts: list[str], **beam_args) -> list[Prediction]:
    """Expected-value price: the probability-weighted average of the integer prices a small beam search finds."""
    return predict_estimates(model, tokenizer, texts, ("expected",), **beam_args)["expected"]


def last_states(model, tokenizer, texts: list[str], *, batch_size: int = 16, max_prompt_tokens: int = 256,
                question: str = COURSE_QUESTION, report=None, layers: tuple[int | None, ...] | None = None):
    """Each text's last-layer hidden state (after the final norm) at its prompt's last token, "$": a float32 array
    of (texts, hidden size). With `layers`, those decoder layers' outputs there from the same pass, (texts,
    len(layers), hidden size): 1 is the first layer's, None the last after the norm. `report(done, total)` after
    each batch."""
    import numpy as np

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    wanted = (None,) if layers is None else tuple(layers)
    for layer in wanted:
        if layer is not None and not 1 <= layer <= base.config.num_hidden_layers:
            raise ValueError(f"layer {layer}: the model has layers 1 to {base.config.num_hidden_layers}")
    device, pad_id = _device(model), _pad_id(tokenizer)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad least
    states = np.zeros((len(texts), len(wanted), base.config.hidden_size), dtype=np.float32)
    with _EvalMode(model), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            ids, mask = _left_padded([encode_prompt(tokenizer, texts[i], max_prompt_tokens, question) for i in rows],
                                     pad_id, device)
            # Positions from each prompt's first real token, as in training (left padding would shift them).
            out = decoder(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                          use_cache=False, output_hidden_states=wanted != (None,))
            for j, layer in enumerate(wanted):
                hidden = out.last_hidden_state if layer is None else out.hidden_states[layer]
                states[rows, j] = hidden[:, -1, :].float().cpu().numpy()
            if report:
                report(min(start + batch_size, len(texts)), len(texts))
    return states[:, 0] if layers is None else states


def predict_methods(model, tokenizer, texts: list[str], methods, *, batch_size: int = 16,
                    max_prompt_tokens: int = 256, question: str = COURSE_QUESTION,
                    head=None) -> dict[str, list[Prediction]]:
    """method → predictions for each of `methods` (of METHODS): the point estimates share one beam search, greedy
    decodes, and the price head (`head`, a head.PriceHead) and its neighbours read the prompts' last states."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown price method(s) {', '.join(sorted(unknown))}; one of {', '.join(METHODS)}")
    if set(STATE_METHODS) & set(methods) and head is None:
        raise ValueError("the price head or its neighbours were asked for without a fitted head")
    wanted = [m for m in methods if m in DISTRIBUTION_METHODS]
    out = predict_estimates(model, tokenizer, texts, wanted, batch_size=batch_size,
                            max_prompt_tokens=max_prompt_tokens, question=question) if wanted else {}
    if "greedy" in methods:
        out["greedy"] = predict_greedy(model, tokenizer, texts, batch_size=batch_size,
                                       max_prompt_tokens=max_prompt_tokens, question=question)
    if set(STATE_METHODS) & set(methods):
        states = last_states(model, tokenizer, texts, batch_size=batch_size, max_prompt_tokens=max_prompt_tokens,
                             question=question)
        if HEAD in methods:
            out[HEAD] = [Prediction(price, HEAD, f"price head on {head.rows} training rows")
                         for price in head.prices(states)]
        if NEIGHBOURS in methods:
            out[NEIGHBOURS] = [Prediction(price, NEIGHBOURS, f"nearest of {head.rows} training rows by tuned states")
                               for price in head.neighbour_prices(states)]
    return out


def predict_by(model, tokenizer, texts: list[str], method: str, **kwargs) -> list[Prediction]:
    """Prices by any one of METHODS."""
    return predict_methods(model, tokenizer, texts, (method,), **kwargs)[method]


def price_distribution(model, tokenizer, text: str, *, beam: int = 8, max_digits: int = 4,
                       max_prompt_tokens: int = 256, question: str = COURSE_QUESTION) -> list[tuple[float, float]]:
    """(candidate price, probability) pairs for one text, most likely first; probabilities sum to 1."""
    with _EvalMode(model), torch.inference_mode():
        return _candidates(model, tokenizer, [text], beam=beam, max_digits=max_digits,
                           max_prompt_tokens=max_prompt_tokens, question=question)[0]
