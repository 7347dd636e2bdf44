"""One typed configuration for every stage, with named profiles.

Resolution order (later wins): built-in defaults -> the named profile -> the YAML file
(``params.yaml``, shared with DVC) -> ``--set key.path=value`` overrides from the CLI.
The CLI, DVC stages, KFP components and the server all call :func:`load_config`.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: The zero-shot evaluation datasets. Named once here; no stage may train on them.
ZERO_SHOT_DATASETS: tuple[str, ...] = (
    "crossner_ai",
    "crossner_literature",
    "crossner_music",
    "crossner_politics",
    "crossner_science",
    "mit_movie",
    "mit_restaurant",
)

DEFAULT_DATA_DIR = "../shared/data"


class _Section(BaseModel):
    # Unknown keys are errors: a typo in params.yaml must not be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    source_dir: str = Field(
        default_factory=lambda: os.environ.get("RNER_DATA_DIR", DEFAULT_DATA_DIR),
        description="Folder with the raw public datasets (env RNER_DATA_DIR).",
    )
    prepared_dir: str = Field("work/data", description="Where `rner data prepare` writes canonical JSONL.")
    source_format: Literal["native", "instructuie"] = Field(
        "native", description="Raw files (native) or the InstructUIE JSON copies of the same datasets."
    )
    keep_invalid_labels: bool = Field(
        False, description="Keep misc/else/other/na labels (the paper drops them from schema and gold)."
    )
    zero_shot_datasets: list[str] = Field(
        default_factory=lambda: list(ZERO_SHOT_DATASETS),
        description="Evaluation-only datasets; never allowed into SFT or RL training data.",
    )
    train_datasets: list[str] = Field(
        default_factory=lambda: ["pile_ner", "conll2003"],
        description="Datasets whose training split feeds CoT synthesis and SFT.",
    )

    @model_validator(mode="after")
    def _no_zero_shot_training(self) -> DataConfig:
        leaked = sorted(set(self.train_datasets) & set(self.zero_shot_datasets))
        if leaked:
            raise ValueError(f"zero-shot evaluation dataset(s) {leaked} cannot be training datasets")
        return self


class PromptConfig(_Section):
    style: Literal["paper", "compact"] = Field(
        "paper", description="paper: the reference prompt structure; compact: a one-line instruction (tiny CPU budgets)."
    )
    answer_indent: int | None = Field(2, description="JSON indent of the answer (2 as in the paper; null = one line).")
    with_cot: bool = Field(True, description="Target includes the <think> chain (false = the paper's w/o-CoT ablation).")


class TinyModelConfig(_Section):
    architecture: Literal["qwen3", "qwen2"] = "qwen3"
    vocab_size: int = Field(6000, ge=300, description="Byte-level BPE vocabulary size (incl. special tokens).")
    hidden_size: int = Field(256, ge=16)
    intermediate_size: int = Field(768, ge=16)
    num_hidden_layers: int = Field(4, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(2, ge=1)
    head_dim: int | None = Field(None, description="Defaults to hidden_size / num_attention_heads.")
    max_position_embeddings: int = Field(1024, ge=64)
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    seed: int = 0
    tokenizer_corpus_limit: int = Field(
        20000, ge=0, description="Max prepared training records used to train the tokenizer."
    )


class ModelConfig(_Section):
    base_model: str = Field(
        "tiny",
        description="'tiny' (built locally by `rner model init-tiny`), a local path, or a hub name such as Qwen/Qwen3-8B-Base.",
    )
    tiny_dir: str = Field("work/models/tiny-base", description="Where the tiny base model is built.")
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False


class Config(_Section):
    profile: str = "tiny-cpu"
    seed: int = 42
    data: DataConfig = Field(default_factory=DataConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)

    def dump_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


#: Profile overlays on top of the defaults. GPU profiles carry the paper's settings.
PROFILES: dict[str, dict[str, Any]] = {
    "tiny-cpu": {
        # A ~4.7M-parameter model learns format and frequent entities in minutes on 2 cores
        # (shared/reference/tiny-cpu-learning.md); a compact prompt and one-line JSON keep
        # sequences short, which is most of the CPU cost.
        "prompt": {"style": "compact", "answer_indent": None},
        "model": {"base_model": "tiny"},
    },
    "qwen3-1.7b": {
        "prompt": {"style": "paper", "answer_indent": 2},
        "model": {"base_model": "Qwen/Qwen3-1.7B-Base", "dtype": "bfloat16"},
    },
    "qwen3-8b": {
        "prompt": {"style": "paper", "answer_indent": 2},
        "model": {"base_model": "Qwen/Qwen3-8B-Base", "dtype": "bfloat16"},
    },
}


class ConfigError(ValueError):
    """A configuration problem, with a message that names the offending key or file."""


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(item: str) -> dict[str, Any]:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}``; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    path, raw = item.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override {item!r} has an empty key")
    value: Any = yaml.safe_load(raw) if raw.strip() else ""
    for key in reversed(keys):
        value = {key: value}
    return value


def load_config(
    path: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    overrides: list[str] | None = None,
) -> Config:
    """Resolve the configuration; see the module docstring for the order."""
    file_values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        file_values = loaded
    name = profile or file_values.get("profile") or "tiny-cpu"
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    merged = deep_merge(PROFILES[name], file_values)
    for item in overrides or []:
        merged = deep_merge(merged, parse_override(item))
    merged["profile"] = name
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration (profile {name}): {problems}") from exc


def config_fingerprint(cfg: Config) -> str:
    """Stable JSON of the resolved config, for lineage records and model cards."""
    return json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
