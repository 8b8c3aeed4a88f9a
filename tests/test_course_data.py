"""The course's data as it is today: prompt/completion and conversational records, Item records with categories,
datasets with their own splits, the question as a setting, Llama 3.2 3B, and the presets. Files made here."""

import json

import pytest

from trainer.config import PRESETS, ConfigError, TrainConfig, preset
from trainer.data import (COURSE_2024_QUESTION, COURSE_QUESTION, PRICE_PREFIX, Product, build_prompt, encode_prompt,
                          load_products, split_run)
from trainer.models import estimate_adapter, model_config
from trainer.tester import by_category, category_table

SUMMARIES = [f"Stainless kettle model {i}, 1.7 litres, auto shut-off" for i in range(12)]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def course_prompt(summary, question, price=None):
    return f"{question}\n\n{summary}\n\n{PRICE_PREFIX}" + ("" if price is None else f"{price:.2f}")


@pytest.mark.parametrize("question", [COURSE_QUESTION, COURSE_2024_QUESTION])
@pytest.mark.parametrize("price_in_prompt", [False, True])
def test_prompt_completion_records_are_unwrapped_to_the_summary(tmp_path, question, price_in_prompt):
    records = [{"prompt": course_prompt(s, question, 20.0 + i if price_in_prompt else None),
                "completion": f"{20 + i}.00"} for i, s in enumerate(SUMMARIES)]
    products, report = load_products(write_jsonl(tmp_path / "prompts.jsonl", records))
    assert [(p.text, p.price) for p in products] == [(s, 20.0 + i) for i, s in enumerate(SUMMARIES)]
    assert (report.text_column, report.price_column, report.question) == ("prompt", "completion", question)
    assert not any("cost to the nearest dollar" in p.text or PRICE_PREFIX in p.text for p in products)
    # Never wrapped twice: the training prompt holds the question once.
    assert build_prompt(products[0].text, question).count(question) == 1


def test_a_prompt_whose_price_differs_from_its_completion_is_dropped_by_line(tmp_path):
    records = [{"prompt": course_prompt(s, COURSE_QUESTION), "completion": "30.00"} for s in SUMMARIES]
    records[4]["prompt"] = course_prompt(SUMMARIES[4], COURSE_QUESTION, 99.0)
    products, report = load_products(write_jsonl(tmp_path / "prompts.jsonl", records))
    assert len(products) == 11 and report.dropped == {"embedded price differs": [5]}


def test_conversational_records_read_like_prompt_completion(tmp_path):
    messages = [{"messages": [{"role": "system", "content": "You price products."},
                              {"role": "user", "content": course_prompt(s, COURSE_QUESTION)},
                              {"role": "assistant", "content": f"{40 + i}.00"}]} for i, s in enumerate(SUMMARIES)]
    products, report = load_products(write_jsonl(tmp_path / "messages.jsonl", messages))
    assert [(p.text, p.price) for p in products] == [(s, 40.0 + i) for i, s in enumerate(SUMMARIES)]
    assert report.question == COURSE_QUESTION
    # TRL's conversational prompt-completion: the prompt and the completion are turns, not text.
    turns = [{"prompt": [{"role": "user", "content": course_prompt(s, COURSE_2024_QUESTION)}],
              "completion": [{"role": "assistant", "content": f"{50 + i}.00"}]} for i, s in enumerate(SUMMARIES)]
    products, report = load_products(write_jsonl(tmp_path / "turns.jsonl", turns))
    assert [(p.text, p.price) for p in products] == [(s, 50.0 + i) for i, s in enumerate(SUMMARIES)]
    assert report.question == COURSE_2024_QUESTION


def item(i, summary=True):
    record = {"title": f"Mixer {i}", "category": ["Appliances", "Kitchen"][i % 2], "price": 30.0 + i,
              "full": f"Stand mixer {i} with a 5 litre bowl", "weight": 1.5, "id": i,
              "prompt": course_prompt(f"Summary of mixer {i}", COURSE_QUESTION), "completion": f"{30 + i}.00"}
    if summary:
        record["summary"] = f"Summary of mixer {i}"
    return record


