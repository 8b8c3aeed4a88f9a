"""Price parsing, Tester metrics, greedy and expected-value prediction."""

import copy
import json
import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trainer.data import encode_prompt
from trainer.pricing import DISTRIBUTION_METHODS, METHODS, predict_methods
from trainer.pricing.decoding import parse_price_output, predict_greedy
from trainer.pricing.distribution import number_tokens, point_estimate, predict_expected, price_distribution
from trainer.pricing.hidden_state import fit_head
from trainer.metrics import hit_color, price_metrics, summary_line
from trainer.pricing.prompts import Prediction
from trainer.pricing.stack import fit_stack, out_of_fold, stacked
from trainer.runs import Evaluation, RunFolder

# ---------------------------------------------------------------------------------------------------------
# parse_price_output
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("123.00", 123.0),
    (" 45", 45.0),
    ("1,299.50", 1299.5),
    ("$12", 12.0),
    ("12.5.3", 12.5),
    ("about 7 dollars, or 8", 7.0),
    ("1.25 per pack", 1.25),
    ("99\n", 99.0),
    (".5", 0.5),
    ("12, 13", 12.0),
    ("-5", -5.0),
    ("", None),
    ("no idea", None),
    ("$.", None),
])
def test_parse_price_output(text, expected):
    assert parse_price_output(text) == expected


# ---------------------------------------------------------------------------------------------------------
# hit_color and metrics
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("guess, truth, colour", [
    (139.99, 100, "green"),   # error 39.99 < 40
    (140, 100, "orange"),     # error 40: not < 40, and 40% of truth
    (1190, 1000, "green"),    # error 190 >= 40 but 19% < 20%
    (1200, 1000, "orange"),   # 20% exactly is not < 20%
    (179.99, 100, "orange"),  # error 79.99 < 80
    (180, 100, "red"),        # error 80 and 80%
    (1390, 1000, "orange"),   # 39%
    (1400, 1000, "red"),      # 40% exactly
    (0, 30, "green"),         # error 30 < 40 even though 100% off
    (None, 30, "green"),      # unparseable counts as 0
    (None, 500, "red"),
    (0, 0, "green"),
])
def test_hit_color_boundaries(guess, truth, colour):
    assert hit_color(guess, truth) == colour


def test_price_metrics_hand_computed():
    guesses = [100.0, 50.0, None, -5.0]
    truths = [120.0, 200.0, 30.0, 10.0]
    # as guesses:     100    50     0      0   (None and negative count as 0)
    # abs errors:     20    150    30     10   → mean 210/4 = 52.5
    # ln(t+1):  ln121  ln201  ln31  ln11;  ln(g+1): ln101  ln51  0  0
    # hits: 20<40 green, 150 (75%) red, 30<40 green, 10<40 green → 3/4
    sq = [math.log(121 / 101) ** 2, math.log(201 / 51) ** 2, math.log(31) ** 2, math.log(11) ** 2]
    m = price_metrics(guesses, truths)
    assert m["error"] == pytest.approx(52.5)
    assert m["rmsle"] == pytest.approx(math.sqrt(sum(sq) / 4))
    # written out: squares 0.03264 + 1.88096 + 11.79227 + 5.74990 = 19.45577; / 4 = 4.86394; sqrt = 2.20543
    assert m["rmsle"] == pytest.approx(2.20543, abs=1e-4)
    assert m["hits"] == pytest.approx(0.75)
    assert m["unparseable"] == 2
    assert m["count"] == 4
    # The current course's MSE and r²: squared errors 400 + 22500 + 900 + 100 = 23900, / 4 = 5975; the truths' mean
    # is 90, their squared deviations 900 + 12100 + 3600 + 6400 = 23000, so r² = 1 - 23900 / 23000 = -0.0391.
    assert m["mse"] == pytest.approx(5975.0)
    assert m["r2"] == pytest.approx(1 - 23900 / 23000)


