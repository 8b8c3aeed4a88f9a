"""The live view's status line: the ETA while the probe is priced, and the settings of the running run."""

import re

from ui import live


def eta_seconds(text: str) -> int:
    minutes, seconds = re.search(r"ETA (\d+):(\d\d)", text).groups()
    return int(minutes) * 60 + int(seconds)


def test_eta_counts_probe_time_and_runs_down_while_the_probe_is_priced(tmp_path, monkeypatch):
    from trainer.config import TrainConfig
    from trainer.runs import RunFolder

    run = RunFolder(tmp_path / "r")
    run.path.mkdir()
    run.config_file.write_text(TrainConfig(lora_r=4, data="/tmp/gradio/abc/my file.csv").validate().to_yaml())
    t0 = 1_000_000.0
    # 10 steps in 100 s (probe pricing included), 20 to go: 200 s left at the end of step 10.
    metrics = [{"step": s, "loss": 1.0, "time": t0 + 10 * s} for s in range(1, 11)]
    status = {"state": "training", "step": 10, "total_steps": 30, "started": t0 - 5, "training_started": t0,
              "training_started_step": 0, "pricing_probe": 10}
    etas = []
    for later in (0, 30, 60):  # the probe takes a minute: no step ends meanwhile
        monkeypatch.setattr(live.time, "time", lambda: t0 + 100 + later)
        text = live.status_text(run, status, metrics, live.run_settings(run))
        etas.append(eta_seconds(text))
    assert etas == [200, 170, 140]
    assert "Pricing the probe set at step 10…" in text
    assert "Settings of this run: demo" in text and "LoRA r 4" in text and "data my file.csv" in text
    assert "/tmp/gradio" not in text

    # A resumed run counts only the steps it trained itself.
    status.update(training_started_step=5, pricing_probe=None)
    monkeypatch.setattr(live.time, "time", lambda: t0 + 100)
    assert eta_seconds(live.status_text(run, status, metrics)) == 400  # 100 s for 5 steps, 20 to go
    # After the last step, the price head's fit: the ETA is its rows left at its pace so far, not 0.
    status.update(step=30, fitting_head={"done": 200, "total": 1000, "since": t0 + 400},
                  message="fitting the price head: 200 of 1000 training rows")
    monkeypatch.setattr(live.time, "time", lambda: t0 + 450)
    text = live.status_text(run, status, metrics)
    assert eta_seconds(text) == 200 and "fitting the price head: 200 of 1000 training rows" in text
    status.update(fitting_head=None, message=None)
    # A tracker that failed is named in the status, under the rest; the run goes on.
    status["tracker_warning"] = "WandbCallback failed (CommError: no login); training goes on without it"
    assert live.status_text(run, status, metrics).endswith("\n\n⚠ WandbCallback failed (CommError: no login); "
                                                           "training goes on without it")
