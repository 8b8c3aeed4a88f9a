"""The price-only loss: same number as the model's own loss over full logits, computed on far fewer positions."""

import pytest
import torch

from trainer.data import make_sample_products, tokenize_example
from trainer.loss import IGNORE_INDEX, PriceCollator, price_loss


@pytest.fixture(scope="module")
def batch_features(demo_tokenizer):
    demo_tokenizer.padding_side = "right"
    products = make_sample_products(6, seed=3)
    return [tokenize_example(demo_tokenizer, p.text, p.price, 96) for p in products]


def test_collator_keeps_exactly_the_columns_that_predict_a_price_token(demo_tokenizer, batch_features):
    from transformers import DataCollatorForSeq2Seq

    full = DataCollatorForSeq2Seq(demo_tokenizer, padding=True)(batch_features)
    cut = PriceCollator(demo_tokenizer, padding=True)(batch_features)
    keep = cut["logits_to_keep"].tolist()
    predicts_price = {t for row in full["labels"].tolist() for t in range(len(row) - 1) if row[t + 1] != IGNORE_INDEX}
    assert set(keep) == predicts_price and keep == sorted(keep)
    assert len(keep) < full["input_ids"].shape[1] // 4  # the point: a fraction of the positions
    # Column j of the logits predicts label column j+1; every price token is there once, nothing else.
    assert cut["labels"].shape == (len(batch_features), len(keep) + 1)
    assert (cut["labels"][:, 0] == IGNORE_INDEX).all()
    assert sorted(cut["labels"][cut["labels"] != IGNORE_INDEX].tolist()) == \
        sorted(full["labels"][full["labels"] != IGNORE_INDEX].tolist())
    assert torch.equal(cut["input_ids"], full["input_ids"])


def test_price_loss_equals_the_models_own_loss_and_gradient(demo_model, demo_tokenizer, batch_features):
    from transformers import DataCollatorForSeq2Seq

    full = DataCollatorForSeq2Seq(demo_tokenizer, padding=True)(batch_features)
    cut = PriceCollator(demo_tokenizer, padding=True)(batch_features)
    # The shared model is frozen: let one small weight (the final norm, which every logit passes) take a gradient.
    weight = demo_model.model.norm.weight
    weight.requires_grad_(True)
    try:
        reference = demo_model(**full).loss
        (ref_grad,) = torch.autograd.grad(reference, weight)
        labels = cut.pop("labels")
        outputs = demo_model(**cut)
        assert outputs.logits.shape[1] == len(cut["logits_to_keep"])
        loss = price_loss(outputs, labels)
        (grad,) = torch.autograd.grad(loss, weight)
    finally:
        weight.requires_grad_(False)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert torch.allclose(grad, ref_grad, rtol=1e-3, atol=1e-6)
    # With gradient accumulation the Trainer passes the price-token count of all micro-batches.
    count = int((labels != IGNORE_INDEX).sum())
    assert price_loss(outputs, labels, num_items_in_batch=2 * count).item() == pytest.approx(loss.item() / 2)


def test_a_packed_batch_gives_each_example_its_own_loss_and_gradient(demo_model, demo_tokenizer, batch_features):
    """`packing`: one row, no padding; each example must attend only to itself, so the loss and the gradient are
    those of the padded batch."""
    from trainer.loss import PackedPriceCollator

    padded = PriceCollator(demo_tokenizer, padding=True)(batch_features)
    packed = PackedPriceCollator()(batch_features)
    assert packed["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in batch_features))
    assert "attention_mask" not in packed
    starts = [0] + [len(f["input_ids"]) for f in batch_features][:-1]
    assert (packed["position_ids"][0] == 0).nonzero().squeeze(-1).tolist() == torch.tensor(starts).cumsum(0).tolist()
    assert sorted(packed["labels"][packed["labels"] != IGNORE_INDEX].tolist()) == \
        sorted(padded["labels"][padded["labels"] != IGNORE_INDEX].tolist())
    weight = demo_model.model.norm.weight
    weight.requires_grad_(True)
    try:
        losses, grads = [], []
        for batch in (padded, packed):
            labels = batch.pop("labels")
            loss = price_loss(demo_model(**batch), labels)
            losses.append(loss.item())
            grads.append(torch.autograd.grad(loss, weight)[0])
    finally:
        weight.requires_grad_(False)
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert torch.allclose(grads[1], grads[0], rtol=1e-3, atol=1e-6)
    # Without position ids the row would be one long example: its loss is another number.
    labels = PackedPriceCollator()(batch_features)
    merged = {k: v for k, v in labels.items() if k != "position_ids"}
    with torch.no_grad():
        assert price_loss(demo_model(**{k: v for k, v in merged.items() if k != "labels"}), merged["labels"]).item() \
            != pytest.approx(losses[0], rel=1e-3)
