"""Baselines and the error-by-bucket chart."""

from trainer.baselines import constant_guesses, linear_bow
from trainer.charts import bucket_figure
from trainer.data import Product, make_sample_products, split_products
from trainer.evaluate import price_metrics


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
