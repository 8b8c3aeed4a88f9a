"""Real training with the demo model on the CPU: loss falls, the adapter saves and reloads, stop and failure behave."""

import json
import re
import time

import pytest
import torch

from trainer.__main__ import main
from trainer.config import TrainConfig
from trainer.data import make_sample_products
from trainer.job import Busy, JobManager, TrainingJob
from trainer.models import inference_precision, load_model
from trainer.pricing import METHODS
from trainer.pricing.choice import PriceChoice
from trainer.pricing.hidden_state import last_states, load_head
from trainer.metrics import price_metrics
from trainer.pricing.stack import stacked
from trainer.runs import phase_line

pytestmark = pytest.mark.slow

SMALL = dict(data="sample", model="demo", quant="none", lora_r=8, lora_alpha=16, batch_size=4,
             learning_rate=2e-3, warmup_ratio=0.0, lr_scheduler="constant", save_steps=0, num_samples=4, probe_size=4,
             head_rows=8)


def wait_for(predicate, timeout=120, every=0.2):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(every)
    return False


def small_file(tmp_path, n=24):
    """A real JSONL upload of n synthetic products."""
    path = tmp_path / "products.jsonl"
    path.write_text("".join(json.dumps({"text": p.text, "price": p.price}) + "\n"
                            for p in make_sample_products(n, seed=7)))
    return str(path)


