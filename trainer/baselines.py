"""Baselines a fine-tuned model must beat: constant guesses, the course's bag-of-words linear regression, and the
strong ones: TF-IDF word 1–2-grams + ridge regression on log(1 + price), tuned by cross-validation on the training
split alone, and the nearest training rows by the same TF-IDF vectors (a catalogue holds near-duplicate products,
whose prices no linear model of the words recovers)."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tempfile
from pathlib import Path
from statistics import mean, median

import joblib
import numpy as np
from joblib import Memory

# scikit-learn's estimators are imported where they are used, so that importing this module for its names and
# constants stays instant.
from .data import Product
from .metrics import price_metrics
from .runs import RunFolder, write_atomic


def constant_guesses(train: list[Product]) -> dict[str, float]:
    prices = [p.price for p in train]
    return {"constant_mean": mean(prices), "constant_median": median(prices)}


def constant_baselines(train: list[Product], items: list[Product]) -> dict:
    """The Tester's metrics on `items` of always guessing the training mean, and the training median."""
    truths = [p.price for p in items]
    return {name: {"guess": value, **price_metrics([value] * len(truths), truths)}
            for name, value in constant_guesses(train).items()}


def linear_bow(train: list[Product]):
    """Fit a bag-of-words linear regression on the training texts; returns texts → prices."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LinearRegression

    vectorizer = CountVectorizer(max_features=1000, stop_words="english")
    features = vectorizer.fit_transform([p.text for p in train])
    model = LinearRegression().fit(features, [p.price for p in train])

    def predict(texts: list[str]) -> list[float]:
        # A linear model can go negative on unusual texts; a price cannot.
        return [max(0.0, float(v)) for v in model.predict(vectorizer.transform(texts))]

    return predict


TEXT_BASELINE = "tfidf_ridge"
"""The strong text baseline's key in eval.json and status.json, and its file in the run folder (.joblib)."""
TEXT_BASELINE_NAME = "TF-IDF ridge (log price)"
RIDGE_ALPHAS = (0.1, 0.3, 1.0, 3.0)
CV_ROWS = 5_000  # the alpha is chosen on at most this many training rows
FIT_ROWS = 100_000  # and the model fitted on at most this many: seconds on a small set, bounded on a huge one


_FITTED: dict[tuple, object] = {}
"""The text baselines fitted in this process, by what they were fitted on: a run restarted on the same data, and every
evaluation and catalog of a run, reuse them."""


def _cached(key: tuple, fit):
    if key not in _FITTED:
        if len(_FITTED) >= 8:
            _FITTED.pop(next(iter(_FITTED)))
        _FITTED[key] = fit()
    return _FITTED[key]


def fit_text_baseline(train: list[Product], seed: int = 0):
    """The fitted text baseline of a training split, fitted once per split and process (a few seconds)."""
    key = hashlib.sha256(json.dumps([[p.text, p.price] for p in train] + [seed]).encode()).hexdigest()
    return _cached(("ridge", key), lambda: _fit_text_baseline(train, seed))


