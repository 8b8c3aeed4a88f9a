"""How long a run takes: the work it does (steps, probes, the price head, saves) times what each costs, measured in
the run itself or, before it has measured one, in the newest run of the same model on this machine.

The live view's ETA and the form's pre-Start estimate both come from here, so they count the same phases.
"""

from __future__ import annotations

import math
import os
import platform
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import torch

from .runs import RunFolder, list_runs

# A short run's probes and price head are cut to the work its steps do, so a smoke test does not spend minutes
# around seconds of training: the probe prices at most one item per example trained and the head is fitted on at
# most HEAD_ROWS_PER_EXAMPLE rows per example trained (a row is one forward pass, an example about three), never
# below these floors. A default run (250 steps × 8) is far above both and does the full work.
HEAD_ROWS_PER_EXAMPLE = 2
MIN_HEAD_ROWS = 100
# Seconds of a price-head row per second of a probe item, measured on the demo model with the expected-value probe
# (2-core AMD EPYC Zen 3: 0.35 s an item, 0.19 s a row); used only until a run has timed its own head.
HEAD_ROW_PER_PROBE_ITEM = 0.55
LONG_RUN_SECONDS = 30 * 60
# The Trainer needs a step count to bound its loop; a run fitted to its time limit stops itself far sooner.
FIT_STEPS_BOUND = 10**7
SETUP_PHASES = ("data", "text baseline", "tokenize", "model load")


