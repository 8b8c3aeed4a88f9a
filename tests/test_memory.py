"""The peak-memory estimate: each term against hand computation for the course's 8B config, the published figure it
is calibrated on, and the warning before Start."""

import pytest
import torch

from trainer.dropout import Dropout
from trainer.memory import GPUS, GiB, MemoryEstimate, estimate_memory, fit_warning, layer_bytes
from trainer.models import estimate_adapter, model_config

COURSE = ["q_proj", "k_proj", "v_proj", "o_proj"]


@pytest.fixture(scope="module")
def llama8b():
    return model_config("meta-llama/Llama-3.1-8B")


def test_each_term_of_the_course_8b_config_by_hand(llama8b):
    h, kv, i, layers, vocab = 4096, 8 * 128, 14336, 32, 128256
    lora = estimate_adapter(llama8b, 32, COURSE).trainable_params
    assert lora == layers * 32 * ((h + h) + 2 * (h + kv) + (h + h))  # 27,262,976
    est = estimate_memory(llama8b, "4bit", lora, COURSE, 32, 16, 182, gradient_checkpointing=True)
    linear = layers * (h * h + 2 * h * kv + h * h + 3 * h * i)  # q, k, v, o, gate, up, down
    rest = 2 * vocab * h + (2 * layers + 1) * h  # embeddings and lm_head (untied), the norms
    assert est.terms["base weights"] == pytest.approx(linear * (0.5 + 1 / 64 + 4 / (64 * 256)) + rest * 2)
    assert est.terms["LoRA + AdamW"] == lora * 16
    base = 2 * 4 * h + 2 * (h + 2 * kv + h) + 3 * 2 * i
    lora_kept = 4 * (4 * h + h + 4 * 32)
    assert layer_bytes(llama8b, [h] * 4, 32, dropout=True, fp32_states=False) == round(base * 0.633) + lora_kept
    assert layer_bytes(llama8b, [h] * 4, 32, dropout=True) == round(base * 1.376) + lora_kept
    one = layer_bytes(llama8b, [h] * 4, 32, dropout=True, fp32_states=False)
    # Checkpointing keeps each layer's input, and recomputes one layer at a time in the backward pass.
    assert est.terms["activations"] == 16 * 182 * layers * 2 * h
    price_logits = 16 * 14 * vocab * 10  # at most two price spans' columns a batch
    assert est.terms["logits and one layer"] == max(price_logits, 16 * 182 * one) + h * i * 2
    assert est.total == pytest.approx(sum(est.terms.values()))
    # Without it every layer's states stay; PEFT's fp32 cast doubles the embeddings and keeps a bf16 copy of the head.
    full = estimate_memory(llama8b, "4bit", lora, COURSE, 32, 16, 182, fp32_norms=True)
    assert full.terms["activations"] == 16 * 182 * layers * layer_bytes(llama8b, [h] * 4, 32, dropout=True)
    assert full.terms["base weights"] == pytest.approx(linear * (0.5 + 1 / 64 + 4 / (64 * 256)) + rest * 4
                                                       + vocab * h * 2)
    assert (estimate_memory(llama8b, "8bit", lora, COURSE, 32, 16, 182).terms["base weights"]
            == pytest.approx(linear + rest * 2))
    assert (estimate_memory(llama8b, "none", lora, COURSE, 32, 16, 182).terms["base weights"]
            == pytest.approx((linear + rest) * 2))


