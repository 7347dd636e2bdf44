"""The refresh pipeline's promotion rule: the zero-shot suite may not regress beyond a tolerance.

Gated against a real registry folder: the champion is promoted by the main rule first, then
refresh candidates are judged against its recorded zero-shot metric.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasoning_ner.config import PromotionSection, resolve_config
from reasoning_ner.promotion import Registry, promote

MAIN = PromotionSection(min_gate_value=0.1)
REFRESH = PromotionSection(min_gate_value=0.1, rule="no-zero-shot-regression", zero_shot_tolerance=0.02)


def _report(zero_shot: float, supervised: float = 0.5) -> dict:
    return {"model": "m", "lineage": {"rev": "abc"},
            "suites": {"zero-shot": {"macro": {"paper_f1": zero_shot}, "mean_parse_rate": 1.0},
                       "supervised": {"macro": {"paper_f1": supervised}, "mean_parse_rate": 1.0}}}


def _model(root: Path, name: str) -> str:
    (root / name).mkdir(parents=True)
    (root / name / "config.json").write_text(json.dumps({"name": name}))
    return str(root / name)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(str(tmp_path / "registry"))
    assert promote(_report(0.40), _model(tmp_path, "champ"), MAIN, registry, version="v1").promoted
    return registry


def test_a_drop_within_the_tolerance_is_promoted(registry: Registry, tmp_path: Path) -> None:
    decision = promote(_report(0.39), _model(tmp_path, "a"), REFRESH, registry, version="v2")
    assert decision.promoted, decision.reason
    assert "drop 0.0100 within the zero-shot regression tolerance 0.02" in decision.reason
    assert registry.champion()["version"] == "v2" and registry.champion()["history"] == ["v1"]


def test_a_drop_beyond_the_tolerance_is_refused_and_the_champion_stays(registry: Registry, tmp_path: Path) -> None:
    # The supervised suite improved a lot: the rule looks at zero-shot only.
    decision = promote(_report(0.37, supervised=0.9), _model(tmp_path, "b"), REFRESH, registry, version="v2")
    assert not decision.promoted and decision.model_uri is None
    assert "drop 0.0300 exceeds the zero-shot regression tolerance 0.02" in decision.reason
    assert registry.champion()["version"] == "v1"
    assert registry.version("v2")["decision"]["reason"] == decision.reason  # recorded either way


def test_the_main_rule_would_have_refused_what_the_refresh_rule_accepts(registry: Registry, tmp_path: Path) -> None:
    assert not promote(_report(0.39), _model(tmp_path, "c"), MAIN, registry, version="v2").promoted


def test_floors_still_apply_under_the_refresh_rule(registry: Registry, tmp_path: Path) -> None:
    floor = REFRESH.model_copy(update={"min_gate_value": 0.395})
    decision = promote(_report(0.39), _model(tmp_path, "d"), floor, registry, version="v2")
    assert not decision.promoted and "below the floor" in decision.reason


def test_a_report_without_the_zero_shot_suite_is_an_error(registry: Registry, tmp_path: Path) -> None:
    report = {"suites": {"supervised": {"macro": {"paper_f1": 0.9}, "mean_parse_rate": 1.0}}}
    cfg = REFRESH.model_copy(update={"gate_suite": "supervised"})
    with pytest.raises(ValueError, match="no 'zero-shot' suite"):
        promote(report, _model(tmp_path, "e"), cfg, registry, version="v2")
    assert registry.version("v2") is None


def test_the_rule_and_tolerance_are_typed_settings() -> None:
    cfg = resolve_config(profile="tiny-ci", overrides=["promotion.rule=no-zero-shot-regression",
                                                       "promotion.zero_shot_tolerance=0.05", "refresh.mix_ratio=0.5"])
    assert (cfg.promotion.rule, cfg.promotion.zero_shot_tolerance, cfg.refresh.mix_ratio) == \
        ("no-zero-shot-regression", 0.05, 0.5)
    with pytest.raises(ValueError, match="promotion.rule"):
        resolve_config(profile="tiny-ci", overrides=["promotion.rule=anything"])
