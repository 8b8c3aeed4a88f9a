"""Login, ownership of runs, the share-link refusal, the Space environment, and Resume from the UI."""

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from e2e_app import ROOT, LaunchedApp  # noqa: E402
from gradio_client import Client, handle_file
from gradio_client.exceptions import AuthenticationError
from test_hostile import alias_bomb  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The model is the tiny one (a fixture): it trains so fast that only Stop ends a run of this length.
FORM = dict(quant="none", lora_r=4, lora_alpha=8, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
            learning_rate=1e-3, max_steps=100_000, epochs=1, batch_size=2, grad_accum=1, max_length=0, sample_every=0,
            probe_size=2, seed=1, save_steps=500, validation_size=4, head_rows=8)


def status_of(client) -> str:
    return client.predict(api_name="/refresh")[0]


def wait_status(client, pattern, timeout=300):
    end = time.time() + timeout
    while time.time() < end:
        text = status_of(client)
        if re.search(pattern, text):
            return text
        time.sleep(1)
    raise AssertionError(f"status never matched {pattern!r}: {text}")


def test_login_owner_only_stop_and_resume_on_a_space(tmp_path, tiny_model):
    # A Space: SPACE_ID set and persistent storage at /data (here a temp folder); no PRICETUNE_RUNS override; the
    # tiny model's folder is the one local model it accepts.
    data_root = tmp_path / "data"
    data_root.mkdir()
    form = {**FORM, "model": str(tiny_model)}
    app = LaunchedApp(None, tmp_path / "app.log", {
        "SPACE_ID": "someone/pricetune", "PRICETUNE_DATA_ROOT": str(data_root), "PRICETUNE_MODEL_DIRS": str(tiny_model),
        "PRICETUNE_AUTH": "alice:wonderland,bob:builder", "GRADIO_SERVER_NAME": "127.0.0.1"})
    try:
        app.wait_ready()
        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(app.url, verbose=False).predict(api_name="/refresh")  # no login, no access
        alice = Client(app.url, auth=("alice", "wonderland"), verbose=False)
        bob = Client(app.url, auth=("bob", "builder"), verbose=False)
        alice.predict(api_name="/use_sample")
        # A 300-byte alias bomb uploaded as a config is refused at once, naming what is wrong.
        bomb = tmp_path / "bomb.yaml"
        bomb.write_text(alias_bomb(6))
        note = bob.predict(handle_file(str(bomb)), api_name="/import_config")[-1]
        assert "Cannot import" in note and "aliases (*name) are not accepted" in note, note
        # On a shared app a local model folder is accepted only under PRICETUNE_MODEL_DIRS, refused alike elsewhere.
        for folder in (str(data_root), "/no/such/folder"):
            refusal = alice.predict(**{**form, "model": folder}, api_name="/start")
            assert "does not exist or cannot be read. On a shared app" in refusal, refusal
        # Hub kernels run code from the Hub on the server: on a shared app only an admin may turn them on.
        refusal = alice.predict(**{**form, "hub_kernels": True}, api_name="/start")
        assert "hub_kernels: on a shared app only an admin" in refusal, refusal
        # A sweep and Time it start runs too: the handler refuses them alike, whatever the page offers.
        sweep = {**form, "field_a": "lora_r", "values_a": "2,4", "field_b": "", "values_b": ""}
        for changed, said in (({"hub_kernels": True}, "hub_kernels: on a shared app only an admin"),
                              ({"model": str(data_root)}, "does not exist or cannot be read. On a shared app")):
            refusal = alice.predict(**{**sweep, **changed}, api_name="/start_sweep")
            assert refusal.startswith("**Cannot start the sweep:**") and said in refusal, refusal
        assert "hub_kernels: on a shared app only an admin" in alice.predict(**{**form, "hub_kernels": True},
                                                                            api_name="/time_it")
        assert not list((data_root / "pricetune-runs").glob("*"))  # refused before any run folder exists
        assert alice.predict(**form, api_name="/start").startswith("Started run")
        wait_status(bob, r"step [2-9]\d*/100000")  # everyone logged in may watch
        assert "Only alice" in bob.predict(api_name="/stop")
        assert alice.predict(api_name="/stop").startswith("Stopping")
        text = wait_status(alice, r"stopped at step \d+")
        name = re.search(r"Run ([\w.-]+)", text).group(1)
        run = data_root / "pricetune-runs" / name
        assert (run / "adapter" / "adapter_model.safetensors").is_file()
        assert any((run / "checkpoints").glob("checkpoint-*"))  # Stop also writes a resumable checkpoint

        assert "Only alice" in bob.predict(api_name="/resume")
        assert alice.predict(api_name="/resume").startswith(f"Resuming run **{name}**: resuming from checkpoint-")
        wait_status(alice, r"training")
        # While a run trains, nothing else loads a second copy of the model (on a GPU it could push the job out).
        assert "**Busy:** run" in bob.predict(name, "A steel shelf bracket", api_name="/predict")[0]
        assert "**Busy:** run" in alice.predict(name, None, 2, api_name="/evaluate")[0]
        assert "**Busy:** run" in bob.predict(name, "A steel shelf bracket", "12", api_name="/inside_step")[0]
        alice.predict(api_name="/stop")
        wait_status(alice, r"stopped at step \d+")

        # Anyone may evaluate; only the owner's evaluation is written into the run (it feeds the card and the zip).
        summary = bob.predict(name, None, 2, api_name="/evaluate")[0]
        assert "Not saved: only the user who started run" in summary and not (run / "eval.json").exists()
        assert "Saved with run" in alice.predict(name, None, 2, api_name="/evaluate")[0]
        # Only the owner writes the model card; rewriting an unchanged card leaves one zip of the run, the same one.
        assert "Only the user who started this run" in bob.predict(name, api_name="/export_card")[0]
        first = alice.predict(name, api_name="/export_card")[1]
        card = (run / "adapter" / "README.md").stat().st_mtime_ns
        assert alice.predict(name, api_name="/export_card")[1]
        assert (run / "adapter" / "README.md").stat().st_mtime_ns == card
        zips = list((Path(tempfile.gettempdir()) / "pricetune-downloads").glob(f"{name}-adapter-*/*.zip"))
        assert len(zips) == 1 and Path(first["value"]).name == zips[0].name == f"{name}-adapter.zip"
    finally:
        app.close()


def test_a_public_share_link_is_refused_without_login():
    env = {k: v for k, v in os.environ.items() if k != "PRICETUNE_AUTH"}
    proc = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env={**env, "PRICETUNE_SHARE": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Refusing a public share link without login" in proc.stderr
