"""The price head: a ridge read-out of the tuned model's last hidden state, stored beside the adapter."""

import shutil

import numpy as np
import pytest

from trainer.config import ConfigError, TrainConfig
from trainer.pricing.hidden_state import HEAD_FILE, NEIGHBOURS_FILE, fit_head, load_head


def test_the_folded_head_is_the_fitted_ridge_and_survives_a_save(tmp_path):
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 12))
    states = z * rng.uniform(0.1, 50, size=12) + rng.normal(size=12)  # features on very different scales
    prices = np.expm1(3 + 0.8 * z[:, 0] - 0.5 * z[:, 3] + rng.normal(scale=0.05, size=300))
    head = fit_head(states, list(prices))
    pipeline = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 25))).fit(states, np.log1p(prices))
    assert head.prices(states) == pytest.approx(np.expm1(pipeline.predict(states)).clip(0), rel=1e-9)
    assert head.rows == 300 and head.alpha == pipeline[1].alpha_
    # Words carry the price here, so the head is far better than the median constant.
    error = np.abs(np.log1p(head.prices(states)) - np.log1p(prices)).mean()
    assert error < 0.2 * np.abs(np.log1p(np.median(prices)) - np.log1p(prices)).mean()

    # The same states give the neighbours read-out: a fitting row's own state is priced at that row's price.
    assert head.neighbour_prices(states[[5, 17]]) == pytest.approx(prices[[5, 17]], rel=1e-6)
    knn = np.abs(np.log1p(head.neighbour_prices(states + 0.01)) - np.log1p(prices)).mean()
    assert knn < 0.2 * np.abs(np.log1p(np.median(prices)) - np.log1p(prices)).mean()

    head.save(tmp_path)
    again = load_head(tmp_path)
    assert again.prices(states) == head.prices(states) and (again.rows, again.alpha) == (300, head.alpha)
    assert again.neighbour_prices(states[:40]) == pytest.approx(head.neighbour_prices(states[:40]), rel=1e-6)
    assert load_head(tmp_path / "nowhere") is None
    # The states are stored in half precision, unless a state is too large for it.
    assert head.states.dtype == again.states.dtype == np.float16
    assert fit_head(states * 1e4, list(prices)).states.dtype == np.float32
    # A head saved without its rows' states (before the neighbours read-out) counts as none: it is fitted again.
    (tmp_path / NEIGHBOURS_FILE).unlink()
    assert load_head(tmp_path) is None
    with pytest.raises(ValueError, match="at least 2 rows"):
        fit_head(states[:1], list(prices[:1]))


def test_last_states_do_not_depend_on_the_batch_or_its_padding(demo_model, demo_tokenizer):
    from trainer.pricing.hidden_state import last_states

    short, long = "Oak shelf", "Premium stainless steel stand mixer, 6 quart, with a dough hook and a splash guard"
    alone = last_states(demo_model, demo_tokenizer, [short], max_prompt_tokens=64)
    together = last_states(demo_model, demo_tokenizer, [long, short], max_prompt_tokens=64)
    assert together.shape == (2, demo_model.config.hidden_size)
    np.testing.assert_allclose(together[1], alone[0], atol=1e-4)
    assert not np.allclose(together[0], together[1], atol=1e-2)


def test_a_middle_layers_states_are_that_layers_output_at_the_prompts_end(demo_model, demo_tokenizer):
    import torch

    from trainer.data import encode_prompt
    from trainer.pricing.hidden_state import last_states

    text, middle = "Premium stainless steel stand mixer, 6 quart", demo_model.config.num_hidden_layers // 2
    got = last_states(demo_model, demo_tokenizer, ["Oak shelf", text], max_prompt_tokens=64, layers=(middle, None))
    assert got.shape == (2, 2, demo_model.config.hidden_size)
    ids = torch.tensor([encode_prompt(demo_tokenizer, text, 64)])
    with torch.inference_mode():
        want = demo_model(input_ids=ids, output_hidden_states=True).hidden_states[middle][0, -1].float().numpy()
    np.testing.assert_allclose(got[1, 0], want, atol=1e-4)
    np.testing.assert_allclose(got[1, 1], last_states(demo_model, demo_tokenizer, [text], max_prompt_tokens=64)[0],
                               atol=1e-4)
    assert not np.allclose(got[1, 0], got[1, 1], atol=1e-2)
    with pytest.raises(ValueError, match="layers 1 to"):
        last_states(demo_model, demo_tokenizer, [text], layers=(demo_model.config.num_hidden_layers + 1,))


