"""The price head: a ridge read-out of the tuned model's last hidden state, stored beside the adapter."""

import shutil
import sys
from pathlib import Path

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


def test_a_trained_head_folds_into_the_price_heads_form_and_survives_a_save(tmp_path):
    import torch

    from trainer.pricing.hidden_state import TRAINED_HEAD_FILE, TrainedHead

    prices = [5.0, 12.5, 40.0, 99.99, 350.0]
    scale = torch.tensor([40.0, 0.01, 1, 1, 2, 1, 1, 0.5])  # one large dimension, one nearly constant
    states = torch.randn(5, 8) * scale + torch.tensor([45.0, 0, 0, 1, 0, 0, -1, 0])
    head = TrainedHead.for_prices(8, prices, loss_weight=2.0, states=states.numpy())
    # The input standardized by those rows, the nearly constant dimension's spread floored at the median's.
    np.testing.assert_allclose(head.centre.numpy(), states.mean(0).numpy(), rtol=1e-5, atol=1e-5)
    spread = states.double().std(0, unbiased=False).numpy()
    np.testing.assert_allclose(head.spread.numpy(), np.maximum(spread, np.median(spread)), rtol=1e-5)
    assert head.spread[1] > 10 * spread[1]
    logs = torch.log1p(torch.tensor(prices))
    # At zero the head predicts the mean: its MSE is the standardized prices' variance, 1.
    assert float(head.loss(states, logs).detach()) == pytest.approx(1.0, rel=1e-5)
    torch.nn.init.normal_(head.linear.weight)
    torch.nn.init.normal_(head.linear.bias)
    weight, bias = head.folded()
    z = (states - head.centre) / head.spread
    want = head.mean + head.std * head.gain * head.linear(z).squeeze(-1)
    np.testing.assert_allclose(head.predict(states).detach().numpy(), ((want - head.mean) / head.std).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(states.double().numpy() @ weight + bias, want.detach().double().numpy(), rtol=1e-5)
    head.save(tmp_path)
    again = TrainedHead.load(tmp_path)
    assert again.loss_weight == 2.0 and np.allclose(again.folded()[0], weight) and again.folded()[1] == bias
    assert TrainedHead.load(tmp_path / "nowhere") is None
    # A head saved before the input was standardized read the raw states, with no gain: it loads as that.
    from safetensors.torch import save_file

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    save_file({k: v.contiguous() for k, v in head.state_dict().items() if k not in ("centre", "spread", "gain")},
              str(legacy / TRAINED_HEAD_FILE), metadata={"loss_weight": "2.0"})
    old = TrainedHead.load(legacy)
    np.testing.assert_allclose(old.folded()[0], head.std * head.linear.weight.detach().double().numpy()[0], rtol=1e-6)
    assert old.folded()[1] == pytest.approx(float(head.mean + head.std * head.linear.bias[0]), rel=1e-6)


def test_the_trained_head_reads_each_prompts_last_state_and_its_loss_joins_the_price_tokens(demo_tokenizer, tmp_path):
    import math

    import torch
    from transformers import TrainingArguments

    from trainer.data import tokenize_example
    from trainer.loss import HEAD_AT, LOG_PRICE, HeadTrainer, PackedPriceCollator, PriceCollator, price_loss
    from trainer.models import add_lora, load_model
    from trainer.pricing.hidden_state import TrainedHead, last_states

    products = [("Oak shelf", 12.5), ("Premium stainless steel stand mixer, 6 quart, with a dough hook", 349.0),
                ("Glass vase", 7.0)]
    features = [{**tokenize_example(demo_tokenizer, t, p, 96), LOG_PRICE: math.log1p(p)} for t, p in products]
    model = add_lora(load_model("demo", "none"),
                     TrainConfig(model="demo", quant="none", lora_r=4, lora_alpha=8, lora_dropout=0.0))
    model.price_head = TrainedHead.for_prices(model.config.hidden_size, [p for _, p in products], loss_weight=0.5)
    torch.nn.init.normal_(model.price_head.linear.weight, std=0.05)
    want = torch.tensor(last_states(model, demo_tokenizer, [t for t, _ in products], max_prompt_tokens=96))
    for collator in (PriceCollator(demo_tokenizer, padding=True), PackedPriceCollator()):
        batch = collator(features)
        assert batch[LOG_PRICE].tolist() == pytest.approx([math.log1p(p) for _, p in products])
        rows, columns = batch[HEAD_AT]
        assert len(rows) == len(products)
        trainer = HeadTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none"),
                              compute_loss_func=price_loss)
        model.zero_grad()
        loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
        # The state read is the one pricing reads: the last layer's at each prompt's "$".
        states = outputs.hidden_states[-1][rows, columns]
        torch.testing.assert_close(states, want, atol=1e-4, rtol=1e-4)
        tokens = price_loss(outputs, batch["labels"])
        mse = model.price_head.loss(states, batch[LOG_PRICE]).detach()
        assert float(loss.detach()) == pytest.approx(float(tokens + 0.5 * mse), rel=1e-5) and float(mse) > 0
        lora = [p for n, p in model.named_parameters() if "lora_B" in n]
        # The head's own term reaches the LoRA (not only the price tokens' term).
        from_head = torch.autograd.grad(model.price_head.loss(states, batch[LOG_PRICE]), lora, retain_graph=True)
        assert sum(float(g.abs().sum()) for g in from_head) > 0
        loss.backward()
        # Both the head and the LoRA learn from it; the frozen base does not.
        assert model.price_head.linear.weight.grad.abs().sum() > 0
        assert all(p.grad is not None for p in lora) and sum(float(p.grad.abs().sum()) for p in lora) > 0
        assert all(p.grad is None for n, p in model.named_parameters() if "lora" not in n and "price_head" not in n)
    assert HEAD_AT not in PriceCollator(demo_tokenizer, padding=True)([{k: v for k, v in f.items() if k != LOG_PRICE}
                                                                     for f in features])


