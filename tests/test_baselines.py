"""Baselines and the error-by-bucket chart."""

import pytest

from trainer.baselines import constant_guesses, linear_bow
from trainer.charts import bucket_figure
from trainer.data import Product, make_sample_products, split_products
from trainer.metrics import price_metrics


def test_constant_guesses_are_the_training_mean_and_median():
    train = [Product("a", 1.0), Product("b", 2.0), Product("c", 9.0)]
    assert constant_guesses(train) == {"constant_mean": 4.0, "constant_median": 2.0}


def test_bag_of_words_regression_learns_the_sample_prices_better_than_a_constant():
    # The sample generator prices by words (tier, material, category), so words must carry signal.
    train, test = split_products(make_sample_products(1500, seed=3), test_size=200, seed=1)
    truths = [p.price for p in test]
    linear = price_metrics(linear_bow(train)([p.text for p in test]), truths)
    constant = price_metrics([constant_guesses(train)["constant_mean"]] * len(test), truths)
    assert linear["error"] < 0.8 * constant["error"]
    assert all(g >= 0 for g in linear_bow(train)(["", "zzz unknown words"]))


def test_bucket_figure_groups_errors_by_true_price():
    fig = bucket_figure([5, 8, 30, 600], [6, 10, 20, None])
    bar = fig.data[0]
    assert list(bar.x) == ["$0–10", "$25–50", "$500–1000"]
    assert list(bar.y) == [1.5, 10.0, 600.0] and list(bar.text) == ["n=2", "n=1", "n=1"]


def test_text_baseline_beats_the_constants_and_the_bag_of_words_and_reloads_exactly(tmp_path):
    from trainer.baselines import (RIDGE_ALPHAS, fit_text_baseline, load_text_baseline, predict_prices,
                                   save_text_baseline)

    # Prices follow the words (tier, material, category, size): TF-IDF ridge on log price must find them.
    train, test = split_products(make_sample_products(1500, seed=3), test_size=200, seed=1)
    texts, truths = [p.text for p in test], [p.price for p in test]
    model = fit_text_baseline(train)
    assert model[-1].alpha in RIDGE_ALPHAS  # chosen by cross-validation on the training rows
    tfidf = price_metrics(predict_prices(model, texts), truths)
    median = price_metrics([constant_guesses(train)["constant_median"]] * len(test), truths)
    linear = price_metrics(linear_bow(train)(texts), truths)
    assert tfidf["error"] < 0.6 * median["error"] and tfidf["rmsle"] < linear["rmsle"]
    assert tfidf["error"] < linear["error"]
    # The run folder's artifact gives the same prices, and never a negative one.
    save_text_baseline(model, tmp_path / "tfidf_ridge.joblib")
    assert predict_prices(load_text_baseline(tmp_path / "tfidf_ridge.joblib"), texts) == predict_prices(model, texts)
    assert [f.name for f in tmp_path.iterdir()] == ["tfidf_ridge.joblib"]  # written via a temp file, none left
    assert load_text_baseline(tmp_path / "missing.joblib") is None
    assert all(p >= 0 for p in predict_prices(model, ["", "zzz unknown words"]))


def test_text_neighbours_find_a_repeated_product_and_beat_the_constant():
    from trainer.baselines import fit_text_baseline, fit_text_neighbours, predict_prices

    train, test = split_products(make_sample_products(1500, seed=3), test_size=200, seed=1)
    texts, truths = [p.text for p in test], [p.price for p in test]
    ridge = fit_text_baseline(train)
    neighbours = fit_text_neighbours(ridge, train)
    assert neighbours[0].estimator is ridge[0]  # the ridge's own TF-IDF vectors, not refitted
    knn = price_metrics(predict_prices(neighbours, texts), truths)
    median = price_metrics([constant_guesses(train)["constant_median"]] * len(test), truths)
    assert knn["error"] < 0.8 * median["error"]
    # A product listed again is priced as listed: its own row is at distance 0.
    assert predict_prices(neighbours, [train[7].text]) == [pytest.approx(train[7].price, rel=1e-9)]
    assert len(predict_prices(fit_text_neighbours(ridge, train[:3]), ["anything"])) == 1  # fewer rows than k


def test_text_baseline_fits_tiny_and_repetitive_data():
    from trainer.baselines import fit_text_baseline, predict_prices

    tiny = [Product(f"item {i}", 10.0 + i) for i in range(5)]  # all words once: min_df 2 would leave none
    assert len(predict_prices(fit_text_baseline(tiny), ["item 3"])) == 1

