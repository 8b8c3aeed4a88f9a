"""The launched app over its HTTP API (gradio_client): start, live metrics, busy, stop, download, predict."""

import csv
import hashlib
import json
import re
import time
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from trainer.runs import RunFolder
from ui.tabs.train import FORM_FIELDS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FORM = dict(model="demo", quant="none", lora_r=4, lora_alpha=8, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
            learning_rate=1e-3, max_steps=60, epochs=1, batch_size=2, grad_accum=1, max_length=0, sample_every=3,
            probe_size=8, seed=1, save_steps=0, validation_size=8, head_rows=8)


def loss_points(plot) -> int:
    if not isinstance(plot, dict) or "plot" not in plot:  # None, or a skipped (unchanged) output
        return 0
    figure = json.loads(plot["plot"])
    return max((len(t.get("y") or []) for t in figure["data"]), default=0)


def file_path(output):
    """The file of a DownloadButton output: a plain path, or the value of a component update."""
    if isinstance(output, dict):
        output = output.get("value")
    if isinstance(output, dict):
        output = output.get("path")
    return output if isinstance(output, str) else None


def poll(client, until, timeout=300):
    """Call /refresh like the page's timer does until `until(status_text, points, download)` holds."""
    end, points, last = time.time() + timeout, 0, None
    while time.time() < end:
        status, plot, _error, _table, download = client.predict(api_name="/refresh")[:5]
        download = file_path(download)
        points = max(points, loss_points(plot))
        last = (status, points, download)
        if until(*last):
            return last
        time.sleep(1)
    raise AssertionError(f"timed out; last poll: {last}")


def trained(app, started: str, timeout=300) -> RunFolder:
    """The run a Start answer names, once it is done."""
    assert started.startswith("Started run"), started
    run = RunFolder(app.runs / re.search(r"\*\*([\w.-]+)\*\*", started).group(1))
    deadline = time.time() + timeout
    while run.state() != "done" and time.time() < deadline:
        time.sleep(1)
    assert run.state() == "done", run.status()
    return run


