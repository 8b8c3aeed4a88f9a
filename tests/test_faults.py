"""Faults, each injected for real: SIGKILL (mid-step and mid-save) then resume, OOM, disk full, stop while loading,
concurrent starts. Nothing completed may be lost."""

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer import job as job_module
from trainer.config import TrainConfig
from trainer.job import Busy, JobManager, TrainingJob
from trainer.runs import RunFolder, checkpoint_problem

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(data="sample", quant="none", lora_r=4, lora_alpha=8, batch_size=2, learning_rate=1e-3,
            sample_every=0, probe_size=2, num_samples=2, save_minutes=0, target_modules=["q_proj", "v_proj"],
            head_rows=8)


@pytest.fixture
def fast(tiny_model):
    """These tests' config on the tiny model: they test what happens around the steps, where the demo only waits."""
    return {**FAST, "model": str(tiny_model)}


def cli(args, env=None):
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "slow_save_cli.py"), *args], cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, timeout=300, every=0.2):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(every)
    raise AssertionError("condition not reached in time")


def loss_steps(run: RunFolder) -> list[int]:
    return [r["step"] for r in run.metrics() if "loss" in r]


def test_sigkill_mid_save_and_mid_step_then_resume_loses_nothing(tmp_path, tiny_model):
    out = tmp_path / "runs" / "killed"
    run = RunFolder(out)
    train = ["train", "--data", "sample", "--model", str(tiny_model), "--quant", "none", "--lora-r", "4",
             "--batch-size", "2", "--target-modules", "q_proj,v_proj", "--max-steps", "12", "--save-steps", "3",
             "--sample-every", "0", "--probe-size", "2", "--head-rows", "8", "--output", str(out)]
    # 1. Killed while checkpoint-6 is half written (weights there, optimizer and trainer state not yet).
    proc = cli(train, {"SLOW_CHECKPOINT": "checkpoint-6", "SLOW_SECONDS": "120"})
    half = out / "checkpoints" / "checkpoint-6"
    wait_for(lambda: (half / "adapter_model.safetensors").is_file())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run.state() == "interrupted"  # its process is gone; the status file still says training
    assert "optimizer.pt missing" in checkpoint_problem(half)

    # 2. Resume skips the torn checkpoint-6, continues from checkpoint-3; killed again mid-step, after step 8.
    proc = cli(["train", "--resume", str(out)], {"SLOW_STEP": "0.5"})
    wait_for(lambda: max(loss_steps(run), default=0) >= 8)
    proc.send_signal(signal.SIGKILL)
    output = proc.communicate()[0]
    assert "resuming from checkpoint-3 (checkpoint-6 skipped: optimizer.pt missing" in output
    assert run.status()["resumes"][0]["from"] == "checkpoint-3"

    # 3. Resume from the newest complete checkpoint (6 or later) and finish.
    last, _ = run.last_complete_checkpoint()
    assert int(last.name.split("-")[1]) >= 6
    proc = cli(["train", "--resume", str(out)])
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output
    assert run.state() == "done" and run.status()["step"] == 12
    # Every step once, in order: no gap, no restart, no duplicate.
    assert loss_steps(run) == list(range(1, 13))
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()


