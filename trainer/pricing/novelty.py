"""How unlike a run's training rows texts are, and what follows. A text's distance is the mean TF-IDF cosine distance
to its nearest training rows; the run's validation rows (never trained on) show how far its own products lie. A text
further out than nearly all of them, or a file whose rows lie far out far more often than the run's own products
would, is outside what the run learned and what its ranges were calibrated on: its prices come with a note and
without a range."""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import binomtest

from ..baselines import text_distances
from ..runs import RunFolder
from .ranges import conformal_quantile

ROW_LEVEL = 0.99
"""A text is flagged alone when it lies further out than this share of the run's own products would."""
FILE_LEVEL = 0.9
"""A file is flagged as a whole when far more of its rows than 1 − FILE_LEVEL lie further out than this share..."""
FILE_P = 0.001
"""...by a one-sided binomial test at this p-value (one text alone never reaches it)."""


@dataclass(frozen=True)
class Novelty:
    """A run's lines between texts like its training rows and texts unlike them, measured on its validation rows."""

    threshold: float
    """The distance (text_distances) a text must pass to be flagged alone: the validation rows' conformal
    ROW_LEVEL quantile."""
    file_threshold: float
    """The distance whose share of passes decides a whole file: the validation rows' conformal FILE_LEVEL quantile."""
    validation_rows: int
    """How many validation rows both rest on."""

    def level(self, wanted: float = ROW_LEVEL) -> float:
        """The share of new texts from the run's own data that stay within a threshold: `wanted`, or with fewer
        validation rows than it needs, n/(n+1) (the threshold is then the furthest validation row)."""
        return min(wanted, self.validation_rows / (self.validation_rows + 1))

    def judge(self, texts: list[str], run: RunFolder) -> tuple[list[str], str]:
        """Each text's note ("" when it is like the training rows), and a sentence when the texts as a whole are
        unlike them ("" otherwise; every text is then noted)."""
        distances = text_distances(run, texts)
        notes = [f"unlike the training rows (text distance {d:.2f} > {self.threshold:.2f}): a guess, no range"
                 if d > self.threshold else "" for d in distances]
        far, expected = sum(d > self.file_threshold for d in distances), 1 - self.level(FILE_LEVEL)
        p = binomtest(far, len(distances), expected, alternative="greater").pvalue if distances else 1.0
        if p >= FILE_P:
            return notes, ""
        whole = (f"as a whole it is unlike the training rows: {far:,} of its {len(distances):,} rows lie further from "
                 f"them than {100 * (1 - expected):.0f}% of the run's own products do ({100 * expected:.0f}% would by "
                 f"chance; binomial p = {p:.1g}), so every price is a guess and no range is given")
        return [note or "the file is unlike the training rows: a guess, no range" for note in notes], whole

    def rule(self) -> str:
        """What a row's note means, in a sentence."""
        return (f"a text further from its nearest training rows (TF-IDF cosine distance) than "
                f"{100 * self.level():.0f}% of the run's own products would be ({self.threshold:.2f}, measured on "
                f"its {self.validation_rows} validation rows) is outside what the run learned and what its ranges "
                "were calibrated on: its price is a guess and no range is given")


def novelty(run: RunFolder) -> Novelty | None:
    """The run's Novelty, measured on its validation rows; None when it has none."""
    validation = [p.text for p in run.split("validation")]
    if not validation:
        return None
    distances = text_distances(run, validation)
    return Novelty(conformal_quantile(distances, ROW_LEVEL), conformal_quantile(distances, FILE_LEVEL),
                   len(validation))
