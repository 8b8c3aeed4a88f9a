"""Export: the model card with the Tester's numbers and scatter, a merged model that predicts like adapter + base,
the 4-bit refusal, and a Hub push that fails with a clear message on this offline machine."""

import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from trainer.__main__ import main
from trainer.config import TrainConfig
from trainer.export import ExportError, merge, model_card, push
from trainer.job import TrainingJob
from trainer.pricing.decoding import predict_greedy
from trainer.tester import evaluate_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    job = TrainingJob.new(TrainConfig(name="exp", data="sample", quant="none", lora_r=8, lora_alpha=16, batch_size=4,
                                  learning_rate=2e-3, max_steps=3, sample_every=0, save_steps=0, probe_size=4,
                                  # Few validation rows: the Tester prices them all (3 passes a row) to choose a method.
                                  num_samples=4, head_rows=8, test_size=6, validation_size=8),
                      runs_root=root).start()
    assert job.wait(600) == "done", job.run.status()
    return job.run


def test_model_card_has_the_config_the_tester_metrics_and_the_scatter(trained_run):
    card = model_card(trained_run.path).read_text()
    assert "Not evaluated yet" in card and "base_model: HuggingFaceTB/SmolLM2-135M-Instruct\n" in card
    # The question and base model the run itself used, not the 2024 course's wording or the name "demo".
    assert ("A LoRA adapter for `HuggingFaceTB/SmolLM2-135M-Instruct` that answers the prompt its run asked "
            "(`What does this cost to the nearest dollar?` … `Price is $`)") in card, card[:800]
    result = evaluate_run(trained_run.path, limit=6)
    card = model_card(trained_run.path).read_text()
    assert f"{result.metrics['error']:.2f}" in card and "| lora_r | 8 |" in card
    assert "training / " in card and "synthetic sample products" in card  # the data summary the job recorded
    image = trained_run.adapter_dir / "scatter.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 5000


def test_merged_model_loads_plainly_and_predicts_like_adapter_plus_base(trained_run, tmp_path, demo_tokenizer):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trainer.models import load_model

    out = merge(trained_run.path, tmp_path / "merged")
    assert sorted(p.name for p in out.glob("*.safetensors")) and not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out)
    reference = PeftModel.from_pretrained(load_model("demo", "none"), trained_run.adapter_dir)
    texts = ["Stainless steel kettle, 1.7 litre, cordless", "Replacement water filter for a fridge, pack of 3"]
    ids = demo_tokenizer(texts[0], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(merged(**ids).logits, reference(**ids).logits, atol=1e-3)
    assert [p.text for p in predict_greedy(merged, demo_tokenizer, texts)] == \
        [p.text for p in predict_greedy(reference, demo_tokenizer, texts)]


def test_the_export_tab_offers_the_adapter_at_once_and_the_merged_model_as_a_download(trained_run, monkeypatch):
    import trainer.export
    from ui.tabs.export import export_download, export_merge

    monkeypatch.setenv("PRICETUNE_RUNS", str(trained_run.path.parent))
    adapter, merged = export_download(trained_run.name)  # picking the run is enough: no card to write first
    assert Path(adapter.value["path"]).name == f"{trained_run.name}-adapter.zip" and not merged.visible
    with zipfile.ZipFile(adapter.value["path"]) as z:
        assert {"adapter_model.safetensors", "config.yaml"} <= set(z.namelist())
    # Over the size a browser download is offered for: the folder is still merged, and the message says where.
    monkeypatch.setattr(trainer.export, "MAX_MERGED_DOWNLOAD", 1000)
    message, button = export_merge(trained_run.name)
    assert "saved on the server" in message and "No download: the merged model is" in message
    assert not button.visible and (trained_run.path / "merged" / "config.json").is_file()
    monkeypatch.undo()
    monkeypatch.setenv("PRICETUNE_RUNS", str(trained_run.path.parent))
    message, button = export_merge(trained_run.name)
    assert "No download" not in message and Path(button.value["path"]).name == f"{trained_run.name}-merged.zip"
    with zipfile.ZipFile(button.value["path"]) as z:
        assert "config.json" in z.namelist() and any(n.endswith(".safetensors") for n in z.namelist())
    shutil.rmtree(trained_run.path / "merged")  # the shared run as the other tests expect it


def test_a_quantized_run_is_not_merged_and_says_why(trained_run, tmp_path):
    copy = tmp_path / "q4"
    shutil.copytree(trained_run.path, copy)
    config = TrainConfig.from_yaml(copy / "config.yaml")
    config.quant = "4bit"
    (copy / "config.yaml").write_text(config.to_yaml())
    with pytest.raises(ExportError, match="trained its adapter on a 4bit base.*quant none"):
        merge(copy)
    assert not (copy / "merged").exists()


def test_push_offline_fails_with_a_clear_message_and_the_cli_says_so(trained_run, capsys):
    with pytest.raises(ExportError, match="offline"):
        push(trained_run.path, "someone/pricetune-test", token="hf_dummy")
    with pytest.raises(ExportError, match="owner/name"):
        push(trained_run.path, "no-owner", token=None)
    assert main(["export", "--run", str(trained_run.path), "--push", "someone/x"]) == 2
    err = capsys.readouterr().err
    assert "offline" in err and "adapter zip" in err
    assert (trained_run.adapter_dir / "README.md").is_file()  # the card is written before the push is tried
