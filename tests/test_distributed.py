"""The same `train` command under torchrun: 2 CPU processes (gloo), one coherent run folder written by rank 0."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.runs import RunFolder

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
STEPS, BATCH = 4, 2
ARGS = ["-m", "trainer", "train", "--data", "sample", "--max-steps", str(STEPS), "--batch-size", str(BATCH),
        "--lora-r", "4", "--target-modules", "q_proj,v_proj", "--sample-every", "2", "--probe-size", "2",
        "--save-steps", "2", "--precision", "fp32", "--head-rows", "8"]


def train(runs: Path, nproc: int, model: Path) -> subprocess.CompletedProcess:
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    env = {**os.environ, "PRICETUNE_RUNS": str(runs), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # No --output: the run folder's name is made (with a timestamp) on rank 0 and shared with the other rank.
    return subprocess.run([*launcher, *ARGS, "--model", str(model)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def final_epoch(run: RunFolder) -> float:
    return [r for r in run.metrics() if "loss" in r][-1]["epoch"]  # logged rounded to 4 decimals


def test_torchrun_two_processes_write_one_run_with_twice_the_examples_per_step(tmp_path, tiny_model):
    two = train(tmp_path / "two", 2, tiny_model)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    folders = list((tmp_path / "two").iterdir())
    assert len(folders) == 1, folders  # rank 1 made no folder of its own
    run = RunFolder(folders[0])
    status = run.status()
    assert status["state"] == "done" and status["step"] == STEPS, status
    assert status["world_size"] == 2 and status["examples_per_step"] == 2 * BATCH

    # Written once: each step's loss row and each probe row exactly once, in order.
    losses = [r["step"] for r in run.metrics() if "loss" in r]
    probes = [r["step"] for r in run.metrics() if "probe_error" in r]
    assert losses == list(range(1, STEPS + 1)) and probes == [0, 2, STEPS]
    assert [s["step"] for s in run.samples()] == [0, 2, STEPS]
    assert all(math.isfinite(r["loss"]) for r in run.metrics() if "loss" in r)
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in run.checkpoints()) == ["checkpoint-2", "checkpoint-4"]
    # Each rank saved its own RNG state into the one checkpoint folder, so a resume restores both.
    assert {p.name for p in (run.checkpoints_dir / "checkpoint-4").glob("rng_state_*.pth")} == \
        {"rng_state_0.pth", "rng_state_1.pth"}
    assert two.stdout.count("run folder:") == 1  # one rank reports

    # The Trainer's own epoch counter: with two processes each step covers twice the training examples.
    one = train(tmp_path / "one", 1, tiny_model)
    assert one.returncode == 0, one.stderr[-3000:]
    single = RunFolder(next((tmp_path / "one").iterdir()))
    n_train = len(single.train_file.read_text().splitlines())
    assert final_epoch(single) == pytest.approx(STEPS / math.ceil(n_train / BATCH), abs=6e-5)
    assert final_epoch(run) == pytest.approx(STEPS / math.ceil(n_train / (2 * BATCH)), abs=6e-5)
    assert json.loads(single.status_file.read_text())["examples_per_step"] == BATCH


def test_accelerate_launch_runs_the_same_command_as_two_processes(tmp_path, tiny_model):
    runs = tmp_path / "runs"
    # The command the UI prints, with --multi_gpu: on a machine without GPUs accelerate still starts the processes
    # and the Trainer joins them over gloo.
    launched = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *ARGS, "--model", str(tiny_model)],
        cwd=ROOT, env={**os.environ, "PRICETUNE_RUNS": str(runs), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    (folder,) = runs.iterdir()
    run = RunFolder(folder)
    status = run.status()
    assert (status["state"], status["world_size"], status["examples_per_step"]) == ("done", 2, 2 * BATCH)
    assert [r["step"] for r in run.metrics() if "loss" in r] == list(range(1, STEPS + 1))
