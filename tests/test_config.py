"""The typed configuration: profiles, file, overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from reasoning_ner.config import PROFILES, ZERO_SHOT_DATASETS, ConfigError, load_config, parse_override

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_profiles_resolve() -> None:
    assert set(PROFILES) == {"tiny-cpu", "tiny-ci", "qwen3-1.7b", "qwen3-8b"}
    tiny = load_config(profile="tiny-cpu")
    assert tiny.model.base_model == "tiny" and tiny.prompt.style == "compact" and tiny.prompt.answer_indent is None
    big = load_config(profile="qwen3-8b")
    assert big.model.base_model == "Qwen/Qwen3-8B-Base" and big.prompt.style == "paper" and big.prompt.answer_indent == 2
    assert load_config(profile="qwen3-1.7b").model.base_model == "Qwen/Qwen3-1.7B-Base"
    # tiny-ci: the tiny-cpu recipe at the test suite's size, every other setting the same.
    ci = load_config(profile="tiny-ci")
    assert (ci.sft.max_steps, ci.grpo.max_steps, ci.eval.limit, ci.cot.max_records_per_dataset) == (30, 2, 4, 256)
    assert ci.promotion.min_parse_rate == 0.0 and ci.sft.learning_rate == tiny.sft.learning_rate
    assert ci.prompt == tiny.prompt and ci.model == tiny.model


def test_repo_params_yaml_is_valid() -> None:
    cfg = load_config(REPO_ROOT / "params.yaml")
    assert cfg.profile == "tiny-cpu"
    assert cfg.data.zero_shot_datasets == list(ZERO_SHOT_DATASETS)


def test_order_profile_then_file_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("profile: qwen3-8b\nprompt:\n  answer_indent: 4\nmodel:\n  tiny:\n    hidden_size: 64\n")
    cfg = load_config(f)
    assert cfg.profile == "qwen3-8b" and cfg.prompt.answer_indent == 4 and cfg.model.tiny.hidden_size == 64
    cfg = load_config(f, profile="tiny-cpu", overrides=["model.tiny.hidden_size=128", "prompt.with_cot=false"])
    assert cfg.profile == "tiny-cpu" and cfg.model.tiny.hidden_size == 128 and cfg.prompt.with_cot is False
    assert cfg.prompt.answer_indent == 4  # the file still wins over the profile


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown profile 'gpt5'"):
        load_config(profile="gpt5")
    with pytest.raises(ConfigError, match="model.tiny.hidden_size"):
        load_config(overrides=["model.tiny.hidden_size=-3"])
    with pytest.raises(ConfigError, match="data.typo"):
        load_config(overrides=["data.typo=1"])
    with pytest.raises(ConfigError, match="not of the form"):
        parse_override("prompt.style")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_zero_shot_datasets_can_never_be_training_data() -> None:
    with pytest.raises(ConfigError, match=r"zero-shot evaluation dataset\(s\) \['crossner_ai'\]"):
        load_config(overrides=["data.train_datasets=[pile_ner, crossner_ai]"])


def test_data_dir_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNER_DATA_DIR", "/somewhere/data")
    assert load_config().data.source_dir == "/somewhere/data"


def test_entry_points_resolve_params_yaml_by_one_rule(tmp_path: Path) -> None:
    """./params.yaml when no file and no profile are named; a named profile is that profile as defined."""
    from reasoning_ner.config import resolve_config

    (tmp_path / "params.yaml").write_text("profile: tiny-cpu\nsft:\n  max_steps: 7\n")
    assert resolve_config(cwd=tmp_path).sft.max_steps == 7
    assert resolve_config(cwd=tmp_path, overrides=["sft.max_steps=9"]).sft.max_steps == 9
    named = resolve_config(profile="tiny-cpu", cwd=tmp_path)
    assert named.sft.max_steps == load_config(profile="tiny-cpu").sft.max_steps != 7
    other = tmp_path / "other.yaml"
    other.write_text("sft:\n  max_steps: 3\n")
    assert resolve_config(other, cwd=tmp_path).sft.max_steps == 3
    assert resolve_config(cwd=tmp_path / "nowhere").sft.max_steps == load_config().sft.max_steps


def test_the_transformers_profile_choices_are_the_profiles() -> None:
    """serving.transformer.profile is checked (config and chart schema) against exactly the defined profiles."""
    from typing import get_args

    from reasoning_ner.config.profiles import PROFILES
    from reasoning_ner.config.serving import ProfileName

    assert set(get_args(ProfileName)) == set(PROFILES)


@pytest.mark.parametrize("override, message", [
    ("grpo.num_generations=1", "grpo.num_generations: Input should be greater than or equal to 2"),
    ("sft.learning_rate=-1", "sft.learning_rate: Input should be greater than 0"),
    ("sft.per_device_train_batch_size=0", "sft.per_device_train_batch_size: Input should be greater than or equal to 1"),
    ("grpo.temperature=0", "grpo.temperature: Input should be greater than 0"),
    ("grpo.beta=-0.1", "grpo.beta: Input should be greater than or equal to 0"),
    ("sft.warmup_ratio=1.5", "sft.warmup_ratio: Input should be less than or equal to 1"),
])
def test_values_that_cannot_train_are_refused_when_the_config_loads(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(profile="tiny-cpu", overrides=[override])
