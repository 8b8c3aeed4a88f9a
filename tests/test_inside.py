"""The four-step panel: one real training step on one example, its numbers consistent, the run untouched."""

import hashlib
import math

import pytest

from trainer.__main__ import main
from trainer.config import TrainConfig
from trainer.inside import look_inside
from trainer.runs import RunFolder

pytestmark = pytest.mark.slow

TEXT = "Whirlpool W10295370A refrigerator water filter, replaces EDR1RXD1, NSF certified"


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def check_consistent(step, price):
    # Loss: the training loss function's value is the mean -log p of the true price tokens shown.
    assert "".join(t.token for t in step.price_tokens) == f"{round(price)}.00"
    assert step.loss == pytest.approx(sum(t.nll for t in step.price_tokens) / len(step.price_tokens), rel=1e-5)
    # Forward: the top next tokens are probabilities, and the first price token's is the one the loss used.
    probs = dict(step.top_next)
    assert 0 < sum(probs.values()) <= 1 + 1e-6
    first = step.price_tokens[0]
    if first.token in probs:
        assert probs[first.token] == pytest.approx(first.prob, rel=1e-6)
    # Backward: only LoRA weights get gradients; the base weights are frozen.
    assert step.base_tensors > 0 and step.base_with_grad == 0
    assert any(m.grad_norm > 0 for m in step.lora)
    # Optimizer: AdamW's first step moves each weight by at most the learning rate (its update is lr·m/√v).
    for m in step.lora:
        assert m.update_norm <= step.lr * math.sqrt(math.prod(m.shape)) * (1 + 1e-3)
    assert math.isfinite(step.loss_after)


def test_fresh_lora_step_zero_only_b_gets_gradient(tmp_path):
    run = RunFolder(tmp_path / "new")
    run.path.mkdir()
    run.config_file.write_text(TrainConfig.for_model("demo").to_yaml())
    run.update_status(state="queued")
    step = look_inside(run.path, TEXT, 42.0)
    assert "fresh LoRA" in step.source
    check_consistent(step, 42.0)
    # LoRA starts with B = 0, so no gradient reaches A (dL/dA = B^T ...) and A does not move; every B does.
    a = [m for m in step.lora if ".lora_A." in m.name]
    b = [m for m in step.lora if ".lora_B." in m.name]
    assert len(a) == len(b) == 30 * 7
    assert all(m.grad_norm == 0 and m.update_norm == 0 for m in a)
    assert all(m.grad_norm > 0 and m.update_norm > 0 for m in b)
    # One step on the example itself lowers its loss.
    assert step.loss_after < step.loss


def test_trained_run_step_uses_its_adapter_and_leaves_the_run_unchanged(tmp_path):
    out = tmp_path / "runs" / "trained"
    assert main(["train", "--data", "sample", "--max-steps", "3", "--batch-size", "2", "--lora-r", "4",
                 "--target-modules", "q_proj,v_proj", "--sample-every", "0", "--probe-size", "2",
                 "--save-steps", "0", "--head-rows", "8", "--output", str(out)]) == 0
    run = RunFolder(out)
    before = digest(run.path)
    step = look_inside(run.path, TEXT, 129.99)
    assert step.source.startswith("adapter/")
    check_consistent(step, 129.99)
    # A trained adapter has B != 0, so the A matrices get gradients too; only q and v carry LoRA.
    assert all(m.grad_norm > 0 for m in step.lora)
    assert {m.name.split(".")[-4] for m in step.lora} == {"q_proj", "v_proj"}
    # The learning rate is the run's last logged one (its schedule), or its peak once the schedule reached 0.
    last_lr = [r["lr"] for r in run.metrics() if r.get("lr") is not None][-1]
    assert step.lr == pytest.approx(last_lr if last_lr > 0 else TrainConfig.from_yaml(run.config_file).learning_rate)
    assert digest(run.path) == before