def test_price_metrics_perfect_and_empty():
    m = price_metrics([10.0, 20.0], [10.0, 20.0])
    assert m == {"error": 0.0, "rmsle": 0.0, "hits": 1.0, "mse": 0.0, "r2": 1.0, "unparseable": 0, "count": 2}
    assert price_metrics([10.0], [12.0])["r2"] is None  # r² needs two rows
    assert price_metrics([], [])["count"] == 0
    with pytest.raises(ValueError):
        price_metrics([1.0], [1.0, 2.0])


def test_summary_line():
    assert summary_line({"error": 44.951, "rmsle": 1.0149, "hits": 0.795, "unparseable": 0, "count": 200}) == \
        "Error=$44.95 RMSLE=1.01 Hits=79.5%"
    assert "Unparseable=3" in summary_line({"error": 1, "rmsle": 1, "hits": 1, "unparseable": 3, "count": 9})
    assert summary_line(price_metrics([], [])) == "No predictions yet"
    assert summary_line(price_metrics([100.0, 50.0], [120.0, 200.0])).endswith(" MSE=11,450 r²=-6.16")


def test_point_estimates_of_a_distribution():
    dist = [(30.0, 0.4), (10.0, 0.3), (20.0, 0.3)]  # most likely first, as the beam gives them
    assert point_estimate(dist, "expected") == pytest.approx(10 * .3 + 20 * .3 + 30 * .4)  # 21
    assert point_estimate([(12.0, 0.5), (3.0, 0.5)], "expected") == pytest.approx(7.5)
    # Unnormalised weights are normalised; no candidates, no price.
    assert point_estimate([(10.0, 2.0), (20.0, 2.0)], "expected") == pytest.approx(15.0)
    assert all(point_estimate([], m) is None for m in DISTRIBUTION_METHODS)
    with pytest.raises(ValueError, match="unknown point estimate"):
        point_estimate(dist, "median")  # retired: never better than the expected value


def test_the_stacked_ensemble_and_its_fit():
    stack = {"members": {"model": 0.5, "text": 0.5}, "intercept": 0.0}
    both = {"model": 99.0, "text": 9.0}
    assert stacked(both, stack, "text") == pytest.approx(math.sqrt(100 * 10) - 1)  # geometric mean of 1 + price
    assert stacked(both, {"members": {"model": 1.0, "text": 0.0}, "intercept": math.log(2)}, "text") == (
        pytest.approx(199.0))
    # A member without a price: the fallback member's.
    assert stacked({"model": None, "text": 9.0}, stack, "text") == 9.0
    assert stacked({"model": -1.0, "text": 9.0}, stack, "text") == 9.0
    truths = [10.0, 100.0, 50.0, 20.0, 300.0, 5.0, 70.0, 35.0]
    # A perfect member takes the weight; the noisy ones get none.
    noisy = [t * f for t, f in zip(truths, (3, 0.2, 2, 0.5, 1.5, 4, 0.3, 1))]
    other = [t * f for t, f in zip(truths, (0.4, 2, 0.6, 3, 0.3, 1, 2.5, 0.5))]
    fit = fit_stack({"model": truths, "text": noisy, "other": other}, truths)
    assert list(fit["members"]) == ["model", "text", "other"]
    assert fit["members"]["model"] > 0.9 and abs(fit["members"]["text"]) < 0.1 and abs(fit["members"]["other"]) < 0.1
    assert all(stacked({"model": t, "text": n, "other": o}, fit, "text") == pytest.approx(t, rel=0.1)
               for t, n, o in zip(truths, noisy, other))
    # A model that prices everything at twice the truth is corrected by the intercept (log 2 off in log(1+price)).
    fit = fit_stack({"model": [2 * t + 1 for t in truths], "text": noisy}, truths)
    assert fit["members"]["model"] == pytest.approx(1.0, abs=0.05)
    assert fit["intercept"] == pytest.approx(-math.log(2), abs=0.1)
    # Rows a member could not price are left out of the fit; fewer than two usable rows cannot fit.
    assert fit_stack({"model": [None, *truths], "text": [1.0, *noisy]}, [1.0, *truths])["members"]["model"] > 0.9
    with pytest.raises(ValueError, match="at least 2"):
        fit_stack({"model": [None, 5.0], "text": [1.0, 2.0]}, [1.0, 2.0])