@pytest.mark.slow
def test_a_run_trains_its_head_with_the_lora_saves_it_everywhere_and_prices_by_it(tmp_path):
    import json

    from trainer.inference import Predictor
    from trainer.job import TrainingJob
    from trainer.pricing.hidden_state import TRAINED_HEAD_FILE, TrainedHead

    config = TrainConfig(name="trained-head", data="sample", model="demo", quant="none", lora_r=4, lora_alpha=8,
                         batch_size=4, max_steps=4, sample_every=0, save_steps=2, test_size=6, validation_size=8,
                         probe_size=4, num_samples=2, head_rows=16, head_loss=2.0)
    job = TrainingJob.new(config, runs_root=tmp_path).start()
    job.thread.join(timeout=900)
    run = job.run
    assert run.status()["state"] == "done", run.status()
    # Every checkpoint holds the head, so a resumed run goes on with it; so does the adapter.
    checkpoints = sorted(run.checkpoints_dir.glob("checkpoint-*"))
    assert checkpoints and all((c / TRAINED_HEAD_FILE).is_file() for c in checkpoints)
    trained = TrainedHead.load(run.adapter_dir)
    assert trained.loss_weight == 2.0 and trained.linear.weight.abs().sum() > 0  # it left zero
    # The price head the methods and the ensemble read is the trained one, folded; its rows serve the neighbours.
    head = load_head(run.adapter_dir)
    assert head.trained_with == 2.0 and head.rows == 16
    np.testing.assert_allclose(head.weight, trained.folded()[0])
    assert head.bias == pytest.approx(trained.folded()[1])
    logged = [json.loads(line) for line in run.metrics_file.read_text().splitlines()]
    assert [r["step"] for r in logged if "head_mse" in r] == [1, 2, 3, 4]
    # The quality bench's curve takes the head's weighted MSE back out of the logged loss.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        from quality import curve_rows
    finally:
        sys.path.pop(0)
    curves = curve_rows(run)
    assert curves["price-token loss, steps 1–50"] == pytest.approx(
        sum(r["loss"] - 2.0 * r["head_mse"] for r in logged if "head_mse" in r) / 4)
    assert curves["head MSE, steps 1–50"] == pytest.approx(sum(r["head_mse"] for r in logged if "head_mse" in r) / 4)
    priced = Predictor(run.path).predict([p.text for p in run.split("test")[:2]], method="head")
    assert all(p.price >= 0 and "trained with the LoRA (loss weight 2)" in p.text for p in priced)

    # Killed after step 2's checkpoint: the resumed run goes on with that checkpoint's head and optimizer state, so
    # it ends where the run that was never stopped ended (a head started again from zero would not).
    shutil.rmtree(run.checkpoints_dir / "checkpoint-4")
    resumed = TrainingJob.resume(run.path).start()
    assert resumed.wait(900) == "done", run.status()
    assert run.status()["resumes"][0]["from"] == "checkpoint-2"
    again = TrainedHead.load(run.adapter_dir)
    assert not np.allclose(again.linear.weight.detach(), TrainedHead.load(checkpoints[0]).linear.weight.detach())
    np.testing.assert_allclose(again.linear.weight.detach(), trained.linear.weight.detach(), rtol=1e-4, atol=1e-6)
    assert [r["step"] for r in map(json.loads, run.metrics_file.read_text().splitlines()) if "head_mse" in r] == \
        [1, 2, 3, 4]


def test_the_trained_head_learns_from_states_with_a_large_dimension_at_a_gradient_the_loras_size():
    """States like the demo model's (one dimension near 45, the rest near 0 with a spread of 0.2, moving together as
    a few factors), a log price linear in those factors: AdamW at the run's rate fits it in 200 steps of 8, its
    gradient norm near 1 (on the raw states it is 40+, which the shared clipping would take out of the LoRA's)."""
    import torch

    from trainer.pricing.hidden_state import TrainedHead

    g = torch.Generator().manual_seed(0)
    factors = torch.randn(1200, 3, generator=g)
    states = 0.2 * (factors @ torch.randn(3, 64, generator=g) / 3 ** 0.5 + 0.3 * torch.randn(1200, 64, generator=g))
    states[:, 0] = 45 + 0.5 * torch.randn(1200, generator=g)
    log_prices = 3 + factors[:, 0] + 0.5 * factors[:, 1] + 0.1 * torch.randn(1200, generator=g)
    prices = torch.expm1(log_prices).tolist()
    head = TrainedHead.for_prices(64, prices[:1000], 1.0, states[:64].numpy())
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.0)
    norms = []
    for step in range(200):
        rows = torch.randint(0, 1000, (8,), generator=g)
        loss = head.loss(states[rows], log_prices[rows])
        optimizer.zero_grad()
        loss.backward()
        norms.append(float(head.linear.weight.grad.norm()))
        optimizer.step()
    assert float(head.loss(states[1000:], log_prices[1000:]).detach()) < 0.2  # 1 is the mean's
    assert float(np.median(norms)) < 3
    weight, bias = head.folded()  # and the folded form prices as the head does
    np.testing.assert_allclose(np.expm1(states[1000:].double().numpy() @ weight + bias),
                               np.expm1((head.mean + head.std * head.predict(states[1000:])).detach().double().numpy()),
                               rtol=1e-4)
