"""Experiment trackers through the Trainer's report_to: TensorBoard's logs in the run folder with PriceTune's $
metrics beside the loss, a missing tracker refused before any folder exists, a failing one only a warning."""

import pytest

from trainer import trackers
from trainer.config import ConfigError, TrainConfig
from trainer.job import TrainingJob

SMALL = dict(data="sample", model="demo", quant="none", lora_r=4, lora_alpha=8, batch_size=4, save_steps=0,
             test_size=6, validation_size=6, probe_size=4, num_samples=2, head_rows=8)


@pytest.mark.slow
def test_tensorboard_logs_the_loss_and_the_probe_dollars_inside_the_run_folder(runs_dir, tiny_model):
    pytest.importorskip("tensorboard")  # a test requirement (requirements-dev.txt), never a runtime one
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    job = TrainingJob.new(TrainConfig(name="tb", max_steps=2, sample_every=1, report_to="tensorboard",
                                      **{**SMALL, "model": str(tiny_model)}), runs_root=runs_dir).start()
    job.thread.join(timeout=600)
    assert job.run.status()["state"] == "done", job.run.status()
    events = list((job.run.path / "tensorboard").glob("events.out.tfevents.*"))
    assert events, list(job.run.path.iterdir())
    scalars = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    assert {"train/loss", "train/probe/error_usd", "train/probe/rmsle", "train/baseline/tfidf_ridge_error_usd"} <= \
        set(scalars)
    probe = EventAccumulator(str(events[0].parent)).Reload().Scalars("train/probe/error_usd")
    measured = [r for r in job.run.metrics() if "probe_error" in r]
    assert [round(e.value, 3) for e in probe] == [round(r["probe_error"], 3) for r in measured]  # steps 0, 1, 2
    assert "tracker_warning" not in job.run.status()


def test_a_tracker_that_is_not_installed_is_refused_before_any_folder(runs_dir):
    absent = [t for t in trackers.TRACKERS if trackers.missing(t)]
    assert absent, "every tracker is installed here: nothing to refuse"
    with pytest.raises(ConfigError, match=f"report_to: {absent[0]} is not installed here; add it with `pip install"):
        TrainingJob.new(TrainConfig(name="nope", report_to=absent[0], **SMALL), runs_root=runs_dir)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
    assert trackers.label(absent[0]).endswith(f"(not installed: pip install {trackers.PACKAGES[absent[0]]})")


def test_a_failing_tracker_is_a_warning_and_is_skipped_after(tmp_path):
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.integrations import TensorBoardCallback

    pytest.importorskip("tensorboard")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    callback = TensorBoardCallback()
    callback.logging_dir = str(blocker / "tensorboard")  # cannot be made: its parent is a file
    warnings = []
    guarded = trackers.Guarded(callback, warnings.append)
    args, state, control = TrainingArguments(output_dir=str(tmp_path / "out")), TrainerState(), TrainerControl()
    assert guarded.on_train_begin(args, state, control) is None  # the error did not reach training
    assert len(warnings) == 1 and warnings[0].startswith("TensorBoardCallback failed (") and "goes on" in warnings[0]
    guarded.on_log(args, state, control, logs={"loss": 1.0})  # skipped from now on: no second warning
    assert len(warnings) == 1