@dataclass
class Plan:
    """The work of a whole run, laid out once its step count is known (status.json "plan")."""

    total_steps: int
    """Optimizer steps the run trains."""
    sample_every: int
    """A probe every this many steps (0: only at the start and the end)."""
    probe_items: int
    """Items each probe prices."""
    head_rows: int
    """Training rows the price head is fitted on after the last step."""
    save_steps: int
    """A checkpoint every this many steps (0: none by step count)."""
    full: bool = True
    """False when the probes or the head were cut to a short run's steps."""

    def probes_after(self, step: int) -> int:
        """Probes still to come once `step` is done (and its own probe, if it has one, priced)."""
        points = {self.total_steps}
        if self.sample_every:
            points |= set(range(self.sample_every, self.total_steps, self.sample_every))
        return sum(1 for s in points if s > step)

    def saves_after(self, step: int) -> int:
        return len(range(self.save_steps * (step // self.save_steps + 1), self.total_steps + 1, self.save_steps)) \
            if self.save_steps else 0


def plan_for(config, train_rows: int, total_steps: int) -> Plan:
    """The run's plan: the config's probe size and head rows, cut to what a short run's steps train."""
    trained = total_steps * config.batch_size * config.grad_accum
    wanted = max(config.probe_size, config.num_samples)
    probe = min(wanted, max(config.num_samples, trained))
    head = min(config.head_rows, train_rows, max(MIN_HEAD_ROWS, HEAD_ROWS_PER_EXAMPLE * trained))
    return Plan(total_steps, config.sample_every, probe, head, config.save_steps,
                full=probe == wanted and head == min(config.head_rows, train_rows))


def planned_steps(config, train_rows: int, world_size: int = 1) -> int:
    """The optimizer steps a config trains on `train_rows` rows (max_steps, else its epochs), as the Trainer counts;
    for a run fitted to its time limit, the Trainer's loop bound (the fit stops it far sooner)."""
    if config.fit_to_time:
        return FIT_STEPS_BOUND
    if config.max_steps:
        return config.max_steps
    per_epoch = math.ceil(train_rows / (config.batch_size * world_size)) // config.grad_accum
    return max(1, math.ceil(per_epoch * config.epochs))


def plan_note(plan: Plan, config) -> str:
    if plan.full:
        return ""
    return (f"a short run: each probe prices {plan.probe_items} items (of {config.probe_size}) and the price head is "
            f"fitted on {plan.head_rows} rows (of {config.head_rows}); longer runs do the full work")


@dataclass
class Rates:
    """Seconds each unit of work costs, and where they were measured."""

    step: float | None = None
    probe_item: float | None = None
    head_row: float | None = None
    save: float = 0.0
    setup: float = 0.0
    """Reading the data, the text baseline, tokenizing and loading the model: paid once, before the first probe."""
    source: str = ""

    def or_from(self, other: "Rates | None") -> "Rates":
        """These rates, each missing one taken from `other`."""
        if other is None:
            return self
        mine = asdict(self)
        theirs = asdict(other)
        merged = {k: mine[k] if mine[k] not in (None, 0.0, "") else theirs[k] for k in mine}
        merged["source"] = self.source or other.source
        return Rates(**merged)

    def head(self) -> float | None:
        if self.head_row is not None:
            return self.head_row
        return None if self.probe_item is None else self.probe_item * HEAD_ROW_PER_PROBE_ITEM


def seconds(plan: Plan, rates: Rates, after_step: int = 0, head_rows_done: int = 0) -> float | None:
    """Seconds of the work left once `after_step` is done: steps, probes, checkpoint saves, the head; None while a
    rate it needs is unknown."""
    head = rates.head()
    if rates.step is None or rates.probe_item is None or head is None:
        return None
    return ((plan.total_steps - after_step) * rates.step
            + plan.probes_after(after_step) * plan.probe_items * rates.probe_item
            + plan.saves_after(after_step) * rates.save
            + max(plan.head_rows - head_rows_done, 0) * head)


def steps_within(plan: Plan, rates: Rates, seconds_left: float, after_step: int = 0,
                 probe_due: bool = False) -> int | None:
    """The most steps a run can train when its steps, probes (its last one included) and checkpoint saves after
    `after_step` may take `seconds_left` at `rates`: `after_step` itself when no more fit (but at least 1).
    `probe_due`: the probe of `after_step` is still to come. None while the step or probe rate is unknown."""
    if rates.step is None or rates.probe_item is None:
        return None
    budget = seconds_left - (plan.probe_items * rates.probe_item if probe_due else 0.0)

    def fits(total: int) -> bool:
        return seconds(replace(plan, total_steps=total, head_rows=0), rates, after_step) <= budget

    low = max(after_step, 1)
    high = low + max(int(budget / rates.step), 0)
    while low < high:  # the time grows with the step count: the last count that fits
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def forecast(plan: Plan, rates: Rates) -> float | None:
    """Seconds of a whole run: loading, the base model's probe at step 0, then all of `seconds`."""
    rest = seconds(plan, rates)
    return None if rest is None else rates.setup + plan.probe_items * rates.probe_item + rest


def machine() -> str:
    """This machine's compute, as runs record it: the GPU's name, else the CPU's model and core count."""

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} × {torch.cuda.device_count()}"
    return f"{_cpu_name()} ({os.cpu_count()} cores)"


@lru_cache(maxsize=1)
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_rates(run: RunFolder) -> Rates | None:
    """What a finished (or running) run measured: its mean step, probe item, head row and checkpoint save."""
    status = run.status()
    if not (status.get("clock") or {}).get("steps"):
        return None
    rates = measured(status)
    rates.setup = sum((status.get("phases") or {}).get(p, 0.0) for p in SETUP_PHASES)
    rates.source = f"run {run.name}"
    return rates


def measured(status: dict) -> Rates:
    """The mean cost of each unit of work a run's status has counted (TrainingJob.tick); None where it has none."""
    clock = status.get("clock") or {}
    mean = lambda key: clock[f"{key}_s"] / clock[key] if clock.get(key) else None  # noqa: E731
    return Rates(step=mean("steps"), probe_item=mean("probe_items"), head_row=mean("head_rows"),
                 save=mean("saves") or 0.0, source="this run")


def newest_rates(model: str, quant: str, precision: str, batch_size: int, max_length: int, root: Path | None = None,
                 skip: str = "") -> Rates | None:
    """The rates of the newest run of this model, quantization and precision on this machine, its step time scaled
    to this batch size and max length (a step's cost grows with the tokens in it)."""
    here = machine()
    for run in list_runs(root):
        if run.name == skip:
            continue
        status = run.status()
        shape = status.get("shape") or {}
        if status.get("machine") != here or shape.get("model") != model or shape.get("quant") != quant \
                or shape.get("precision") != precision:
            continue
        rates = run_rates(run)
        if rates is None:
            continue
        tokens, theirs = batch_size * (max_length or shape["max_length"]), shape["batch_size"] * shape["max_length"]
        rates.step *= tokens / theirs
        return rates
    return None


def describe(plan: Plan, rates: Rates, config) -> str:
    """One paragraph: the expected wall time of a run, by phase, and what shortens it when it is long."""
    total = forecast(plan, rates)
    if total is None:
        return ""
    probes = plan.probes_after(0) + 1  # and the base model's, at step 0
    parts = [f"loading {minutes(rates.setup)}", f"{plan.total_steps} steps × {rates.step:.1f} s",
             f"{probes} probes × {plan.probe_items} items × {rates.probe_item:.2f} s",
             f"price head {plan.head_rows} rows × {rates.head():.2f} s"]
    text = f"**Time on this machine ≈ {minutes(total)}** ({', '.join(parts)}; rates from {rates.source})."
    if not plan.full:
        text += f" As {plan_note(plan, config)}."
    if total > LONG_RUN_SECONDS:
        text += (" That is long: fewer max steps, a lower max length or rank, or a time limit (training then stops "
                 "and saves at the limit) shorten it.")
    return text


def hms(s: float) -> str:
    """"m:ss", or "h:mm:ss" from an hour."""
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def minutes(s: float) -> str:
    s = int(max(s, 0))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def run_plan(status: dict) -> Plan | None:
    return Plan(**status["plan"]) if status.get("plan") else None


def own_rates(status: dict) -> Rates:
    """A run's rates so far, each one it has not measured yet from the run it was planned by (status "prior")."""
    prior = status.get("prior")
    return measured(status).or_from(Rates(**prior) if prior else None)


def eta(status: dict, now: float) -> float | None:
    """Seconds left of a training run: the steps, probes, saves and price-head rows still to come, at this run's
    measured rates, counted down from the last thing it finished; None while a rate it needs is unknown."""
    plan = run_plan(status)
    if status.get("state") != "training" or plan is None:
        return None
    rates = own_rates(status)
    head = status.get("fitting_head")
    if head:  # the steps and probes are over; the head's rows at their pace so far
        if head.get("done"):
            rates.head_row = (now - head["since"]) / head["done"]
        left = seconds(plan, rates, plan.total_steps, head.get("done", 0))
        return None if left is None else max(left - (now - head.get("at", now)), 0.0)
    step = status.get("step") or 0
    left = seconds(plan, rates, step)
    if left is None:
        return None
    # The probe being priced now is not among those after its step, nor is the last step's (it follows the loop).
    if status.get("pricing_probe") is not None or step >= plan.total_steps:
        left += plan.probe_items * rates.probe_item
    return max(left - (now - status.get("clock_at", now)), 0.0)