def test_start_poll_busy_stop_download_predict(launched_app, tmp_path):
    client = Client(launched_app.url, verbose=False)
    client.predict(api_name="/use_sample")
    started = client.predict(**FORM, api_name="/start")
    assert started.startswith("Started run"), started

    status, points, _ = poll(client, lambda s, n, d: n >= 3)
    assert re.search(r"step \d+/60", status)
    # The live $ chart has the strong text baselines' lines from the start: the lines the fine-tune must cross.
    error_chart = json.loads(client.predict(api_name="/refresh")[2]["plot"])
    names = [t.get("name", "") for t in error_chart["data"]]
    assert any(n.startswith("TF-IDF ridge $") for n in names) and any(n.startswith("TF-IDF neighbours $")
                                                                       for n in names), names

    other = Client(launched_app.url, verbose=False)
    other.predict(api_name="/use_sample")
    busy = other.predict(**FORM, api_name="/start")
    assert re.search(r"Busy: run \S+ is (training|loading) \(step \d+/(60|\?)\)", busy), busy

    # A second browser (its own session) sees the same run, and the metrics keep growing.
    _, more, _ = poll(other, lambda s, n, d: n > points)
    assert more > points

    assert client.predict(api_name="/stop").startswith("Stopping")
    status, _, download = poll(client, lambda s, n, d: "stopped at step" in s and d)
    with zipfile.ZipFile(download) as z:
        assert {"adapter_model.safetensors", "adapter_config.json", "config.yaml", "metrics.jsonl"} <= set(z.namelist())
        assert z.read("config.yaml").decode().count("lora_r: 4") == 1

    run_name = re.search(r"Run ([\w.-]+)", status).group(1)
    table, _plot = client.predict(run_name, "Premium 12-inch cast iron skillet, pack of 2", api_name="/predict")
    # One headline price by the method chosen on the run's validation rows, every other way labelled beside it.
    assert re.search(r"\| \*\*fine-tuned[^*|]+\*\* ◀ \| \*\*\$[\d,.]+\*\* \|", table), table
    assert re.search(r"by fine-tuned[^—]+ — the lowest \$ error on \d+ validation rows", table), table
    names = ["expected value", "greedy", "price head on the last hidden state",
             "nearest training rows by the last hidden state"]
    assert all(f"fine-tuned, {name}" in table for name in names) and "| base model, greedy |" in table
    assert "fine-tuned + text baselines (ensemble)" in table
    blended, _plot = client.predict(run_name, "Premium 12-inch cast iron skillet", "ensemble", api_name="/predict")
    assert "a linear regression fitted on 8 validation rows" in blended and "◀" in blended
    assert "Pick a finished run" in client.predict("../../etc", "x", api_name="/predict")[0]
    with pytest.raises(AppError, match="not in the list of choices"):  # Gradio's own check, before the handler's
        client.predict(run_name, "x", "__import__('os')", api_name="/predict")

    # The Tester on the run's held-out split: a results table and the course's scatter chart.
    summary, table, scatter, _buckets, _categories, _category_chart = client.predict(run_name, None, 6,
                                                                                   api_name="/evaluate")
    assert "on 6 items" in summary and re.search(r"validation rows\): Error=\$", summary), summary
    assert "eval.json" not in summary and "Saved with run" in summary  # no server paths
    shown = [row[0] for row in table["data"]]
    assert "the fine-tune's best method" in summary and "the strongest baseline" in summary  # the verdict
    # Lowest $ error first; the headline and the strongest baseline marked once each.
    assert [row[1] for row in table["data"]] == sorted(row[1] for row in table["data"])
    assert sum(n.endswith("◀ headline") for n in shown) == 1 and sum(n.endswith("◀ strongest baseline")
                                                                      for n in shown) == 1
    assert {n.split(" ◀")[0] for n in shown if n.startswith("fine-tuned")} == {
        *(f"fine-tuned, {name}" for name in names), "fine-tuned + text baselines (ensemble)"}
    assert "base model, greedy" in shown
    # The strong text baseline sits beside the others, with the current course's MSE and r² for every row.
    rows = {row[0].split(" ◀")[0]: dict(zip(table["headers"], row)) for row in table["data"]}
    assert table["headers"] == ["model", "error $", "RMSLE", "hits %", "MSE", "r²", "unparseable"]
    assert rows["TF-IDF ridge (log price)"]["error $"] > 0 and rows["TF-IDF nearest neighbours (log price)"]["MSE"] > 0
    assert all(r["MSE"] is not None for r in rows.values())
    figure = json.loads(scatter["plot"])
    assert figure["layout"]["title"]["text"].startswith("Error=$") and len(figure["data"][0]["x"]) >= 1
    assert not _categories["visible"]  # the sample data has no category
    # A file of the course's Item records: errors by its category, in a table and a chart, beside the text baseline.
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"title": f"Kettle {i}", "summary": f"Electric kettle {i}, 1.{i} litres",
                                         "category": ["Appliances", "Kitchen"][i % 2], "price": 20.0 + i}) + "\n"
                             for i in range(12)))
    *_, by_category, category_chart = client.predict(run_name, handle_file(str(items)), 4, api_name="/evaluate")
    assert by_category["visible"] and category_chart["visible"]
    assert [row[:2] for row in by_category["value"]["data"]] == [["Appliances", 2], ["Kitchen", 2]]
    bars = json.loads(category_chart["value"]["plot"])["data"]
    assert [bar["name"] for bar in bars] == ["fine-tuned", "text baseline (TF-IDF ridge)"]

    # Price a file: the tab's download has every row, and the same prices as the CLI for the same file.
    summary, download, preview = client.predict(run_name, handle_file(str(items)), "", 0.8, "expected",
                                                api_name="/price_file")
    assert "12 rows in, 12 priced, 0 not priced" in summary and "Against the file's prices (12 rows)" in summary
    priced = Path(file_path(download))
    assert priced.name == "items-priced.jsonl"  # the upload's own format back
    tab_rows = [json.loads(line) for line in priced.read_text(encoding="utf-8").splitlines()]
    assert [r["title"] for r in tab_rows] == [f"Kettle {i}" for i in range(12)] and len(preview["value"]["data"]) == 12
    from trainer.__main__ import main
    out = tmp_path / "cli.csv"
    assert main(["price", "--run", str(launched_app.runs / run_name), str(items), "--out", str(out),
                 "--method", "expected"]) == 0
    cli_rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert [float(r["predicted_price"]) for r in cli_rows] == [r["predicted_price"] for r in tab_rows]
    # A range holds its price, or a row unlike the run's training rows has none and says so.
    assert all("unlike the training rows" in r["note"] if r["price_low"] is None
               else r["price_low"] <= r["predicted_price"] <= r["price_high"] for r in tab_rows)

    # Export: the model card carries that evaluation; the zip has the card and its scatter image.
    card, download, scatter = client.predict(run_name, api_name="/export_card")
    assert f"# {run_name}" in card and "Error=$" in card
    # The preview shows the front matter as YAML with the demo's real hub id, and the scatter as an image.
    assert card.startswith("```yaml\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n")
    assert "](scatter.png)" not in card and Path(scatter).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.search(r"\| fine-tuned, expected value( ◀ headline)? \|", card) and "| base model, greedy |" in card  # the Evaluate tab's names
    with zipfile.ZipFile(file_path(download)) as z:
        assert {"README.md", "scatter.png", "adapter_model.safetensors", "config.yaml", "metrics.jsonl",
                "eval.json"} <= set(z.namelist())
    pushed = client.predict(run_name, "someone/pricetune", "hf_dummy", True, api_name="/export_push")
    assert "Cannot push" in pushed and "offline" in pushed
    assert "Pick a finished run" in client.predict("../../etc", api_name="/export_card")[0]