def test_the_ensembles_out_of_fold_prices_come_from_fits_without_their_row():
    truths = [10.0, 100.0, 50.0, 20.0, 300.0, 5.0, 70.0, 35.0, 12.0, 150.0]
    noise = [t * f for t, f in zip(truths, (3, 0.2, 2, 0.5, 1.5, 4, 0.3, 1, 2, 0.6))]
    members = {"model": [2 * t + 1 for t in truths], "tfidf_ridge": noise}
    folded = out_of_fold(members, truths)
    # A member twice the truth is learnt from the other folds, so every row's price is close to its truth.
    assert folded == pytest.approx(truths, rel=0.1)
    # Noisy members: priced by fits without their rows, the ensemble's error is larger than its own fit's on the
    # same rows (which flatters it), and that is the error auto compares with the single methods'.
    other = [t * f for t, f in zip(truths, (0.4, 2, 0.6, 3, 0.3, 1, 2.5, 0.5, 1.8, 0.7))]
    noisy = {"tfidf_ridge": noise, "other": other}
    fitted = fit_stack(noisy, truths)
    in_sample = [stacked({m: v[i] for m, v in noisy.items()}, fitted, "tfidf_ridge") for i in range(len(truths))]
    assert price_metrics(out_of_fold(noisy, truths), truths)["error"] > price_metrics(in_sample, truths)["error"]
    # Too few rows to fold: no out-of-fold price, so the ensemble is no candidate.
    assert out_of_fold({"model": [1.0, 2.0], "tfidf_ridge": [1.0, 2.0]}, [1.0, 2.0]) is None


# ---------------------------------------------------------------------------------------------------------
# A tiny Llama whose next-token distribution depends only on the last token, set by hand
# ---------------------------------------------------------------------------------------------------------


class TinyTokenizer:
    """Longest-match tokenizer over a fixed vocabulary; any other character is "x"."""

    def __init__(self, vocab):
        self.vocab = list(vocab)
        self.index = {tok: i for i, tok in enumerate(self.vocab)}
        self.pad_token_id = 0
        self.eos_token_id = 0

    def __len__(self):
        return len(self.vocab)

    def __call__(self, text, add_special_tokens=True):
        ids, i = [], 0
        while i < len(text):
            for size in range(min(4, len(text) - i), 0, -1):
                if text[i:i + size] in self.index:
                    ids.append(self.index[text[i:i + size]])
                    i += size
                    break
            else:
                ids.append(self.index["x"])
                i += 1
        return {"input_ids": ids}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.vocab[i] for i in ids if not (skip_special_tokens and i == 0))

    def batch_decode(self, rows, skip_special_tokens=False):
        return [self.decode(r, skip_special_tokens) for r in rows]


VOCAB = ["<pad>", "x", "$", ".", "0", "1", "2", "3", "7", "12", "120", " "]


def tiny_lm(table: dict[str, dict[str, float]]) -> LlamaForCausalLM:
    """Next-token probabilities table[last token][next token]; unlisted last tokens predict "." for sure.

    Attention and MLP outputs are zeroed, so the residual stream is the one-hot embedding of the current token;
    the final RMSNorm maps it to itself and lm_head holds the log-probabilities.
    """
    size = 16
    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=size, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=8, tie_word_embeddings=False,
                         rms_norm_eps=1e-12, max_position_embeddings=512, pad_token_id=0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(len(VOCAB), size))
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1 / math.sqrt(size))
        head = torch.full((len(VOCAB), size), -60.0)
        for last, tok in enumerate(VOCAB):
            probs = table.get(tok, {".": 1.0})
            for nxt, p in probs.items():
                head[VOCAB.index(nxt), last] = math.log(p)
        model.lm_head.weight.copy_(head)
    return model


DIGITS = {"$": {"1": 0.5, "3": 0.5}, "1": {"2": 1.0}, "2": {".": 1.0}, "3": {".": 1.0}}