def test_item_records_use_the_summary_and_keep_the_category(tmp_path):
    products, report = load_products(write_jsonl(tmp_path / "items.jsonl", [item(i) for i in range(12)]))
    assert (report.text_columns, report.price_column, report.category_column) == (["summary"], "price", "category")
    assert products[3] == Product("Summary of mixer 3", 33.0) and products[3].category == "Kitchen"
    assert "category: `category`" in report.summary()
    # Without a summary: the title and the full description, in that order.
    products, report = load_products(write_jsonl(tmp_path / "items2.jsonl", [item(i, False) for i in range(12)]))
    assert report.text_columns == ["title", "full"] and products[0].text == "Mixer 0\nStand mixer 0 with a 5 litre bowl"


def test_a_saved_dataset_keeps_its_own_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = lambda lo, hi: datasets.Dataset.from_list(  # noqa: E731
        [{"prompt": course_prompt(f"Toaster {i} with four slots", COURSE_QUESTION), "completion": f"{10 + i}.00"}
         for i in range(lo, hi)])
    datasets.DatasetDict({"train": rows(0, 20), "val": rows(20, 23), "test": rows(23, 27)}).save_to_disk(
        str(tmp_path / "items_prompts"))
    products, report = load_products(tmp_path / "items_prompts")
    assert report.splits == {"train": 20, "validation": 3, "test": 4}
    assert "the data's own (train 20 / validation 3 / test 4)" in report.summary()
    train, validation, test = split_run(products, test_size=0.5, validation_size=0.5, seed=1)
    assert [p.price for p in test] == [33.0, 34.0, 35.0, 36.0]  # exactly the test split, whatever the shares say
    assert [p.price for p in validation] == [30.0, 31.0, 32.0] and len(train) == 20
    # Without a validation split it is carved from train at random, and the summary says so.
    datasets.DatasetDict({"train": rows(0, 20), "test": rows(23, 27)}).save_to_disk(str(tmp_path / "two"))
    products, report = load_products(tmp_path / "two")
    train, validation, test = split_run(products, validation_size=5)
    assert [p.price for p in test] == [33.0, 34.0, 35.0, 36.0] and len(validation) == 5 and len(train) == 15
    assert "the validation rows carved at random from train" in report.summary()


def test_a_file_without_splits_is_split_at_random_and_says_so(tmp_path):
    records = [{"prompt": course_prompt(s, COURSE_QUESTION), "completion": "30.00"} for s in SUMMARIES]
    _, report = load_products(write_jsonl(tmp_path / "prompts.jsonl", records))
    assert report.splits == {} and "split: random" in report.summary()


def test_llama_3_2_3b_is_estimated_offline():
    estimate = estimate_adapter(model_config("meta-llama/Llama-3.2-3B"), 32, ["q_proj", "k_proj", "v_proj", "o_proj"])
    assert estimate.trainable_params == 18_350_080  # 28 layers × 32 × (3072+3072 + 2 × (3072+1024) + 3072+3072)
    assert "18.4 M" in estimate.describe() and "73 MB" in estimate.describe()


def test_presets_hold_the_course_recipes():
    lite, full, old, demo = (preset(name) for name in ("course-lite", "course-full", "course-2024", "demo"))
    assert (lite.model, lite.question, lite.lora_r, lite.lora_alpha, lite.lora_dropout, lite.target_modules) == (
        "meta-llama/Llama-3.2-3B", COURSE_QUESTION, 32, 64, 0.1, ["q_proj", "k_proj", "v_proj", "o_proj"])
    assert (lite.epochs, lite.max_steps, lite.batch_size, lite.learning_rate, lite.lr_scheduler, lite.warmup_ratio,
            lite.weight_decay, lite.max_grad_norm, lite.quant, lite.max_length) == (
        1.0, 0, 32, 1e-4, "cosine", 0.01, 0.001, 0.3, "4bit", 128)
    assert (full.epochs, full.batch_size, full.lora_r, full.lora_alpha, len(full.target_modules)) == (3.0, 256, 256, 512, 7)
    assert (old.model, old.question, old.batch_size) == ("meta-llama/Meta-Llama-3.1-8B", COURSE_2024_QUESTION, 4)
    assert demo == TrainConfig.for_model("demo")
    for name in PRESETS:
        preset(name).validate()
    with pytest.raises(ConfigError, match="preset: one of"):
        preset("course 2023")


