"""Stage 3: the RL data sampler, the GRPOConfig mapping and a GRPO run end to end (fast).

Real code and real data throughout (the prepared CoNLL-2003 / Pile-NER files, trl's own
GRPOTrainer); the one patch is transformers' bf16-GPU capability probe, so the GPU profile's
GRPOConfig can be built and checked on a CPU-only machine (vLLM itself cannot run here).
The end-to-end runs use an untrained small model (2 optimizer steps, about a minute in all):
they check plumbing, outputs and export, not learning. The learning checks are in
tests/test_grpo_learning.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from reasoning_ner.config import load_config
from reasoning_ner.prompt import chatml, render_prompt
from reasoning_ner.records import Entity, NERRecord
from reasoning_ner.rewards import f1_reward, schema_reward
from reasoning_ner.training.rl_data import (
    RLDataError,
    allocate_quotas,
    build_rl_dataset,
    sample_records,
)


def _records(dataset: str, n: int, split: str = "train") -> list[NERRecord]:
    return [
        NERRecord(
            id=f"{dataset}-{split}-{i:05d}",
            text=f"Ada Lovelace visited London {i} times .",
            entities=[Entity(0, 12, "person", "Ada Lovelace")] if i % 2 else [],
            schema=["location", "person"],
            dataset=dataset,
            split=split,
        )
        for i in range(n)
    ]


# =========================================================================== RL data sampler


def test_quotas_cap_before_proportions_and_sum_exactly():
    # 30,000 vs 1,000 capped at 10,000: proportions 10/11 and 1/11, not 30/31 and 1/31.
    q = allocate_quotas({"big": 30_000, "small": 1_000}, total=5_000, cap=10_000)
    assert q == {"big": 4545, "small": 455}
    assert sum(q.values()) == 5_000
    # without a cap the big set dominates
    assert allocate_quotas({"big": 30_000, "small": 1_000}, 5_000, None)["small"] == 161


def test_quotas_largest_remainder_and_small_pools():
    q = allocate_quotas({"a": 10, "b": 10, "c": 10}, total=10, cap=None)
    assert sum(q.values()) == 10 and sorted(q.values()) == [3, 3, 4]
    # a total larger than the pool takes everything, never more than a dataset holds
    assert allocate_quotas({"a": 3, "b": 5}, total=100, cap=4) == {"a": 3, "b": 5}
    assert allocate_quotas({"a": 0, "b": 5}, total=3, cap=None) == {"a": 0, "b": 3}
    with pytest.raises(RLDataError):
        allocate_quotas({"a": 3}, total=-1, cap=None)


def test_sample_records_is_seeded_and_order_independent():
    pool = _records("conll2003", 300) + _records("pile_ner", 100)
    a = sample_records(pool, total=40, cap=200, seed=1)
    b = sample_records(list(reversed(pool)), total=40, cap=200, seed=1)
    c = sample_records(pool, total=40, cap=200, seed=2)
    assert [r.id for r in a.records] == [r.id for r in b.records]
    assert [r.id for r in a.records] != [r.id for r in c.records]
    assert a.stats["sampled"] == {"conll2003": 27, "pile_ner": 13}  # 200 : 100 after the cap
    assert len({r.id for r in a.records}) == 40  # without replacement
    # a dataset's draw does not depend on which other datasets are in the pool
    alone = sample_records(_records("conll2003", 300), total=27, cap=200, seed=1)
    assert {r.id for r in alone.records} == {r.id for r in a.records if r.dataset == "conll2003"}


def test_sample_records_refuses_zero_shot_and_test_data():
    zero_shot = load_config(profile="tiny-cpu").data.zero_shot_datasets
    pool = _records("conll2003", 20) + _records("mit_movie", 20)
    # present but not requested: excluded and counted
    sample = sample_records(pool, total=10, cap=None, seed=0, zero_shot=zero_shot)
    assert {r.dataset for r in sample.records} == {"conll2003"}
    assert sample.stats["excluded"] == {"mit_movie (zero-shot)": 20}
    # requested: refused with a clear message
    with pytest.raises(RLDataError, match=r"zero-shot.*mit_movie"):
        sample_records(pool, total=10, cap=None, seed=0, datasets=["conll2003", "mit_movie"], zero_shot=zero_shot)
    with pytest.raises(RLDataError, match="'test' split"):
        sample_records(_records("conll2003", 5, split="test"), total=5, cap=None, seed=0)
    with pytest.raises(RLDataError, match=r"\['pile_ner'\] have no records"):
        sample_records(_records("conll2003", 5), total=5, cap=None, seed=0, datasets=["conll2003", "pile_ner"])


def test_config_refuses_zero_shot_rl_datasets():
    from reasoning_ner.config import ConfigError

    with pytest.raises(ConfigError, match="mit_restaurant"):
        load_config(profile="tiny-cpu", overrides=["grpo.rl_datasets=[conll2003, mit_restaurant]"])


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from reasoning_ner.modeling import builtin_corpus, train_tokenizer

    return train_tokenizer(builtin_corpus(), vocab_size=800, model_max_length=1024)


def test_build_rl_dataset_on_prepared_data(prepared_dir: Path, tiny_tokenizer):
    cfg = load_config(profile="tiny-cpu", overrides=["grpo.rl_sample_size=60", "grpo.max_prompt_length=96",
                                                     "grpo.rl_selection=random"])
    files = [prepared_dir / "conll2003" / "train.jsonl", prepared_dir / "pile_ner" / "train.jsonl", prepared_dir / "mit_movie" / "train.jsonl"]
    ds, stats = build_rl_dataset(cfg, files, tokenizer=tiny_tokenizer, datasets=["conll2003", "pile_ner"])
    assert len(ds) == 60 and stats["sampled_total"] == 60
    assert set(ds.column_names) >= {"prompt", "gold", "schema", "id", "dataset", "text"}
    assert "mit_movie (zero-shot)" in stats["excluded"]
    assert stats["dropped_over_max_prompt_length"]["pile_ner"] > 0  # long passages dropped, never truncated
    lengths = [len(tiny_tokenizer(p, add_special_tokens=False)["input_ids"]) for p in ds["prompt"]]
    assert max(lengths) <= 96
    # the prompt is the exact ChatML text SFT and evaluation use; gold and schema are typed lists
    row = ds[0]
    assert row["prompt"] == chatml(render_prompt(row["text"], row["schema"], "compact"))
    assert row["prompt"].endswith("<|im_start|>assistant\n")
    assert ds.features["gold"].feature.feature.dtype == "string"
    assert any(g == [] for g in ds["gold"])  # sentences without entities are kept (the schema reward's case)
    # the gold answer earns the full reward, through the same columns trl passes as kwargs
    from reasoning_ner.prompt import render_answer

    answers = []
    for g in ds["gold"]:
        grouped: dict[str, list[str]] = {}
        for span, label in g:
            grouped.setdefault(label, []).append(span)
        answers.append("<think>x</think>" + render_answer(grouped, None))
    f1 = f1_reward(answers, gold=ds["gold"], schema=ds["schema"])
    assert all(v == 1.0 for v, g in zip(f1, ds["gold"]) if g)
    assert schema_reward(answers, gold=ds["gold"], schema=ds["schema"]) == [1.0] * len(ds)


def test_build_rl_dataset_defaults_and_errors(prepared_dir: Path, tmp_path: Path):
    cfg = load_config(profile="qwen3-8b")  # the random sampler (tiny-cpu ranks a pool by the policy's answers)
    ds, stats = build_rl_dataset(cfg, [prepared_dir / "conll2003" / "train.jsonl"])
    assert len(ds) == cfg.grpo.rl_sample_size and set(ds["dataset"]) == {"conll2003"}
    assert stats["max_prompt_length"] is None  # no tokenizer, no length filter
    again, _ = build_rl_dataset(cfg, [prepared_dir / "conll2003" / "train.jsonl"])
    assert again["id"] == ds["id"]  # config seed -> same sample
    with pytest.raises(RLDataError, match="does not exist"):
        build_rl_dataset(cfg, [tmp_path / "missing.jsonl"])
    with pytest.raises(RLDataError, match="test"):
        build_rl_dataset(cfg, [prepared_dir / "conll2003" / "test.jsonl"])


# ===================================================================== GRPOConfig mapping


def test_tiny_cpu_grpo_config_maps_every_field():
    from reasoning_ner.training.grpo import build_grpo_config, grpo_config_kwargs

    cfg = load_config(profile="tiny-cpu")
    g = cfg.grpo
    args = build_grpo_config(cfg, "/tmp/unused-grpo-out", device="cpu")
    assert args.loss_type == "dr_grpo" and args.epsilon == 0.2 and args.epsilon_high == 0.28
    assert args.beta == g.beta and args.num_generations == g.num_generations
    assert args.num_iterations == g.num_iterations and args.temperature == g.temperature
    assert args.learning_rate == g.learning_rate and args.lr_scheduler_type.value == "cosine"
    assert args.warmup_steps == pytest.approx(g.warmup_ratio)
    assert args.max_completion_length == g.max_completion_length
    assert args.per_device_train_batch_size == g.per_device_train_batch_size
    assert args.gradient_accumulation_steps == g.gradient_accumulation_steps
    # tiny-cpu scales advantages by nothing (Dr. GRPO, measured in docs/grpo.md); the GPU profiles
    # keep the reference's group-std scaling.
    assert args.reward_weights == [10.0, 1.0] and args.scale_rewards == g.scale_rewards == "none"
    assert build_grpo_config(load_config(profile="qwen3-8b", overrides=["grpo.use_vllm=false"]), "/tmp/unused-grpo-out", device="cpu").scale_rewards == "group"
    assert args.use_cpu and not args.bf16 and not args.use_vllm
    assert args.remove_unused_columns is False and args.report_to == []
    assert args.generation_batch_size % args.num_generations == 0
    # every key we pass is a real GRPOConfig field (guards against trl renames such as max_prompt_length)
    from trl import GRPOConfig

    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    assert set(grpo_config_kwargs(cfg, "/tmp/x", [10.0, 1.0], device="cpu")) <= fields
    assert "max_prompt_length" not in fields  # trl 1.16: prompts are filtered by the sampler instead


@pytest.fixture
def gpu_capable(monkeypatch):
    """Let TrainingArguments accept bf16 on this CPU-only machine (its only GPU check)."""
    import transformers.training_args as ta

    monkeypatch.setattr(ta, "is_torch_bf16_gpu_available", lambda *a, **k: True)


@pytest.mark.parametrize("profile", ["qwen3-8b", "qwen3-1.7b"])
def test_gpu_profile_grpo_config_with_vllm_server(gpu_capable, profile):
    from reasoning_ner.training.grpo import build_grpo_config

    cfg = load_config(profile=profile, overrides=["grpo.use_vllm=true", "grpo.vllm_mode=server"])
    args = build_grpo_config(cfg, "/tmp/unused-grpo-out", device="cuda")
    assert args.bf16 and not args.use_cpu
    assert args.use_vllm and args.vllm_mode == "server"
    assert args.vllm_server_host == "127.0.0.1" and args.vllm_server_port == 8000
    assert args.vllm_max_model_length == 2048 + 4096
    assert args.activation_checkpointing and args.gradient_checkpointing
    assert args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert (args.loss_type, args.beta, args.num_generations, args.num_iterations) == ("dr_grpo", 0.04, 16, 4)
    assert (args.temperature, args.learning_rate, args.warmup_steps) == (0.9, 1e-6, 0.1)
    assert args.max_completion_length == 4096 and args.reward_weights == [10.0, 1.0]
    # 8b: 4 x 16 = 64 completions per generation batch = 4 prompts x 16; 1.7b: 16 x 4
    assert args.generation_batch_size == 64 and args.generation_batch_size % 16 == 0


def test_gpu_profile_grpo_config_vllm_colocate_and_lora(gpu_capable):
    from reasoning_ner.training.grpo import build_grpo_config, build_peft_config

    cfg = load_config(profile="qwen3-8b", overrides=["grpo.use_vllm=true", "grpo.vllm_mode=colocate", "grpo.finetune=lora"])
    args = build_grpo_config(cfg, "/tmp/unused-grpo-out", device="cuda")
    assert args.use_vllm and args.vllm_mode == "colocate"
    assert args.vllm_gpu_memory_utilization == 0.3 and args.vllm_tensor_parallel_size == 1
    lora = build_peft_config(cfg)
    assert lora.r == 16 and "q_proj" in lora.target_modules
    assert build_peft_config(load_config(profile="qwen3-8b")) is None  # full fine-tuning


def test_grpo_config_errors():
    from reasoning_ner.training.grpo import GRPOError, build_grpo_config

    with pytest.raises(GRPOError, match="vLLM rollouts need CUDA"):
        build_grpo_config(load_config(profile="tiny-cpu", overrides=["grpo.use_vllm=true"]), "/tmp/x", device="cpu")
    bad = load_config(profile="tiny-cpu", overrides=["grpo.per_device_train_batch_size=6", "grpo.num_generations=4"])
    with pytest.raises(GRPOError, match="not divisible by grpo.num_generations"):
        build_grpo_config(bad, "/tmp/x", device="cpu")
    with pytest.raises(ValueError, match="think_token_budget"):
        build_grpo_config(load_config(profile="tiny-cpu", overrides=["grpo.reward_length_weight=1"]), "/tmp/x", device="cpu")


# ====================================================================== a GRPO run end to end


SMALL_TINY = {
    "vocab_size": 500, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
}
# A few seconds per step on 2 shared cores: short completions, small groups.
SMOKE = [
    "grpo.max_completion_length=12", "grpo.num_generations=2", "grpo.per_device_train_batch_size=4",
    "grpo.rl_sample_size=8", "grpo.max_prompt_length=200",
    "grpo.num_iterations=1",  # one rollout per optimizer step, so every step logs its rewards
    "grpo.rl_selection=random",  # the trainer's plumbing; the selection has its own tests (test_rl_select.py)
]


@pytest.fixture(scope="module")
def random_tiny_dir(tmp_path_factory, prepared_dir: Path) -> Path:
    """An untrained small tiny model: enough to run the trainer, not to learn (rewards are 0)."""
    from reasoning_ner.config import TinyModelConfig
    from reasoning_ner.modeling import init_tiny

    out = tmp_path_factory.mktemp("grpo-models") / "random-tiny"
    init_tiny(out, TinyModelConfig(**SMALL_TINY))
    return out


@pytest.mark.slow
def test_train_grpo_end_to_end_full(random_tiny_dir: Path, prepared_dir: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM

    from reasoning_ner.training.grpo import train_grpo

    cfg = load_config(profile="tiny-cpu", overrides=SMOKE + ["grpo.reward_format_weight=0.5", "grpo.reward_length_weight=1", "grpo.think_token_budget=4"])
    out = tmp_path / "grpo"
    lineage = {"data": "prepared conll2003 train (test fixture)"}
    summary = train_grpo(cfg, random_tiny_dir, [prepared_dir / "conll2003" / "train.jsonl"], out, lineage=lineage, max_steps=2)

    assert summary["global_steps"] == 2
    assert summary["reward_terms"] == {"f1_reward": 10.0, "schema_reward": 1.0, "format_reward": 0.5, "length_reward": 1.0}
    assert (out / "summary.json").is_file() and json.loads((out / "summary.json").read_text())["global_steps"] == 2
    # every step's metrics in JSON: loss, reward per component, KL, completion length, clipping
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "reward" in r]
    assert len(train_rows) == 2
    for key in ("loss", "reward", "kl", "completions/mean_length", "completions/clipped_ratio", "rewards/f1_reward/mean",
                "rewards/schema_reward/mean", "rewards/format_reward/mean", "rewards/length_reward/mean",
                "completions/parse_rate", "completions/think_tokens", "clip_ratio/region_mean"):
        assert key in train_rows[-1], key
    assert json.loads((out / "log_history.json").read_text())[-1]["step"] == 2
    for png in ("loss.png", "reward.png", "reward_components.png", "kl.png", "completion_length.png", "clipping.png"):
        assert (out / "plots" / png).stat().st_size > 1000, png
    stats = json.loads((out / "rl_data_stats.json").read_text())
    assert stats["sampled"] == {"conll2003": 8}
    # the exported policy loads as a plain transformers model, with a card that records the GRPO settings
    model_dir = out / "model"
    AutoModelForCausalLM.from_pretrained(model_dir)
    card = (model_dir / "README.md").read_text()
    for text in ("GRPO", "dr_grpo", "0.2 / 0.28", "10 x f1_reward + 1 x schema_reward + 0.5 x format_reward + 1 x length_reward",
                 "num_generations", "prepared conll2003 train (test fixture)", "CoNLL-2003"):
        assert text in card, text
    assert summary["trl_args"]["loss_type"] == "dr_grpo" and summary["lineage"] == lineage
    # a second call resumes from the last checkpoint instead of starting over
    again = train_grpo(cfg, random_tiny_dir, [prepared_dir / "conll2003" / "train.jsonl"], tmp_path / "grpo", max_steps=2)
    assert again["resumed_from"] is not None and again["resumed_from"].endswith("checkpoint-2")


@pytest.mark.slow
def test_train_grpo_lora_exports_merged_model(random_tiny_dir: Path, prepared_dir: Path, tmp_path: Path):
    from reasoning_ner.training.grpo import train_grpo

    cfg = load_config(profile="tiny-cpu", overrides=SMOKE + ["grpo.finetune=lora"])
    summary = train_grpo(cfg, random_tiny_dir, [prepared_dir / "conll2003" / "train.jsonl"], tmp_path / "g", max_steps=1)
    model_dir = Path(summary["model_dir"])
    assert (model_dir / "model.safetensors").is_file() and not (model_dir / "adapter_config.json").exists()
    assert "lora" in (model_dir / "README.md").read_text()


def test_train_grpo_refuses_bad_inputs(random_tiny_dir: Path, prepared_dir: Path, tmp_path: Path):
    from reasoning_ner.training.grpo import GRPOError, main, train_grpo

    cfg = load_config(profile="tiny-cpu", overrides=SMOKE)
    with pytest.raises(GRPOError, match="not a model directory"):
        train_grpo(cfg, tmp_path, [prepared_dir / "conll2003" / "train.jsonl"], tmp_path / "out")
    with pytest.raises(RLDataError, match="zero-shot"):
        train_grpo(cfg, random_tiny_dir, [prepared_dir / "mit_movie" / "train.jsonl"], tmp_path / "out", datasets=["mit_movie"])
    # the module entry point reports errors with exit code 2
    assert main(["--model", str(random_tiny_dir), "--data", str(prepared_dir / "conll2003" / "test.jsonl"),
                 "--out", str(tmp_path / "out"), "--profile", "tiny-cpu"]) == 2
