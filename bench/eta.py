"""How honest the live ETA is: a run of the default config (or a shorter one), with the ETA it showed after a few
steps set against the wall time the run really took from there. Prints ratios (ETA ÷ real time left); asserts
nothing. The ETA is the live view's and the CLI's own (trainer/clock.py), read from the run's status.json.

    .venv/bin/python bench/eta.py [--max-steps 250] [--sample-every 50] [--at 2]

The run trains the demo model on the sample data into a temporary folder; on a shared machine the ratios move with
the load, so run it on a quiet one and name the CPU beside the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import clock  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.job import TrainingJob  # noqa: E402


def main() -> None:
    default = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-steps", type=int, default=default.max_steps)
    p.add_argument("--sample-every", type=int, default=default.sample_every)
    p.add_argument("--at", type=int, default=2, help="the step whose ETA is checked (and each quarter of the run)")
    args = p.parse_args()
    config = dataclasses.replace(default, name="eta", data="sample", max_steps=args.max_steps,
                                 sample_every=args.sample_every, report_to="none")
    checks = sorted({args.at, *(round(args.max_steps * q) for q in (0.25, 0.5, 0.75))} - {0})
    with tempfile.TemporaryDirectory() as root:
        began = time.time()
        job = TrainingJob.new(config, runs_root=Path(root)).start()
        seen: dict[int, tuple[float, float]] = {}  # step -> (when, ETA then)
        while job.thread.is_alive():
            job.thread.join(0.2)
            status = job.run.status()
            step, now = status.get("step") or 0, time.time()
            left = clock.eta(status, now)
            # Read the first moment each checked step is done and its own probe (if any) is not yet being priced.
            for at in checks:
                if at not in seen and step >= at and left is not None:
                    seen[at] = (now, left, clock.own_rates(status))
        ended = time.time()
        status = job.run.status()
        final = clock.run_rates(job.run)
    print(f"{clock.machine()}: {args.max_steps} steps of the default config (probe every {args.sample_every}), "
          f"{status['state']} in {clock.hms(ended - began)}; plan {status.get('plan')}")
    shown = lambda r: (f"step {r.step:.2f} s, probe item {r.probe_item:.3f} s, head row {r.head():.3f} s"  # noqa: E731
                       f"{'' if r.head_row else ' (estimated from the probe)'}")
    for at, (when, left, rates) in sorted(seen.items()):
        real = ended - when
        print(f"  ETA at step {at:>4}: {clock.hms(left)} vs {clock.hms(real)} real → ETA / real = {left / real:.2f} "
              f"({shown(rates)})")
    print(f"  measured over the whole run: {shown(final)}; phases (s): {status.get('phases')}")


if __name__ == "__main__":
    main()