def test_the_question_is_a_recorded_setting(tmp_path, demo_tokenizer):
    config = TrainConfig(question=COURSE_2024_QUESTION)
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert TrainConfig.from_yaml(path).asked() == COURSE_2024_QUESTION
    # A run recorded before the setting asked the 2024 question; every prompt is built from the run's own.
    path.write_text(path.read_text().replace(f"question: {COURSE_2024_QUESTION}\n", ""))
    assert TrainConfig.from_yaml(path).question == "" and TrainConfig.from_yaml(path).asked() == COURSE_2024_QUESTION
    ids = encode_prompt(demo_tokenizer, "A kettle", 64, COURSE_QUESTION)
    assert demo_tokenizer.decode(ids).endswith(f"{COURSE_QUESTION}\n\nA kettle\n\n{PRICE_PREFIX}")
    with pytest.raises(ConfigError, match="question: at most"):
        TrainConfig(question="x" * 301).validate()


def test_errors_by_category():
    items = [{"category": "A", "truth": 10.0, "guess": 12.0, "tfidf_ridge": 20.0},
             {"category": "A", "truth": 30.0, "guess": 26.0, "tfidf_ridge": 30.0},
             {"category": "B", "truth": 100.0, "guess": 50.0, "tfidf_ridge": 90.0},
             {"truth": 5.0, "guess": 5.0, "tfidf_ridge": 5.0}]
    categories = by_category(items)
    assert list(categories) == ["A", "B"] and categories["A"]["count"] == 2
    assert categories["A"]["model"]["error"] == 3.0 and categories["A"]["tfidf_ridge"]["error"] == 5.0
    assert category_table(categories)[1][:4] == ["B", 1, 50.0, 10.0]
    assert by_category([{"truth": 1.0, "guess": 1.0, "tfidf_ridge": 1.0}]) == {}


@pytest.mark.slow
def test_a_run_on_a_course_prompt_file_trains_on_the_summaries_and_evaluates_by_category(tmp_path, runs_dir):
    from trainer.inference import predictor_for
    from trainer.job import TrainingJob
    from trainer.metrics import price_metrics
    from trainer.tester import evaluate_run

    records = [{"prompt": course_prompt(f"{s} in colour {c}", COURSE_2024_QUESTION), "completion": f"{20 + 3 * i}.00"}
               for i, (s, c) in enumerate((s, c) for s in SUMMARIES for c in ("red", "blue"))]
    data = write_jsonl(tmp_path / "items_prompts.jsonl", records)
    config = TrainConfig(name="course", data=str(data), model="demo", quant="none", lora_r=4, lora_alpha=8,
                         batch_size=4, max_steps=2, sample_every=0, save_steps=0, test_size=4, validation_size=4,
                         probe_size=4, num_samples=2, head_rows=8)
    job = TrainingJob.new(config, runs_root=runs_dir).start()
    job.thread.join(timeout=600)
    run = job.run
    assert run.status()["state"] == "done", run.status()
    trained = run.train_file.read_text()
    assert "cost to the nearest dollar" not in trained and PRICE_PREFIX not in trained and "in colour" in trained
    # The data's own question is the run's, recorded, and what its predictor asks.
    assert TrainConfig.from_yaml(run.config_file).question == COURSE_2024_QUESTION
    assert predictor_for(run.path).config.asked() == COURSE_2024_QUESTION
    assert "24 of 24 rows kept; split: random" in run.status()["data_summary"]

    items = write_jsonl(tmp_path / "items.jsonl", [item(i) for i in range(12)])
    result = evaluate_run(run.path, data=str(items), limit=6, save=False)
    kitchen = [i for i in result.items if i["category"] == "Kitchen"]
    assert result.categories["Kitchen"]["count"] == len(kitchen) == 3
    assert result.categories["Kitchen"]["model"] == price_metrics([i["guess"] for i in kitchen],
                                                                     [i["truth"] for i in kitchen])
