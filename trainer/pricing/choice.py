"""Which method a run prices by: every method scored on the run's validation rows (price_choice.json), `auto`
resolved to the best, the price head fitted on demand; the progress and cancel of the passes that takes."""

from __future__ import annotations

import dataclasses
import json
import threading
from dataclasses import dataclass
from typing import Callable

from ..baselines import TEXT_BASELINE, TEXT_NEIGHBOURS, text_prices
from ..data import DataError
from ..runs import RunFolder, write_atomic
from . import AUTO, CHOICES, DISTRIBUTION_METHODS, ENSEMBLE, METHODS, PASSES, STATE_METHODS
from ..metrics import price_metrics
from .stack import MEMBER_NAMES, ensemble_members, fit_stack, out_of_fold, stacked_all

BATCH = 16


@dataclass
class PriceChoice:
    """price_choice.json: every price method scored on a run's validation rows, the best by $ error, and the ensemble
    fitted there; measured once per adapter step."""

    step: int | None
    """The adapter's step it was measured for."""
    rows: int
    """How many validation rows were priced."""
    row_ids: list[str]
    """Their ids: the held-out rows are never among them."""
    methods: dict[str, dict]
    """Each of METHODS: its metrics (metrics.price_metrics) on these rows."""
    best_method: str
    """The lowest $ error of METHODS: what `auto` prices by."""
    ensemble_stack: dict
    """The ensemble's fit: {"members": name → weight, "intercept": …} in log(1+price) (stack.fit_stack)."""
    ensemble: dict
    """The ensemble's metrics on these rows (fitted on them: optimistic)."""
    ensemble_out_of_fold: dict | None
    """The ensemble's metrics on these rows, each priced by a fit on the other folds (stack.out_of_fold): comparable
    to the methods'; None when the rows are too few to fold."""
    headline: str
    """What `auto` prices by: the lowest $ error of METHODS and the ensemble out of fold (a single method on a tie)."""
    tfidf_ridge: dict
    """The TF-IDF ridge's metrics on these rows."""
    tfidf_neighbours: dict
    """The TF-IDF nearest neighbours' metrics on these rows."""
    truths: list[float]
    """The rows' true prices, which the ranges are calibrated against."""
    candidates: list[list[list[float]]]
    """Each row's beam candidates, [[price, probability], …]: the ranges' calibration."""

    @classmethod
    def load(cls, run: RunFolder) -> "PriceChoice | None":
        """The run's choice; None when not measured, unreadable, or from before a field, a method or a retired one
        (measured again)."""
        try:
            values = json.loads(run.choice_file.read_text())
            choice = cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})
        except (OSError, ValueError, KeyError, TypeError):
            return None
        fine = (set(METHODS) <= set(choice.methods) and choice.best_method in METHODS
                and choice.headline in (*METHODS, ENSEMBLE)
                and set(choice.ensemble_stack.get("members", {})) <= {*METHODS, TEXT_BASELINE, TEXT_NEIGHBOURS})
        return choice if fine else None

    def save(self, run: RunFolder) -> None:
        write_atomic(run.choice_file, json.dumps(dataclasses.asdict(self)))

    def ensemble_methods(self) -> tuple[str, ...]:
        """The fine-tuned model's methods the ensemble needs prices by."""
        return tuple(m for m in self.ensemble_stack["members"] if m in METHODS)

    def ensemble_prices(self, run: RunFolder, model_prices: dict[str, list], texts: list[str]) -> list[float]:
        """The ensemble's prices of `texts`, given the fine-tuned model's prices by (at least) ensemble_methods()."""
        return stacked_all(self.ensemble_stack, {**model_prices, **text_prices(run, texts)}, len(texts))

    def headline_reason(self) -> str:
        """Why `auto` prices by the headline, in words."""
        why = f"the lowest $ error on {self.rows} validation rows"
        return why + (", the ensemble's measured out of fold" if self.headline == ENSEMBLE else "")

    def ensemble_reason(self) -> str:
        """The ensemble's formula in words, its members by the names every table gives them."""
        s = self.ensemble_stack
        terms = " ".join(f"{'+' if w >= 0 else '−'} {abs(w):.2f} × [{MEMBER_NAMES[m]}]"
                         for m, w in s["members"].items()).removeprefix("+ ")
        return (f"log(1+price) = {terms} {'+' if s['intercept'] >= 0 else '−'} {abs(s['intercept']):.2f}, each "
                f"[member] its log(1+price): a linear regression fitted on {self.rows} validation rows")


class Cancelled(Exception):
    """The user cancelled a running evaluation."""

class Progress:
    """Items priced out of all the passes of an evaluation, reported with what is being priced; honours Cancel."""

    def __init__(self, total: int, report: Callable[[int, int, str], None] | None, cancel: threading.Event | None):
        self.total, self.done, self.report, self.cancel = max(total, 1), 0, report, cancel

    def check(self):
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("evaluation cancelled")

    def add(self, count: int, what: str):
        self.done += count
        if self.report:
            self.report(min(self.done, self.total), self.total, what)


def ready_head(predictor, progress: Progress) -> None:
    """The run's price head fitted now if it has none (minutes: one forward pass per training row it is fitted on),
    reported and cancellable through `progress`; its rows counted in progress.total by the caller
    (predictor.head_rows_to_fit())."""
    if predictor.head is not None:
        return
    reported = 0

    def report(done: int, total: int) -> None:
        nonlocal reported
        progress.add(done - reported, f"fitting the price head: {done} of {total} training rows")
        reported = done
        progress.check()

    predictor.ensure_head(report)