def _fit_text_baseline(train: list[Product], seed: int):
    """TF-IDF (word 1–2-grams, min_df 2, sublinear tf) + ridge on log(1 + price), its alpha chosen by 3-fold
    cross-validation on `train` alone, in log-space squared error (RMSLE squared): a scikit-learn Pipeline whose
    predict() gives log prices; `predict_prices` turns them into dollars."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    texts, targets = [p.text for p in train], np.log1p([p.price for p in train])
    with tempfile.TemporaryDirectory(prefix="pricetune-cv-") as cache:
        # The cache fits each fold's TF-IDF once for all alphas.
        pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True), Ridge(),
                                 memory=Memory(cache, verbose=0))
        try:
            if len(train) >= 30:  # fewer rows cannot be cross-validated into a meaningful choice: ridge's default
                rows = random.Random(seed).sample(range(len(train)), min(len(train), CV_ROWS))
                search = GridSearchCV(pipeline, {"ridge__alpha": RIDGE_ALPHAS}, cv=3,
                                      scoring="neg_mean_squared_error")
                search.fit([texts[i] for i in rows], targets[rows])
                pipeline.set_params(**search.best_params_)
            rows = (list(range(len(train))) if len(train) <= FIT_ROWS
                    else random.Random(seed).sample(range(len(train)), FIT_ROWS))
            pipeline.fit([texts[i] for i in rows], targets[rows])
        except ValueError:  # min_df 2 leaves no words in a tiny or all-unique vocabulary
            pipeline.set_params(tfidfvectorizer__min_df=1)
            pipeline.fit(texts, targets)
    return pipeline.set_params(memory=None)


def predict_prices(model, texts: list[str]) -> list[float]:
    """Dollar prices from a fitted text baseline (it predicts log(1 + price))."""
    return [float(v) for v in np.clip(np.expm1(model.predict(texts)), 0.0, None)]


TEXT_NEIGHBOURS = "tfidf_neighbours"
"""The nearest-neighbours text baseline's key in eval.json."""
TEXT_NEIGHBOURS_NAME = "TF-IDF nearest neighbours (log price)"
NEIGHBOURS = 10


def neighbours_estimator():
    """The unfitted nearest-neighbours regression (on log(1+price)): the NEIGHBOURS nearest training rows by cosine,
    weighted by inverse distance. Text vectors and the tuned model's states (pricing/hidden_state.py) are both read this way."""
    from sklearn.neighbors import KNeighborsRegressor

    return KNeighborsRegressor(NEIGHBOURS, weights="distance", metric="cosine")


def fit_text_neighbours(text_model, train: list[Product]):
    """The nearest-neighbours baseline on the fitted text baseline's own TF-IDF vectors (kept as fitted), fitted on
    `train`: a Pipeline whose predict() gives log prices, as the text baseline's."""
    from sklearn.frozen import FrozenEstimator
    from sklearn.pipeline import make_pipeline

    neighbours = neighbours_estimator().set_params(n_neighbors=min(NEIGHBOURS, len(train)))
    return make_pipeline(FrozenEstimator(text_model[0]), neighbours).fit(
        [p.text for p in train], np.log1p([p.price for p in train]))


def save_text_baseline(model, path: Path) -> None:
    """Written whole or not at all: the Tester and a resumed run read it back."""
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    write_atomic(path, buffer.getvalue())


def load_text_baseline(path: Path):
    """The run's own fitted baseline (written by PriceTune's job into its run folder, never uploaded), or None."""
    return joblib.load(path) if path.is_file() else None


def text_models(run: RunFolder) -> dict:
    """The run's text baselines by key: its stored TF-IDF ridge (for a run from before it was stored: fitted now, on
    the same training split) and the nearest neighbours on that ridge's TF-IDF vectors of the training split."""
    stored = run.text_baseline_file

    def fit():
        ridge = load_text_baseline(stored) or fit_text_baseline(run.split())
        return {TEXT_BASELINE: ridge, TEXT_NEIGHBOURS: fit_text_neighbours(ridge, run.split())}

    return _cached(("run", str(run.path), stored.stat().st_mtime_ns if stored.is_file() else None), fit)


def text_distances(run: RunFolder, texts: list[str]) -> list[float]:
    """Each text's mean cosine distance to its nearest training rows in the TF-IDF neighbours' own space (1: no word
    in common with any of them)."""
    pipeline = text_models(run)[TEXT_NEIGHBOURS]
    distances, _ = pipeline[-1].kneighbors(pipeline[0].transform(texts))
    return [float(d) for d in distances.mean(axis=1)]


def text_prices(run: RunFolder, texts: list[str]) -> dict[str, list[float]]:
    """Each text baseline's prices of `texts`, by key."""
    return {key: predict_prices(model, texts) for key, model in text_models(run).items()}
