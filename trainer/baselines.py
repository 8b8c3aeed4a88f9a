"""Baselines a fine-tuned model must beat: constant guesses and the course's bag-of-words linear regression."""

from __future__ import annotations

from statistics import mean, median

from .data import Product


def constant_guesses(train: list[Product]) -> dict[str, float]:
    prices = [p.price for p in train]
    return {"constant_mean": mean(prices), "constant_median": median(prices)}


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
