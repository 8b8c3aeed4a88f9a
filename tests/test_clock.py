"""The honest clock: what a run plans and times, the pre-Start estimate from it, a short run's cut work, and Stop
during a probe."""

import re
import time

import pytest

from trainer import clock, timing
from trainer.__main__ import main
from trainer.config import TrainConfig
from trainer.job import JobManager
from trainer.runs import list_runs


def test_a_short_run_cuts_its_probes_and_head_and_a_default_run_does_the_full_work():
    config = TrainConfig()
    short = clock.plan_for(config, train_rows=2430, total_steps=2)  # 16 examples trained
    assert (short.probe_items, short.head_rows, short.full) == (16, clock.MIN_HEAD_ROWS, False)
    assert "each probe prices 16 items (of 50)" in clock.plan_note(short, config)
    full = clock.plan_for(config, train_rows=2430, total_steps=config.max_steps)
    assert (full.probe_items, full.head_rows, full.full) == (50, 1000, True) and clock.plan_note(full, config) == ""
    # Probes at 50, 100, 150, 200 and after the last step; checkpoints at 100 and 200.
    assert full.probes_after(0) == 5 and full.probes_after(50) == 4 and full.probes_after(249) == 1
    assert full.saves_after(0) == 2 and full.saves_after(100) == 1
    assert clock.planned_steps(TrainConfig(max_steps=0, epochs=1.0, batch_size=8), 2430) == 304


def test_the_steps_that_fit_a_time_limit_count_the_probes_and_saves():
    plan = clock.Plan(total_steps=clock.FIT_STEPS_BOUND, sample_every=50, probe_items=10, head_rows=1000,
                      save_steps=100)
    rates = clock.Rates(step=2.0, probe_item=0.5, head_row=9.0, save=3.0)
    # 600 s: 282 steps (564 s), probes at 50…250 and after the last (6 × 5 s) and saves at 100 and 200 (6 s) = 600 s;
    # a 283rd step would pass it. The head's rows come after the limit.
    assert clock.steps_within(plan, rates, 600) == 282
    assert clock.steps_within(plan, rates, 600, probe_due=True) == 279  # the base model's probe (5 s) first
    # From step 270 with 20 s left: 7 steps (14 s) and the last probe (5 s); the probe of step 250 is behind it.
    assert clock.steps_within(plan, rates, 20, after_step=270) == 277
    assert clock.steps_within(plan, rates, 1, after_step=270) == 270  # nothing more fits: stop here
    assert clock.steps_within(plan, clock.Rates(probe_item=0.5), 600) is None  # no step measured yet


def test_a_run_records_its_plan_and_rates_and_the_next_estimate_uses_them(tiny_run, monkeypatch):
    status = tiny_run.status()
    plan = clock.run_plan(status)
    assert (plan.total_steps, plan.probe_items, plan.head_rows) == (2, 4, 16)
    # Two steps; the probes at step 0 and after the last, 4 items each; the head's 16 rows; no checkpoint.
    assert {k: status["clock"][k] for k in ("steps", "probe_items", "head_rows")} == {
        "steps": 2, "probe_items": 8, "head_rows": 16}
    assert status["machine"] == clock.machine() and status["shape"]["model"] == "demo"
    rates = clock.run_rates(tiny_run)
    assert rates.step > 0 and rates.probe_item > 0 and rates.head_row > 0 and rates.setup > 0

    monkeypatch.setenv("PRICETUNE_RUNS", str(tiny_run.path.parent))
    same = TrainConfig(model="demo", quant="none", batch_size=4, max_steps=100)
    line = timing.time_line(same, status["max_length"])
    assert "Time on this machine ≈" in line and "rates from run tiny" in line and "100 steps" in line
    # Twice the batch: twice the tokens a step, twice the step time.
    double = timing.known_rates(TrainConfig(model="demo", quant="none", batch_size=8), status["max_length"])
    assert double.step == pytest.approx(2 * rates.step)
    # Fitted to a time limit: the steps that fit in it, at the same rates, and the schedule said to follow them.
    fitted = timing.time_line(TrainConfig(model="demo", quant="none", batch_size=4, max_minutes=10, fit_to_time=True),
                              status["max_length"])
    steps = int(re.search(r"The (\d+) steps are those that fit in the time limit of 10 min", fitted)[1])
    assert f"{steps} steps ×" in fitted and steps > 1
    # Another quantization was never run here: no figure, and how to get one.
    assert "no run of `demo` (4bit) here yet" in timing.time_line(TrainConfig(model="demo", quant="4bit"))


def test_time_it_runs_two_real_steps_and_the_estimate_follows(runs_dir, capsys):
    assert main(["estimate", "--quant", "none", "--max-steps", "40", "--batch-size", "2", "--time"]) == 0
    out = capsys.readouterr().out
    assert "timing 2 steps" in out and "Time on this machine ≈" in out and "40 steps ×" in out
    assert "rates from run timing-demo" in out
    # The timing run is kept only as its status, and not among the runs.
    kept = list((runs_dir / ".timings").iterdir())
    assert [p.name for p in kept] == ["timing-demo"] and [f.name for f in kept[0].iterdir()] == ["status.json"]
    assert list_runs(runs_dir) == []


def test_stop_during_a_probe_ends_it_within_a_batch(runs_dir):
    jobs = JobManager()
    config = TrainConfig(name="probe-stop", data="sample", model="demo", quant="none", lora_r=4, batch_size=4,
                         max_steps=50, probe_size=64, num_samples=4, save_steps=0, head_rows=8)
    job = jobs.start(config, runs_root=runs_dir)
    deadline = time.time() + 300
    while job.run.status().get("pricing_probe") is None and time.time() < deadline:
        time.sleep(0.05)
    assert job.run.status().get("pricing_probe") == 0
    jobs.stop()
    assert job.wait(300) == "stopped"
    # The base model's probe of 64 items (4 batches) was left, not finished: no $ error recorded for step 0.
    assert not [r for r in job.run.metrics() if "probe_error" in r]
    assert job.run.status()["clock"].get("probe_items", 0) == 0


def test_the_first_predict_says_it_is_loading_the_model(tiny_run):
    from trainer import inference
    from trainer.tester import explain_price

    inference._cache.clear()
    said = []
    explain_price(tiny_run.path, "A steel kettle, 1.7 l", "expected", progress=lambda d, t, what: said.append(what))
    assert said[0] == "loading the base model and adapter of run tiny"
    said.clear()
    explain_price(tiny_run.path, "A steel kettle, 1.7 l", "expected", progress=lambda d, t, what: said.append(what))
    assert said == []  # loaded once, kept