def price_all(predictor, texts: list[str], progress: Progress, where: str, base: bool = True) -> dict[str, list]:
    """Every method's prices of the fine-tuned model, its distributions ("candidates"), and (with `base`) the base
    model's greedy prices, in batches (PASSES + 1 passes), after the head is fitted if the run has none."""
    ready_head(predictor, progress)
    guesses: dict[str, list] = {m: [] for m in (*METHODS, "candidates", *(["base"] if base else []))}
    for start in range(0, len(texts), BATCH):
        progress.check()
        batch = texts[start:start + BATCH]
        for method, preds in predictor.predict_methods(batch, METHODS).items():
            guesses[method] += [p.price for p in preds]
            if method == DISTRIBUTION_METHODS[0]:
                guesses["candidates"] += [list(p.candidates) for p in preds]
        done = min(start + BATCH, len(texts))
        progress.add(PASSES * len(batch), f"{where}: fine-tuned model, {done} of {len(texts)}")
        if not base:
            continue
        progress.check()
        guesses["base"] += [p.price for p in predictor.predict(batch, base=True, method="greedy")]
        progress.add(len(batch), f"{where}: base model, {min(start + BATCH, len(texts))} of {len(texts)}")
    return guesses


def price_choice(run: RunFolder, predictor=None, progress: Progress | None = None) -> PriceChoice | None:
    """Every price method scored on the run's validation rows, the best by $ error, and the ensemble's weight fitted
    there: price_choice.json, measured once per adapter step with the run's `predictor` (inference.Predictor; without
    one: only if it already was). None for a run without validation rows.

    Only validation rows are priced here (their ids are recorded): the held-out rows never choose anything.
    """

    validation = run.split("validation")
    if not validation:
        return None
    step = run.status().get("step")
    cached = PriceChoice.load(run)
    if cached and cached.step == step and cached.rows == len(validation):
        return cached
    if predictor is None:
        return None
    progress = progress or Progress(PASSES * len(validation) + predictor.head_rows_to_fit(), None, None)
    texts, truths = [p.text for p in validation], [p.price for p in validation]
    guesses = price_all(predictor, texts, progress, f"choosing the price method on {len(texts)} validation rows",
                         base=False)
    guesses.update(text_prices(run, texts))
    scores = {m: price_metrics(guesses[m], truths) for m in METHODS}
    best = min(METHODS, key=lambda m: (scores[m]["error"], METHODS.index(m)))
    members = {m: guesses[m] for m in ensemble_members(best)}
    stack = fit_stack(members, truths)
    folded = out_of_fold(members, truths)
    folded = None if folded is None else price_metrics(folded, truths)
    # The ensemble's own fit on these rows flatters it; only its out-of-fold error may compete with the methods'.
    headline = ENSEMBLE if folded and folded["error"] < scores[best]["error"] else best
    choice = PriceChoice(step=step, rows=len(validation), row_ids=[p.id for p in validation], methods=scores,
                         best_method=best, ensemble_stack=stack,
                         ensemble=price_metrics(stacked_all(stack, guesses, len(texts)), truths),
                         ensemble_out_of_fold=folded, headline=headline,
                         tfidf_ridge=price_metrics(guesses[TEXT_BASELINE], truths),
                         tfidf_neighbours=price_metrics(guesses[TEXT_NEIGHBOURS], truths), truths=truths,
                         candidates=[[[round(v, 2), round(p, 5)] for v, p in c] for c in guesses["candidates"]])
    choice.save(run)
    return choice


def resolve_method(method: str, choice: PriceChoice | None, probe_method: str) -> tuple[str, str]:
    """(method, why) for a method asked for: `auto` is the choice's headline, or without validation rows the run's
    `probe_method`; the ensemble's why ends with its formula."""
    if method not in CHOICES:
        raise ValueError(f"unknown price method {method!r}; one of {', '.join(CHOICES)}")
    if method == AUTO and not choice:
        return probe_method, "the run's probe method (it has no validation rows)"
    used, why = (choice.headline, choice.headline_reason()) if method == AUTO else (method, "as asked")
    if used == ENSEMBLE:
        if not choice:
            raise DataError("the run has no validation rows to fit the ensemble on")
        why += f"; {choice.ensemble_reason()}"
    return used, why


def method_choice(run: RunFolder, predictor, method: str, progress) -> PriceChoice | None:
    """The run's price choice: measured now if `method` needs it (auto, ensemble) and it is not yet; resolve_method
    refuses the ensemble without one."""
    if method not in (AUTO, ENSEMBLE):
        choice = price_choice(run)
    else:
        to_fit = 0 if price_choice(run) else predictor.head_rows_to_fit()
        choice = price_choice(run, predictor, Progress(PASSES * len(run.split("validation")) + to_fit, progress, None))
    # Only the head asked for, needed by the ensemble or chosen by auto, is worth minutes of fitting here.
    used = choice.headline if method == AUTO and choice else method
    if used in STATE_METHODS or (used == ENSEMBLE and choice):
        ready_head(predictor, Progress(predictor.head_rows_to_fit(), progress, None))
    return choice