# Peak memory measured on an NVIDIA H200 (bench/gpu_levers.py, the course's 8B shape with random weights: 4-bit NF4,
# LoRA r32 alpha 64 dropout 0.1 on q,k,v,o, batch 16 x 182): torch's peak allocation in GiB, plus bitsandbytes' paged
# AdamW state (0.20 GiB, outside torch's allocator) for PriceTune's arms. bench/README.md has the table.
MEASURED = {
    "A: no checkpointing, fp32 norms (the old GPU defaults)": (dict(fp32_norms=True), 32.48 + 0.20),
    "G32: checkpointing, fp32 norms": (dict(gradient_checkpointing=True, fp32_norms=True), 10.09 + 0.20),
    "G16: checkpointing, bf16 norms": (dict(gradient_checkpointing=True), 6.98 + 0.20),
    "G16 with dropout 0": (dict(gradient_checkpointing=True, dropout=False), 6.87 + 0.20),
    "G16 with compiled layers (the new defaults)": (dict(gradient_checkpointing=True), 6.97 + 0.20),
    "B: TRL's SFTTrainer, its defaults": (dict(gradient_checkpointing=True, price_logits_only=False), 7.02),
    "AL: Liger, fp32 norms": (dict(fp32_norms=True, liger=True), 27.60 + 0.20),
    "AL16: Liger, bf16 norms": (dict(liger=True), 18.32 + 0.20),
    "N: checkpointing, bf16 norms, Liger": (dict(gradient_checkpointing=True, liger=True), 6.85 + 0.20),
    "AP: A with packing (first GPU run)": (dict(fp32_norms=True), 34.04 + 0.20),
}


@pytest.mark.parametrize("arm", list(MEASURED))
def test_the_estimate_is_within_15_percent_of_every_measured_arm(llama8b, arm):
    settings, measured = MEASURED[arm]
    lora = estimate_adapter(llama8b, 32, COURSE).trainable_params
    estimate = estimate_memory(llama8b, "4bit", lora, COURSE, 32, 16, 182, **settings).total / GiB
    assert 0.85 < estimate / measured < 1.15, (arm, estimate, measured)


def test_the_gpu_defaults_fit_the_course_spaces(llama8b):
    # The course's 8B shape and the course-lite preset (3B, batch 32 x 128) with PriceTune's GPU defaults fit a T4.
    lora = estimate_adapter(llama8b, 32, COURSE).trainable_params
    eight = estimate_memory(llama8b, "4bit", lora, COURSE, 32, 16, 182, gradient_checkpointing=True)
    assert eight.fits(GPUS["T4 16 GB"]) and "fits every GPU listed, from the T4 16 GB up" in eight.describe()
    llama3b = model_config("meta-llama/Llama-3.2-3B")
    lite = estimate_memory(llama3b, "4bit", estimate_adapter(llama3b, 32, COURSE).trainable_params, COURSE, 32, 32,
                           128, gradient_checkpointing=True)
    assert lite.fits(GPUS["T4 16 GB"])
    # Without checkpointing the 8B shape does not (32.7 GiB measured with fp32 norms).
    assert not estimate_memory(llama8b, "4bit", lora, COURSE, 32, 16, 182, fp32_norms=True).fits(GPUS["L4 24 GB"])


def test_a_warning_names_the_gpu_and_what_to_change():
    big = MemoryEstimate({"activations": 20 * GiB})
    warning = fit_warning(big, "Tesla T4", 14.6)
    assert "20.0 GiB" in warning and "Tesla T4, 14.6 GiB" in warning and "lower the batch size" in warning
    assert fit_warning(big, "NVIDIA A100-SXM4-40GB", 39.4) == ""



def test_the_api_estimate_names_a_bad_field(llama8b):
    from ui.tabs.train import estimate

    assert "quant: must be 4bit or 8bit or none (got 'int3')" in estimate("demo", "int3", 8, 0.05, ["q_proj"], 8, 0)
    assert estimate("demo", "none", 8, 0.05, [], 8, 0) == "Pick at least one target module."
    assert "peak GPU memory" in estimate("demo", "none", 8, 0.05, ["q_proj"], 8, 0)


