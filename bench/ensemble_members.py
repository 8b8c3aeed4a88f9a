"""What else could the ensemble stack, and on which rows should it be fitted? A trained run's price head, the TF-IDF
ridge and two nearest-neighbour regressions, stacked on the run's validation rows (as the product does) or out of
fold on its training rows, priced on the quality benchmark's 200 held-out rows and on the run's own held-out rows
(issue #16).

    .venv/bin/python bench/ensemble_members.py --run runs/NAME [--data ../shared/data/appliances_2000.jsonl]

RUN is a run trained by `bench/quality.py` (its training file is the benchmark split's 1,800 rows, so its own
held-out rows are not among the benchmark's 200). Every member is fitted on the run's training rows only: the price
head (the product's read-out, refitted here on all of them), the product's TF-IDF ridge, a 10-nearest-neighbour
regression on the TF-IDF vectors (cosine, distance-weighted) and one on the head's standardized states. A stack is
a linear regression on the members' log prices, fitted either on the validation rows or on 5-fold out-of-fold
predictions of the training rows; neither held-out set chooses anything. Prints one table per held-out set, each
row's $ error as a ratio of the TF-IDF ridge's; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality import SHARED, split_files  # noqa: E402
from trainer.baselines import fit_text_baseline, neighbours_estimator  # noqa: E402
from trainer.data import load_products  # noqa: E402
from trainer.evaluate import last_states, price_metrics  # noqa: E402
from trainer.head import head_estimator  # noqa: E402
from trainer.inference import Predictor  # noqa: E402

STACKS = (("head", "tfidf ridge"), ("head", "tfidf ridge", "tfidf neighbours"),
          ("head", "tfidf ridge", "tfidf neighbours", "state neighbours"))


def main() -> None:
    import warnings

    import numpy as np
    from sklearn.base import clone
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=SHARED)
    args = parser.parse_args()

    _, bench_file = split_files(args.data, Path(tempfile.mkdtemp(prefix="pricetune-members-")))
    predictor = Predictor(args.run)
    run = predictor.run
    sets = {"train": run.split(), "validation": run.split("validation"), "run held-out": run.split("test"),
            "benchmark held-out": load_products(bench_file)[0]}
    t0 = time.time()
    states = {k: last_states(predictor.model, predictor.tokenizer, [p.text for p in v],
                             max_prompt_tokens=predictor.max_prompt_tokens, question=predictor.config.asked())
              for k, v in sets.items()}
    print(f"run {run.name}: " + ", ".join(f"{len(v)} {k}" for k, v in sets.items())
          + f" rows; their tuned states in {time.time() - t0:.0f} s", flush=True)
    texts = {k: [p.text for p in v] for k, v in sets.items()}
    y = np.log1p([p.price for p in sets["train"]])

    neighbours = neighbours_estimator()
    ridge = fit_text_baseline(sets["train"])
    members = {  # name → (model, its inputs per set)
        "head": (head_estimator(), states),
        "tfidf ridge": (ridge, texts),
        "tfidf neighbours": (make_pipeline(clone(ridge[0]), clone(neighbours)), texts),  # the baseline's TF-IDF
        "state neighbours": (make_pipeline(StandardScaler(), clone(neighbours)), states),
    }
    warnings.filterwarnings("ignore")  # RidgeCV's smallest alphas on 576 standardized features
    folds = KFold(5, shuffle=True, random_state=0)
    logs = {}  # member → set → log prices; "oof" is the training rows out of fold
    for name, (model, inputs) in members.items():
        oof = cross_val_predict(clone(model), inputs["train"], y, cv=folds)
        model.fit(inputs["train"], y)
        logs[name] = {"oof": oof, **{k: model.predict(inputs[k]) for k in sets if k != "train"}}

    rows = {k: {} for k in ("validation", "run held-out", "benchmark held-out")}
    for name in members:
        for k in rows:
            rows[k][name] = logs[name][k]
    fits = []
    for members_used in STACKS:
        for on, target in (("validation", np.log1p([p.price for p in sets["validation"]])), ("oof", y)):
            stack = LinearRegression().fit(np.column_stack([logs[m][on] for m in members_used]), target)
            label = f"stack on {'validation' if on == 'validation' else 'training, out of fold'}: " + " + ".join(
                members_used)
            fits.append(f"{label}: " + " + ".join(f"{c:.2f}·{m}" for c, m in zip(stack.coef_, members_used))
                        + f" {stack.intercept_:+.2f}")
            for k in ("run held-out", "benchmark held-out"):
                rows[k][label] = stack.predict(np.column_stack([logs[m][k] for m in members_used]))
    print("\n".join(fits))

    for k, preds in rows.items():
        truths = [p.price for p in sets[k]]
        metrics = {name: price_metrics([float(v) for v in np.clip(np.expm1(p), 0.0, None)], truths)
                   for name, p in preds.items()}
        strong = metrics["tfidf ridge"]["error"]
        print(f"\non the {len(truths)} {k} rows")
        print(f"{'':<82}{'error $':>9}{'RMSLE':>8}{'hits %':>8}{'r²':>7}{'× ridge':>9}")
        for name, m in metrics.items():
            print(f"{name:<82}{m['error']:>9.2f}{m['rmsle']:>8.3f}{100 * m['hits']:>8.1f}{m['r2']:>7.3f}"
                  f"{m['error'] / strong:>9.2f}")


if __name__ == "__main__":
    main()
