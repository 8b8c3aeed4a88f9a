"""The price methods: one table of every way a run prices a text, and one module per kind of method.

Each kind reads its prices from one pass of the tuned model over a row, shared by every method of that kind:

- distribution.py: a small beam over digit tokens gives (price, probability) candidates; a point estimate reads one
  price from them;
- decoding.py: greedy generation, the first number parsed;
- hidden_state.py: the last hidden state at the prompt's "$", read by a price head fitted after training, or by the
  nearest training rows;
- stack.py: no pass of its own: a ridge in log price over the tuned model's prices and the text baselines'.

A new method is one REGISTRY entry and its reader in its kind's module (a distribution method: an entry in
distribution.POINT_ESTIMATES). choice.py picks a run's method on its validation rows; ranges.py serves
every method. This module imports nothing heavy: the config and the CLI read its names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

DISTRIBUTION, DECODING, HIDDEN_STATE, STACK = "distribution", "decoding", "hidden_state", "stack"
PASS_KINDS = (DISTRIBUTION, DECODING, HIDDEN_STATE)
"""The kinds that read a pass of the tuned model, each its module of this package."""


@dataclass(frozen=True)
class Method:
    """One way a run prices a text."""

    name: str
    """The key the CLI, the API, eval.json and a priced file's `method` column take."""
    label: str
    """Its one name wherever a person reads it: the UI, the CLI's help, the catalog's summary, every table."""
    kind: str
    """Which pass it reads (PASS_KINDS), or STACK."""
    help: str
    """What it does, in a sentence for the Predict tab and the CLI's --help."""
    after_training: bool = False
    """Fitted once training ends, so a probe during training cannot price by it."""


REGISTRY = (
    Method("expected", "expected value", DISTRIBUTION,
           "the probability-weighted mean of the prices a small beam search over digit tokens finds (a beam of 8 is a "
           "truncated distribution: the median and the mean in log price it also gives never priced better)"),
    Method("greedy", "greedy", DECODING,
           "the likeliest digits, decoded (what the course's model does; a digit-by-digit tokenizer collapses them to "
           "round prices)"),
    Method("head", "price head on the last hidden state", HIDDEN_STATE,
           "reads no digits: a ridge regression of log price on the tuned model's last hidden state at the prompt's "
           "end, fitted on training rows once training ends (a run without one gets it fitted when first asked, "
           "minutes on a CPU)", after_training=True),
    Method("neighbours", "nearest training rows by the last hidden state", HIDDEN_STATE,
           "the same states read another way: the prices of the 10 training rows whose states are closest, which "
           "finds a product the catalogue already lists", after_training=True),
    Method("ensemble", "ensemble with the text baselines", STACK,
           "stacks the price head, the nearest training rows, the best method on the validation rows and the text "
           "baselines (TF-IDF ridge and TF-IDF nearest neighbours) by a linear regression in log price fitted on the "
           "validation rows, as the course's week-8 ensemble does", after_training=True),
)
BY_NAME = {m.name: m for m in REGISTRY}
HEAD, NEIGHBOURS, ENSEMBLE = "head", "neighbours", "ensemble"
"""The names other modules read a method by (each a REGISTRY entry)."""
AUTO = "auto"
"""Not a method: the one of METHODS or the ensemble with the lowest $ error on the run's validation rows
(choice.py)."""
AUTO_HELP = ("the method with the lowest $ error on the run's validation rows (rows of the training split it was "
             "not trained on, priced once per adapter: minutes on a CPU); the ensemble, fitted on those rows, "
             "competes by its out-of-fold error (each row priced by a fit on the other rows); the held-out rows "
             "never choose")
RETIRED = {"median": "expected", "log_mean": "expected"}
"""Methods dropped (never better than the expected value in a measured run): an old config or price choice naming
one reads as its replacement."""

METHODS = tuple(m.name for m in REGISTRY if m.kind != STACK)
"""Every way the fine-tuned model alone prices a text."""
DISTRIBUTION_METHODS = tuple(m.name for m in REGISTRY if m.kind == DISTRIBUTION)
STATE_METHODS = tuple(m.name for m in REGISTRY if m.kind == HIDDEN_STATE)
PROBE_METHODS = tuple(m.name for m in REGISTRY if not m.after_training)
"""The methods a probe may price by during training."""
CHOICES = (AUTO, *BY_NAME)
"""What a user may ask a run to price by, in the Predict and Evaluate tabs, the catalog and the CLI."""
METHOD_NAMES = {**{m.name: m.label for m in REGISTRY}, AUTO: "auto: the best on the run's validation rows"}
PASSES = len({BY_NAME[m].kind for m in METHODS})
"""Passes over a row to price it every fine-tuned way: one per kind."""


def predict_methods(model, tokenizer, texts: list[str], methods, *, head=None, batch_size: int = 16,
                    max_prompt_tokens: int = 256, question: str | None = None) -> dict[str, list]:
    """method → predictions (prompts.Prediction) for each of `methods` (of METHODS), each kind's module reading its
    methods from one pass; the hidden-state methods need `head` (a hidden_state.PriceHead)."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown price method(s) {', '.join(sorted(unknown))}; one of {', '.join(METHODS)}")
    prompt = {"batch_size": batch_size, "max_prompt_tokens": max_prompt_tokens,
              **({"question": question} if question is not None else {})}
    out = {}
    for kind in PASS_KINDS:
        wanted = [m for m in methods if BY_NAME[m].kind == kind]
        if wanted:
            out.update(importlib.import_module(f".{kind}", __name__).predict(model, tokenizer, texts, wanted,
                                                                              head=head, **prompt))
    return {m: out[m] for m in methods}


def predict_by(model, tokenizer, texts: list[str], method: str, **kwargs) -> list:
    """Prices by any one of METHODS."""
    return predict_methods(model, tokenizer, texts, (method,), **kwargs)[method]
