"""The refresh pipeline's library side: the harvested : original mix, the champion lookup, the start model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasoning_ner.config import PromotionSection
from reasoning_ner.promotion import Registry, promote
from reasoning_ner.refresh import NoChampionError, champion_model, mix_cot
from reasoning_ner.steps import base_model_path, fetch_model


def _cot(path: Path, prefix: str, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"{prefix}-{i}", "text": f"{prefix} sentence {i}"}) + "\n" for i in range(n)))
    return path


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize(("ratio", "original"), [(1.0, 10), (0.5, 20), (2.0, 5), (0.1, 30)])
def test_every_harvested_record_and_the_ratio_of_original_ones(tmp_path: Path, ratio: float, original: int) -> None:
    harvested, old = _cot(tmp_path / "h.jsonl", "h", 10), _cot(tmp_path / "o.jsonl", "o", 30)
    counts = mix_cot(harvested, old, tmp_path / "mix" / "accepted.jsonl", ratio, seed=3)
    ids = _ids(tmp_path / "mix" / "accepted.jsonl")
    assert counts == {"harvested": 10, "original": original, "original_available": 30, "mix_ratio": ratio}
    assert sorted(i for i in ids if i.startswith("h-")) == sorted(_ids(harvested))
    assert len([i for i in ids if i.startswith("o-")]) == original and len(set(ids)) == len(ids)


def test_the_mix_is_seeded_and_interleaved(tmp_path: Path) -> None:
    harvested, old = _cot(tmp_path / "h.jsonl", "h", 20), _cot(tmp_path / "o.jsonl", "o", 40)
    mix_cot(harvested, old, tmp_path / "a.jsonl", 1.0, seed=7)
    mix_cot(harvested, old, tmp_path / "b.jsonl", 1.0, seed=7)
    mix_cot(harvested, old, tmp_path / "c.jsonl", 1.0, seed=8)
    a = _ids(tmp_path / "a.jsonl")
    assert a == _ids(tmp_path / "b.jsonl") and a != _ids(tmp_path / "c.jsonl")
    assert a[:20] != _ids(harvested)  # not the harvested block first


def test_bad_mixes_are_refused_and_write_nothing(tmp_path: Path) -> None:
    old = _cot(tmp_path / "o.jsonl", "o", 5)
    with pytest.raises(ValueError, match="no harvested CoT records"):
        mix_cot(_cot(tmp_path / "h.jsonl", "h", 0), old, tmp_path / "m.jsonl", 1.0, seed=1)
    with pytest.raises(ValueError, match="mix_ratio must be > 0"):
        mix_cot(_cot(tmp_path / "h2.jsonl", "h", 3), old, tmp_path / "m.jsonl", 0.0, seed=1)
    assert not (tmp_path / "m.jsonl").exists()


def _model(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "qwen3"}')
    (folder / "sub" / "tokenizer.json").write_text("{}")
    return folder


def test_a_registry_without_champion_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(NoChampionError, match="run the main pipeline"):
        champion_model(Registry(str(tmp_path / "registry")))


def test_the_champion_on_s3_becomes_the_local_start_model(s3, tmp_path: Path) -> None:
    from reasoning_ner.config import resolve_config

    registry = Registry(f"s3://{s3.bucket()}/registry")
    promote({"suites": {"zero-shot": {"macro": {"paper_f1": 0.3}, "mean_parse_rate": 1.0}}},
            str(_model(tmp_path / "champ")), PromotionSection(), registry, version="v1")
    champion = champion_model(registry)
    assert champion["version"] == "v1" and champion["model_uri"].startswith("s3://")
    start = base_model_path(resolve_config(profile="tiny-ci"), champion["model_uri"], tmp_path / "work", tmp_path)
    assert Path(start) == tmp_path / "work" / "start-model"
    assert (Path(start) / "config.json").is_file() and (Path(start) / "sub" / "tokenizer.json").is_file()
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        fetch_model(f"s3://{s3.bucket()}/nothing-here", tmp_path / "other")
