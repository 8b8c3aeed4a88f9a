"""Shared fixtures: the real demo model and tokenizer, loaded once per test session."""

import os
import sys
from pathlib import Path

import pytest
import torch

# Quiet, deterministic, offline: the tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def demo_tokenizer():
    from trainer.models import load_tokenizer

    return load_tokenizer("demo")


@pytest.fixture(scope="session")
def demo_model():
    """The demo model in fp32, frozen. Tests must not train it in place."""
    from trainer.models import load_model

    return load_model("demo", "none")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A model folder with the demo's tokenizer and architecture shrunk to 2 layers of width 64, random weights: for
    tests of what happens around the steps (launchers, kills, faults, Stop, time limits, sweeps, logins, trackers),
    where the demo's compute is only waiting. Tests of what a run learns or prices use the demo itself."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from trainer.models import demo_model_dir

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        from demo_shape import TINY
    finally:
        sys.path.pop(0)
    source, folder = demo_model_dir(), tmp_path_factory.mktemp("tiny-model")
    config = AutoConfig.from_pretrained(source)
    config.update(TINY)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    folder = tmp_path / "runs"
    monkeypatch.setenv("PRICETUNE_RUNS", str(folder))
    return folder


@pytest.fixture(scope="module")
def launched_app(tmp_path_factory):
    """The real app (python app.py) on a free port, with its own runs folder."""
    from e2e_app import LaunchedApp

    folder = tmp_path_factory.mktemp("app")
    app = LaunchedApp(folder / "runs", folder / "app.log")
    try:
        app.wait_ready()
        yield app
    finally:
        app.close()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished two-step demo-model run on the sample data with 8 validation rows, shared by the tests that only
    read or price with a run (never train it further)."""
    from trainer.config import TrainConfig
    from trainer.job import TrainingJob

    root = tmp_path_factory.mktemp("tiny-runs")
    config = TrainConfig(name="tiny", data="sample", model="demo", quant="none", lora_r=4, lora_alpha=8, batch_size=4,
                         max_steps=2, sample_every=0, save_steps=0, test_size=6, validation_size=8, probe_size=4,
                         num_samples=2, head_rows=16)
    job = TrainingJob.new(config, runs_root=root).start()
    job.thread.join(timeout=900)
    assert job.run.status()["state"] == "done", job.run.status()
    return job.run
