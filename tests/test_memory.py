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
    est = estimate_memory(llama8b, "4bit", lora, COURSE, 32, 16, 182)
    linear = layers * (h * h + 2 * h * kv + h * h + 3 * h * i)  # q, k, v, o, gate, up, down
    rest = 2 * vocab * h + (2 * layers + 1) * h  # embeddings and lm_head (untied), the norms
    assert est.terms["base weights"] == pytest.approx(linear * (0.5 + 1 / 64 + 4 / (64 * 256)) + rest * 4)
    assert est.terms["LoRA + AdamW"] == lora * 16
    per_layer = 2 * 4 * h + 2 * (h + 2 * kv + h) + 3 * 2 * i + 4 * (4 * h + h + 4 * 32)
    assert layer_bytes(llama8b, [h] * 4, 32, dropout=True) == per_layer == 221_696
    assert est.terms["activations"] == 16 * 182 * layers * per_layer
    assert est.terms["price logits"] == 16 * min(182, 16 * 7) * vocab * 10  # the price columns only
    assert est.terms["framework"] == pytest.approx(GiB + 0.1 * (est.terms["activations"] + est.terms["price logits"]))
    assert est.total == pytest.approx(sum(est.terms.values()))
    # Checkpointing keeps each layer's input and one layer at a time; 8-bit and bf16 weigh more.
    checkpointed = estimate_memory(llama8b, "4bit", lora, COURSE, 32, 16, 182, gradient_checkpointing=True)
    assert checkpointed.terms["activations"] == 16 * 182 * (layers * 2 * h + per_layer)
    assert (estimate_memory(llama8b, "8bit", lora, COURSE, 32, 16, 182).terms["base weights"]
            == pytest.approx(linear + rest * 4))
    assert (estimate_memory(llama8b, "none", lora, COURSE, 32, 16, 182).terms["base weights"]
            == pytest.approx((linear + rest) * 2))


def test_the_course_notebooks_figure_is_matched_within_ten_percent(llama8b):
    # The course: Llama 3.1 8B, 4-bit, r32 on q,k,v,o, batch 16, length 182, full-vocabulary loss: about 38 GB.
    lora = estimate_adapter(llama8b, 32, COURSE).trainable_params
    full = estimate_memory(llama8b, "4bit", lora, COURSE, 32, 16, 182, price_logits_only=False)
    assert 0.9 < full.total / 38e9 < 1.1, full.describe()
    assert full.fits(GPUS["A100 40 GB"]) and not full.fits(GPUS["L4 24 GB"])
    assert "fits the A100 40 GB and larger; too big for the T4 16 GB, L4 24 GB, A10G 24 GB" in full.describe()
    # PriceTune computes the logits at the price columns only: less than the full-vocabulary loss.
    assert estimate_memory(llama8b, "4bit", lora, COURSE, 32, 16, 182).total < full.total


def test_a_warning_names_the_gpu_and_what_to_change():
    big = MemoryEstimate({"activations": 20 * GiB})
    warning = fit_warning(big, "Tesla T4", 14.6)
    assert "20.0 GiB" in warning and "Tesla T4, 14.6 GiB" in warning and "lower the batch size" in warning
    assert fit_warning(big, "NVIDIA A100-SXM4-40GB", 39.4) == ""



def test_the_api_estimate_names_a_bad_field(llama8b):
    from ui.tabs.train import estimate

    assert "quant: must be one of 4bit, 8bit, none (got 'int3')" in estimate("demo", "int3", 8, 0.05, ["q_proj"], 8, 0)
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
    job = TrainingJob(config, runs_root=tmp_path).start()
    assert job.wait(900) == "done", job.run.status()
    steps = lambda run, key: [r[key] for r in run.metrics() if "loss" in r]  # noqa: E731
    assert len(steps(job.run, "loss")) == 2
    assert steps(job.run, "loss") == pytest.approx(steps(tiny_run, "loss"), rel=1e-5)
    assert steps(job.run, "grad_norm") == pytest.approx(steps(tiny_run, "grad_norm"), rel=1e-4)
    # ...with the CPU dropout of trainer/dropout.py in every LoRA layer (its masks are what the recompute redraws).
    lora_dropouts = [m for name, m in job.trainer.model.named_modules() if ".lora_dropout." in name]
    assert lora_dropouts and all(type(m) is Dropout for m in lora_dropouts)


def test_the_cli_prints_the_estimate_with_and_without_checkpointing(capsys):
    from trainer.__main__ import main

    assert main(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--lora-r", "32", "--batch-size", "16",
                 "--max-length", "182"]) == 0
    out = capsys.readouterr().out
    assert "batch 16 × 182 tokens, 4bit, on a GPU (bf16 compute): peak GPU memory ≈ 32.2 GiB" in out, out
    assert "with gradient checkpointing: 12.5 GiB; with the loss over the full vocabulary at every token" in out


def test_the_stated_space_hardware_warns_before_start(monkeypatch):
    # PRICETUNE_HARDWARE names the Space's flavour: with no GPU here, the warning is for that flavour's GPU.
    from trainer.config import preset
    from trainer.memory import gpu_warning

    monkeypatch.setenv("PRICETUNE_HARDWARE", "t4-small")
    lite = preset("course-lite")
    lite.gradient_checkpointing = False
    warning = gpu_warning(lite)
    assert "Estimated peak memory 27.3 GiB is more than this GPU (t4-small, as PRICETUNE_HARDWARE states, 14.6 GiB)" \
        in warning, warning
    lite.gradient_checkpointing = True  # the preset as shipped fits
    assert gpu_warning(lite) == ""


@pytest.mark.e2e
def test_the_live_estimate_over_http_warns_for_the_stated_hardware(tmp_path):
    from gradio_client import Client

    from e2e_app import LaunchedApp

    app = LaunchedApp(tmp_path / "runs", tmp_path / "app.log", {"PRICETUNE_HARDWARE": "t4-small"})
    try:
        app.wait_ready()
        client = Client(app.url, verbose=False)
        shape = ("meta-llama/Llama-3.2-3B", "4bit", 32, 0.1, COURSE, 32, 128)
        too_big = client.predict(*shape, False, api_name="/estimate")
        assert "**Warning:** Estimated peak memory 27.3 GiB is more than this GPU (t4-small" in too_big, too_big
        assert "turn on gradient checkpointing" in too_big
        assert "Warning" not in client.predict(*shape, True, api_name="/estimate")
    finally:
        app.close()