def test_tiny_model_is_what_the_table_says():
    tok = TinyTokenizer(VOCAB)
    model = tiny_lm(DIGITS)
    ids = torch.tensor([tok("ab $")["input_ids"]])
    with torch.no_grad():
        probs = model(input_ids=ids).logits[0, -1].softmax(-1).tolist()
    assert probs[VOCAB.index("1")] == pytest.approx(0.5, abs=1e-6)
    assert probs[VOCAB.index("3")] == pytest.approx(0.5, abs=1e-6)


def test_number_tokens():
    assert number_tokens(TinyTokenizer(VOCAB)) == {4: "0", 5: "1", 6: "2", 7: "3", 8: "7", 9: "12", 10: "120"}


def test_expected_value_digit_by_digit():
    tok, model = TinyTokenizer(VOCAB), tiny_lm(DIGITS)
    # "$" → "1" (.5) → "2" (1.0) → "." gives 12; "$" → "3" (.5) → "." gives 3: expected 0.5·12 + 0.5·3 = 7.5
    texts = ["a fridge", "a much longer description of a washing machine drum"]
    preds = predict_expected(model, tok, texts, max_prompt_tokens=128)
    assert [p.method for p in preds] == ["expected", "expected"]
    assert [p.price for p in preds] == [pytest.approx(7.5, abs=1e-5)] * 2
    dist = price_distribution(model, tok, "a fridge", max_prompt_tokens=128)
    assert [price for price, _ in dist] in ([12.0, 3.0], [3.0, 12.0])
    assert [p for _, p in dist] == [pytest.approx(0.5, abs=1e-5)] * 2


def test_expected_value_multi_digit_tokens_and_max_digits():
    tok = TinyTokenizer(VOCAB)
    # Llama-3 style: "12" and "120" are single tokens.
    model = tiny_lm({"$": {"12": 0.25, "120": 0.25, "7": 0.5}, "12": {".": 1.0},
                     "120": {"0": 0.6, ".": 0.4}, "0": {".": 1.0}, "7": {".": 1.0}})
    # max_digits=4: 12 (.25), 120 (.25·.4 = .1), 1200 (.25·.6 = .15), 7 (.5) → .25·12 + .1·120 + .15·1200 + .5·7
    [pred] = predict_expected(model, tok, ["thing"], max_digits=4, max_prompt_tokens=64)
    assert pred.price == pytest.approx(3 + 12 + 180 + 3.5, abs=1e-3)
    dist = price_distribution(model, tok, "thing", max_digits=4, max_prompt_tokens=64)
    assert dict(dist) == {7.0: pytest.approx(0.5, abs=1e-6), 12.0: pytest.approx(0.25, abs=1e-6),
                          1200.0: pytest.approx(0.15, abs=1e-6), 120.0: pytest.approx(0.1, abs=1e-6)}
    assert [p for _, p in dist] == sorted((p for _, p in dist), reverse=True)
    # max_digits=3: "120" reaches the limit, so it completes with all of its .25 (the "0" after it is not read)
    [pred] = predict_expected(model, tok, ["thing"], max_digits=3, max_prompt_tokens=64)
    assert pred.price == pytest.approx(0.25 * 12 + 0.25 * 120 + 0.5 * 7, abs=1e-3)
    # max_digits=2: the token "120" does not fit, its .25 is dropped and the rest renormalised over .75
    [pred] = predict_expected(model, tok, ["thing"], max_digits=2, max_prompt_tokens=64)
    assert pred.price == pytest.approx((0.25 * 12 + 0.5 * 7) / 0.75, abs=1e-3)


def test_beam_keeps_the_most_likely_prices():
    tok = TinyTokenizer(VOCAB)
    model = tiny_lm({"$": {"1": 0.5, "3": 0.3, "7": 0.2}})  # each digit is followed by "." for sure
    dist = price_distribution(model, tok, "thing", beam=2, max_prompt_tokens=64)
    assert dist == [(1.0, pytest.approx(0.5 / 0.8, abs=1e-5)), (3.0, pytest.approx(0.3 / 0.8, abs=1e-5))]
    [pred] = predict_expected(model, tok, ["thing"], beam=2, max_prompt_tokens=64)
    assert pred.price == pytest.approx((0.5 * 1 + 0.3 * 3) / 0.8, abs=1e-4)
    assert pred.text.startswith("$1 (6") and "$3 (3" in pred.text