def test_training_lowers_loss_and_saves_a_reloadable_adapter(tmp_path, runs_dir, demo_model, demo_tokenizer, capsys):
    from peft import PeftModel

    from trainer.data import encode_prompt

    # 16 training items, 5 a batch, 4 epochs: the model sees each price four times, so its loss must fall.
    config = TrainConfig(name="learn", max_steps=0, epochs=4, sample_every=8, test_size=4, validation_size=4,
                         **{**SMALL, "data": small_file(tmp_path), "batch_size": 5, "learning_rate": 1e-3,
                            "head_rows": 100})
    job = TrainingJob.new(config, runs_root=runs_dir).start()
    assert job.wait(600) == "done", job.run.status()
    run = job.run

    steps = [row for row in run.metrics() if "loss" in row]
    losses = [row["loss"] for row in steps]
    assert [row["step"] for row in steps] == list(range(1, 17))
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses
    assert all(row["tokens_per_s"] > 0 for row in steps)
    # The probe set is priced with the base model at step 0, then every sample_every steps and at the end.
    probes = [row for row in run.metrics() if "probe_error" in row]
    assert [row["step"] for row in probes] == [0, 8, 16]
    assert all(row["probe_error"] >= 0 and 0 <= row["probe_hits"] <= 1 for row in probes)

    status = run.status()
    assert status["state"] == "done" and status["step"] == 16 and status["total_steps"] == 16
    samples = run.samples()
    assert [s["step"] for s in samples] == [0, 8, 16]
    best = min(probes[1:], key=lambda r: r["probe_error"])
    assert status["best_step"] == best["step"] and (run.best_adapter_dir / "adapter_model.safetensors").is_file()
    assert "constant_mean" in status["baselines"] and "the best probe $ error (step" in status["message"]
    assert "with its price head" in status["message"] and status["fitting_head"] is None
    # Where the wall time went: every phase the run went through, together no more than the run's own time.
    phases = status["phases"]
    # (save_minutes is on, so the Trainer also writes a resumable checkpoint at the last step.)
    assert set(phases) == {"data", "text baseline", "tokenize", "model load", "steps", "probe", "adapter saves",
                           "checkpoint saves", "price head"}
    assert all(seconds >= 0 for seconds in phases.values()) and phases["steps"] > 0 and phases["probe"] > 0
    assert sum(phases.values()) <= status["ended"] - status["started"] + 0.1
    assert phase_line(status).startswith("time ") and "probe " in phase_line(status)
    # The strong text baseline was fitted on the training split when the run started, and stored with it.
    from trainer.baselines import load_text_baseline, predict_prices

    probe = run.split("validation")[:4]
    stored = predict_prices(load_text_baseline(run.text_baseline_file), [p.text for p in probe])
    assert status["baselines"]["tfidf_ridge"] == price_metrics(stored, [p.price for p in probe])
    # So are the neighbours on its TF-IDF vectors, the live chart's second line.
    from trainer.baselines import fit_text_neighbours

    near = predict_prices(fit_text_neighbours(load_text_baseline(run.text_baseline_file), run.split()),
                          [p.text for p in probe])
    assert status["baselines"]["tfidf_neighbours"] == price_metrics(near, [p.price for p in probe])
    assert len(samples[-1]["items"]) == 4 and all("truth" in i and "guess" in i for i in samples[-1]["items"])
    # The held-out split is on disk and disjoint from the training split.
    train = {json.loads(line)["text"] for line in run.train_file.read_text().splitlines()}
    test = {json.loads(line)["text"] for line in run.test_file.read_text().splitlines()}
    assert train and test and not train & test

    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json"):
        assert (run.adapter_dir / name).is_file(), name
    assert TrainConfig.from_yaml(run.config_file) == config

    # The validation slice: out of the training side, not trained on, disjoint from the held-out rows.
    validation, held_out = run.split("validation"), run.split("test")
    assert len(validation) == 4 and not {p.text for p in validation} & (train | test)

    # The Tester CLI on the finished run: eval.json's metrics are those of its own items.
    assert main(["eval", "--run", str(run.path), "--limit", "4"]) == 0
    result = run.evaluation()
    items = result.items

    def measured(key):
        return price_metrics([i[key] for i in items], [i["truth"] for i in items])

    # Every method was priced and scored on the validation rows alone (their ids recorded); the headline is the
    # one with the lowest $ error there, and the ensemble was fitted there.
    choice = PriceChoice.load(run)
    assert choice.row_ids == [p.id for p in validation] and not set(choice.row_ids) & {p.id for p in held_out}
    assert choice.best_method == min(METHODS, key=lambda m: (choice.methods[m]["error"], METHODS.index(m)))
    assert result.method == choice.headline and "validation rows" in result.method_reason
    # auto's headline: the lowest $ error there, the ensemble's counted out of fold (its own fit flatters it).
    folded = choice.ensemble_out_of_fold["error"]
    assert choice.headline == ("ensemble" if folded < choice.methods[choice.best_method]["error"] else choice.best_method)
    assert len(items) == 4 and all(i["method"] == result.method for i in items)
    assert result.metrics == measured("guess") == result.methods[result.method]
    assert set(result.methods) == {*METHODS, "ensemble"}
    assert all(result.methods[m] == measured(m) for m in result.methods)
    assert result.baselines["base_model"] == measured("base")
    assert result.baselines["tfidf_ridge"] == measured("tfidf_ridge")
    assert {"constant_mean", "constant_median", "linear_bow", "tfidf_ridge"} <= set(result.baselines)
    assert {"mse", "r2"} <= set(result.metrics) and {"mse", "r2"} <= set(result.baselines["tfidf_ridge"])
    assert result.baselines["tfidf_neighbours"] == measured("tfidf_neighbours")
    # The ensemble stacks the head, its neighbours, the chosen method and both text baselines, fitted there too.
    stack = choice.ensemble_stack
    assert result.ensemble == {"method": choice.best_method, **stack}
    assert set(stack["members"]) == {"head", "neighbours", choice.best_method, "tfidf_ridge", "tfidf_neighbours"}
    assert all(i["ensemble"] == pytest.approx(stacked({m: i[m] for m in stack["members"]}, stack, "tfidf_ridge"))
               for i in items)
    assert "Error=$" in capsys.readouterr().out
    # The price head stored beside the adapter was fitted on every training row (fewer than head_rows) and gives
    # eval.json's head prices from the tuned model's last states.
    head = load_head(run.adapter_dir)
    assert head.rows == len(run.split()) == 16
    tuned = PeftModel.from_pretrained(load_model("demo", "none"), run.adapter_dir)
    with inference_precision(tuned, config.use_bf16()):  # as the run prices
        states = last_states(tuned, demo_tokenizer, [p.text for p in held_out[:4]],
                             max_prompt_tokens=status["max_length"], question=config.asked())
    assert head.prices(states) == pytest.approx([i["head"] for i in items], rel=1e-4)
    # A method asked for is the headline; the choice is not measured again for the same adapter.
    before = run.choice_file.stat().st_mtime_ns
    assert main(["eval", "--run", str(run.path), "--limit", "4", "--method", "greedy"]) == 0
    assert run.evaluation().method == "greedy" and run.choice_file.stat().st_mtime_ns == before
    capsys.readouterr()
    assert main(["predict", "--run", str(run.path), "--method", "ensemble", "Premium 6-quart stand mixer"]) == 0
    out = capsys.readouterr()
    # A mixer is like none of the sample's products this run trained on: priced, with the note beside the price.
    assert re.fullmatch(r"(\$\d+\.\d\d|unparseable)  \(unlike the training rows \(text distance [^)]*\): a guess, "
                        r"no range\)\n", out.out)
    assert "a linear regression fitted on 4 validation rows" in out.err and "note: a text further from" in out.err

    ids = torch.tensor([encode_prompt(demo_tokenizer, "Premium stainless steel stand mixer, 6 quart", 128)])
    base_logits = demo_model(input_ids=ids).logits[0, -1]
    tuned = PeftModel.from_pretrained(demo_model, run.adapter_dir)
    try:
        tuned_logits = tuned(input_ids=ids).logits[0, -1]
        assert not torch.allclose(base_logits, tuned_logits, atol=1e-3)
    finally:
        tuned.unload()  # give the session's demo model back without LoRA layers


