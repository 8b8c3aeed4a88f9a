"""The offline GPU check (`make gpu-check`) runs every stage on tiny random models of the 8B's and the demo's
architectures on this CPU, and writes one results file; on a GPU the same script runs the 8B and the demo shape."""

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


def test_gpu_check_runs_every_stage_on_a_cpu(tmp_path):
    results = tmp_path / "out" / "gpu-check.txt"
    env = {**os.environ, "TINY": "1", "WORK": str(tmp_path / "work"), "PY": sys.executable,
           "RESULTS": str(results), "ARMS": "A,G16,B,N"}
    env.pop("USE_HUB_KERNELS", None)
    out = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    assert text == out.stdout  # everything printed is in the results file
    assert "SKIPPED" not in text and "exit 124" not in text, text[-3000:]
    assert "torch 2.13.0" in text and "transformers 5." in text and "bitsandbytes" in text  # the environment line
    # The levers: each arm's figures beside TRL's, one JSON line each.
    levers = [json.loads(line) for line in (tmp_path / "out" / "gpu-check-levers.jsonl").read_text().splitlines()]
    assert [row["arm"] for row in levers] == ["A", "G16", "N", "B"]
    assert all(row["tokens_per_s"] > 0 and "error" not in row for row in levers)
    assert {row["arm"]: row["gradient_checkpointing"] for row in levers} == {"A": False, "G16": True, "N": False,
                                                                            "B": True}
    assert "summary (ratios to B, TRL's defaults, measured in this run)" in text
    # The demo shape: trained in 4-bit with this machine's defaults, evaluated, and priced for speed.
    assert "demo-shaped random model" in text and "done: 2 steps" in text
    assert "config: quant: 4bit, fp32_norms: true, gradient_checkpointing: false" in text
    assert "hub_kernels: false" in text
    assert "(the lowest $ error on 8 validation rows" in text  # eval's headline line
    assert "course: generate(3) per item" in text and "on CPU" in text
    assert not (tmp_path / "work" / "model").exists()  # the random 8B-shaped model is removed at the end


def test_the_levers_bench_gives_each_arm_the_model_as_loaded(tmp_path):
    """After an arm the LoRA layers come out and the dtypes go back: the next arm trains the model as loaded."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from gpu_levers import restore, state_of
    finally:
        sys.path.pop(0)
    import trainer.job
    from trainer.config import TrainConfig
    from trainer.job import TrainingJob

    model = tmp_path / "model"
    subprocess.run([sys.executable, "bench/random_model.py", "--out", str(model), "--tiny"], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    from trainer.models import load_model

    base = load_model(str(model), "4bit")
    loaded = state_of(base)
    original = trainer.job.load_model
    trainer.job.load_model = lambda *a, **k: base
    try:
        config = TrainConfig.for_model(str(model), quant="4bit", data=str(model / "products.jsonl"), max_steps=1,
                                       batch_size=2, max_length=48, sample_every=0, save_steps=0, save_minutes=0,
                                       probe_size=1, num_samples=1, head_rows=2, fp32_norms=True,
                                       gradient_checkpointing=True)
        job = TrainingJob.new(config, runs_root=tmp_path / "runs").start()
        assert job.wait(600) == "done", job.run.status()
    finally:
        trainer.job.load_model = original
    assert state_of(base) != loaded  # LoRA layers in, norms in fp32, checkpointing on
    restore(base)
    assert state_of(base) == loaded


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
    for arm in ("A", "A16", "B"):  # AP, packing, trains as A does here; its loss is tested in test_loss.py
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
