"""Run parameters that come from the shared configuration, and what a local run does with `--set`.

A pipeline's steps load their profile by name, so a setting reaches them only through a run
parameter. Each pipeline lists the parameters its configuration decides (:class:`ConfigParameter`):
the config keys one carries and how its value is read. :func:`config_arguments` gives a profile's
values (the compiled defaults); :func:`run_arguments` gives them for a configuration with `--set`
or `--config` changes and refuses a change that no parameter carries, instead of running without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from reasoning_ner.config import Config

#: kfp's input types (``component_spec.inputs[name].type``) as the compiled YAML names them.
KFP_TYPES = {"String": "STRING", "Integer": "NUMBER_INTEGER", "Float": "NUMBER_DOUBLE", "Boolean": "BOOLEAN",
             "Dict": "STRUCT", "List": "LIST"}


@dataclass(frozen=True)
class ConfigParameter:
    """A run parameter the configuration decides: the keys it carries and how its value is read."""

    keys: tuple[str, ...]
    read: Callable[[Config], Any]


#: The parameters both pipelines (main and refresh) take, with the same meaning.
COMMON_PARAMETERS = {
    "profile": ConfigParameter(("profile",), lambda c: c.profile),
    # `cot.teacher` follows teacher_url (set: the OpenAI-compatible teacher).
    "teacher_url": ConfigParameter(("cot.teacher_url", "cot.teacher"), lambda c: c.cot.teacher_url or ""),
    "teacher_model": ConfigParameter(("cot.teacher_model",), lambda c: c.cot.teacher_model),
    "judge_url": ConfigParameter(("cot.judge_url",), lambda c: c.cot.judge_url or ""),
    "judge_threshold": ConfigParameter(("cot.judge_threshold",), lambda c: c.cot.judge_threshold),
    "max_records_per_dataset": ConfigParameter(("cot.max_records_per_dataset",),
                                               lambda c: c.cot.max_records_per_dataset or 0),
    "use_lora": ConfigParameter(("sft.finetune",), lambda c: c.sft.finetune == "lora"),
    "sft_learning_rate": ConfigParameter(("sft.learning_rate",), lambda c: c.sft.learning_rate),
    "sft_max_steps": ConfigParameter(("sft.max_steps",), lambda c: max(c.sft.max_steps, 0)),
    "eval_limit": ConfigParameter(("eval.limit",), lambda c: c.eval.limit or 0),
}


def config_arguments(table: Mapping[str, ConfigParameter], cfg: Config) -> dict[str, Any]:
    """The run parameters ``cfg`` decides."""
    return {name: param.read(cfg) for name, param in table.items()}


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def changed_keys(cfg: Config, base: Config) -> list[str]:
    """The config keys whose resolved value differs between ``cfg`` and ``base`` (dotted, sorted)."""
    new, old = _flat(cfg.model_dump(mode="json")), _flat(base.model_dump(mode="json"))
    return sorted(key for key in new.keys() | old.keys() if new.get(key) != old.get(key))


def run_arguments(table: Mapping[str, ConfigParameter], cfg: Config, base: Config) -> dict[str, Any]:
    """The run parameters of ``cfg``, a change of ``base`` (its profile as defined).

    Raises ``ValueError`` naming every changed key that no run parameter carries: the steps would
    load ``base`` and silently run without it.
    """
    carried = {key for param in table.values() for key in param.keys}
    lost = [key for key in changed_keys(cfg, base) if not any(key == k or key.startswith(k + ".") for k in carried)]
    if lost:
        by_key = ", ".join(f"{name} ({'/'.join(p.keys)})" for name, p in table.items() if p.keys != ("profile",))
        raise ValueError(
            f"{', '.join(lost)}: the pipeline's steps load profile {base.profile!r} by name, and no run parameter "
            f"carries {'this setting' if len(lost) == 1 else 'these settings'}. Change it in a profile, or set one "
            f"of the run parameters (--param NAME=VALUE, or the same key with --set): {by_key}")
    return config_arguments(table, cfg)