def test_bad_upload_gets_a_message_and_the_app_keeps_serving(launched_app, tmp_path):
    bad = tmp_path / "prices.csv"
    bad.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)  # a spreadsheet renamed .csv
    client = Client(launched_app.url, verbose=False)
    info, _preview, _hist, _tokens = client.predict(handle_file(str(bad)), api_name="/upload")
    assert info.startswith("**Cannot use this file:**")
    good = tmp_path / "good.csv"
    good.write_text("title,price\n" + "".join(f"Steel bolt size {i},{i + 0.5}\n" for i in range(1, 30)))
    info, _preview, _hist, tokens = client.predict(handle_file(str(good)), api_name="/upload")
    assert "29 products" in info
    assert "truncated" in json.loads(tokens["plot"])["layout"]["title"]["subtitle"]["text"]  # token-length histogram


def test_runs_tab_lists_app_and_cli_runs_overlays_them_and_deletes_with_confirmation(launched_app):
    from trainer.__main__ import main

    # A run made with the CLI into the same runs folder, next to any the app made.
    assert main(["train", "--data", "sample", "--max-steps", "2", "--batch-size", "2", "--lora-r", "4",
                 "--target-modules", "q_proj,v_proj", "--sample-every", "0", "--probe-size", "2",
                 "--save-steps", "0", "--head-rows", "8", "--output", str(launched_app.runs / "from-cli")]) == 0
    client = Client(launched_app.url, verbose=False)
    table, pick, _opened, _delete = client.predict(api_name="/list_runs")
    rows = {row[0]: dict(zip(table["headers"], row)) for row in table["data"]}
    assert rows["from-cli"]["status"] == "done" and rows["from-cli"]["steps"] == 2
    assert rows["from-cli"]["final loss"] > 0 and rows["from-cli"]["targets"] == "q_proj,v_proj"
    names = list(rows)
    loss, error = client.predict(names, api_name="/compare_runs")
    traces = [t["name"] for t in json.loads(loss["plot"])["data"]]
    assert traces == names  # one line per selected run, in the app's and the CLI's runs alike

    # Delete has its own picker, and its confirmation names the run.
    assert "Tick **I am sure** to delete run from-cli" in client.predict("from-cli", False, api_name="/delete_run")
    # A posted name that is no run never reaches the file system.
    assert "Pick the run to delete" in client.predict("../..", True, api_name="/delete_run")
    assert client.predict("from-cli", True, api_name="/delete_run") == "Deleted run from-cli."
    assert not (launched_app.runs / "from-cli").exists()
    table, *_ = client.predict(api_name="/list_runs")
    assert "from-cli" not in [row[0] for row in table["data"]]


