"""What a run costs: the stated hourly price, the live cost line, and the cap that ends a run with its adapter."""

import re
import time

import pytest

from trainer.config import ConfigError, TrainConfig
from trainer.cost import HARDWARE_ENV, PRICE_ENV, hourly_price
from trainer.job import TrainingJob

SMALL = dict(data="sample", model="demo", quant="none", lora_r=2, lora_alpha=4, batch_size=2, max_steps=50,
             sample_every=0, save_steps=0, test_size=6, validation_size=4, probe_size=2, num_samples=1,
             head_rows=8)


def test_the_price_is_stated_never_guessed(monkeypatch):
    monkeypatch.delenv(PRICE_ENV, raising=False)
    monkeypatch.delenv(HARDWARE_ENV, raising=False)
    assert hourly_price() is None
    monkeypatch.setenv(HARDWARE_ENV, "t4-small")
    price, source = hourly_price()
    assert price == 0.40 and source.startswith("t4-small at Hugging Face's Spaces GPU page")
    monkeypatch.setenv(HARDWARE_ENV, "a100-large")  # a flavour whose price this table does not hold
    with pytest.raises(ValueError, match="'a100-large' has no price here .* set PRICETUNE_HOURLY_USD instead"):
        hourly_price()
    monkeypatch.setenv(PRICE_ENV, "2.5")  # a stated price wins over the flavour
    assert hourly_price() == (2.5, PRICE_ENV)
    for bad, words in (("abc", "must be a number"), ("-1", "between 0 and 1000")):
        monkeypatch.setenv(PRICE_ENV, bad)
        with pytest.raises(ValueError, match=words):
            hourly_price()


def test_a_cost_cap_without_a_price_is_refused_before_any_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(PRICE_ENV, raising=False)
    monkeypatch.delenv(HARDWARE_ENV, raising=False)
    with pytest.raises(ConfigError, match="max_cost: a cost cap needs the hourly price: set PRICETUNE_HOURLY_USD"):
        TrainingJob.new(TrainConfig(name="capped", max_cost=1.0, **SMALL), runs_root=tmp_path)
    assert not any(tmp_path.iterdir())
    # A flavour the table cannot price refuses a cap, never a run without one (it only has no cost line).
    monkeypatch.setenv(HARDWARE_ENV, "a100-large")
    with pytest.raises(ConfigError, match="'a100-large' has no price here"):
        TrainingJob.new(TrainConfig(name="capped", max_cost=1.0, **SMALL), runs_root=tmp_path)
    assert TrainingJob.new(TrainConfig(name="uncapped", **SMALL), runs_root=tmp_path).run.status()["hourly_usd"] is None
    with pytest.raises(ConfigError, match="max_cost: must be 0–1,000,000 dollars"):
        TrainConfig(max_cost=-1).validate()


@pytest.mark.slow
def test_the_cost_cap_ends_the_run_with_its_adapter_and_the_live_line_shows_the_cost(tmp_path, monkeypatch):
    from ui.live import status_text

    # $900 an hour: a quarter of a dollar a second, so a $0.50 cap ends the run after its first steps.
    monkeypatch.setenv(PRICE_ENV, "900")
    job = TrainingJob.new(TrainConfig(name="capped", max_cost=0.5, **SMALL), runs_root=tmp_path).start()
    assert job.wait(600) == "done", job.run.status()
    status = job.run.status()
    assert "cost cap of $0.5 reached at step" in status["message"] and "of 50" in status["message"], status
    assert 0 < status["step"] < 50 and (job.run.adapter_dir / "adapter_model.safetensors").is_file()
    assert (status["hourly_usd"], status["price_source"]) == (900.0, PRICE_ENV)
    # The live line prices the time so far from the same status (here: a run seen 36 s after it began).
    line = status_text(job.run, {**status, "state": "training", "ended": None, "cost_from": time.time() - 36},
                       job.run.metrics())
    assert re.search(r"≈ \$9\.0\d at \$900/h", line), line
