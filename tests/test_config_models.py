"""Config validation and YAML round trip; model resolution and the offline adapter-size estimate."""

import pytest
import torch

from trainer.__main__ import main
from trainer.config import ConfigError, TrainConfig
from trainer.models import ModelError, estimate_adapter, linear_module_names, model_config, resolve


def test_defaults_are_valid_and_round_trip_through_yaml(tmp_path):
    config = TrainConfig(lora_r=8, target_modules=["q_proj", "v_proj"]).validate()
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert TrainConfig.from_yaml(path) == config


@pytest.mark.parametrize("field, value, words", [
    ("lora_r", 0, "lora_r"), ("lora_r", 257, "lora_r"), ("lora_dropout", 1.0, "lora_dropout"),
    ("target_modules", [], "target_modules"), ("learning_rate", 0, "learning_rate"),
    ("batch_size", 0, "batch_size"), ("quant", "3bit", "quant"), ("max_length", 5, "max_length"),
    ("lr_scheduler", "zigzag", "lr_scheduler"), ("name", "../escape", "name"),
    ("precision", "fp8", "precision"), ("max_minutes", -1, "max_minutes"),
])
def test_validation_names_the_field(field, value, words):
    with pytest.raises(ConfigError, match=words):
        TrainConfig(**{field: value}).validate()


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        TrainConfig(lora_r=0, batch_size=0).validate()
    assert "lora_r" in str(err.value) and "batch_size" in str(err.value)


def test_unknown_yaml_key_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lora_r: 8\nlora_rank: 9\n")
    with pytest.raises(ConfigError, match="lora_rank"):
        TrainConfig.from_yaml(path)


@pytest.mark.parametrize("field, value, words", [
    ("batch_size", None, "batch_size: is empty: enter a number"),  # a cleared number field in the form
    ("learning_rate", "", "learning_rate: is empty: enter a number"),
    ("lora_alpha", "abc", "lora_alpha: must be a number (got 'abc')"),
    ("max_steps", 2.5, "max_steps: must be a whole number"),
    ("model", ["a", "b"], "model: must be text"),
    ("group_by_length", "yes", "group_by_length: must be true or false"),
    ("target_modules", [1, 2], "target_modules: must be a list of names"),
    ("learning_rate", float("nan"), "learning_rate: must be a finite number"),
    ("head_loss", None, "head_loss: is empty: enter a number"),
    ("head_loss", 1000, "head_loss: must be 0–100 (got 1000.0)"),
    ("head_loss", -1, "head_loss: must be 0–100 (got -1.0)"),
])
def test_wrong_types_are_refused_by_field_name(field, value, words):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{field: value}).validate()
    assert words in str(err.value)


def test_form_values_are_converted_and_str_subclasses_become_plain_text():
    class UploadPath(str):  # what Gradio keeps for an uploaded file; yaml.safe_dump refuses str subclasses
        pass

    config = TrainConfig.from_dict({"data": UploadPath("/tmp/x/products.csv"), "lora_r": 8.0, "batch_size": "4",
                                    "learning_rate": "0.0005", "target_modules": "q_proj, v_proj"}).validate()
    assert type(config.data) is str and (config.lora_r, config.batch_size) == (8, 4)
    assert config.learning_rate == 5e-4 and config.target_modules == ["q_proj", "v_proj"]
    assert "data: /tmp/x/products.csv" in config.to_yaml()
    assert type(TrainConfig(data=UploadPath("/tmp/y.csv")).validate().data) is str


def test_broken_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("lora_r: 8\ntarget_modules: [q_proj\n")
    with pytest.raises(ConfigError, match=r"broken.yaml is not valid YAML: line 3, column 1: expected ',' or ']'"):
        TrainConfig.from_yaml(path)
    # A control character (an editor's end-of-file mark) is named in plain words, not in the parser's.
    path.write_bytes(b"lora_r: 8\n\x1a\n")
    with pytest.raises(ConfigError) as refused:
        TrainConfig.from_yaml(path)
    assert str(refused.value) == ("broken.yaml is not valid YAML: a control character (code 0x1a) at character 11; "
                                  "a config is plain text")


def test_a_refused_config_leaves_no_run_folder(runs_dir):
    from trainer.job import TrainingJob

    with pytest.raises(ConfigError, match="batch_size"):
        TrainingJob.new(TrainConfig(batch_size=None), runs_root=runs_dir)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_course_model_adapter_is_109_mb_offline():
    # The lecture's figure: Llama 3.1 8B, r=32 on q,k,v,o → 27.3 M parameters, 109 MB in fp32.
    est = estimate_adapter(model_config("meta-llama/Llama-3.1-8B"), 32, ["q_proj", "k_proj", "v_proj", "o_proj"])
    assert est.trainable_params == 32 * 32 * (2 * (4096 + 4096) + 2 * (4096 + 1024))
    assert round(est.megabytes) == 109
    assert "27.3 M" in est.describe()


def test_demo_model_layers_are_discovered_from_its_config():
    assert linear_module_names(model_config("demo")) == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_estimate_scales_with_rank_and_targets():
    config = model_config("demo")
    one = estimate_adapter(config, 8, ["q_proj"]).trainable_params
    assert estimate_adapter(config, 16, ["q_proj"]).trainable_params == 2 * one
    assert estimate_adapter(config, 8, ["q_proj", "v_proj"]).trainable_params > one


@pytest.mark.parametrize("name", ["./no/such/folder", "not a model id", "a/b/c"])
def test_bad_model_names_get_a_clear_error(name):
    with pytest.raises(ModelError):
        resolve(name)


def test_estimate_cli_prints_the_lecture_figure(capsys):
    assert main(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--lora-r", "32",
                 "--target-modules", "q_proj,k_proj,v_proj,o_proj"]) == 0
    out = capsys.readouterr().out
    assert "27.3 M trainable parameters" in out and "109 MB" in out


def test_the_demo_model_and_other_models_have_their_own_defaults(tmp_path):
    from trainer.config import ALL_LINEAR, COURSE_TARGETS

    demo = TrainConfig.for_model("demo")
    assert demo == TrainConfig() and demo.learning_rate == 1e-3 and demo.target_modules == ALL_LINEAR
    big = TrainConfig.for_model("meta-llama/Llama-3.1-8B", lora_r=32)
    assert big.learning_rate == 3e-4 and big.target_modules == COURSE_TARGETS and big.lora_r == 32


def test_changing_the_model_in_the_form_switches_untouched_defaults_only():
    from ui.tabs import train

    targets, lr, checkpointing, compiled = train.discover_targets("meta-llama/Llama-3.1-8B",
                                                                  list(TrainConfig().target_modules), [])
    assert targets.value == ["q_proj", "k_proj", "v_proj", "o_proj"] and lr == 3e-4
    assert checkpointing is compiled is torch.cuda.is_available()  # a larger model checkpoints on a GPU
    targets, lr, checkpointing, compiled = train.discover_targets("demo", ["q_proj", "k_proj", "v_proj", "o_proj"], [])
    assert len(targets.value) == 7 and lr == 1e-3 and checkpointing is False
    # What the user set by hand survives the switch, a learning rate equal to the old model's default too.
    targets, lr, checkpointing, compiled = train.discover_targets(
        "meta-llama/Llama-3.1-8B", ["v_proj", "down_proj"], ["target_modules", "learning_rate", "gradient_checkpointing"])
    assert targets.value == ["v_proj", "down_proj"] and not isinstance(lr, float)
    assert not isinstance(checkpointing, bool) and compiled is torch.cuda.is_available()
