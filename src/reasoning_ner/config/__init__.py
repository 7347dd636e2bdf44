"""One typed configuration for every stage, with named profiles.

Resolution order (later wins): built-in defaults -> the named profile -> the YAML file
(``params.yaml``, shared with DVC) -> ``--set key.path=value`` overrides from the CLI.
Entry points (the CLI, ``python -m`` mains, KFP components, the server) call :func:`resolve_config`,
which adds one rule: ``./params.yaml`` is the file when none is given and no profile is named.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from .base import _Section
from .copy_circuit import check_copy_circuit_shape
from .flywheel import FlywheelSection, RefreshSection
from .profiles import PROFILES, deep_merge
from .serving import ServingSettings

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
    space_before_names: Literal["merged", "isolated", "answers"] = Field(
        "merged",
        description="merged: a word carries its leading space (GPT-2 style, 'ĠGerman'); isolated: the space before "
        "a capitalized word or a number is a token of its own, so a name has the same token ids in the sentence, "
        "the chain and the JSON answer and copying it is exact; answers: merged, and a name inside a one-line JSON "
        "answer list is tokenized with the space it has in running text (the normalizer inserts a space after '[\"' "
        "and '\", \"', the decoder removes it), so the ids match at no extra length.",
    )
    hidden_size: int = Field(256, ge=16)
    intermediate_size: int = Field(768, ge=16)
    num_hidden_layers: int = Field(4, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(2, ge=1)
    head_dim: int | None = Field(None, description="Defaults to hidden_size / num_attention_heads.")
    max_position_embeddings: int = Field(1024, ge=64)
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    copy_circuit: bool = Field(
        False,
        description="Initialise two previous-token heads (layer 0) and two induction heads with a recency penalty "
        "(layer 1) by hand, so the untrained model already copies spans of its input and training learns what to "
        "copy (reasoning_ner.copy_circuit; qwen3 only).",
    )
    seed: int = 0
    tokenizer_corpus_limit: int = Field(
        20000, ge=0, description="Max prepared training records used to train the tokenizer."
    )
    tokenizer_datasets: list[str] | None = Field(
        None, description="Prepared datasets whose training records train the tokenizer; None: every non-zero-shot one."
    )

    @model_validator(mode="after")
    def _copy_circuit_fits(self) -> TinyModelConfig:
        if self.copy_circuit:
            if self.architecture != "qwen3":
                raise ValueError("model.tiny.copy_circuit needs the qwen3 architecture (QK-norm gives the constant query)")
            head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
            check_copy_circuit_shape(self.hidden_size, head_dim, self.num_hidden_layers, self.num_attention_heads,
                                     self.tie_word_embeddings)
        return self


class ModelConfig(_Section):
    base_model: str = Field(
        "tiny",
        description="'tiny' (built locally by `rner model init-tiny`), a local path, or a hub name such as Qwen/Qwen3-8B-Base.",
    )
    tiny_dir: str = Field("work/models/tiny-base", description="Where the tiny base model is built.")
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False


class CoTConfig(_Section):
    """Stage 1: CoT synthesis by a teacher LLM, structural checks and an optional LLM judge."""

    teacher: Literal["offline", "openai"] = Field(
        "offline", description="offline: deterministic gold-grounded chains, no network; openai: any OpenAI-compatible endpoint."
    )
    teacher_url: str | None = Field(None, pattern=r"^https?://\S+$",
                                    description="Base URL of the teacher endpoint, e.g. http://vllm:8000/v1.")
    teacher_model: str = Field("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", description="Model name sent to the teacher.")
    teacher_api_key_env: str = Field("RNER_TEACHER_API_KEY", description="Environment variable holding the teacher API key.")
    mode: Literal["reannotate", "explain"] = Field(
        "reannotate", description="reannotate: teacher sees sentence + schema (paper); explain: also the gold entities."
    )
    chain_style: Literal["compact", "tagged", "full"] = Field(
        "full", description="Offline teacher chain: compact (the candidate spans, ~15 tokens), tagged (the sentence "
        "with each entity marked in place, tiny-cpu) or full (a paragraph per type)."
    )
    temperature: float = Field(0.6, ge=0.0)
    max_tokens: int = Field(4096, ge=16)
    concurrency: int = Field(32, ge=1)
    timeout_s: float = Field(300.0, gt=0)
    max_retries: int = Field(5, ge=0)
    judge_url: str | None = Field(None, pattern=r"^https?://\S+$", description="Base URL of the judge endpoint; unset = no judge.")
    judge_model: str = Field("Qwen/Qwen3-32B")
    judge_api_key_env: str = Field("RNER_JUDGE_API_KEY")
    judge_threshold: float = Field(9.0, ge=0, le=10, description="Keep chains the judge scores at or above this (0-10).")
    min_gold_f1: float = Field(0.5, ge=0, le=1, description="Reannotate mode: minimum F1 of the teacher's answer against gold.")
    min_chain_words: int = Field(2, ge=0, description="Shortest acceptable chain (words); compact chains can be 'court: none.'")
    max_chain_words: int = Field(3000, ge=1)
    max_records_per_dataset: int | None = Field(None, ge=1, description="Cap per training dataset (None = all).")
    out_dir: str = Field("work/cot", description="Where accepted/rejected records and stats are written.")
    sft_data: Literal["synthesized", "ner-cot"] = Field(
        "synthesized", description="Stage 1's output: chains synthesized by the teacher, or the paper's NER-CoT records "
        "imported from ner_cot_uri (the same structural checks, evaluation sentences dropped; reasoning_ner.cot.ner_cot).")
    ner_cot_uri: str | None = Field(
        None, description="NER-CoT records (JSON list or JSONL): a local file or folder (a `dvc import`-ed path) or an "
        "fsspec URL such as s3://bucket/ner-cot.json; needed with sft_data: ner-cot.")

    @model_validator(mode="after")
    def _ner_cot_needs_a_source(self) -> CoTConfig:
        if self.sft_data == "ner-cot" and not self.ner_cot_uri:
            raise ValueError("cot.sft_data is 'ner-cot' but cot.ner_cot_uri is not set (a path or s3:// URL of the records)")
        return self


class SFTSection(_Section):
    """Stage 2: CoT tuning with trl's SFTTrainer. Defaults are the paper's (reference doc section 2)."""

    finetune: Literal["full", "lora"] = Field("full", description="full fine-tuning (paper) or LoRA via peft.")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    learning_rate: float = Field(2e-5, gt=0)
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    adam_beta1: float | None = Field(None, gt=0, lt=1, description="None = the trainer's default (0.9).")
    adam_beta2: float | None = Field(None, gt=0, lt=1, description="None = the trainer's default (0.999).")
    max_grad_norm: float | None = Field(None, gt=0, description="None = the trainer's default (1.0).")
    group_by_length: bool | None = Field(None, description="Length-grouped batches; None = on unless padding-free.")
    num_train_epochs: float = Field(5.0, gt=0)
    max_steps: int = Field(-1, description="> 0 overrides epochs.")
    per_device_train_batch_size: int = Field(16, ge=1)
    gradient_accumulation_steps: int = Field(2, ge=1)
    max_length: int = Field(8192, ge=1)
    unlikelihood_weight: float = Field(
        0.0, ge=0, description="Weight of token-level unlikelihood (Welleck et al. 2019) against repeating the "
        "completion's earlier tokens; 0 = plain cross-entropy, as the paper trains. Off the fused GPU loss kernel.")
    bf16: bool = True
    gradient_checkpointing: bool = True
    padding_free: bool = True
    use_liger_kernel: bool = Field(
        True, description="Liger's fused RMSNorm/SwiGLU/RoPE kernels on CUDA (needs liger-kernel: a CUDA run fails early "
        "without it). The LM head/loss stays the completion-only one (trl's chunked kernel); Liger's fused CE is not used."
    )
    torch_compile: bool = Field(False, description="CUDA: torch.compile each decoder layer (regional, dynamic shapes).")
    bf16_weights: bool = Field(
        False, description="CUDA, full fine-tuning: weights and gradients in bf16, the optimizer keeps an fp32 master copy "
        "(AdamW on fp32; never pure bf16). Off: fp32 weights under bf16 autocast."
    )
    attn_implementation: str | None = Field("flash_attention_2", description="Used only when installed and on GPU.")
    cpu_bf16: bool | Literal["auto"] = Field(
        False, description="CPU: bf16 autocast over float32 master weights, attention kept in float32. 'auto': only "
        "where the CPU has AMX tiles (bf16 matrix units); elsewhere bf16 is emulated and slower than float32."
    )
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(500, ge=0, description="0 = no intermediate checkpoints.")
    save_total_limit: int = Field(2, ge=1)
    max_train_records: int | None = Field(None, ge=1)
    eval_max_new_tokens: int | None = Field(
        None, ge=1, description="Tokens generated per held-out sentence by --eval; None = min(2 x max_length, 2048).")
    output_dir: str = "work/models/sft"


class GRPOSection(_Section):
    """Stage 3: reasoning enhancement with trl's GRPOTrainer. Defaults from the reference's qwen3-8b config."""

    finetune: Literal["full", "lora"] = "full"
    loss_type: str = "dr_grpo"
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Advantage scaling: group std (trl default, what the reference ran) or none (Dr. GRPO proper)."
    )
    epsilon: float = Field(0.2, gt=0)
    epsilon_high: float = Field(0.28, gt=0)
    beta: float = Field(0.04, ge=0, description="KL coefficient; 0 = no reference model.")
    num_generations: int = Field(16, ge=2, description="Completions per prompt (the group); GRPO needs two to compare.")
    num_iterations: int = Field(4, ge=1)
    temperature: float = Field(0.9, gt=0)
    learning_rate: float = Field(1e-6, gt=0)
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = -1
    max_prompt_length: int = Field(2048, ge=1)
    max_completion_length: int = Field(4096, ge=1)
    per_device_train_batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(16, ge=1)
    bf16: bool = True
    gradient_checkpointing: bool = True
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    mask_truncated_completions: bool = Field(False, description="Leave completions cut at max_completion_length out of the loss.")
    save_total_limit: int = Field(1, ge=1)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    use_vllm: bool = False
    vllm_mode: Literal["server", "colocate"] = "server"
    vllm_server_base_url: str | None = Field(None, description="server mode: the `trl vllm-serve` URL; None = host and port below.")
    vllm_server_host: str = "127.0.0.1"
    vllm_server_port: int = Field(8000, ge=1, le=65535)
    vllm_server_timeout: float = Field(240.0, gt=0, description="server mode: seconds to wait for the vLLM server.")
    vllm_server_launch: bool = Field(
        False, description="server mode: start `trl vllm-serve` in the GRPO step itself on vllm_server_gpus (else a "
        "server must already run at the URL; either way the step waits for its /health before training).")
    vllm_server_gpus: str = Field(
        "1", pattern=r"^[0-9]+(,[0-9]+)*$", description="server mode with vllm_server_launch: CUDA_VISIBLE_DEVICES of the "
        "server (its own GPUs; the trainer uses the others: cuda:0 for a single process).")
    vllm_server_bind_host: str = Field("127.0.0.1", description="server mode, launched here: the address it binds "
                                       "(0.0.0.0 when trainers on other nodes reach it).")
    vllm_server_gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="server mode: the share of its own GPUs.")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="colocate mode: vLLM's share of the GPU.")
    vllm_tensor_parallel_size: int = Field(1, ge=1, description="vLLM's tensor parallelism (both modes).")
    vllm_enable_sleep_mode: bool = Field(False, description="colocate mode: free vLLM's memory during optimizer steps.")
    generation_cache: Literal["dynamic", "static"] = Field(
        "dynamic", description="KV cache of transformers generate (without vLLM); static is sized once to "
        "max_prompt_length + max_completion_length, so a compiled decode step never recompiles."
    )
    compile_generation: bool = Field(
        False, description="CUDA, without vLLM: torch.compile the decode step (CUDA graphs); needs generation_cache=static."
    )
    reward_parser: Literal["reference", "lenient"] = Field(
        "reference", description="Parser of the F1 and schema rewards: reference = the paper's rules (no prose around the "
        "JSON, ```json fences only, lists of strings; reasoning_ner.parity); lenient = the serving parser, which "
        "credits answers the paper scores 0.")
    reward_f1_weight: float = 10.0
    reward_schema_weight: float = 1.0
    reward_format_weight: float = 0.0
    reward_length_weight: float = 0.0
    think_token_budget: int | None = Field(None, ge=1, description="Length-aware term: thinking tokens allowed before the penalty.")
    rl_datasets: list[str] = Field(default_factory=lambda: ["conll2003"], description="Training splits sampled for RL.")
    rl_sample_size: int = Field(5000, description="RL prompts GRPO trains on (proportional per dataset, seeded).")
    rl_per_dataset_cap: int = Field(10000, description="Each dataset's size is capped at this before proportions are computed.")
    rl_selection: Literal["random", "partly_right"] = Field(
        "random", description="Which prompts RL trains on: random = the seeded proportional sample; partly_right = a "
        "larger pool decoded greedily by the SFT policy, ranked partly right answers (0 < F1 < 1) first (docs/grpo.md).")
    rl_unparsed_first: bool = Field(
        False, description="partly_right: rank prompts whose greedy answer does not parse (a loop to the token limit) "
        "with the partly right ones: sampled, some completions escape the loop, so the group's rewards differ.")
    rl_pool_factor: int = Field(
        4, ge=1, description="partly_right: the pool is rl_pool_factor x rl_sample_size prompts (capped by what is "
        "available), of which rl_sample_size are kept.")
    logging_steps: int = 1
    save_steps: int = 200
    output_dir: str = "work/models/grpo"

    @model_validator(mode="after")
    def _compiled_decode_needs_static_cache(self) -> GRPOSection:
        if self.compile_generation and self.generation_cache != "static":
            raise ValueError("grpo.compile_generation needs grpo.generation_cache=static (a dynamic cache recompiles every step)")
        return self


class EvalSection(_Section):
    """Evaluation suites: zero-shot (data.zero_shot_datasets) and supervised."""

    backend: Literal["auto", "transformers", "vllm"] = Field("auto", description="auto = vLLM when importable with a GPU.")
    batch_size: int = Field(256, ge=1, description="Sequences per generate call (the reference uses 256 with vLLM).")
    max_new_tokens: int = Field(4096, ge=1)
    max_model_len: int = 8192
    split: str = "test"
    supervised_datasets: list[str] = Field(default_factory=lambda: ["conll2003"])
    parity: bool = Field(
        True, description="Paper parity for the zero-shot suite (Table 1): the reference's evaluation files (InstructUIE "
        "test.json, written by `rner data prepare` as reference-test.jsonl), its gold rules and its answer parser "
        "(reasoning_ner.parity). The strict offset F1 is reported next to it either way.")
    limit: int | None = Field(None, ge=1, description="Sentences per dataset (seeded sample); None = all.")
    seed: int = 42
    out_dir: str = "work/eval"


class PromotionSection(_Section):
    """The promotion gate and the model registry."""

    registry_uri: str = Field("work/registry", description="fsspec URI: a local folder, or s3://bucket/prefix in clusters.")
    gate_suite: Literal["zero-shot", "supervised"] = "zero-shot"
    gate_metric: Literal["paper_f1", "parity_f1", "strict_f1"] = "paper_f1"
    min_gate_value: float = Field(0.0, ge=0, le=1, description="Absolute floor for the gate metric.")
    min_parse_rate: float = Field(0.0, ge=0, le=1, description="Floor for the suite's mean parse rate.")
    tolerance: float = Field(0.0, ge=0, description="Promote when candidate >= champion - tolerance.")
    rule: Literal["beat-champion", "no-zero-shot-regression"] = Field(
        "beat-champion", description="beat-champion: the gate suite against the champion (the main pipeline); "
        "no-zero-shot-regression: the zero-shot suite may not fall more than zero_shot_tolerance below the champion's "
        "(the refresh pipeline, docs/flywheel.md).")
    zero_shot_tolerance: float = Field(0.01, ge=0, le=1, description="Largest zero-shot drop (gate metric, absolute) the "
                                       "no-zero-shot-regression rule accepts against the champion.")


class DeploySection(_Section):
    """Serving objects (fields = Helm chart values) and the rollout of a promoted model."""

    serving: ServingSettings = Field(default_factory=ServingSettings)
    canary_percent: int = Field(10, ge=0, le=99, description="Knative: canary share before promotion; 0 = direct. Standard mode is always direct.")
    timeout_s: float = Field(1800.0, gt=0)
    poll_interval_s: float = Field(10.0, gt=0)
    probe: bool = Field(False, description="GET /v2/health/ready on the canary's tagged URL before promotion.")
    rollback_on_failure: bool = True


class ServeSection(_Section):
    """The NER service (`rner serve`, docs/serving.md); env RNER_SERVE_<FIELD> overrides."""

    model_name: str = "reasoning-ner"
    host: str = Field("127.0.0.1", description="Loopback by default in local mode; the image sets 0.0.0.0.")
    port: int = Field(8080, ge=0, le=65535)
    backend: Literal["transformers", "remote"] = "transformers"
    remote_url: str | None = None
    remote_model: str | None = None
    remote_api_key_env: str = "RNER_REMOTE_API_KEY"
    remote_structured_output: Literal["response_format", "structured_outputs", "guided_json", "none"] = "response_format"
    remote_max_concurrency: int = Field(256, ge=1)
    max_text_chars: int = Field(4000, ge=1)
    max_labels: int = Field(64, ge=1)
    max_label_chars: int = Field(100, ge=1)
    max_instances: int = Field(32, ge=1)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    request_timeout_s: float = Field(60.0, gt=0)
    max_batch_size: int = Field(32, ge=1)
    max_batch_wait_ms: float = Field(5.0, ge=0)
    max_queue: int = Field(1024, ge=1)
    max_new_tokens: int | None = Field(None, ge=1, description="None = eval.max_new_tokens")
    max_answer_tokens: int = Field(512, ge=1)
    max_reasoning_tokens: int | None = Field(None, ge=0, description="Deployment cap on thinking tokens; None = uncapped")
    device: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    torch_threads: int | None = Field(None, ge=1)
    access_log: bool = True
    model_version: str | None = Field(None, description="None = the registry version / model-card digest of the folder")
    probe_upstream: bool = Field(True, description="Remote readiness follows the upstream; false when it scales to zero")
    probe_interval_s: float = Field(2.0, gt=0)
    probe_failures: int = Field(3, ge=1)
    probe_successes: int = Field(2, ge=1)
    body_timeout_s: float = Field(30.0, gt=0)
    max_json_depth: int = Field(64, ge=2)
    drift_max_labels: int = Field(100, ge=1, description="Drift metrics: most distinct label values with a series; "
                                  "later labels count under __other__ (docs/flywheel.md)")
    drift_baseline: str | None = Field(None, description="drift_baseline.json path/URI; None = the model folder's (in process)")
    api_keys_file: str | None = Field(None, description="API keys, one per line (a mounted Secret); None = no authentication")


class Config(_Section):
    profile: str = "tiny-cpu"
    seed: int = 42
    data: DataConfig = Field(default_factory=DataConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    cot: CoTConfig = Field(default_factory=CoTConfig)
    sft: SFTSection = Field(default_factory=SFTSection)
    grpo: GRPOSection = Field(default_factory=GRPOSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    promotion: PromotionSection = Field(default_factory=PromotionSection)
    deploy: DeploySection = Field(default_factory=DeploySection)
    serve: ServeSection = Field(default_factory=ServeSection)
    flywheel: FlywheelSection = Field(default_factory=FlywheelSection)
    refresh: RefreshSection = Field(default_factory=RefreshSection)

    @model_validator(mode="after")
    def _no_zero_shot_rl(self) -> Config:
        leaked = sorted(set(self.grpo.rl_datasets) & set(self.data.zero_shot_datasets))
        if leaked:
            raise ValueError(f"zero-shot evaluation dataset(s) {leaked} cannot be RL datasets")
        return self

    def dump_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)




class ConfigError(ValueError):
    """A configuration problem, with a message that names the offending key or file."""




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


#: The file DVC stages share with every entry point (read from the working directory).
PARAMS_FILE = "params.yaml"


def resolve_config(
    config_path: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    overrides: list[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Config:
    """The configuration of an entry point: the ``rner`` CLI, the ``python -m`` mains, the KFP
    components and the server all resolve through here, so one set of flags means one config.

    An explicit ``config_path`` is read; without one, ``./params.yaml`` is read when present and no
    ``profile`` is named: naming a profile means that profile as defined, not params.yaml's edits
    of whichever profile it names.
    """
    if config_path is None and profile is None:
        candidate = Path(cwd or ".") / PARAMS_FILE
        if candidate.is_file():
            config_path = candidate
    return load_config(config_path, profile, overrides)


def config_fingerprint(cfg: Config) -> str:
    """Stable JSON of the resolved config, for lineage records and model cards."""
    return json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
