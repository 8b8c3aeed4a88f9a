"""Sweeps: the grid from --set, a two-run sweep on the demo model ranked by held-out $ error beside the text
baseline, and a sweep killed between its runs that continues where it stopped."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from e2e_app import ROOT  # noqa: E402

from trainer.config import ConfigError
from trainer.sweep import LEADERBOARD_FILE, grid, list_sweeps, parse_set


def test_the_grid_from_set_flags():
    assert parse_set("lora_r=8,16,32") == ("lora_r", [8, 16, 32])
    assert parse_set("learning-rate=3e-4,1e-3") == ("learning_rate", [3e-4, 1e-3])
    assert parse_set("target_modules=q_proj+v_proj,q_proj") == ("target_modules", [["q_proj", "v_proj"], ["q_proj"]])
    assert parse_set("gradient_checkpointing=true,false") == ("gradient_checkpointing", [True, False])
    points = grid([parse_set("lora_r=8,16"), parse_set("learning_rate=3e-4,1e-3")])
    assert points == [{"lora_r": 8, "learning_rate": 3e-4}, {"lora_r": 8, "learning_rate": 1e-3},
                      {"lora_r": 16, "learning_rate": 3e-4}, {"lora_r": 16, "learning_rate": 1e-3}]
    for bad, words in [("lora_rank=8", "'lora_rank' is not a config field"), ("lora_r", "write FIELD=VALUE"),
                       ("test_size=0.1,0.2", "cannot vary test_size"), ("lora_r=8,x", "lora_r: must be a number")]:
        with pytest.raises(ConfigError, match=words):
            parse_set(bad)
    with pytest.raises(ConfigError, match="the sweep has 81 runs; at most 64"):
        grid([parse_set("lora_r=1,2,3,4,5,6,7,8,9"), parse_set("seed=1,2,3,4,5,6,7,8,9")])


SWEEP = ["--data", "sample", "--quant", "none", "--lora-alpha", "8", "--batch-size", "4",
         "--max-steps", "2", "--sample-every", "0", "--save-steps", "1", "--test-size", "6", "--validation-size", "8",
         "--probe-size", "4", "--head-rows", "8", "--set", "lora_r=2,4"]


@pytest.mark.slow
def test_a_sweep_killed_between_runs_continues_and_ranks_by_held_out_error(tmp_path, tiny_model):
    folder = tmp_path / "runs" / "SW"
    command = [sys.executable, "-m", "trainer", "sweep", *SWEEP, "--model", str(tiny_model), "--output", str(folder)]
    first = tmp_path / "runs" / "SW-01-lora_r-2"
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        end = time.time() + 600
        while not (first / "eval.json").is_file() and proc.poll() is None and time.time() < end:
            time.sleep(0.2)
        assert (first / "eval.json").is_file(), "the first run was never evaluated"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # as a crash would: no Stop, no checkpoint at the kill
        proc.wait()
    evaluated = (first / "eval.json").stat().st_mtime_ns
    # The same command again: the first run is not trained or evaluated again; the second is trained (resumed from
    # a checkpoint or started over, wherever the kill caught it) and evaluated.
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continuing the sweep recorded in" in again.stdout and "[1/2] lora_r=2: done before" in again.stdout
    assert (first / "eval.json").stat().st_mtime_ns == evaluated
    rows = json.loads((folder / LEADERBOARD_FILE).read_text())
    assert len(rows) == 4 and {r["run"] for r in rows} >= {"SW-01-lora_r-2", "SW-02-lora_r-4"}
    assert [r["error"] for r in rows] == sorted(r["error"] for r in rows)
    second = json.loads((tmp_path / "runs" / "SW-02-lora_r-4" / "eval.json").read_text())
    for label, key in (("TF-IDF ridge", "tfidf_ridge"), ("TF-IDF neighbours", "tfidf_neighbours")):
        baseline = next(r for r in rows if r["run"].startswith(label))
        assert baseline["error"] == second["baselines"][key]["error"]  # the same held-out rows for all
    assert json.loads((first / "eval.json").read_text())["count"] == second["count"] == 6
    assert "rank run" in again.stdout and "SW-02-lora_r-4" in again.stdout


@pytest.mark.e2e
def test_a_sweep_from_the_api_shows_its_grid_trains_and_lands_in_the_runs_tab(launched_app, tmp_path, tiny_model):
    from gradio_client import Client, handle_file

    own = tmp_path / "desks.jsonl"
    own.write_text("".join(json.dumps({"title": f"Walnut desk organiser no. {i}", "price": 10 + i}) + "\n"
                           for i in range(60)))
    client = Client(launched_app.url, verbose=False)
    assert "60 of 60 rows kept" in client.predict(handle_file(str(own)), api_name="/upload")[0]
    # The form's fields and the sweep's, by their names (the endpoint takes the form as Start does).
    values = dict(model=str(tiny_model), quant="none", lora_r=4, lora_alpha=8, lora_dropout=0.05,
                  target_modules=["q_proj", "v_proj"], learning_rate=1e-3, max_steps=2, batch_size=2, sample_every=0,
                  probe_size=2, seed=1, save_steps=1, validation_size=4, head_rows=8,
                  field_a="lora_r", values_a="2,4", field_b="", values_b="")
    grid_text = client.predict(**values, api_name="/sweep_grid")
    assert "**2 runs" in grid_text and "| 1 | lora_r=2 | 2 |" in grid_text and "| 2 | lora_r=4 | 2 |" in grid_text
    bad = {**values, "values_a": "2,x"}
    assert "Cannot sweep:** --set 'lora_r=2,x': lora_r: must be a number" in client.predict(**bad, api_name="/sweep_grid")
    started = client.predict(**values, api_name="/start_sweep")
    assert started.startswith("Started sweep **sweep-"), started
    name = started.split("**")[1]
    # One sweep at a time, and a sweep does not start beside a training run: refused before any folder is made.
    assert "Cannot start the sweep:** Busy" in client.predict(**values, api_name="/start_sweep")
    assert [p.name for p in list_sweeps(launched_app.runs)] == [name]
    end = time.time() + 600
    while time.time() < end:
        table, progress = client.predict(name, api_name="/sweep_leaderboard")
        if len(table["data"]) == 4:  # both runs and both text baselines
            break
        time.sleep(2)
    assert len(table["data"]) == 4, progress
    ranked = [row[1] for row in table["data"]]
    assert any(r.startswith("TF-IDF ridge") for r in ranked) and any(r.startswith("TF-IDF neighbours") for r in ranked)
    assert {f"{name}-01-lora_r-2", f"{name}-02-lora_r-4"} <= set(ranked)
    errors = [row[2] for row in table["data"]]
    assert errors == sorted(errors)
    assert "[2/2] lora_r=4: evaluating" in progress
    # Continuing a finished sweep trains nothing again: each run is skipped, the leaderboard stays.
    assert client.predict(name, api_name="/continue_sweep").startswith(f"Continuing sweep **{name}**")
    end = time.time() + 120
    while "[2/2] lora_r=4: done before" not in progress and time.time() < end:
        table, progress = client.predict(name, api_name="/sweep_leaderboard")
        time.sleep(1)
    assert "[1/2] lora_r=2: done before" in progress and len(table["data"]) == 4, progress
    listed = client.predict(api_name="/list_runs")[0]["data"]
    assert {f"{name}-01-lora_r-2", f"{name}-02-lora_r-4"} <= {row[0] for row in listed}