def test_stop_mid_run_saves_the_adapter_and_a_second_start_is_busy(runs_dir, tiny_model):
    # The tiny model: this tests Stop and Busy around the steps; it trains so fast only Stop ends a run this long.
    jobs = JobManager()
    job = jobs.start(TrainConfig(name="stopme", max_steps=100_000, sample_every=0,
                                 **{**SMALL, "model": str(tiny_model)}), runs_root=runs_dir)
    assert wait_for(lambda: job.run.status().get("step", 0) >= 2, timeout=300)
    with pytest.raises(Busy, match=r"stopme.*step \d+/100000"):
        jobs.start(TrainConfig(name="second", max_steps=2, **SMALL), runs_root=runs_dir)
    assert not (runs_dir / "second").exists()
    jobs.stop()
    assert job.wait(120) == "stopped"
    status = job.run.status()
    assert 2 <= status["step"] < 100_000 and status["message"].startswith(f"stopped at step {status['step']}")
    assert (job.run.adapter_dir / "adapter_model.safetensors").is_file()
    # Stop saved a checkpoint (save_minutes is on): its time is its own phase, not the steps'.
    assert job.run.last_complete_checkpoint()[0] is not None and status["phases"]["checkpoint saves"] > 0
    assert jobs.active() is None


def test_errors_end_the_job_as_failed_and_the_next_run_starts(runs_dir):
    jobs = JobManager()
    bad = jobs.start(TrainConfig(name="bad", model="./no/such/model", max_steps=2, **{
        k: v for k, v in SMALL.items() if k != "model"}), runs_root=runs_dir)
    assert bad.wait(60) == "failed"
    assert "does not exist" in bad.run.status()["error"]
    wrong_layer = jobs.start(TrainConfig(name="badlayer", target_modules=["nope_proj"], max_steps=2, **SMALL),
                             runs_root=runs_dir)
    assert wrong_layer.wait(120) == "failed"
    assert "target_modules" in wrong_layer.run.status()["error"]


