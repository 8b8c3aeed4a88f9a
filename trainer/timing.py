"""The time a config will take on this machine, before it starts: from the newest run of its model here, or from a
two-step timing run of it (the real job, in the cache folder), for the form, `trainer estimate` and the API."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from . import clock
from .config import TrainConfig
from .paths import runs_dir

TIMING_STEPS = 2


def timings_dir() -> Path:
    # Beside the runs (whose list skips it: it holds no status.json), so a test's or a Space's runs folder holds both.
    return runs_dir() / ".timings"


def known_rates(config: TrainConfig, max_length: int) -> clock.Rates | None:
    """The rates of the newest run (or timing run) of this config's model, quantization and precision here."""
    precision = "bf16" if config.use_bf16() else "fp32"
    batch = config.batch_size * config.grad_accum
    for root in (runs_dir(), timings_dir()):
        rates = clock.newest_rates(config.model, config.quant, precision, batch, max_length, root)
        if rates is not None:
            return rates
    return None


def time_line(config: TrainConfig, max_length: int = 0, train_rows: int | None = None) -> str:
    """The expected wall time of `config` here, by phase, or how to get one."""
    if not config.max_steps and not config.fit_to_time:
        return "Time on this machine: set max steps for an estimate (an epoch's steps depend on the data's rows)."
    rates = known_rates(config, max_length)
    if rates is None:
        return (f"Time on this machine: no run of `{config.model}` ({config.quant}) here yet to go by; **Time it** "
                f"runs {TIMING_STEPS} steps of it (the first step includes warm-up) and estimates the rest.")
    rows, steps = train_rows or config.head_rows, config.max_steps
    if config.fit_to_time:
        steps = clock.steps_within(clock.plan_for(config, rows, clock.FIT_STEPS_BOUND), rates,
                                   60 * config.max_minutes, probe_due=True) or 1
    plan = clock.plan_for(config, rows, steps)
    text = clock.describe(plan, rates, config)
    if config.fit_to_time:
        text += (f" The {steps} steps are those that fit in the time limit of {config.max_minutes:g} min; the run "
                 "counts them again from its own steps as it goes, and its schedule ends when the time does.")
    elif config.max_minutes and clock.forecast(plan, rates) > 60 * config.max_minutes:
        text += f" The time limit of {config.max_minutes:g} min stops training before the last step."
    return text


def measure(config: TrainConfig, jobs) -> clock.Rates:
    """Times `config` for TIMING_STEPS steps, a probe and a few head rows with the real job (`jobs`, the process's
    one job slot: a running run refuses it as Busy); its rates are kept for known_rates."""
    trial = dataclasses.replace(
        config, name=f"timing-{Path(config.model).name}", max_steps=TIMING_STEPS, epochs=1.0, sample_every=0,
        probe_size=8, num_samples=8, head_rows=clock.MIN_HEAD_ROWS // 4, save_steps=0, save_minutes=0.0,
        report_to="none", max_minutes=0.0, max_cost=0.0)
    for old in timings_dir().glob(f"{trial.name}*"):  # only the newest timing of a model is ever read
        shutil.rmtree(old, ignore_errors=True)
    job = jobs.start(trial, runs_root=timings_dir())
    job.wait()
    status = job.run.status()
    if job.outcome != "done":
        shutil.rmtree(job.run.path, ignore_errors=True)
        raise RuntimeError(f"the timing run {job.outcome}: {status.get('error') or status.get('message')}")
    # Only the status is needed later; the adapter, split and checkpoints of a timing run are not.
    for child in job.run.path.iterdir():
        if child.name != "status.json":
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
    return clock.run_rates(job.run)
