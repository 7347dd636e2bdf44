from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from reasoning_ner.images import image


@dsl.component(base_image=image("cpu"), install_kfp_package=False)
def promote_refresh(model: Input[Model], report_json: Input[Artifact], profile: str, registry_uri: str,
                    zero_shot_tolerance: float) -> NamedTuple("Outputs", [("decision", str), ("model_uri", str),
                                                                           ("version", str), ("reason", str)]):
    """Refresh promotion gate: promote only if the zero-shot suite does not regress beyond the tolerance.

    The refreshed champion was trained towards the served traffic; what must not suffer is the
    zero-shot generalisation the paper is about. The candidate's zero-shot gate metric is compared
    with the champion's recorded one: a drop of at most zero_shot_tolerance promotes (the floors of
    the profile still apply). The registry records the decision either way; on promotion the model
    is copied to `<registry_uri>/models/<version>/` and the champion pointer moves to it.

    Args:
        model: The refreshed candidate model.
        report_json: Its evaluation report (frozen suites plus the harvested slice).
        profile: Configuration profile (gate metric and floors).
        registry_uri: Registry location (s3://bucket/prefix or a folder); empty = the profile's.
        zero_shot_tolerance: Largest accepted zero-shot drop against the champion; negative = the profile's.

    Returns:
        decision ('promoted' or 'refused'), the registry URI of the promoted copy (empty when
        refused), the registry version, and the reason.
    """
    import json
    from collections import namedtuple
    from pathlib import Path

    from reasoning_ner.config import resolve_config
    from reasoning_ner.promotion import Registry, promote

    overrides = ["promotion.rule=no-zero-shot-regression"]
    overrides += [f"promotion.zero_shot_tolerance={zero_shot_tolerance}"] if zero_shot_tolerance >= 0 else []
    cfg = resolve_config(profile=profile, overrides=overrides)
    report = json.loads(Path(report_json.path).read_text())
    decision = promote(report, model.path, cfg.promotion, Registry(registry_uri or cfg.promotion.registry_uri))
    print(f"refresh promotion: {'promoted' if decision.promoted else 'refused'}: {decision.reason}")
    outputs = namedtuple("Outputs", ["decision", "model_uri", "version", "reason"])
    return outputs("promoted" if decision.promoted else "refused", decision.model_uri or "", decision.version,
                   decision.reason)