def test_predictions_restore_training_mode():
    tok, model = TinyTokenizer(VOCAB), tiny_lm(DIGITS)
    model.train()
    predict_expected(model, tok, ["thing"], max_prompt_tokens=64)
    assert model.training
    predict_greedy(model, tok, ["thing"], max_new_tokens=3, max_prompt_tokens=64)
    assert model.training
    model.eval()
    price_distribution(model, tok, "thing", max_prompt_tokens=64)
    assert not model.training


def test_greedy_on_tiny_model():
    tok = TinyTokenizer(VOCAB)
    model = tiny_lm({"$": {"1": 0.6, "3": 0.4}, "1": {"2": 1.0}, "2": {".": 1.0}, ".": {"0": 1.0}, "0": {"0": 1.0}})
    preds = predict_greedy(model, tok, ["short", "a longer product description", "x"], max_new_tokens=5,
                           batch_size=2, max_prompt_tokens=64)
    assert preds == [Prediction(12.0, "greedy", "12.00")] * 3


# ---------------------------------------------------------------------------------------------------------
# The real demo model (SmolLM2, one token per digit)
# ---------------------------------------------------------------------------------------------------------

TEXTS = [
    "Ice maker",
    "Whirlpool dishwasher rack roller, stainless steel, pack of 4",
    "GE refrigerator water filter replacement MWF, 3 pack, NSF certified to reduce lead, chlorine and cysts, "
    "fits most GE side-by-side and French door refrigerators",
    "Samsung 65 inch 4K QLED smart TV",
]


