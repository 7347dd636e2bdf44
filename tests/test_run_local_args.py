"""`rner pipeline run-local`: `--set`/`--config` reach the steps through the run parameters that carry
them, and a change none carries, a bad profile or a bad `--param` is refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import pipelines.local
import pipelines.refresh_local
from pipelines.arguments import changed_keys, run_arguments
from pipelines.reasoning_ner_pipeline import CONFIG_PARAMETERS, profile_arguments
from reasoning_ner.cli import app
from reasoning_ner.config import resolve_config

runner = CliRunner()


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """What the CLI would run: the arguments of run_local (both variants), nothing run."""
    calls: list[dict] = []

    def fake(work: Path, profile: str = "tiny-cpu", **params) -> dict:
        calls.append({"work": work, "profile": profile, **params})
        return {"decision": "kept", "seconds": 0.0, "report": None, "champion": None}

    monkeypatch.setattr(pipelines.local, "run_local", fake)
    monkeypatch.setattr(pipelines.refresh_local, "run_refresh_local", fake)
    return calls


def test_changed_keys_names_each_dotted_key() -> None:
    base = resolve_config(profile="tiny-cpu")
    cfg = resolve_config(profile="tiny-cpu", overrides=["sft.max_steps=3", "grpo.learning_rate=1e-5"])
    assert changed_keys(cfg, base) == ["grpo.learning_rate", "sft.max_steps"]
    assert changed_keys(base, base) == []


def test_a_carried_setting_becomes_its_run_parameter() -> None:
    base = resolve_config(profile="tiny-cpu")
    cfg = resolve_config(profile="tiny-cpu", overrides=["sft.max_steps=3", "sft.finetune=lora", "eval.limit=7"])
    args = run_arguments(CONFIG_PARAMETERS, cfg, base)
    assert (args["sft_max_steps"], args["use_lora"], args["eval_limit"]) == (3, True, 7)
    assert run_arguments(CONFIG_PARAMETERS, base, base) == profile_arguments("tiny-cpu")


def test_a_setting_no_parameter_carries_is_refused_by_name() -> None:
    base = resolve_config(profile="tiny-cpu")
    cfg = resolve_config(profile="tiny-cpu", overrides=["sft.warmup_ratio=0.2", "sft.max_steps=3"])
    with pytest.raises(ValueError, match=r"^sft\.warmup_ratio: .*profile 'tiny-cpu'.*sft_max_steps \(sft\.max_steps\)"):
        run_arguments(CONFIG_PARAMETERS, cfg, base)


def test_cli_passes_set_and_param_to_the_run(captured: list[dict], tmp_path: Path) -> None:
    res = runner.invoke(app, ["--set", "sft.max_steps=5", "pipeline", "run-local", "--work", str(tmp_path),
                              "-p", "grpo_max_steps=2", "-p", "use_vllm=false"])
    assert res.exit_code == 0, res.output
    (call,) = captured
    assert (call["profile"], call["sft_max_steps"], call["grpo_max_steps"], call["use_vllm"]) == ("tiny-cpu", 5, 2, False)


def test_cli_reads_a_config_file_and_refuses_what_it_cannot_carry(captured: list[dict], tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("profile: tiny-ci\nsft:\n  learning_rate: 0.001\n")
    bad.write_text("profile: tiny-ci\nsft:\n  warmup_ratio: 0.3\n")
    res = runner.invoke(app, ["--config", str(good), "pipeline", "run-local", "--work", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (captured[0]["profile"], captured[0]["sft_learning_rate"]) == ("tiny-ci", 0.001)
    res = runner.invoke(app, ["--config", str(bad), "pipeline", "run-local", "--work", str(tmp_path)])
    assert res.exit_code == 2 and "sft.warmup_ratio" in res.output and "Traceback" not in res.output
    assert len(captured) == 1


@pytest.mark.parametrize("args, message", [
    (["--profile", "tiny_cpu", "pipeline", "run-local"], "unknown profile 'tiny_cpu'"),
    (["--set", "sft.warmup_ratio=0.2", "pipeline", "run-local"], "no run parameter carries"),
    (["pipeline", "run-local", "-p", "sft_max_step=3"], "did you mean sft_max_steps"),
    (["pipeline", "run-local", "-p", "sft_max_steps=abc"], "sft_max_steps is an integer, not 'abc'"),
    (["pipeline", "run-local", "-p", "sft_max_steps"], "is not NAME=VALUE"),
    (["pipeline", "run-local", "--variant", "refresh", "-p", "sft_epochs=2"], "no parameter 'sft_epochs'"),
    (["--set", "grpo.learning_rate=1e-5", "pipeline", "run-local", "--variant", "refresh"], "grpo.learning_rate"),
])
def test_cli_bad_input_fails_before_running(captured: list[dict], tmp_path: Path, args: list[str], message: str) -> None:
    res = runner.invoke(app, [*args, "--work", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split()) and "Traceback" not in res.output
    assert captured == []