def test_exported_config_imports_back_into_the_form_and_trains_headless(launched_app, tmp_path):
    from trainer.__main__ import main
    from trainer.config import TrainConfig

    client = Client(launched_app.url, verbose=False)
    form = {**FORM, "learning_rate": 5e-4, "max_steps": 1, "lora_r": 6}
    download, message = client.predict(**form, api_name="/export_config")
    path = file_path(download)
    assert "--config" in message and path
    # The multi-GPU commands of the same form (this machine has no GPU: two is the example count).
    assert "torchrun --nproc_per_node 2 -m trainer train --config pricetune-config.yaml" in message
    assert "accelerate launch --multi_gpu --num_processes 2 -m trainer train --config pricetune-config.yaml" in message
    config = TrainConfig.from_yaml(path)
    assert (config.learning_rate, config.max_steps, config.lora_r, config.target_modules) == \
        (5e-4, 1, 6, ["q_proj", "v_proj"])

    *values, note = client.predict(handle_file(path), api_name="/import_config")
    filled = dict(zip(FORM_FIELDS, values))  # every config field but the run's name and data has its component
    targets = filled["target_modules"]
    targets = targets["value"] if isinstance(targets, dict) else targets
    assert (filled["learning_rate"], filled["max_steps"], filled["lora_r"], targets) == (5e-4, 1, 6, ["q_proj", "v_proj"])
    assert "Form filled" in note
    # Every setting of a config reaches the form, the ones under More training settings too.
    variant = tmp_path / "variant.yaml"
    variant.write_text(TrainConfig(**{**vars(config), "save_minutes": 30, "precision": "fp32"}).to_yaml())
    filled = dict(zip(FORM_FIELDS, client.predict(handle_file(str(variant)), api_name="/import_config")))
    assert (filled["save_minutes"], filled["precision"]) == (30, "fp32")
    # A preset fills every field it sets, the question and the course's optimizer settings too.
    *values, note = client.predict("course-lite", api_name="/apply_preset")
    filled = dict(zip(FORM_FIELDS, values))
    assert (filled["model"], filled["lora_r"], filled["lora_alpha"], filled["batch_size"], filled["max_length"],
            filled["learning_rate"]) == ("meta-llama/Llama-3.2-3B", 32, 64, 32, 128, 1e-4)
    assert (filled["question"], filled["warmup_ratio"], filled["weight_decay"], filled["max_grad_norm"]) == (
        "What does this cost to the nearest dollar?", 0.01, 0.001, 0.3)
    assert "course lite (Llama 3.2 3B)" in note
    # The live estimate of that preset, over the API by field name: the adapter, the peak GPU memory, which GPUs.
    targets = filled["target_modules"]["value"]  # an update of the checkboxes: the model's choices and the value
    sized = client.predict(**{name: filled[name] for name in ("model", "quant", "lora_r", "lora_dropout",
                                                                "batch_size", "max_length")},
                           target_modules=targets, api_name="/estimate")
    assert "M trainable parameters" in sized and re.search(r"peak GPU memory ≈ [\d.]+ GiB \(base weights", sized), sized
    assert "fits the " in sized or "fits every GPU listed" in sized, sized
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora_rank: 8\n")
    assert "Cannot import" in client.predict(handle_file(str(bad)), api_name="/import_config")[-1]

    # The same file drives the CLI, field for field.
    assert main(["train", "--config", path, "--output", str(tmp_path / "runs" / "headless")]) == 0
    trained = TrainConfig.from_yaml(tmp_path / "runs" / "headless" / "config.yaml")
    assert {k: v for k, v in vars(trained).items() if k not in ("name", "question")} == \
        {k: v for k, v in vars(config).items() if k not in ("name", "question")}
    # The form left the question to the data; the sample asks none, so the run recorded today's course question.
    assert (config.question, trained.question) == ("", "What does this cost to the nearest dollar?")