def test_nan_loss_stops_the_run_and_saves_nothing(runs_dir):
    # An absurd learning rate blows the LoRA weights up within a few steps.
    # On attention only: LoRA on the MLP too saturates the model to a finite, flat loss instead of overflowing.
    config = TrainConfig(name="nan", max_steps=40, sample_every=0, **{**SMALL, "learning_rate": 1.0, "save_steps": 1,
                                                                      "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]})
    job = TrainingJob.new(config, runs_root=runs_dir)
    job.config.learning_rate = 1e6  # past validation on purpose: validation would refuse it
    job.start()
    assert job.wait(300) == "failed"
    assert "nan" in job.run.status()["error"].lower() or "inf" in job.run.status()["error"].lower()
    assert not job.run.adapter_dir.exists()
    # Checkpoints are written every step, but none after the weights broke.
    bad_step = int(re.search(r"at step (\d+)", job.run.status()["error"]).group(1))
    assert all(int(p.name.split("-")[1]) < bad_step for p in job.run.checkpoints())


def test_four_bit_training_runs_on_the_cpu(runs_dir):
    job = TrainingJob.new(TrainConfig(name="q4", max_steps=3, sample_every=0, **{**SMALL, "quant": "4bit"}),
                      runs_root=runs_dir).start()
    assert job.wait(600) == "done", job.run.status()
    assert len([row for row in job.run.metrics() if "loss" in row]) == 3
    assert (job.run.adapter_dir / "adapter_model.safetensors").is_file()


def test_time_limit_ends_the_run_as_done_with_its_adapter(runs_dir, tiny_model):
    # A limit shorter than one step: training stops after the first step, saves, and says why.
    job = TrainingJob.new(TrainConfig(name="timed", max_steps=50, sample_every=1, max_minutes=0.001,
                                      **{**SMALL, "model": str(tiny_model)}), runs_root=runs_dir).start()
    assert job.wait(300) == "done", job.run.status()
    status = job.run.status()
    assert status["step"] < 50 and "time limit of 0.001 min reached" in status["message"]
    assert (job.run.adapter_dir / "adapter_model.safetensors").is_file()
    # The step the limit ended on was priced once, in the step's own probe, not again at the end.
    assert [r["step"] for r in job.run.metrics() if "probe_error" in r] == [0, status["step"]]


def test_a_run_fitted_to_its_time_limit_ends_its_schedule_with_the_time(runs_dir):
    from transformers import get_scheduler

    # Cosine with warm-up over whatever steps fit in 20 s: the run measures them as it goes and stops itself there.
    config = TrainConfig(name="fitted", fit_to_time=True, max_minutes=1 / 3, sample_every=0,
                         **{**SMALL, "lr_scheduler": "cosine", "warmup_ratio": 0.2})
    job = TrainingJob.new(config, runs_root=runs_dir).start()
    assert job.wait(300) == "done", job.run.status()
    status, rows = job.run.status(), [r for r in job.run.metrics() if "loss" in r]
    steps = status["step"]
    assert steps == len(rows) == status["total_steps"] == status["plan"]["total_steps"] >= 4
    assert "time limit" not in status["message"]  # the schedule's own end, not the limit's cut
    # The last steps' rates are transformers' cosine laid over the steps it trained: at their end, near 0.
    opt = torch.optim.SGD([torch.zeros(1)], lr=config.learning_rate)
    rule = get_scheduler("cosine", opt, num_warmup_steps=-(-steps // 5), num_training_steps=steps).lr_lambdas[0]
    assert rows[-1]["lr"] == pytest.approx(config.learning_rate * rule(steps - 1), abs=0.02 * config.learning_rate)
    peak = max(r["lr"] for r in rows)
    assert peak > 0.5 * config.learning_rate and rows[-1]["lr"] < 0.5 * peak  # it warmed up and decayed


def test_bf16_precision_trains_with_the_price_only_loss(runs_dir):
    # Two small steps: on a CPU without AVX512-BF16 or AMX, bf16 is emulated at about 15 s per example.
    small = {**SMALL, "batch_size": 1, "probe_size": 1, "num_samples": 1}
    job = TrainingJob.new(TrainConfig(name="bf16", max_steps=2, sample_every=0, precision="bf16", **small),
                      runs_root=runs_dir).start()
    assert job.wait(300) == "done", job.run.status()
    losses = [row["loss"] for row in job.run.metrics() if "loss" in row]
    assert len(losses) == 2 and all(0 < loss < 20 for loss in losses)


def test_a_taken_run_name_is_suffixed_and_the_config_names_the_real_folder(runs_dir):
    first = TrainingJob.new(TrainConfig(name="same", **SMALL), runs_root=runs_dir)
    second = TrainingJob.new(TrainConfig(name="same", **SMALL), runs_root=runs_dir)
    assert (first.run.name, second.run.name) == ("same", "same-1")
    # The config in the folder is the one a resume or an export reads: it must name that folder.
    assert TrainConfig.from_yaml(second.run.config_file).name == "same-1"


def test_liger_kernel_without_a_gpu_is_refused_before_any_folder(runs_dir):
    from trainer.config import ConfigError

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal is for machines without one")
    with pytest.raises(ConfigError, match="liger_kernel: Liger's kernels need a CUDA GPU"):
        TrainingJob.new(TrainConfig(name="liger", liger_kernel=True, max_steps=1, **SMALL), runs_root=runs_dir)
    assert not (runs_dir / "liger").exists()
