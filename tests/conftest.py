"""Shared fixtures: the real demo model and tokenizer, loaded once per test session."""

import os

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
