"""templates/configmap-pipeline.yaml: the compiled pipeline, read from the chart's files, with its image
references rewritten to images.tag / digests (exactly reasoning_ner.images.rewrite_references, which
`rner pipeline submit` uses), and named by its content.

The chart's copy (files/pipeline.yaml) must be byte-identical to the committed compiled pipeline
(pipelines/reasoning_ner_pipeline.yaml, itself kept fresh by tests/test_pipeline.py). After
`rner pipeline compile`, refresh it with `cp pipelines/reasoning_ner_pipeline.yaml charts/reasoning-ner/files/pipeline.yaml`.
"""

from __future__ import annotations

import yaml

from pipelines.reasoning_ner_pipeline import COMPILED, PIPELINE_NAME, SECRETS
from pipelines.submit import pipeline_parameters
from reasoning_ner.images import REGISTRY, content_version, image, rewrite_references

from .chart_tools import CHART, RELEASE, template_objects, validate

TEMPLATE = "templates/configmap-pipeline.yaml"


def test_chart_copy_equals_the_committed_compiled_pipeline() -> None:
    assert (CHART / "files" / "pipeline.yaml").read_bytes() == COMPILED.read_bytes(), (
        "charts/reasoning-ner/files/pipeline.yaml is stale: cp pipelines/reasoning_ner_pipeline.yaml "
        "charts/reasoning-ner/files/pipeline.yaml")


def test_configmap_holds_the_pipeline_verbatim() -> None:
    (cm,) = template_objects(TEMPLATE)
    assert cm["metadata"]["name"] == f"{RELEASE}-pipeline"
    assert cm["data"]["pipeline.yaml"] == COMPILED.read_text().rstrip("\n")
    docs = list(yaml.safe_load_all(cm["data"]["pipeline.yaml"]))
    assert docs[0]["pipelineInfo"]["name"] == PIPELINE_NAME
    assert len(cm["data"]["pipeline.yaml"].encode()) < 900_000  # ConfigMaps hold at most 1 MiB


def test_image_references_are_rewritten_to_the_configured_build() -> None:
    digest = "sha256:" + "f" * 64
    values = {"images": {"tag": "sha-0123456789ab", "cpu": {"digest": digest}}}
    (cm,) = template_objects(TEMPLATE, values)
    expected = rewrite_references(COMPILED.read_text(), tag="sha-0123456789ab", digests={"cpu": digest})
    assert cm["data"]["pipeline.yaml"] == expected.rstrip("\n")
    assert image("cpu", "sha-0123456789ab", digest) in expected and image("cpu") not in expected
    assert image("train-gpu", "sha-0123456789ab") in expected
    assert cm["metadata"]["annotations"]["reasoning-ner.io/pipeline-version"] == content_version(expected)
    # A mirror registry: the compiled (source) references are still found.
    (mirror,) = template_objects(TEMPLATE, {"images": {"registry": "registry.example.com/ml"}})
    assert image("cpu", registry="registry.example.com/ml") in mirror["data"]["pipeline.yaml"]
    assert REGISTRY + "/" not in mirror["data"]["pipeline.yaml"]


def test_the_rewrite_source_is_the_compiled_reference() -> None:
    """The chart looks for ghcr.io/reasoning-ner/reasoning-ner-<name>:<appVersion>: reasoning_ner.images."""
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert f'"{REGISTRY}/reasoning-ner-%s:%s" $name $.Chart.AppVersion' in helpers
    assert all(image(n) in COMPILED.read_text() for n in ("cpu", "train-gpu"))


def test_the_pipeline_reads_the_secrets_the_chart_names() -> None:
    text = COMPILED.read_text()
    for secret, _ in SECRETS.values():
        assert f"secretName: {secret}\n" in text
    values = yaml.safe_load((CHART / "values.yaml").read_text())["secrets"]
    assert {k: v["name"] for k, v in values.items() if isinstance(v, dict)} == {k: v[0] for k, v in SECRETS.items()}


def test_the_shared_pvc_default_is_the_pipelines() -> None:
    default = yaml.safe_load((CHART / "values.yaml").read_text())["multiNode"]["sharedPvc"]["name"]
    assert default == pipeline_parameters(COMPILED)["shared_pvc"]["defaultValue"]


def test_annotations_name_pipeline_and_version() -> None:
    (cm,) = template_objects(TEMPLATE, {"pipeline": {"name": "rner", "versionName": "0.1.0-hotfix"}, "refresh": {"enabled": False}})
    assert cm["metadata"]["annotations"] == {"reasoning-ner.io/pipeline-name": "rner",
                                             "reasoning-ner.io/pipeline-version": "0.1.0-hotfix"}


def test_valid() -> None:
    assert validate(template_objects(TEMPLATE)) == []


# ------------------------------------------------------------------------------------ the refresh pipeline


def test_refresh_chart_copy_equals_the_committed_compiled_refresh_pipeline() -> None:
    from pipelines.refresh_pipeline import CHART_COPY, COMPILED as REFRESH

    assert CHART_COPY.read_bytes() == REFRESH.read_bytes(), "charts/reasoning-ner/files/refresh-pipeline.yaml is stale: " \
        "run `rner pipeline compile --variant refresh`"


def test_configmap_holds_the_refresh_pipeline_rewritten_and_named_by_content() -> None:
    from pipelines.refresh_pipeline import COMPILED as REFRESH, REFRESH_NAME

    (cm,) = template_objects(TEMPLATE, {"images": {"tag": "sha-0123456789ab"}})
    expected = rewrite_references(REFRESH.read_text(), tag="sha-0123456789ab")
    assert cm["data"]["refresh-pipeline.yaml"] == expected.rstrip("\n")
    assert list(yaml.safe_load_all(expected))[0]["pipelineInfo"]["name"] == REFRESH_NAME
    ann = cm["metadata"]["annotations"]
    assert ann["reasoning-ner.io/refresh-pipeline-version"] == content_version(expected)
    assert ann["reasoning-ner.io/refresh-pipeline-name"] == REFRESH_NAME
    assert len(cm.get("binaryData", {})) == 0 and sum(len(v.encode()) for v in cm["data"].values()) < 900_000
    (off,) = template_objects(TEMPLATE, {"refresh": {"enabled": False}})
    assert set(off["data"]) == {"pipeline.yaml"} and "reasoning-ner.io/refresh-pipeline-name" not in off["metadata"]["annotations"]