def test_a_run_prices_by_its_stored_head(tiny_run):
    from trainer.inference import Predictor
    from trainer.models import inference_precision
    from trainer.pricing.hidden_state import last_states

    head = load_head(tiny_run.adapter_dir)
    assert head.rows == min(TrainConfig.from_yaml(tiny_run.config_file).head_rows, len(tiny_run.split())) == 16
    predictor = Predictor(tiny_run.path)
    texts = [p.text for p in tiny_run.split("test")[:3]]
    priced = predictor.predict(texts, method="head")
    with inference_precision(predictor.model, predictor.bf16):  # as the predictor prices
        states = last_states(predictor.model, predictor.tokenizer, texts,
                             max_prompt_tokens=predictor.max_prompt_tokens, question=predictor.config.asked())
    assert [p.price for p in priced] == pytest.approx(head.prices(states), rel=1e-5)
    assert all(p.method == "head" and p.price >= 0 for p in priced)
    near = predictor.predict(texts, method="neighbours")
    assert [p.price for p in near] == pytest.approx(head.neighbour_prices(states), rel=1e-5)
    assert all(p.method == "neighbours" and p.price >= 0 for p in near)
    with pytest.raises(ValueError, match="base model"):
        predictor.predict(texts, method="head", base=True)


def test_a_run_without_a_head_gets_one_fitted_and_stored_when_asked(tiny_run, tmp_path):
    from trainer.tester import explain_price

    run_path = tmp_path / "no-head"
    shutil.copytree(tiny_run.path, run_path)
    (run_path / "adapter" / HEAD_FILE).unlink()
    reports = []
    result = explain_price(run_path, "A steel shelf bracket, pack of 4", method="head",
                           progress=lambda done, total, what: reports.append((done, total, what)))
    assert result["method"] == "head" and result["prices"]["head"] == result["price"] >= 0
    head_reports = [r for r in reports if r[2].startswith("fitting the price head")]
    assert head_reports and head_reports[-1][:2] == (16, 16)
    assert load_head(run_path / "adapter").rows == 16


def test_the_probe_cannot_price_by_the_head():
    # The head exists only once training ends.
    with pytest.raises(ConfigError, match="probe_method"):
        TrainConfig(probe_method="head").validate()
    with pytest.raises(ConfigError, match="head_rows"):
        TrainConfig(head_rows=1).validate()


def test_a_price_by_another_method_does_not_fit_the_head(tiny_run, tmp_path):
    # Even where the validation rows chose the head, pricing by the expected value needs no minutes of fitting.
    import dataclasses

    from trainer.inference import predictor_for
    from trainer.pricing.choice import price_choice
    from trainer.runs import RunFolder
    from trainer.tester import price_texts

    run_path = tmp_path / "chose-head"
    shutil.copytree(tiny_run.path, run_path)
    run = RunFolder(run_path)
    choice = price_choice(run, predictor_for(run.path))
    dataclasses.replace(choice, best_method="head", headline="head").save(run)
    (run_path / "adapter" / HEAD_FILE).unlink()
    predictor_for(tiny_run.path)  # the copy's predictor, with its head in memory, is dropped
    prices, used, _ = price_texts(run_path, ["A steel shelf bracket"], method="expected")
    assert used == "expected" and prices[0] is not None
    assert not (run_path / "adapter" / HEAD_FILE).exists()
    prices, used, _ = price_texts(run_path, ["A steel shelf bracket"], method="auto")
    assert used == "head" and (run_path / "adapter" / HEAD_FILE).is_file()