@pytest.mark.slow
def test_greedy_batched_equals_one_at_a_time(demo_model, demo_tokenizer):
    batched = predict_greedy(demo_model, demo_tokenizer, TEXTS, max_new_tokens=6, batch_size=4)
    singles = []
    with torch.inference_mode():
        for text in TEXTS:
            ids = torch.tensor([encode_prompt(demo_tokenizer, text, 256)])
            out = demo_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=6, pad_token_id=demo_tokenizer.pad_token_id)
            singles.append(demo_tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    assert [p.text for p in batched] == singles
    assert [p.price for p in batched] == [parse_price_output(s) for s in singles]


def test_every_registered_method_prices_through_its_kind(demo_model, demo_tokenizer, tmp_path, capsys):
    from trainer.__main__ import main
    from trainer.config import ConfigError, TrainConfig
    from trainer.pricing import CHOICES, METHOD_NAMES, REGISTRY

    assert CHOICES == ("auto", *(m.name for m in REGISTRY)) and all(METHOD_NAMES[m.name] == m.label for m in REGISTRY)
    states = np.random.default_rng(0).normal(size=(12, demo_model.config.hidden_size))
    head = fit_head(states, [10.0 + i for i in range(12)])
    priced = predict_methods(demo_model, demo_tokenizer, TEXTS[:2], METHODS, head=head, max_prompt_tokens=64)
    assert list(priced) == list(METHODS) and all(len(p) == 2 and p[0].method == m for m, p in priced.items())
    with pytest.raises(ValueError, match="without a fitted head"):
        predict_methods(demo_model, demo_tokenizer, TEXTS[:1], ("head",))
    # A config from before the median and the mean in log price were dropped still loads, as the expected value.
    old = tmp_path / "config.yaml"
    old.write_text("probe_method: log_mean\n")
    assert TrainConfig.from_yaml(old).validate().probe_method == "expected"
    with pytest.raises(ConfigError, match="probe_method: one of expected, greedy"):
        TrainConfig(probe_method="head").validate()
    with pytest.raises(SystemExit):
        main(["predict", "--method", "median", "--run", str(tmp_path), "x"])
    assert "invalid choice: 'median'" in capsys.readouterr().err


@pytest.mark.slow
def test_expected_batched_equals_one_at_a_time(demo_model, demo_tokenizer):
    batched = predict_expected(demo_model, demo_tokenizer, TEXTS, batch_size=4)
    # Every point estimate comes out of the same beam search as the distribution a single text gets.
    every = predict_methods(demo_model, demo_tokenizer, TEXTS, DISTRIBUTION_METHODS, batch_size=3)
    for i, text in enumerate(TEXTS):
        dist = price_distribution(demo_model, demo_tokenizer, text)
        assert all(every[m][i].price == pytest.approx(point_estimate(dist, m), rel=1e-3) for m in DISTRIBUTION_METHODS)
    for text, pred in zip(TEXTS, batched):
        dist = price_distribution(demo_model, demo_tokenizer, text)
        assert 1 <= len(dist) <= 8
        assert sum(p for _, p in dist) == pytest.approx(1.0)
        assert all(price == int(price) and 0 <= price <= 9999 for price, _ in dist)
        assert pred.price == pytest.approx(point_estimate(dist, "expected"), rel=1e-3)


def test_expected_value_through_a_peft_model():
    from peft import LoraConfig, get_peft_model

    tok = TinyTokenizer(VOCAB)
    model = get_peft_model(tiny_lm(DIGITS), LoraConfig(r=2, target_modules=["q_proj", "v_proj"],
                                                       task_type="CAUSAL_LM"))
    model.train()
    [pred] = predict_expected(model, tok, ["a fridge"], max_prompt_tokens=64)
    assert pred.price == pytest.approx(7.5, abs=1e-5)
    [pred] = predict_greedy(model, tok, ["a fridge"], max_new_tokens=3, max_prompt_tokens=64)
    assert pred.price in (12.0, 3.0)
    assert model.training


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU model holds its compute dtype: no autocast to test")
def test_bf16_pricing_on_the_cpu_keeps_fp32_logits_and_the_same_prices(demo_model, demo_tokenizer):
    from peft import LoraConfig, get_peft_model

    from trainer.models import inference_precision
    from trainer.pricing.hidden_state import last_states

    model = get_peft_model(copy.deepcopy(demo_model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                 task_type="CAUSAL_LM"))
    exact = predict_expected(model, demo_tokenizer, TEXTS, batch_size=4)
    exact_states = last_states(model, demo_tokenizer, TEXTS, batch_size=4)
    seen = {}

    def dtype_of(name):
        def record(module, args, out):
            seen[name] = out.dtype
        return record

    output = model.get_output_embeddings()
    hook = output.register_forward_hook(dtype_of("logits"))
    probe = model.get_base_model().model.layers[0].self_attn.q_proj.register_forward_hook(dtype_of("inner"))
    try:
        with inference_precision(model, True):
            fast = predict_expected(model, demo_tokenizer, TEXTS, batch_size=4)
            fast_states = last_states(model, demo_tokenizer, TEXTS, batch_size=4)
    finally:
        hook.remove()
        probe.remove()
    assert seen == {"inner": torch.bfloat16, "logits": torch.float32}
    assert not torch.is_autocast_enabled("cpu")
    assert not output._forward_hooks and not output._forward_pre_hooks
    assert [p.price for p in fast] == pytest.approx([p.price for p in exact], rel=0.1)
    cosine = (fast_states * exact_states).sum(1) / (
        (fast_states ** 2).sum(1) ** 0.5 * (exact_states ** 2).sum(1) ** 0.5)
    assert cosine.min() > 0.999
    with inference_precision(model, False):
        again = predict_expected(model, demo_tokenizer, TEXTS, batch_size=4)
    assert [p.price for p in again] == pytest.approx([p.price for p in exact], rel=1e-6)


def _metrics(error):
    return {"error": error, "rmsle": 0.5, "hits": 0.5, "mse": error ** 2, "r2": 0.1, "unparseable": 0}


def _result(methods: dict, baselines: dict, headline: str) -> Evaluation:
    return Evaluation(run="r", data="held-out split", count=200, method=headline, metrics=_metrics(methods[headline]),
                      methods={k: _metrics(v) for k, v in methods.items()},
                      baselines={k: _metrics(v) for k, v in baselines.items()}, items=[])


BASELINES = {"base_model": 61.5, "constant_mean": 56.8, "constant_median": 44.9, "linear_bow": 64.3,
             "tfidf_ridge": 33.4, "tfidf_neighbours": 32.6}


def test_the_verdict_says_when_the_strongest_baseline_wins():
    from trainer.tester import summary_table, verdict

    # The user's data in the newcomer issue: the headline ($26.08) lost to the ridge ($22.64) and the median constant.
    result = _result({"neighbours": 26.08, "head": 24.10, "expected": 27.5}, {**BASELINES, "tfidf_ridge": 22.64,
                                                                             "constant_median": 25.83}, "neighbours")
    line = verdict(result)
    assert line.startswith("On these 200 rows the fine-tune's best method, price head on the last hidden state, is "
                           "off by $24.10: it does not beat the strongest baseline, TF-IDF ridge (log price) ($22.64; "
                           "1.06× its error), and beats a constant (training median) (0.93×).")
    assert "The headline, nearest training rows by the last hidden state, was chosen before these rows" in line
    table = summary_table(result)
    assert [row[1] for row in table] == sorted(row[1] for row in table)  # lowest $ error first
    assert table[0][0] == "TF-IDF ridge (log price) ◀ strongest baseline"
    assert [row[0] for row in table if "◀ headline" in row[0]] == [
        "fine-tuned, nearest training rows by the last hidden state ◀ headline"]


def test_the_verdict_says_when_the_fine_tune_wins():
    from trainer.tester import verdict

    result = _result({"ensemble": 30.49, "head": 32.14, "expected": 33.66}, BASELINES, "ensemble")
    assert verdict(result) == ("On these 200 rows the fine-tune's best method, fine-tuned + text baselines "
                               "(ensemble), is off by $30.49: it beats the strongest baseline, TF-IDF nearest "
                               "neighbours (log price) ($32.60; 0.94× its error), and beats a constant (training "
                               "median) (0.68×).")


def test_eval_json_reads_back_and_older_files_still_read(tmp_path):
    from trainer.tester import summary_table, verdict

    run = RunFolder(tmp_path / "r")
    assert run.evaluation() is None  # not evaluated
    result = _result({"ensemble": 30.49, "head": 32.14, "expected": 33.66}, BASELINES, "ensemble")
    result.verdict = verdict(result)
    run.write_evaluation(result)
    assert run.evaluation() == result
    # A file from before every method had its own entry: greedy was the headline, the expected value a baseline.
    old = {"run": "r", "data": "held-out split", "count": 200, "metrics": _metrics(40.0), "items": [],
           "baselines": {"expected_value": _metrics(35.0), **{k: _metrics(v) for k, v in BASELINES.items()}}}
    run.eval_file.write_text(json.dumps(old))
    older = run.evaluation()
    assert older.method == "greedy" and older.methods == {"greedy": _metrics(40.0), "expected": _metrics(35.0)}
    assert "expected_value" not in older.baselines and older.categories == {} and older.ranges == {}
    assert [row[0] for row in summary_table(older)][2:4] == ["fine-tuned, expected value", "fine-tuned, greedy ◀ headline"]
    for broken in ("[1, 2]", "{\"run\": \"r\"}", "{not json"):
        run.eval_file.write_text(broken)
        with pytest.raises(ValueError, match="eval.json of run r is unreadable"):
            run.evaluation()


def test_auto_and_the_ensemble_without_validation_rows():
    from trainer.data import DataError
    from trainer.pricing.choice import resolve_method

    assert resolve_method("auto", None, "expected") == ("expected", "the run's probe method (it has no validation rows)")
    assert resolve_method("greedy", None, "expected") == ("greedy", "as asked")
    with pytest.raises(DataError, match="no validation rows to fit the ensemble on"):
        resolve_method("ensemble", None, "expected")
    with pytest.raises(ValueError, match="unknown price method 'median'"):
        resolve_method("median", None, "expected")