def test_runs_tab_opens_a_run_reloads_its_config_resumes_it_and_looks_inside_a_step(launched_app):
    import os
    import signal
    import subprocess
    import sys

    from e2e_app import ROOT

    # A CLI run killed after its first checkpoint: the Runs tab finds it interrupted and resumes it.
    out = launched_app.runs / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer", "train", "--data", "sample", "--max-steps", "4", "--batch-size", "2",
         "--lora-r", "4", "--lora-alpha", "8", "--target-modules", "q_proj,v_proj", "--sample-every", "0",
         "--probe-size", "2", "--save-steps", "2", "--lr", "0.0007", "--head-rows", "8", "--output", str(out)],
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = RunFolder(out)
    deadline = time.time() + 300
    while run.last_complete_checkpoint()[0] is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert run.last_complete_checkpoint()[0] is not None and run.state() == "interrupted"

    client = Client(launched_app.url, verbose=False)
    client.predict(api_name="/list_runs")
    detail, config_text, _samples, evaluation = client.predict("killed", api_name="/open_run")
    assert "**killed** · interrupted" in detail and "Resumable from checkpoint-" in detail
    assert "Not evaluated yet" in detail and evaluation["headers"] == ["model", "error $", "RMSLE", "hits %",
                                                                       "MSE", "r²", "unparseable"]
    assert "lora_r: 4" in config_text and "learning_rate: 0.0007" in config_text
    assert "Pick a run" in client.predict("../..", api_name="/open_run")[0]

    *values, note, data_info = client.predict("killed", api_name="/load_run_config")
    filled = dict(zip(FORM_FIELDS, values, strict=True))
    assert (filled["lora_r"], filled["lora_alpha"], filled["learning_rate"], filled["max_steps"]) == (4, 8, 0.0007, 4)
    assert "config and data of killed" in note and "upload" not in note
    # The data comes along: Start trains a variant on the same split at once, without asking for data again.
    assert "The data of run killed" in data_info
    variant_run = trained(launched_app, client.predict(**{**FORM, "max_steps": 1, "sample_every": 0}, api_name="/start"))
    assert variant_run.test_file.read_text() == run.test_file.read_text()
    assert "data: run:killed" in variant_run.config_file.read_text()

    assert client.predict("killed", api_name="/resume_run").startswith("Resuming run **killed**")
    deadline = time.time() + 300
    while run.state() != "done" and time.time() < deadline:
        time.sleep(1)
    detail, *_ = client.predict("killed", api_name="/open_run")
    assert "**killed** · done · step 4/4" in detail, detail
    assert "only a stopped, failed or interrupted run" in client.predict("killed", api_name="/resume_run")
    assert [r["step"] for r in run.metrics() if "loss" in r] == [1, 2, 3, 4]

    # Look inside one step of that run, on its own first training example.
    text, price = client.predict("killed", 0, api_name="/training_example")
    assert text and re.fullmatch(r"\d+\.\d\d", price)
    summary, tokens, kinds, every = client.predict("killed", text, price, api_name="/inside_step")
    assert "Weights: **adapter/" in summary and "Done on a copy" in summary
    assert re.search(r"; 0 of \d+ base weight tensors did", summary)  # no base weight tensor got a gradient
    nll = [row[2] for row in tokens["data"]]
    loss = float(re.search(r"their mean is the loss \*\*([\d.]+)\*\*", summary).group(1))
    assert loss == pytest.approx(sum(nll) / len(nll), abs=2e-4)
    assert [row[0] for row in kinds["data"]] == ["q_proj A", "q_proj B", "v_proj A", "v_proj B"]
    assert len(every["data"]) == 30 * 2 * 2
    assert "**Price:**" in client.predict("killed", text, "twelve", api_name="/inside_step")[0]


def test_upload_then_start_in_one_session_trains_on_the_uploaded_file(launched_app, tmp_path):
    # As the page does: the upload and Start share one Gradio session, so the state holds what Gradio put there
    # (its own str subclass of the temp path), not a string the test chose.
    own = tmp_path / "catalog.jsonl"
    own.write_text("".join(json.dumps({"title": f"Walnut desk organiser no. {i}", "price": 10 + i}) + "\n"
                           for i in range(60)))
    client = Client(launched_app.url, verbose=False)
    info, *_ = client.predict(handle_file(str(own)), api_name="/upload")
    assert "60 of 60 rows kept" in info
    before = set(launched_app.runs.iterdir()) if launched_app.runs.exists() else set()

    # Refusals name the field or the model, leave no run folder, and reach the page as a message.
    cleared = client.predict(**{**FORM, "batch_size": None}, api_name="/start")
    assert "batch_size: is empty: enter a number" in cleared, cleared
    typo = client.predict(**{**FORM, "model": "no-such-owner/no-such-model-xyz"}, api_name="/start")
    assert "Cannot start" in typo and "no-such-owner/no-such-model-xyz" in typo, typo
    exported = client.predict(**FORM, api_name="/export_config")
    assert "--data catalog.jsonl" in exported[1]
    assert (set(launched_app.runs.iterdir()) if launched_app.runs.exists() else set()) == before

    run = trained(launched_app, client.predict(**{**FORM, "max_steps": 2, "sample_every": 0}, api_name="/start"))
    texts = {json.loads(line)["text"] for line in (run.train_file.read_text() + run.validation_file.read_text()
                                                   + run.test_file.read_text()).splitlines()}
    assert texts == {f"Walnut desk organiser no. {i}" for i in range(60)}
    # The run names the upload by its own file name and content; Gradio's temp path is not in the run folder.
    assert run.config_file.read_text().count("data: catalog.jsonl\n") == 1 and "gradio" not in run.config_file.read_text()
    assert run.status()["data_file"] == {"name": "catalog.jsonl", "bytes": own.stat().st_size,
                                         "sha256": hashlib.sha256(own.read_bytes()).hexdigest()}