def test_sigkill_after_the_last_checkpoint_resumes_to_done_without_an_extra_step(tmp_path, tiny_model):
    out = tmp_path / "runs" / "last"
    run = RunFolder(out)
    train = ["train", "--data", "sample", "--model", str(tiny_model), "--quant", "none", "--lora-r", "4",
             "--batch-size", "2", "--target-modules", "q_proj,v_proj", "--max-steps", "4", "--save-steps", "2",
             "--sample-every", "0", "--probe-size", "2", "--head-rows", "8", "--output", str(out)]
    # Killed while the final adapter is being saved: checkpoint-4 and the step-4 probe are written, the adapter not.
    proc = cli(train, {"SLOW_ADAPTER": "1", "SLOW_SECONDS": "120"})
    wait_for(lambda: any(r["step"] == 4 and "probe_error" in r for r in run.metrics()))
    time.sleep(2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run.state() == "interrupted" and not run.has_adapter()
    assert checkpoint_problem(out / "checkpoints" / "checkpoint-4") is None

    proc = cli(["train", "--resume", str(out)])
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output
    assert "resuming from checkpoint-4" in output
    assert run.state() == "done" and run.status()["step"] == 4
    # The Trainer alone would have trained a step 5 (at learning rate 0): nothing is left to train.
    assert loss_steps(run) == [1, 2, 3, 4]
    assert [r["step"] for r in run.metrics() if "probe_error" in r] == [0, 4]  # step 4 was priced before the kill
    saved = load_file(str(run.adapter_dir / "adapter_model.safetensors"))
    checkpoint = load_file(str(out / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"))
    assert saved.keys() == checkpoint.keys() and all(torch.equal(saved[k], checkpoint[k]) for k in saved)


def test_out_of_memory_fails_with_advice_and_the_next_run_starts(runs_dir, monkeypatch, fast):
    real_step = job_module.Trainer.training_step

    def oom_on_step_2(self, *args, **kwargs):
        if self.state.global_step == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(job_module.Trainer, "training_step", oom_on_step_2)
    jobs = JobManager()
    failed = jobs.start(TrainConfig(name="oom", max_steps=5, save_steps=0, **fast), runs_root=runs_dir)
    assert failed.wait(300) == "failed"
    error = failed.run.status()["error"]
    assert "Out of GPU memory" in error and "batch size" in error and "4-bit" in error
    assert not failed.thread.is_alive()

    monkeypatch.setattr(job_module.Trainer, "training_step", real_step)
    ok = jobs.start(TrainConfig(name="after-oom", max_steps=2, save_steps=0, **fast), runs_root=runs_dir)
    assert ok.wait(300) == "done"


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(runs_dir, monkeypatch, fast):
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "checkpoint-4" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    job = TrainingJob.new(TrainConfig(name="full", max_steps=6, save_steps=2, **fast), runs_root=runs_dir).start()
    assert job.wait(300) == "failed"
    assert "Disk full" in job.run.status()["error"]
    last, skipped = job.run.last_complete_checkpoint()
    assert last.name == "checkpoint-2" and checkpoint_problem(last) is None
    assert any("checkpoint-4" in note for note in skipped)

    monkeypatch.setattr(torch, "save", real_save)
    resumed = TrainingJob.resume(job.run.path).start()
    assert resumed.wait(300) == "done"
    assert loss_steps(job.run) == list(range(1, 7))


def test_stop_while_loading_and_twice_ends_in_bounded_time(runs_dir, monkeypatch, fast):
    real_load = job_module.load_model
    loading = threading.Event()

    def slow_load(*args, **kwargs):
        loading.set()
        time.sleep(2)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(job_module, "load_model", slow_load)
    jobs = JobManager()
    job = jobs.start(TrainConfig(name="early", max_steps=50, **fast), runs_root=runs_dir)
    assert loading.wait(120)
    jobs.stop()
    jobs.stop()
    started = time.time()
    assert job.wait(60) == "stopped"
    assert time.time() - started < 30 and not job.thread.is_alive()
    assert job.run.status()["message"] == "stopped before training began"


def test_stop_during_a_trained_heads_first_pass_ends_before_training(runs_dir, monkeypatch, fast):
    import trainer.pricing.hidden_state as hidden_state

    real_states, in_pass, batches = hidden_state.last_states, threading.Event(), []

    def last_states(*args, report=None, **kwargs):
        def counted(done, total):
            batches.append((done, total))
            if report:
                report(done, total)

        in_pass.set()
        time.sleep(1)  # the Stop below lands while the pass is under way
        return real_states(*args, report=counted, **kwargs)

    monkeypatch.setattr(hidden_state, "last_states", last_states)
    jobs = JobManager()
    job = jobs.start(TrainConfig(name="head-stop", max_steps=50, head_loss=1.0, **fast), runs_root=runs_dir)
    assert in_pass.wait(120)
    jobs.stop()
    assert job.wait(60) == "stopped"
    assert job.run.status()["message"] == "stopped before training began"
    # It stopped after the pass's first batch of several, not at its end.
    assert len(batches) == 1 and batches[0][0] < batches[0][1], batches


def test_two_simultaneous_starts_give_exactly_one_job(runs_dir, fast):
    jobs, results, barrier = JobManager(), [], threading.Barrier(2)

    def press_start(name):
        barrier.wait()
        try:
            results.append(jobs.start(TrainConfig(name=name, max_steps=2, save_steps=0, **fast), runs_root=runs_dir))
        except Busy as exc:
            results.append(exc)

    threads = [threading.Thread(target=press_start, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    started = [r for r in results if isinstance(r, TrainingJob)]
    refused = [r for r in results if isinstance(r, Busy)]
    assert len(started) == 1 and len(refused) == 1
    assert started[0].wait(300) == "done"
    assert sorted(p.name for p in runs_dir.iterdir()) == [started[0].run.name]


def test_stop_during_a_checkpoint_save_ends_cleanly_with_a_complete_checkpoint(runs_dir, monkeypatch, fast):
    real_save = job_module.Trainer._save_optimizer_and_scheduler
    saving = threading.Event()

    def slow_save(self, output_dir):
        saving.set()
        time.sleep(3)
        return real_save(self, output_dir)

    monkeypatch.setattr(job_module.Trainer, "_save_optimizer_and_scheduler", slow_save)
    jobs = JobManager()
    job = jobs.start(TrainConfig(name="midsave", max_steps=50, save_steps=2, **fast), runs_root=runs_dir)
    assert saving.wait(300)
    jobs.stop()
    jobs.stop()
    started = time.time()
    assert job.wait(120) == "stopped"
    assert time.time() - started < 60 and not job.thread.is_alive()
    last, skipped = job.run.last_complete_checkpoint()
    assert last is not None and not skipped
    assert (job.run.adapter_dir / "adapter_model.safetensors").is_file()
