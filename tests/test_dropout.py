"""The CPU LoRA dropout: torch's dropout in distribution, its masks from torch's seed, PEFT's layers replaced."""

import pytest
import torch
from torch import nn

from trainer.dropout import LEVELS, Dropout, use_fast_dropout


def test_each_element_is_dropped_at_the_rate_asked_and_the_rest_scaled_to_keep_the_mean():
    torch.manual_seed(0)
    x = torch.ones(4_000_000)
    y = Dropout(0.05).train()(x)
    dropped = y == 0
    p = round(0.05 * LEVELS) / LEVELS
    # Four elements share a 64-bit draw: each of the four 16-bit lanes is dropped at the same rate.
    for lane in range(4):
        assert dropped[lane::4].float().mean().item() == pytest.approx(p, abs=2e-3)
    assert y.unique().tolist() == [0.0, pytest.approx(1 / (1 - p))]
    assert y.mean().item() == pytest.approx(1.0, abs=2e-3)


def test_masks_follow_torchs_seed_gradients_follow_the_mask_and_eval_is_the_identity():
    x = torch.randn(37, 11, requires_grad=True)  # not a multiple of four elements
    layer = Dropout(0.3).train()
    torch.manual_seed(1)
    first = layer(x)
    torch.manual_seed(1)
    assert torch.equal(layer(x), first)
    first.sum().backward()
    assert torch.allclose(x.grad, (first != 0).float() * first.detach().div(x.detach()).amax())
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_peft_lora_layers_get_it_with_their_own_p(demo_model):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(demo_model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1,
                                                  target_modules=["q_proj", "down_proj"]))
    try:
        layers = model.config.num_hidden_layers
        assert use_fast_dropout(model) == 2 * layers
        replaced = [m for m in model.modules() if isinstance(m, Dropout)]
        assert len(replaced) == 2 * layers and all(m.p == 0.1 for m in replaced)
        assert not any(type(m) is nn.Dropout for m in model.modules() if m in replaced)
    finally:
        model.unload()
