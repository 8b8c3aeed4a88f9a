"""Loading without the Hub, and the GPU defaults: what a model load may fetch, which settings a GPU gets, and the
combinations refused before any run folder exists."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trainer import config as config_module
from trainer.config import ALL_LINEAR, COURSE_TARGETS, ConfigError, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama") / "model"
    subprocess.run([sys.executable, "bench/random_model.py", "--out", str(folder), "--tiny"], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("hub_kernels", [False, True])
def test_a_model_load_kernelizes_only_when_the_setting_asks(tiny_llama, monkeypatch, hub_kernels):
    # transformers 5 swaps layers for kernels fetched from the Hub at every load unless told not to (offline on a
    # GPU that load fails; online it runs code nobody chose). Recorded here instead of run.
    import transformers.modeling_utils

    from trainer.models import load_model

    calls = []
    monkeypatch.setattr(transformers.modeling_utils, "kernelize", lambda *a, **k: calls.append(a))
    model = load_model(str(tiny_llama), "4bit", hub_kernels=hub_kernels)
    assert bool(calls) == hub_kernels
    assert model.config.use_cache is False and not any(p.requires_grad for p in model.parameters())


def test_bitsandbytes_is_imported_with_the_hub_fetch_refused(tmp_path):
    # bitsandbytes asks `kernels` for a CPU kernel from the Hub when it is imported on a CPU with AVX512-BF16, and
    # logs a warning at every start when that fails. This CPU may lack that instruction, so a stand-in package does
    # exactly that at its import; the real `kernels.get_kernel` would reach the network.
    fake = tmp_path / "bitsandbytes"
    fake.mkdir()
    (fake / "__init__.py").write_text(textwrap.dedent("""
        import logging
        logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
        try:
            from kernels import get_kernel
            get_kernel("kernels-community/quantization-bitsandbytes", version=1)
            FETCHED = True
        except Exception as exc:
            FETCHED = False
            logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s", exc)
    """))
    script = textwrap.dedent("""
        import kernels
        asked = []
        kernels.get_kernel = lambda repo, **kw: asked.append(repo)  # what a fetch from the Hub would be
        import trainer, bitsandbytes
        print("fetched", bitsandbytes.FETCHED, "asked", asked, "restored", kernels.get_kernel.__name__ == "<lambda>")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "fetched False asked [] restored True" in out.stdout
    assert "kernels-community" not in out.stderr  # no start-up warning either


def test_no_hub_kernel_message_at_a_cli_start():
    out = subprocess.run([sys.executable, "-m", "trainer", "estimate", "--model", "meta-llama/Llama-3.1-8B"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "kernels-community" not in out.stderr


def test_gpu_defaults_by_model(monkeypatch):
    # On a CPU nothing changes.
    cpu, cpu_big = TrainConfig(), TrainConfig.for_model("meta-llama/Llama-3.1-8B")
    assert (cpu.quant, cpu.fp32_norms, cpu.gradient_checkpointing, cpu.compile_layers, cpu.liger_kernel,
            cpu.hub_kernels) == ("none", True, False, False, False, False)
    assert (cpu_big.gradient_checkpointing, cpu_big.compile_layers) == (False, False)
    # On a GPU: 4-bit with bf16 norms for every model; a model other than the demo checkpoints and compiles.
    monkeypatch.setattr(config_module, "on_gpu", lambda: True)
    demo, big = TrainConfig(), TrainConfig.for_model("meta-llama/Llama-3.1-8B")
    assert (demo.quant, demo.fp32_norms, demo.gradient_checkpointing, demo.compile_layers) == ("4bit", False, False,
                                                                                               False)
    assert demo.target_modules == ALL_LINEAR
    assert (big.quant, big.fp32_norms, big.gradient_checkpointing, big.compile_layers, big.liger_kernel) == (
        "4bit", False, True, True, False)
    assert big.target_modules == COURSE_TARGETS and not big.hub_kernels
    # The presets keep their own checkpointing (the course's recipes turn it on).
    assert config_module.preset("course-lite").gradient_checkpointing


def test_liger_with_compiled_layers_is_refused_by_name():
    with pytest.raises(ConfigError, match="liger_kernel and compile_layers: choose one"):
        TrainConfig(liger_kernel=True, compile_layers=True).validate()


def test_compiled_layers_on_a_cpu_are_refused_before_any_folder(tmp_path):
    from trainer.job import TrainingJob

    with pytest.raises(ConfigError, match="compile_layers: compiling the layers needs a CUDA GPU"):
        TrainingJob.new(TrainConfig(compile_layers=True), runs_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_the_cli_refuses_an_existing_output_folder(tmp_path, capsys):
    from trainer.__main__ import main

    out = tmp_path / "runs" / "taken"
    out.mkdir(parents=True)
    assert main(["train", "--max-steps", "1", "--output", str(out)]) == 2
    assert f"--output {out} exists: give a new folder, or continue that run with --resume {out}" in \
        capsys.readouterr().err
    assert [p.name for p in out.parent.iterdir()] == ["taken"]  # no taken-1 beside it
