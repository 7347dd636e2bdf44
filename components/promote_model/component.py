from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from reasoning_ner.images import image


@dsl.component(base_image=image("cpu"), install_kfp_package=False)
def promote_model(model: Input[Model], report_json: Input[Artifact], profile: str, registry_uri: str,
                  min_gate_value: float) -> NamedTuple("Outputs", [("decision", str), ("model_uri", str), ("version", str),
                                                                    ("reason", str)]):
    """Promotion gate: promote only when the candidate is at least as good as the champion.

    Compares the candidate's report with the configured floors and with the current champion's
    record in the registry (an S3/MinIO prefix in the cluster, so the champion survives across
    runs) and writes a registry record either way. On promotion it copies the model into the
    registry (`<registry_uri>/models/<version>/`, the serving store KServe reads) and moves the
    champion pointer to that copy; the deploy step serves exactly that URI. S3 credentials come
    from AWS_* environment variables (the S3 Secret).

    Args:
        model: The candidate model.
        report_json: The candidate's evaluation report (report.json).
        profile: Configuration profile (gate suite, metric and floors).
        registry_uri: Registry location (s3://bucket/prefix or a folder); empty = the profile's.
        min_gate_value: Absolute floor for the gate metric; negative = the profile's.

    Returns:
        decision ('promoted' or 'refused'), the registry URI of the promoted copy (empty when
        refused), the registry version, and the reason.
    """
    import json
    from collections import namedtuple
    from pathlib import Path

    from reasoning_ner.config import resolve_config
    from reasoning_ner.promotion import Registry, promote

    cfg = resolve_config(profile=profile, overrides=[f"promotion.min_gate_value={min_gate_value}"] if min_gate_value >= 0 else [])
    report = json.loads(Path(report_json.path).read_text())
    decision = promote(report, model.path, cfg.promotion, Registry(registry_uri or cfg.promotion.registry_uri))
    outputs = namedtuple("Outputs", ["decision", "model_uri", "version", "reason"])
    return outputs("promoted" if decision.promoted else "refused", decision.model_uri or "", decision.version,
                   decision.reason)