@pytest.mark.slow
def test_gradient_checkpointing_trains_the_same_steps(tiny_run, tmp_path):
    # The shared two-step run, again with checkpointing: the recomputed forward (its dropout masks included) gives
    # the same losses and gradients. The second step's loss follows the first update, so wrong or missing LoRA
    # gradients would show there. The draw first leaves the process's generator elsewhere than where the shared run
    # found it: the run's seed alone must decide the LoRA weights' start.
    from trainer.config import TrainConfig
    from trainer.job import TrainingJob

    torch.rand(1000)
    config = TrainConfig.from_yaml(tiny_run.config_file)
    config.name, config.gradient_checkpointing = "checkpointed", True
    job = TrainingJob.new(config, runs_root=tmp_path).start()
    assert job.wait(900) == "done", job.run.status()
    steps = lambda run, key: [r[key] for r in run.metrics() if "loss" in r]  # noqa: E731
    assert len(steps(job.run, "loss")) == 2
    assert steps(job.run, "loss") == pytest.approx(steps(tiny_run, "loss"), rel=1e-5)
    assert steps(job.run, "grad_norm") == pytest.approx(steps(tiny_run, "grad_norm"), rel=1e-4)
    # ...with the CPU dropout of trainer/dropout.py in every LoRA layer (its masks are what the recompute redraws).
    lora_dropouts = [m for name, m in job.trainer.model.named_modules() if ".lora_dropout." in name]
    assert lora_dropouts and all(type(m) is Dropout for m in lora_dropouts)


def test_the_cli_prints_the_estimate_with_the_gpu_defaults_and_without(capsys):
    from trainer.__main__ import main

    assert main(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--lora-r", "32", "--batch-size", "16",
                 "--max-length", "182", "--lora-dropout", "0.1"]) == 0
    out = capsys.readouterr().out
    assert ("batch 16 × 182 tokens, 4bit, on a GPU with PriceTune's defaults (bf16 compute and norms, gradient "
            "checkpointing on): peak GPU memory ≈ 7.0 GiB") in out, out
    assert "fits every GPU listed, from the T4 16 GB up" in out
    assert "with gradient checkpointing off: 20.9 GiB; with fp32 norms and embeddings (fp32_norms): 10.2 GiB; " \
           "TRL's SFTTrainer (checkpointing, the loss over the full vocabulary): 7.2 GiB" in out, out


def test_the_stated_space_hardware_warns_before_start(monkeypatch):
    # PRICETUNE_HARDWARE names the Space's flavour: with no GPU here, the warning is for that flavour's GPU.
    from trainer.config import preset
    from trainer.memory import gpu_warning

    monkeypatch.setenv("PRICETUNE_HARDWARE", "t4-small")
    lite = preset("course-lite")
    lite.gradient_checkpointing = False
    warning = gpu_warning(lite)
    assert "Estimated peak memory 24.3 GiB is more than this GPU (t4-small, as PRICETUNE_HARDWARE states, 14.6 GiB)" \
        in warning, warning
    lite.gradient_checkpointing = True  # the preset as shipped fits
    assert gpu_warning(lite) == ""


@pytest.mark.e2e
def test_the_live_estimate_over_http_warns_for_the_stated_hardware(tmp_path):
    from e2e_app import LaunchedApp
    from gradio_client import Client

    app = LaunchedApp(tmp_path / "runs", tmp_path / "app.log", {"PRICETUNE_HARDWARE": "t4-small"})
    try:
        app.wait_ready()
        client = Client(app.url, verbose=False)
        shape = dict(model="meta-llama/Llama-3.2-3B", quant="4bit", lora_r=32, lora_dropout=0.1, target_modules=COURSE,
                     batch_size=32, max_length=128)
        too_big = client.predict(**shape, gradient_checkpointing=False, api_name="/estimate")
        assert "**Warning:** Estimated peak memory 15.7 GiB is more than this GPU (t4-small" in too_big, too_big
        assert "turn on gradient checkpointing" in too_big
        assert "Warning" not in client.predict(**shape, gradient_checkpointing=True, api_name="/estimate")
    finally:
        app.close()
