"""What else could the ensemble stack? Read-outs of a trained run's hidden states at several layers, the TF-IDF ridge
and two nearest-neighbour regressions, each fitted on the run's training rows, stacked on its validation rows as the
product does, priced on the quality benchmark's 200 held-out rows and on the run's own held-out rows (issue #16).

    .venv/bin/python bench/ensemble_members.py --run runs/NAME [--data ../shared/data/appliances_2000.jsonl]
                                               [--layers 10,20,last] [--rows 1000]

RUN is a run trained by `bench/quality.py` (its training file is the benchmark split's 1,800 rows, so its own
held-out rows are not among the benchmark's 200). The states are read as the product reads them (its prompts, its
pricing precision) from one pass per row at every layer asked for ("last": after the final norm, the product's
head). Members, each fitted on the first --rows training rows (the product's head_rows): a ridge head (the product's
estimator) and a 10-nearest-neighbour regression (standardized states, cosine, distance-weighted) on each layer and
on the concatenation of all of them; the product's TF-IDF ridge and its TF-IDF neighbours, fitted on all the run's
training rows as the product fits them. Stacks (the product's RidgeCV in log price) are fitted on the validation
rows; their validation figure is 5-fold out of fold there, so it is a fair basis for choosing. Neither held-out set
chooses anything. Prints one table per set, each row's $ error as a ratio of the TF-IDF ridge's and of the product's
head; asserts nothing.
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
from trainer.baselines import fit_text_baseline, fit_text_neighbours, neighbours_estimator  # noqa: E402
from trainer.data import load_products  # noqa: E402
from trainer.pricing.stack import STACK_ALPHAS  # noqa: E402
from trainer.pricing.hidden_state import last_states  # noqa: E402
from trainer.metrics import price_metrics  # noqa: E402
from trainer.pricing.hidden_state import head_estimator  # noqa: E402
from trainer.inference import Predictor  # noqa: E402
from trainer.models import inference_precision  # noqa: E402


def layer_list(text: str) -> tuple[int | None, ...]:
    layers = tuple(None if v.strip() == "last" else int(v) for v in text.split(","))
    if None not in layers:  # every ratio is to the product's head, which reads the last layer
        raise argparse.ArgumentTypeError("the layers must include last")
    return layers


def main() -> None:
    import warnings

    import numpy as np
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--layers", type=layer_list, default=(10, 20, None), help="comma-separated; last = final")
    parser.add_argument("--rows", type=int, default=1000, help="training rows the members are fitted on")
    args = parser.parse_args()

    _, bench_file = split_files(args.data, Path(tempfile.mkdtemp(prefix="pricetune-members-")))
    predictor = Predictor(args.run)
    run = predictor.run
    sets = {"train": run.split()[: args.rows], "validation": run.split("validation"), "run held-out": run.split("test"),
            "benchmark held-out": load_products(bench_file)[0]}
    t0 = time.time()
    # Kept beside the run (its adapter's states, for this script only), so a second look costs no forward passes.
    cache = run.path / f"bench-states-{'-'.join(map(str, args.layers))}-{args.rows}.npz"
    if cache.is_file():
        states = dict(np.load(cache))
    else:
        with inference_precision(predictor.model, predictor.bf16):
            states = {k: last_states(predictor.model, predictor.tokenizer, [p.text for p in v], layers=args.layers,
                                     max_prompt_tokens=predictor.max_prompt_tokens, question=predictor.config.asked())
                      for k, v in sets.items()}
        np.savez(cache, **states)
    print(f"run {run.name}: " + ", ".join(f"{len(v)} {k}" for k, v in sets.items())
          + f" rows; their states at layers {args.layers} in {time.time() - t0:.0f} s "
          + f"({'bf16' if predictor.bf16 else 'fp32'})", flush=True)
    texts = {k: [p.text for p in v] for k, v in sets.items()}
    y = {k: np.log1p([p.price for p in v]) for k, v in sets.items()}

    def layer_name(layer):
        return "last" if layer is None else f"L{layer}"

    views = {layer_name(layer): {k: s[:, j] for k, s in states.items()} for j, layer in enumerate(args.layers)}
    if len(views) > 1:
        views["+".join(views)] = {k: s.reshape(len(s), -1) for k, s in states.items()}
    # The text members as the product fits them: on every training row of the run.
    ridge = fit_text_baseline(run.split())
    members = {"tfidf ridge": (ridge, texts), "tfidf neighbours": (fit_text_neighbours(ridge, run.split()), texts)}
    for name, inputs in views.items():
        members[f"head {name}"] = (head_estimator(), inputs)
        members[f"state neighbours {name}"] = (make_pipeline(StandardScaler(), neighbours_estimator()), inputs)
    warnings.filterwarnings("ignore")  # RidgeCV's smallest alphas on standardized features
    logs = {}
    for name, (model, inputs) in members.items():
        if not name.startswith("tfidf"):  # the text members come fitted, as the product's are
            model.fit(inputs["train"], y["train"])
        logs[name] = {k: model.predict(inputs[k]) for k in sets if k != "train"}

    stacks = {"product: head + state neighbours (last) + tfidf ridge + tfidf neighbours":
              ("head last", "state neighbours last", "tfidf ridge", "tfidf neighbours")}
    for name in views:
        if name != "last":
            stacks[f"head + state neighbours ({name}) + tfidf ridge + tfidf neighbours"] = (
                f"head {name}", f"state neighbours {name}", "tfidf ridge", "tfidf neighbours")
    stacks["every head and state neighbours + tfidf ridge + tfidf neighbours"] = tuple(
        m for m in members if m.startswith(("head", "state"))) + ("tfidf ridge", "tfidf neighbours")
    folds = KFold(5, shuffle=True, random_state=0)
    held = ("run held-out", "benchmark held-out")
    rows = {k: {name: logs[name][k] for name in members} for k in ("validation", *held)}
    for label, used in stacks.items():
        features = {k: np.column_stack([logs[m][k] for m in used]) for k in ("validation", *held)}
        stack = RidgeCV(alphas=STACK_ALPHAS).fit(features["validation"], y["validation"])
        print(f"{label}: " + " + ".join(f"{c:.2f}·{m}" for c, m in zip(stack.coef_, used))
              + f" {stack.intercept_:+.2f}", flush=True)
        rows["validation"][label] = cross_val_predict(RidgeCV(alphas=STACK_ALPHAS), features["validation"],
                                                      y["validation"], cv=folds)
        for k in held:
            rows[k][label] = stack.predict(features[k])

    for k, preds in rows.items():
        truths = [p.price for p in sets[k]]
        metrics = {name: price_metrics([float(v) for v in np.clip(np.expm1(p), 0.0, None)], truths)
                   for name, p in preds.items()}
        strong, head = metrics["tfidf ridge"]["error"], metrics["head last"]["error"]
        print(f"\non the {len(truths)} {k} rows" + (" (stacks: 5-fold out of fold)" if k == "validation" else ""))
        print(f"{'':<78}{'error $':>9}{'RMSLE':>8}{'hits %':>8}{'r²':>7}{'× ridge':>9}{'× head':>8}")
        for name, m in metrics.items():
            print(f"{name:<78}{m['error']:>9.2f}{m['rmsle']:>8.3f}{100 * m['hits']:>8.1f}{m['r2']:>7.3f}"
                  f"{m['error'] / strong:>9.2f}{m['error'] / head:>8.2f}")


if __name__ == "__main__":
    main()
