"""The prepared GPU check trains the model it builds, with the settings it names (4-bit, LoRA r32 on q,k,v,o), on a
tiny model of the same architecture. It runs on this CPU in under a minute; on a GPU the same script runs the 8B."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _tiny_values():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from random_model import TINY
    finally:
        sys.path.pop(0)
    return TINY


def test_gpu_check_script_trains_every_arm_on_the_tiny_model(tmp_path):
    env = {**os.environ, "TINY": "1", "STEPS_TINY": "2", "WORK": str(tmp_path / "work"), "PY": sys.executable}
    out = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    model_line = next(line for line in lines if line.startswith("model:"))
    assert str(tmp_path / "work" / "model") in model_line and "(4bit)" in model_line
    assert "LoRA r32 alpha 64 dropout 0.1 on q_proj,k_proj,v_proj,o_proj, max length 182" in model_line
    rows = {line.split()[0]: line.split() for line in lines if line.split()[:1] in (["A"], ["AP"], ["A16"], ["B"])}
    assert set(rows) == {"A", "AP", "A16", "B"} and all(float(row[1]) > 0 for row in rows.values())  # tokens/s
    # Liger's kernels need a GPU: on this CPU their arm is left out, and said so.
    assert "arm AL left out: Liger's kernels need a CUDA GPU" in out.stdout
    assert not (tmp_path / "work" / "model").exists()  # the random model is removed at the end


def test_both_arms_train_the_named_model_with_the_named_lora(tmp_path):
    """Parameter counts from the arms match the tiny Llama's config, so MFU is computed for the model trained."""
    model = tmp_path / "model"
    subprocess.run([sys.executable, "bench/random_model.py", "--out", str(model), "--tiny"], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    v = _tiny_values()
    h, layers, r = v["hidden_size"], v["num_hidden_layers"], 32
    kv = h // v["num_attention_heads"] * v["num_key_value_heads"]
    # Frozen linears: q, o (h x h), k, v (h x kv), gate, up, down (h x intermediate), and the LM head.
    base = layers * (2 * h * h + 2 * h * kv + 3 * h * v["intermediate_size"]) + h * v["vocab_size"]
    # LoRA A (in x r) and B (r x out) on q, k, v, o.
    lora = layers * (2 * (h * r + r * h) + 2 * (h * r + r * kv))
    env = {**os.environ, "PRICETUNE_RUNS": str(tmp_path / "runs"), "PRICETUNE_CACHE": str(tmp_path / "cache")}
    for arm in ("A", "AP", "A16", "B"):
        out = subprocess.run(
            [sys.executable, "bench/train_speed.py", "--model", str(model), "--data", str(model / "products.jsonl"),
             "--quant", "4bit", "--lora-r", "32", "--lora-alpha", "64", "--targets", "q_proj,k_proj,v_proj,o_proj",
             "--batch", "4", "--max-length", "64", "--steps", "2", "--warmup", "1", "--probe", "0",
             "--examples", "16", "--arm", arm],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
        assert (result["base_params"], result["lora_params"]) == (base, lora), arm
        assert result["flops_per_token"] == 4 * base + 6 * lora
        assert result["steps"] == 2 and result["tokens_per_s"] > 0
        # The run's wall time by phase, beside the process's own.
        assert {"model load", "steps"} <= set(result["phases"]) and sum(result["phases"].values()) < result["wall_s"]
        # PriceTune's own per-step host work, timed inside its steps; TRL has none of the job's to time.
        if arm == "B":
            assert result["bookkeeping_s"] is None
        else:
            assert 0 < result["bookkeeping_s"] < result["step_s"], arm
        # The memory formula for the arm's shape, printed beside the peak a GPU measures (here none is measured).
        from trainer.memory import GiB, estimate_memory
        from trainer.models import model_config

        expected = estimate_memory(model_config(str(model)), "4bit", lora, ["q_proj", "k_proj", "v_proj", "o_proj"],
                                   32, 4, 64, dropout=True, fp32_norms=arm != "A16", price_logits_only=arm != "B",
                                   gradient_checkpointing=arm == "B").total / GiB
        assert result["estimate_gib"] == pytest.approx(expected), arm
        if arm != "B":  # PriceTune keeps LoRA weights in fp32 (TRL casts them to bf16 on a quantized model)
            assert lora * 4 <= result["adapter_mb"] * 1e6 < lora * 4 + 20_000
