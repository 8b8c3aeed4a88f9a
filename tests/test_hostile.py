"""What a careless or hostile visitor tried, refused where the handler or the reader is the boundary."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer.config import MAX_CONFIG_BYTES, ConfigError, TrainConfig
from trainer.data import make_sample_products

ROOT = Path(__file__).resolve().parents[1]


def alias_bomb(levels: int) -> str:
    """A few hundred bytes of YAML whose nested aliases expand to 9**levels list items."""
    lines = ["a0: &a0 [q_proj, q_proj, q_proj, q_proj, q_proj, q_proj, q_proj, q_proj, q_proj]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\ntarget_modules: *a{levels}\n"


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(6))
    assert bomb.stat().st_size < 1000  # 9**6 = 531,441 items, expanded by a plain YAML loader
    with pytest.raises(ConfigError, match=r"not valid YAML: .*aliases \(\*name\) are not accepted"):
        TrainConfig.from_yaml(bomb)


def test_a_config_file_is_small_and_every_field_short(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("target_modules: [" + ", ".join(["q_proj"] * 5000) + "]\n")
    assert big.stat().st_size > MAX_CONFIG_BYTES
    with pytest.raises(ConfigError, match=r"big.yaml is [\d,]+ bytes; a config is at most 16,384"):
        TrainConfig.from_yaml(big)
    with pytest.raises(ConfigError, match="target_modules: at most 64 names of at most 100 characters"):
        TrainConfig.from_dict({"target_modules": [f"layer{i}" for i in range(65)]})
    with pytest.raises(ConfigError, match="target_modules: at most 64 names"):
        TrainConfig.from_dict({"target_modules": ["x" * 101]})
    with pytest.raises(ConfigError, match="model: is 5,000 characters long; at most 1,000"):
        TrainConfig.from_dict({"model": "m" * 5000})
    # A refusal quotes a pasted value cut short, not whole.
    with pytest.raises(ConfigError) as refused:
        TrainConfig.from_dict({"lora_r": "9" * 10 + "x" * 10_000})
    assert len(str(refused.value)) < 120


def test_malformed_imports_are_named_by_line_or_field(tmp_path):
    cases = {"a: [": "not valid YAML", "lora_alpha: abc": "lora_alpha: must be a number (got 'abc')",
             "model: [a, b]": "model: must be text", "- a list": "expected a mapping"}
    for text, message in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(text + "\n")
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            TrainConfig.from_yaml(path)


def test_seeds_and_alpha_are_checked_with_their_real_bounds_before_a_run_starts():
    for field, value in (("seed", -1), ("seed", 2**32), ("split_seed", 2**40)):
        with pytest.raises(ConfigError, match=f"{field}: must be 0–4294967295"):
            TrainConfig(**{field: value}).validate()
    with pytest.raises(ConfigError, match=r"lora_alpha: must be in \(0, 4096\] \(got 5000\)"):
        TrainConfig(lora_alpha=5000).validate()
    TrainConfig(seed=2**32 - 1).validate()


def test_an_empty_password_is_refused_at_start(monkeypatch):
    from ui.access import AuthError, auth_users

    for value in ("alice:", "alice", "alice:x,:pw", "bob:ok,alice:"):
        monkeypatch.setenv("PRICETUNE_AUTH", value)
        with pytest.raises(AuthError, match="needs a non-empty password"):
            auth_users()
    monkeypatch.setenv("PRICETUNE_AUTH", "alice:x, bob:y:z")
    assert auth_users() == [("alice", "x"), ("bob", "y:z")]
    env = {"PRICETUNE_AUTH": "alice:", "PRICETUNE_SHARE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", "import app; app.main()"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Refusing to start: PRICETUNE_AUTH: 'alice' needs a non-empty password" in proc.stderr


def test_the_token_chart_of_a_big_upload_tokenizes_a_sample():
    from ui.data_box import CHART_ROWS, token_lengths

    products = make_sample_products(CHART_ROWS + 1000, seed=1)
    figure = token_lengths(products)
    [histogram] = figure.data
    assert len(histogram.x) == CHART_ROWS
    assert f"of {CHART_ROWS:,} (" in figure.layout.title.subtitle.text
    assert f"sampled from {len(products):,} rows" in figure.layout.title.subtitle.text


def test_cancel_stops_only_your_own_evaluation():
    from ui.tabs.evaluate import cancel_evaluation, cancel_event

    alice, bob = SimpleNamespace(username="alice"), SimpleNamespace(username="bob")
    mine, theirs = cancel_event(alice), cancel_event(bob)
    mine.clear(), theirs.clear()
    cancel_evaluation(bob)
    assert theirs.is_set() and not mine.is_set()
    # Without login, each page's session has its own.
    one, two = SimpleNamespace(username=None, session_hash="s1"), SimpleNamespace(username=None, session_hash="s2")
    cancel_evaluation(one)
    assert cancel_event(one).is_set() and not cancel_event(two).is_set()


def test_a_model_folder_is_accepted_only_where_allowed_and_refused_alike(tmp_path, monkeypatch):
    import json

    from trainer.models import ModelError, model_config, model_roots

    def llama(folder, **sizes):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({
            "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, **sizes}))
        return str(folder)

    allowed, elsewhere = tmp_path / "models", tmp_path / "uploads"
    inside, outside = llama(allowed / "tiny"), llama(elsewhere / "tiny")
    monkeypatch.setenv("PRICETUNE_MODEL_DIRS", str(allowed))
    assert model_roots() == [allowed]
    assert model_config(inside, model_roots()).num_hidden_layers == 2
    assert model_config(outside).num_hidden_layers == 2  # a person's own machine: any folder
    locked = llama(allowed / "locked")
    os.chmod(locked, 0)
    answers = []
    # A folder this process cannot read is refused like a missing one (root reads every folder: no probe there).
    unreadable = (locked,) if os.geteuid() else ()
    if not unreadable:
        assert model_config(locked, model_roots()).num_hidden_layers == 2
    for name in (outside, str(elsewhere / "missing"), str(allowed / "tiny" / "config.json"),
                 str(allowed / "tiny" / ".." / ".." / "uploads" / "tiny"), *unreadable):
        with pytest.raises(ModelError) as refused:
            model_config(name, model_roots())
        answers.append(str(refused.value).replace(name, "NAME"))
    os.chmod(locked, 0o755)
    assert len(set(answers)) == 1 and "accepted only under PRICETUNE_MODEL_DIRS" in answers[0], answers
    # A forged architecture is refused from its numbers, before any layer is built.
    with pytest.raises(ModelError, match="num_hidden_layers 8,000; PriceTune inspects models up to 512"):
        model_config(llama(allowed / "huge", num_hidden_layers=8000), model_roots())


YAML_PIECES = st.sampled_from(["lora_r: ", "target_modules: ", "model: ", "data: ", "&a ", "*a ", "[", "]", "{", "}",
                               ", ", "- ", "\n", "  ", "!!python/object:os.system ", "1e999", "abc", "'", '"', ":",
                               "? ", "|", "> ", "\t", "#", "%YAML 1.1\n", "---\n", "\x00", "é"])


@settings(max_examples=60, deadline=10_000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(YAML_PIECES, max_size=40).map("".join))
def test_no_config_file_takes_long_or_raises_anything_but_a_config_error(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        TrainConfig.from_yaml(path).validate()
    except ConfigError:
        pass


CELLS = st.sampled_from(["text", "price", "title", "prompt", "completion", ",", "\t", "\n", '"', "{", "}", "[", "]",
                         ":", "12.5", "-3", "1,299.00", "$", "nan", "1e308", "null", "true", "é", "\x00", "\r\n",
                         '{"text": "a walnut desk organiser with drawers", "price": 12}\n', "a walnut desk "])


@settings(max_examples=60, deadline=10_000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(CELLS, max_size=60).map("".join), st.sampled_from(["csv", "tsv", "json", "jsonl"]))
def test_no_data_file_takes_long_or_raises_anything_but_a_data_error(tmp_path, text, ext):
    from trainer.data import DataError, load_products

    path = tmp_path / f"fuzz.{ext}"
    path.write_text(text, encoding="utf-8")
    try:
        load_products(path, min_rows=1)
    except DataError:
        pass


def test_a_callers_priced_files_do_not_pile_up_on_disk():
    from types import SimpleNamespace

    from ui.tabs.predict import priced_folder

    alice, bob = (SimpleNamespace(username=None, session_hash=h) for h in ("session-a", "session-b"))
    first = priced_folder(alice)
    (first / "catalog-priced.csv").write_text("sku,predicted_price\n")
    assert priced_folder(alice) == first and not any(first.iterdir())  # the next result replaces the last
    assert priced_folder(bob) != first  # another caller's folder is their own
