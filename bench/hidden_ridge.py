"""Does the demo model know more about prices than the words do? A ridge regression on the base model's hidden states
(no fine-tuning) against the TF-IDF ridge, alone and stacked, on the quality benchmark's split (issue #16).

    .venv/bin/python bench/hidden_ridge.py [--data ../shared/data/appliances_2000.jsonl] [--max-length 128]

Each product's course prompt (cut to --max-length tokens, as training cuts it) goes through the frozen base model
once; its features are the hidden state of the prompt's last token (the one that predicts the price's first digit)
after layers 10, 20 and 30 and the last layer's mean over the prompt, standardized. A ridge on log(1 + price), its
alpha chosen by 5-fold cross-validation on the training rows, prices the 200 held-out rows; the stack (linear
regression on the two models' log prices) is fitted on 5-fold out-of-fold predictions of the training rows, so the
held-out rows choose nothing. Prints one table with each row's $ error as a ratio of the TF-IDF ridge's; asserts
nothing.
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
from trainer.baselines import fit_text_baseline  # noqa: E402
from trainer.data import encode_prompt, load_products  # noqa: E402
from trainer.metrics import price_metrics  # noqa: E402
from trainer.models import load_model, load_tokenizer  # noqa: E402

LAYERS = (10, 20, 30)


def hidden_features(model, tokenizer, texts: list[str], max_length: int, batch: int = 16):
    """One row of features a text: the prompt's last-token state after each of LAYERS, and the last layer's mean."""
    import numpy as np
    import torch

    decoder = model.get_decoder()
    rows = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch: little padding
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            chunk = order[start:start + batch]
            prompts = [encode_prompt(tokenizer, texts[i], max_length) for i in chunk]
            width = max(map(len, prompts))
            ids = torch.tensor([p + [tokenizer.pad_token_id or 0] * (width - len(p)) for p in prompts])
            mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
            states = decoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            last = mask.sum(1) - 1
            for j, i in enumerate(chunk):
                mean = (states[-1][j] * mask[j, :, None]).sum(0) / mask[j].sum()
                rows[i] = torch.cat([states[k][j, last[j]] for k in LAYERS] + [mean]).float().numpy()
    return np.stack(rows)


def main() -> None:
    import warnings

    import numpy as np
    from scipy.linalg import LinAlgWarning
    from sklearn.linear_model import LinearRegression, RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--max-length", type=int, default=128, dest="max_length")
    args = parser.parse_args()

    train_file, test_file = split_files(args.data, Path(tempfile.mkdtemp(prefix="pricetune-hidden-")))
    train, test = load_products(train_file)[0], load_products(test_file)[0]
    y = np.log1p([p.price for p in train])
    truths = [p.price for p in test]
    print(f"{args.data}: {len(train)} training / {len(test)} held-out products", flush=True)

    t0 = time.time()
    tokenizer, model = load_tokenizer("demo"), load_model("demo", "none").eval()
    x_train = hidden_features(model, tokenizer, [p.text for p in train], args.max_length)
    x_test = hidden_features(model, tokenizer, [p.text for p in test], args.max_length)
    print(f"hidden states of {len(train) + len(test)} prompts (max length {args.max_length}) in "
          f"{time.time() - t0:.0f} s: {x_train.shape[1]} features", flush=True)

    warnings.filterwarnings("ignore", category=LinAlgWarning)  # the smallest alphas on 2,304 features: CV drops them
    folds = KFold(5, shuffle=True, random_state=0)
    hidden = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 25), cv=folds)).fit(x_train, y)
    text = fit_text_baseline(train)
    # Out-of-fold log prices of the training rows: what the stack learns its weights from.
    oof = np.column_stack([cross_val_predict(hidden, x_train, y, cv=folds),
                           cross_val_predict(text, [p.text for p in train], y, cv=folds)])
    stack = LinearRegression().fit(oof, y)
    held = np.column_stack([hidden.predict(x_test), text.predict([p.text for p in test])])

    def dollars(log_prices):
        return [float(v) for v in np.clip(np.expm1(log_prices), 0.0, None)]

    rows = {"TF-IDF ridge": price_metrics(dollars(held[:, 1]), truths),
            "hidden-state ridge (base model, frozen)": price_metrics(dollars(held[:, 0]), truths),
            "stack of the two": price_metrics(dollars(stack.predict(held)), truths)}
    print(f"hidden-state ridge alpha {hidden[-1].alpha_:g}; stack: log(1+price) = {stack.coef_[0]:.2f}·hidden + "
          f"{stack.coef_[1]:.2f}·tfidf {stack.intercept_:+.2f} (fitted out of fold on the training rows)")
    print(f"\non the {len(test)} held-out rows")
    print(f"{'':<42}{'error $':>9}{'RMSLE':>8}{'hits %':>8}{'r²':>7}{'× ridge':>9}")
    strong = rows["TF-IDF ridge"]["error"]
    for name, m in rows.items():
        print(f"{name:<42}{m['error']:>9.2f}{m['rmsle']:>8.3f}{100 * m['hits']:>8.1f}{m['r2']:>7.3f}"
              f"{m['error'] / strong:>9.2f}")


if __name__ == "__main__":
    main()
