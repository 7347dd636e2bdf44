"""The promotion gate and the model registry, on a local folder and on a real S3 HTTP API (moto on 127.0.0.1).

On promotion the model is copied into the registry (``models/<version>/``) and the champion pointer
names that copy, which is what the deploy step serves. Storage failures name the setting to fix and
never change what was promoted before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reasoning_ner.cli import app
from reasoning_ner.config import PromotionSection
from reasoning_ner.promotion import Registry, RegistryError, promote, rollback

runner = CliRunner()
CFG = PromotionSection(min_gate_value=0.1, min_parse_rate=0.5)


def _report(f1: float, parse: float = 1.0, suite: str = "zero-shot") -> dict:
    return {"model": "m", "lineage": {"rev": "abc"},
            "suites": {suite: {"macro": {"paper_f1": f1, "strict_f1": f1 / 2}, "mean_parse_rate": parse}}}


def _model(root: Path, name: str) -> Path:
    """A folder shaped like an exported model: distinct bytes per model, a nested file too."""
    folder = root / name
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3", "name": name}))
    (folder / "model.safetensors").write_bytes(os.urandom(4096))
    (folder / "sub" / "tokenizer.json").write_text(f'{{"name": "{name}"}}')
    return folder


def _files(fs, root: str) -> dict[str, bytes]:
    return {p[len(root.rstrip("/")) + 1:]: fs.cat_file(p) for p in fs.find(root)}


@pytest.fixture(params=["local", "s3"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Registry:
    if request.param == "local":
        return Registry(str(tmp_path / "registry"))
    s3 = request.getfixturevalue("s3")
    return Registry(f"s3://{s3.bucket()}/reasoning-ner/registry")


def test_promotion_copies_the_model_and_rollback_returns_to_the_copy(registry: Registry, tmp_path: Path) -> None:
    a, b, c = (_model(tmp_path, n) for n in "abc")
    first = promote(_report(0.40), str(a), CFG, registry, version="v1")
    assert first.promoted and "no champion yet" in first.reason
    assert first.model_uri == registry.model_uri("v1") == f"{registry.uri}/models/v1"
    assert registry.champion()["model_uri"] == first.model_uri
    local = Registry(str(a)).fs  # the local filesystem
    assert _files(registry.fs, registry._path("models", "v1")) == _files(local, str(a))  # every byte arrived

    worse = promote(_report(0.35), str(b), CFG, registry, version="v2")
    assert not worse.promoted and worse.champion_value == 0.40 and worse.model_uri is None
    assert registry.champion()["version"] == "v1"
    assert not registry.fs.exists(registry._path("models", "v2"))  # refused models are not copied
    assert registry.version("v2")["decision"]["promoted"] is False  # but recorded
    assert registry.version("v2")["source_uri"] == str(b)

    equal = promote(_report(0.40), str(c), CFG, registry, version="v3")
    assert equal.promoted and registry.champion()["history"] == ["v1"]
    assert not promote(_report(0.05), str(c), CFG, registry, version="v4").promoted  # below the floor
    assert "parse rate" in promote(_report(0.9, parse=0.2), str(c), CFG, registry, version="v5").reason

    back = rollback(registry)
    assert back == {"rolled_back_from": "v3", "champion": "v1", "model_uri": registry.model_uri("v1")}
    with pytest.raises(ValueError, match="no earlier champion"):
        rollback(registry)
    with pytest.raises(ValueError, match="no 'zero-shot' suite"):
        promote(_report(0.5, suite="supervised"), str(c), CFG, registry)


def test_a_registry_version_is_never_overwritten(registry: Registry, tmp_path: Path) -> None:
    a, b = _model(tmp_path, "a"), _model(tmp_path, "b")
    promote(_report(0.4), str(a), CFG, registry, version="v1")
    with pytest.raises(RegistryError, match="exists already"):
        promote(_report(0.5), str(b), CFG, registry, version="v1")
    assert _files(registry.fs, registry._path("models", "v1")) == _files(Registry(str(a)).fs, str(a))
    assert registry.champion()["version"] == "v1"


def test_only_a_model_folder_is_promoted(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(RegistryError, match="is not a model folder"):
            promote(_report(0.5), str(bad), CFG, registry, version="v1")
    assert registry.champion() is None


def test_a_model_already_on_s3_is_copied_into_the_registry(s3, tmp_path: Path) -> None:
    """The source may be any fsspec URI (a KFP artifact on the same store, say); the copy streams."""
    bucket = s3.bucket()
    staging = Registry(f"s3://{bucket}/staging")
    staging.fs.put(str(_model(tmp_path, "a")), f"{bucket}/staging/candidate", recursive=True)
    registry = Registry(f"s3://{bucket}/registry")
    decision = promote(_report(0.4), f"s3://{bucket}/staging/candidate", CFG, registry, version="v1")
    assert decision.model_uri == f"s3://{bucket}/registry/models/v1"
    assert s3.keys(bucket, "registry/models/v1/") == [f"registry/models/v1/{k}" for k in
                                                       ("config.json", "model.safetensors", "sub/tokenizer.json")]


# ------------------------------------------------------------------------------------- bad storage


@pytest.fixture
def promoted(s3, tmp_path: Path) -> tuple[Registry, str]:
    """An S3 registry with a champion, to check that failures leave it alone."""
    registry = Registry(f"s3://{s3.bucket()}/registry")
    promote(_report(0.4), str(_model(tmp_path, "champ")), CFG, registry, version="v1")
    return registry, json.dumps(registry.champion())


@pytest.mark.parametrize(("env", "message"), [
    ({"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}, "cannot reach the S3 endpoint http://127.0.0.1:1: check AWS_ENDPOINT_URL"),
    ({"AWS_SECRET_ACCESS_KEY": "wrong"}, "S3 refused the credentials: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"),
    ({"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}, "no S3 credentials: set AWS_ACCESS_KEY_ID"),
])
def test_storage_failures_name_the_setting_and_keep_the_champion(
        promoted: tuple[Registry, str], env: dict, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import fsspec

    registry, champion = promoted
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries would only slow the failure down
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup for credentials
    saved = {k: os.environ.get(k) for k in env}
    for key, value in env.items():
        monkeypatch.delenv(key) if value is None else monkeypatch.setenv(key, value)
    fsspec.get_filesystem_class("s3").clear_instance_cache()
    with pytest.raises(RegistryError, match=message.replace("(", r"\(").replace(".", r"\.")):
        promote(_report(0.9), str(_model(tmp_path, "new")), CFG, Registry(registry.uri), version="v2")
    with pytest.raises(RegistryError, match="S3"):
        rollback(Registry(registry.uri))
    for key, value in saved.items():
        monkeypatch.setenv(key, value)
    fsspec.get_filesystem_class("s3").clear_instance_cache()
    assert json.dumps(Registry(registry.uri).champion()) == champion


def test_a_missing_bucket_is_named(s3, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="bucket 'no-such-bucket' does not exist at http://127.0.0.1"):
        promote(_report(0.9), str(_model(tmp_path, "a")), CFG, Registry("s3://no-such-bucket/registry"))


# ------------------------------------------------------------------------------------------- CLI


def test_promote_cli_copies_to_s3_and_rolls_back(s3, tmp_path: Path) -> None:
    bucket = s3.bucket()
    report = tmp_path / "report.json"
    base = ["--set", f"promotion.registry_uri=s3://{bucket}/registry", "promote"]
    report.write_text(json.dumps(_report(0.3, suite="supervised")))
    res = runner.invoke(app, [*base, "--report", str(report), "--model", str(_model(tmp_path, "m1"))])
    assert res.exit_code == 0 and "PROMOTED" in res.output, res.output
    assert f"serving copy: s3://{bucket}/registry/models/" in res.output
    report.write_text(json.dumps(_report(0.1, suite="supervised")))
    res = runner.invoke(app, [*base, "--report", str(report), "--model", str(_model(tmp_path, "m2"))])
    assert res.exit_code == 3 and "NOT PROMOTED" in res.output
    res = runner.invoke(app, [*base, "--rollback"])
    assert res.exit_code == 2 and "no earlier champion" in res.output
    res = runner.invoke(app, [*base, "--report", str(tmp_path / "missing.json"), "--model", "m"])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["--set", "promotion.registry_uri=s3://no-such-bucket/registry", "promote",
                              "--report", str(report), "--model", str(tmp_path / "m1")])
    assert res.exit_code == 1 and "no-such-bucket" in res.output


def test_the_pipeline_checks_the_registry_before_training(s3, tmp_path: Path) -> None:
    """The cluster pipeline's check_registry step (the component's own function, run here on the S3 server)."""
    from components.check_registry.component import check_registry

    bucket = s3.bucket()
    assert check_registry.python_func(registry_uri=f"s3://{bucket}/registry") == f"s3://{bucket}/registry/models/version"
    with pytest.raises(RegistryError, match="bucket 'no-such-bucket' does not exist"):
        check_registry.python_func(registry_uri="s3://no-such-bucket/registry")
    with pytest.raises(ValueError, match="cannot be served by KServe"):
        check_registry.python_func(registry_uri=str(tmp_path / "registry"))  # a folder in the step's pod
