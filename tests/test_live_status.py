"""The live view's status line: the ETA while the probe is priced, and the settings of the running run."""

import re

from ui import live


def eta_seconds(text: str) -> int:
    minutes, seconds = re.search(r"ETA (\d+):(\d\d)", text).groups()
    return int(minutes) * 60 + int(seconds)


def test_eta_counts_every_phase_left_and_runs_down_while_the_probe_is_priced(tmp_path, monkeypatch):
    from trainer.config import TrainConfig
    from trainer.runs import RunFolder

    run = RunFolder(tmp_path / "r")
    run.path.mkdir()
    run.config_file.write_text(TrainConfig(lora_r=4, data="/tmp/gradio/abc/my file.csv").validate().to_yaml())
    t0 = 1_000_000.0
    # 30 steps, a probe every 10 (and at the end) of 50 items, a 200-row head; measured so far: 10 steps at 4 s,
    # two probes (steps 0 and 10) at 0.5 s an item, no save, no head row yet.
    plan = {"total_steps": 30, "sample_every": 10, "probe_items": 50, "head_rows": 200, "save_steps": 0}
    status = {"state": "training", "step": 10, "total_steps": 30, "started": t0 - 5, "training_started": t0,
              "plan": plan, "clock": {"steps": 10, "steps_s": 40.0, "probe_items": 50, "probe_items_s": 25.0},
              "pricing_probe": 10, "clock_at": t0 + 100}
    # Left at the probe's start: its 25 s, 20 steps (80 s), probes at 20 and 30 (50 s), the head's rows at the
    # probe's pace times 0.55 (200 × 0.275 s = 55 s).
    etas = []
    for later in (0, 10, 20):  # no step ends while the probe is priced: the clock runs down
        monkeypatch.setattr(live.time, "time", lambda: t0 + 100 + later)
        text = live.status_text(run, status, [], live.run_settings(run))
        etas.append(eta_seconds(text))
    assert etas == [210, 200, 190]
    assert "Pricing the probe set at step 10…" in text
    assert "Settings of this run: demo" in text and "LoRA r 4" in text and "data my file.csv" in text
    assert "/tmp/gradio" not in text

    # At the last step the probe at the end and the head are still to come: not 0:00.
    status.update(step=30, pricing_probe=None, clock_at=t0 + 300)
    monkeypatch.setattr(live.time, "time", lambda: t0 + 300)
    assert eta_seconds(live.status_text(run, status, [])) == 25 + 55
    # The head being fitted: its rows left at its own pace so far.
    status.update(fitting_head={"done": 40, "total": 200, "since": t0 + 330, "at": t0 + 350},
                  message="fitting the price head: 40 of 200 training rows")
    monkeypatch.setattr(live.time, "time", lambda: t0 + 350)
    text = live.status_text(run, status, [])
    assert eta_seconds(text) == 80 and "fitting the price head: 40 of 200 training rows" in text  # 160 rows × 0.5 s
    status.update(fitting_head=None, message=None)
    # Nothing timed yet and no earlier run to go by: no number, and the line says when one comes.
    fresh = {"state": "training", "step": 0, "plan": plan, "clock": {}, "clock_at": t0}
    assert "ETA once a step is timed" in live.status_text(run, fresh, [])
    # A tracker that failed is named in the status, under the rest; the run goes on.
    status["tracker_warning"] = "WandbCallback failed (CommError: no login); training goes on without it"
    assert live.status_text(run, status, []).endswith("\n\n⚠ WandbCallback failed (CommError: no login); "
                                                           "training goes on without it")
