"""Stage 2 (SFT) mechanics on a ~0.1M-parameter model (seconds each): data vetting, masking,
left truncation, the completion-only loss against trl's own, gradient accumulation, LoRA merge,
resume, divergence stop, export, batched generation, plots.

The learning checks on the tiny-cpu model (loss, parse rate, F1) are in tests/test_sft_learning.py.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest

from reasoning_ner.config import TinyModelConfig, load_config
from reasoning_ner.cot.offline import offline_chain
from reasoning_ner.records import NERRecord, read_records, write_jsonl
from tests.checks import assert_exported_model, sentence_of

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def cot_records(prepared_dir: Path, dataset: str, n: int, seed: int = 0, split: str = "train") -> list[NERRecord]:
    recs = read_records(prepared_dir / dataset / f"{split}.jsonl")
    out = random.Random(seed).sample(recs, n)
    for rec in out:
        rec.cot = offline_chain(rec, "compact")
    return out


def micro_cfg(*overrides: str):
    return load_config(
        profile="tiny-cpu",
        overrides=["sft.save_steps=0", "sft.logging_steps=1", "sft.per_device_train_batch_size=8", *overrides],
    )


def completion_nll_of(model_dir: Path, records: list[NERRecord], cfg: Any) -> float:
    """Mean NLL per completion token (target + <|im_end|>) of ``records`` under the model in ``model_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasoning_ner.training.sft import sft_example

    model, tok = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    total, count = 0.0, 0
    with torch.no_grad():
        for rec in records:
            ex = sft_example(rec, cfg)
            n_prompt = len(tok(ex["prompt"])["input_ids"])
            ids = torch.tensor([tok(ex["prompt"] + ex["completion"])["input_ids"]])
            logp = model(ids).logits[0, :-1].log_softmax(-1)
            target = ids[0, 1:]
            nll = -logp.gather(1, target[:, None])[:, 0][n_prompt - 1 :]
            total, count = total + float(nll.sum()), count + nll.numel()
    return total / count


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def micro_base(tmp_path_factory: pytest.TempPathFactory, prepared_dir: Path) -> Path:
    """A ~0.1M-parameter Qwen3 with a small BPE (built in a few seconds)."""
    from reasoning_ner.modeling import init_tiny

    out = tmp_path_factory.mktemp("micro") / "base"
    cfg = TinyModelConfig(
        vocab_size=800, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, tokenizer_corpus_limit=1500,
    )
    init_tiny(out, cfg, data_dir=prepared_dir)
    return out


@pytest.fixture(scope="session")
def micro_train_file(tmp_path_factory: pytest.TempPathFactory, prepared_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("micro-data") / "cot.jsonl"
    write_jsonl(path, cot_records(prepared_dir, "conll2003", 64))
    return path


# ------------------------------------------------------------------------------ data vetting


def test_zero_shot_records_are_refused(tmp_path: Path, prepared_dir: Path) -> None:
    from reasoning_ner.training.sft import ZeroShotDataError, load_sft_records, train_sft

    cfg = micro_cfg()
    leaked = cot_records(prepared_dir, "crossner_ai", 3)
    mixed = tmp_path / "mixed.jsonl"
    write_jsonl(mixed, cot_records(prepared_dir, "conll2003", 5) + leaked[:1])
    with pytest.raises(ZeroShotDataError, match="zero-shot evaluation dataset 'crossner_ai'"):
        load_sft_records([mixed], cfg)
    # The folder name alone is enough (records with an empty dataset field).
    folder = tmp_path / "mit_movie"
    folder.mkdir()
    for rec in leaked:
        rec.dataset = ""
    write_jsonl(folder / "train.jsonl", leaked)
    with pytest.raises(ZeroShotDataError, match="mit_movie"):
        load_sft_records([folder / "train.jsonl"], cfg)
    # train_sft refuses before it loads any model (this base model does not exist).
    with pytest.raises(ZeroShotDataError):
        train_sft(cfg, [mixed], tmp_path / "out", base_model=str(tmp_path / "no-such-model"))
    assert not (tmp_path / "out").exists()


def test_test_split_and_missing_cot_are_refused(tmp_path: Path, prepared_dir: Path) -> None:
    from reasoning_ner.training.sft import TrainingDataError, load_sft_records

    cfg = micro_cfg()
    test_split = tmp_path / "test.jsonl"
    write_jsonl(test_split, cot_records(prepared_dir, "conll2003", 2, split="test"))
    with pytest.raises(TrainingDataError, match="test split"):
        load_sft_records([test_split], cfg)
    no_cot = tmp_path / "no-cot.jsonl"
    write_jsonl(no_cot, read_records(prepared_dir / "conll2003" / "train.jsonl")[:2])
    with pytest.raises(TrainingDataError, match="has no 'cot'"):
        load_sft_records([no_cot], cfg)
    # The w/o-CoT ablation trains on plain records.
    assert len(load_sft_records([no_cot], micro_cfg("prompt.with_cot=false"))) == 2
    with pytest.raises(TrainingDataError, match="does not exist"):
        load_sft_records([tmp_path / "missing.jsonl"], cfg)


def test_max_train_records_is_a_seeded_sample(micro_train_file: Path) -> None:
    from reasoning_ner.training.sft import load_sft_records

    a = load_sft_records([micro_train_file], micro_cfg("sft.max_train_records=10"))
    b = load_sft_records([micro_train_file], micro_cfg("sft.max_train_records=10"))
    assert [r.id for r in a] == [r.id for r in b] and len(a) == 10


# ------------------------------------------------------------------------------ masking and truncation


def _trainer(cfg: Any, base: Path, records: list[NERRecord], out: Path, trainer_cls: Any = None) -> Any:
    from reasoning_ner.training.sft import build_trainer, load_for_training, resolve_runtime

    runtime = resolve_runtime(cfg.sft)
    model, tok = load_for_training(str(base), cfg, runtime)
    return build_trainer(cfg, records, model, tok, out, runtime=runtime, trainer_cls=trainer_cls, progress=False)


def test_loss_covers_exactly_the_completion_and_im_end(tmp_path: Path, micro_base: Path, micro_train_file: Path) -> None:
    from reasoning_ner.prompt import render_target
    from reasoning_ner.training.sft import load_sft_records

    cfg = micro_cfg("sft.max_length=1024")
    records = load_sft_records([micro_train_file], cfg)[:16]
    trainer = _trainer(cfg, micro_base, records, tmp_path)
    tok = trainer.processing_class
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    by_text = {r.text: r for r in records}
    assert len(trainer.train_dataset) == 16
    for ex in trainer.train_dataset:
        ids, labels = ex["input_ids"], ex["labels"]
        first = next(i for i, lab in enumerate(labels) if lab != -100)
        assert all(lab == -100 for lab in labels[:first])
        assert labels[first:] == ids[first:], "every completion token is a target"
        assert ids[-1] == im_end
        prompt = tok.decode(ids[:first])
        assert prompt.startswith("<|im_start|>user\n") and prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
        sentence = sentence_of(prompt)
        assert tok.decode(ids[first:]) == render_target(by_text[sentence], cfg.prompt) + "<|im_end|>"


def test_left_truncation_keeps_the_answer(tmp_path: Path, micro_base: Path, micro_train_file: Path) -> None:
    from reasoning_ner.training.sft import TrainingDataError, has_trainable_labels, keep_last_tokens, load_sft_records

    assert keep_last_tokens([1, 2, 3, 4], [-100, -100, 3, 4], 3) == ([2, 3, 4], [-100, 3, 4])
    assert keep_last_tokens([1, 2], [-100, 2], 5) == ([1, 2], [-100, 2])
    assert has_trainable_labels([-100, -100, 7]) and not has_trainable_labels([7, -100])

    cfg = micro_cfg("sft.max_length=24")
    records = load_sft_records([micro_train_file], cfg)[:16]
    trainer = _trainer(cfg, micro_base, records, tmp_path / "a")
    tok = trainer.processing_class
    counts = trainer.example_counts["train"]
    assert counts["truncated"] > 0 and counts["examples"] + counts["dropped"] == 16
    for ex in trainer.train_dataset:
        assert len(ex["input_ids"]) <= 24
        assert tok.decode(ex["input_ids"]).endswith("}<|im_end|>"), "the JSON answer's end and <|im_end|> are kept"
        assert has_trainable_labels(ex["labels"])
    # One token left: nothing is predicted any more, every example is dropped, with a clear error.
    with pytest.raises(TrainingDataError, match="no train example keeps a completion token"):
        _trainer(micro_cfg("sft.max_length=1"), micro_base, records, tmp_path / "b")


def test_length_bucket_sampler_groups_lengths_in_random_batch_order() -> None:
    from reasoning_ner.training.sft import LengthBucketSampler

    lengths = [random.Random(i).randint(5, 200) for i in range(1000)]
    sampler = LengthBucketSampler(lengths, batch_size=32, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(1000))
    batches = [order[i : i + 32] for i in range(0, 1000, 32)]
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded / sum(lengths) < 1.1, "little padding"
    maxima = [max(lengths[i] for i in b) for b in batches[:-1]]
    assert maxima != sorted(maxima, reverse=True), "batch order is shuffled, not longest first"
    assert list(LengthBucketSampler(lengths, 32, seed=3)) == order, "reproducible"
    sampler.set_epoch(1)
    assert list(sampler) != order, "each epoch has its own order"


# ------------------------------------------------------------------------------ the loss


def _sgd_delta(cfg: Any, base: Path, records: list[NERRecord], out: Path, trainer_cls: Any = None) -> dict[str, Any]:
    """Parameter change of one optimizer step of plain SGD (lr 1): minus the gradient."""
    import torch

    trainer = _trainer(cfg, base, records, out, trainer_cls)
    trainer.args.optim = "sgd"
    trainer.args.max_grad_norm = 1e9
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    with torch.no_grad():
        return {n: p.detach() - before[n] for n, p in trainer.model.named_parameters()}


def test_loss_equals_stock_and_gradient_accumulation_is_token_weighted(
    tmp_path: Path, micro_base: Path, micro_train_file: Path
) -> None:
    import torch
    from trl import SFTTrainer

    from reasoning_ner.training.sft import load_sft_records

    common = ["sft.max_steps=1", "sft.learning_rate=1.0", "sft.lr_scheduler_type=constant", "sft.warmup_ratio=0",
              "sft.weight_decay=0", "sft.max_length=1024"]
    records = load_sft_records([micro_train_file], micro_cfg(*common))[:8]

    # Same batch, same loss value as trl's own (fused-head) loss.
    cfg8 = micro_cfg(*common, "sft.per_device_train_batch_size=8")
    ours, stock = _trainer(cfg8, micro_base, records, tmp_path / "o"), _trainer(cfg8, micro_base, records, tmp_path / "s", SFTTrainer)
    batch = next(iter(ours.get_train_dataloader()))
    with torch.no_grad():
        ours.model.train(), stock.model.train()
        assert float(ours.compute_loss(ours.model, dict(batch))) == pytest.approx(
            float(stock.compute_loss(stock.model, dict(batch))), rel=1e-5
        )

    # One step over 8 examples: batch 8 (ours and stock) == batch 4 x 2 accumulation steps (ours).
    full = _sgd_delta(cfg8, micro_base, records, tmp_path / "d8")
    full_stock = _sgd_delta(cfg8, micro_base, records, tmp_path / "d8s", SFTTrainer)
    accum = _sgd_delta(
        micro_cfg(*common, "sft.per_device_train_batch_size=4", "sft.gradient_accumulation_steps=2"),
        micro_base, records, tmp_path / "d4x2",
    )
    norm = math.sqrt(sum(float(d.pow(2).sum()) for d in full.values()))
    assert norm > 0
    for name, delta in full.items():
        torch.testing.assert_close(accum[name], delta, rtol=1e-4, atol=1e-6 * norm, msg=name)
        torch.testing.assert_close(full_stock[name], delta, rtol=1e-4, atol=1e-6 * norm, msg=name)


def test_unlikelihood_candidates_are_the_earlier_distinct_completion_tokens() -> None:
    import torch

    from reasoning_ner.training.loss import previous_token_candidates

    rng = random.Random(0)
    for _ in range(200):
        batch, length = rng.randint(1, 4), rng.randint(2, 12)
        labels = torch.tensor([[rng.randint(0, 4) for _ in range(length)] for _ in range(batch)])
        for row in labels:
            row[: rng.randint(0, length)] = -100  # the prompt
            if rng.random() < 0.3:
                row[rng.randint(0, length - 1):] = -100  # right padding
        mask = labels != -100
        ids, valid = previous_token_candidates(labels, mask)
        assert ids.shape[0] == int(mask.sum())
        rows = iter(zip(ids.tolist(), valid.tolist()))
        for seq, seq_mask in zip(labels.tolist(), mask.tolist()):
            targets = [t for t, m in zip(seq, seq_mask) if m]
            for i, target in enumerate(targets):
                row_ids, row_valid = next(rows)
                got = [t for t, ok in zip(row_ids, row_valid) if ok]
                assert sorted(got) == sorted(set(targets[:i]) - {target}), (targets, i)


def test_unlikelihood_term_and_its_weight_in_the_training_loss(tmp_path: Path, micro_base: Path, micro_train_file: Path) -> None:
    import torch

    from reasoning_ner.training.loss import completion_nll, previous_token_candidates
    from reasoning_ner.training.sft import load_sft_records

    torch.manual_seed(0)
    labels = torch.tensor([[-100, -100, 5, 6, 5, 7, 6], [-100, 3, 3, 4, -100, -100, -100]])
    hidden, head = torch.randn(2, 7, 8), torch.nn.Linear(8, 10, bias=False)
    plain, with_ul = completion_nll(hidden, labels, head), completion_nll(hidden, labels, head, unlikelihood=True)
    assert plain.unlikelihood_sum is None
    torch.testing.assert_close(with_ul.nll_sum, plain.nll_sum)  # the NLL itself is unchanged
    # -sum log(1 - p(c)) over each position's earlier distinct tokens, written out.
    shift, mask = labels[:, 1:], labels[:, 1:] != -100
    probs = head(hidden).softmax(-1)[:, :-1][mask]
    ids, valid = previous_token_candidates(shift, mask)
    expected = sum(-math.log(1 - float(probs[r, c])) for r in range(len(ids)) for c, ok in zip(ids[r], valid[r]) if ok)
    assert float(with_ul.unlikelihood_sum) == pytest.approx(expected, rel=1e-5) and expected > 0

    # In the trainer: loss = (NLL + w * UL) / tokens, and the term is logged.
    common = ["sft.max_length=1024", "sft.per_device_train_batch_size=8"]
    records = load_sft_records([micro_train_file], micro_cfg(*common))[:8]
    plain_t = _trainer(micro_cfg(*common), micro_base, records, tmp_path / "p")
    ul_t = _trainer(micro_cfg(*common, "sft.unlikelihood_weight=2.0"), micro_base, records, tmp_path / "u")
    batch = next(iter(plain_t.get_train_dataloader()))
    with torch.no_grad():
        plain_t.model.train(), ul_t.model.train()
        base_loss = float(plain_t.compute_loss(plain_t.model, dict(batch)))
        outputs = ul_t.model(**{k: v for k, v in batch.items() if k != "labels"}, completion_labels=batch["labels"])
        ul_loss = float(ul_t.compute_loss(ul_t.model, dict(batch)))
    per_token_ul = float(outputs.unlikelihood_sum / outputs.n_tokens)
    assert per_token_ul > 0
    assert ul_loss == pytest.approx(base_loss + 2.0 * per_token_ul, rel=1e-5)
    assert ul_t._metrics["train"]["unlikelihood"][-1] == pytest.approx(per_token_ul, rel=1e-5)


# ------------------------------------------------------------------------------ LoRA, resume, divergence


def test_lora_trains_through_the_same_path_and_exports_merged(tmp_path: Path, micro_base: Path, micro_train_file: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from reasoning_ner.training.sft import train_sft

    cfg = micro_cfg("sft.finetune=lora", "sft.max_steps=8", "sft.lora_r=8", "sft.lora_alpha=16", "sft.lora_dropout=0",
                    "sft.learning_rate=0.01", "sft.warmup_ratio=0")
    summary = train_sft(cfg, [micro_train_file], tmp_path, base_model=str(micro_base), progress=False)
    model_dir = Path(summary["model_dir"])
    keys = load_file(model_dir / "model.safetensors").keys()
    assert not [k for k in keys if "lora" in k], "adapters are merged, not saved"
    merged = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    base = AutoModelForCausalLM.from_pretrained(micro_base).state_dict()
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert any("q_proj" in k for k in changed), "the merged LoRA update reached the target modules"
    assert not any("embed_tokens" in k or "norm" in k for k in changed), "non-target weights are untouched"
    # The merged model fits its training data better than the base (a fixed set, not a noisy batch loss).
    records = read_records(micro_train_file)[:16]
    assert completion_nll_of(model_dir, records, cfg) < completion_nll_of(micro_base, records, cfg) - 0.05
    card = (model_dir / "README.md").read_text()
    assert "| finetune | lora |" in card and "| lora_r | 8 |" in card


def test_resume_continues_from_the_last_checkpoint(tmp_path: Path, micro_base: Path, micro_train_file: Path) -> None:
    from reasoning_ner.training.sft import train_sft

    first = train_sft(
        micro_cfg("sft.max_steps=4", "sft.save_steps=2", "sft.save_total_limit=2"),
        [micro_train_file], tmp_path, base_model=str(micro_base), progress=False,
    )
    assert first["steps"] == 4 and first["resumed_from"] is None
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    # "Interrupted" at 4 of 6 steps: the next call resumes instead of starting over.
    second = train_sft(
        micro_cfg("sft.max_steps=6", "sft.save_steps=2", "sft.save_total_limit=2"),
        [micro_train_file], tmp_path, base_model=str(micro_base), progress=False,
    )
    assert second["resumed_from"].endswith("checkpoint-4")
    assert second["steps"] == 6
    history = json.loads((tmp_path / "log_history.json").read_text())
    logged = {k for entry in history for k in entry}
    assert "loss" in logged and "num_tokens" in logged
    assert not logged & {"entropy", "mean_token_accuracy"}, "no per-step metric needs the full logits"
    steps = [e["step"] for e in history if "loss" in e]
    assert steps[-2:] == [5, 6] and steps.count(5) == 1
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]


def test_divergence_stops_training_with_a_clear_error(tmp_path: Path, micro_base: Path, micro_train_file: Path) -> None:
    from reasoning_ner.training.sft import NonFiniteLossError, train_sft

    # An absurd learning rate blows the weights up within a few steps.
    cfg = micro_cfg("sft.learning_rate=1e12", "sft.warmup_ratio=0", "sft.lr_scheduler_type=constant",
                    "sft.max_steps=50", "sft.save_steps=1", "sft.save_total_limit=100")
    with pytest.raises(NonFiniteLossError, match=r"diverged: non-finite .* at step \d+.*lower sft.learning_rate") as info:
        train_sft(cfg, [micro_train_file], tmp_path, base_model=str(micro_base), progress=False)
    bad_step = int(re.search(r"at step (\d+)", str(info.value)).group(1))  # type: ignore[union-attr]
    assert bad_step < 50, "stopped early"
    assert not (tmp_path / "model").exists(), "nothing exported"
    saved = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "checkpoints").glob("checkpoint-*"))
    assert saved and max(saved) < bad_step, "no checkpoint holds diverged weights"
    history = json.loads((tmp_path / "log_history.json").read_text())
    bad = [e for e in history if any(isinstance(e.get(k), float) and not math.isfinite(e[k]) for k in ("loss", "grad_norm"))]
    assert bad and bad[0]["step"] == bad_step, "the diverged step is in the log for the post-mortem"
    assert (tmp_path / "loss.png").is_file()


# ------------------------------------------------------------------------------ helpers: generate, plots, runtime, CLI


def test_batched_generation_equals_one_by_one(micro_base: Path, prepared_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasoning_ner.config import PromptConfig
    from reasoning_ner.training.generate import generate, record_prompts

    model, tok = AutoModelForCausalLM.from_pretrained(micro_base), AutoTokenizer.from_pretrained(micro_base)
    records = read_records(prepared_dir / "conll2003" / "dev.jsonl")[:7]
    prompts = record_prompts(records, PromptConfig(style="compact"))
    batched = generate(model, tok, prompts, max_new_tokens=10, batch_size=4)
    single = [generate(model, tok, [p], max_new_tokens=10, batch_size=1)[0] for p in prompts]
    assert batched == single and len(batched) == 7
    assert generate(model, tok, [], max_new_tokens=4) == []


def test_plot_curves_writes_a_png(tmp_path: Path) -> None:
    from reasoning_ner.training.plots import curve_points, plot_curves

    history = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": float("nan")}, {"step": 3, "loss": 2.0, "reward": 0.5}]
    assert curve_points(history, "loss") == ([1.0, 3.0], [3.0, 2.0])
    out = plot_curves(history, ["loss", "reward", "missing"], tmp_path / "c" / "curves.png", "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gpu_options_are_off_on_cpu() -> None:
    from reasoning_ner.training.sft import resolve_runtime

    gpu_cfg = load_config(profile="qwen3-8b")
    cpu = resolve_runtime(gpu_cfg.sft, device="cpu")
    assert not (cpu.bf16 or cpu.gradient_checkpointing or cpu.padding_free or cpu.use_liger_kernel)
    assert cpu.attn_implementation is None and cpu.notes
    # On CUDA without flash-attn installed, attention falls back to sdpa; a missing liger-kernel
    # fails early (tests/test_gpu_scale.py), so it is switched off here.
    cuda = resolve_runtime(gpu_cfg.sft.model_copy(update={"use_liger_kernel": False}), device="cuda")
    if importlib.util.find_spec("flash_attn") is None:
        assert cuda.attn_implementation == "sdpa" and not cuda.padding_free
    assert cuda.gradient_checkpointing


def test_cpu_bf16_is_a_switch_and_auto_follows_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    from reasoning_ner.training import runtime as rt

    off = rt.resolve_runtime(micro_cfg().sft, device="cpu")
    assert not off.bf16 and off.attn_implementation is None
    on = rt.resolve_runtime(micro_cfg("sft.cpu_bf16=true").sft, device="cpu")
    assert on.bf16 and on.attn_implementation == rt.FP32_SDPA
    for amx in (False, True):
        monkeypatch.setattr(rt, "cpu_has_amx", lambda amx=amx: amx)
        auto = rt.resolve_runtime(micro_cfg("sft.cpu_bf16=auto").sft, device="cpu")
        assert auto.bf16 is amx and (auto.attn_implementation == rt.FP32_SDPA) is amx
        assert auto.notes == [f"cpu_bf16=auto: {'AMX present, bf16 autocast' if amx else 'no AMX, float32'}"]
    with pytest.raises(Exception, match="cpu_bf16"):
        micro_cfg("sft.cpu_bf16=sometimes")


def test_cpu_bf16_trains_under_autocast_with_float32_attention(tmp_path: Path, micro_base: Path, micro_train_file: Path) -> None:
    """Linear layers run in bf16, attention in float32, weights stay float32, the loss matches the
    float32 one, and the exported model loads with the default attention."""
    import torch

    from reasoning_ner.training.sft import load_sft_records, train_sft

    cfg = micro_cfg("sft.cpu_bf16=true", "sft.max_steps=3", "sft.learning_rate=1e-3")
    records = load_sft_records([micro_train_file], cfg)[:16]
    trainer = _trainer(cfg, micro_base, records, tmp_path / "t")
    layer = trainer.model.model.layers[0]
    seen: dict[str, torch.dtype] = {}
    hooks = [
        layer.mlp.down_proj.register_forward_hook(lambda m, i, o: seen.__setitem__("linear_out", o.dtype)),
        layer.self_attn.o_proj.register_forward_pre_hook(lambda m, i: seen.__setitem__("attention_out", i[0].dtype)),
    ]
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():
        fp32_loss = float(trainer.compute_loss(trainer.model, batch))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16_loss = float(trainer.compute_loss(trainer.model, batch))
    trainer.train()
    for hook in hooks:
        hook.remove()
    assert seen == {"linear_out": torch.bfloat16, "attention_out": torch.float32}
    assert abs(bf16_loss - fp32_loss) < 0.02 * fp32_loss and bf16_loss != fp32_loss
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    out = train_sft(cfg, [micro_train_file], tmp_path / "run", base_model=str(micro_base), progress=False)
    assert math.isfinite(out["train_loss_last"])
    config = json.loads((Path(out["model_dir"]) / "config.json").read_text())
    assert "sdpa_fp32" not in json.dumps(config) and config["dtype"] == "float32"
    assert_exported_model(Path(out["model_dir"]), card_needles=("| attn_implementation | sdpa_fp32 |", "| bf16 | True |"))


def test_module_entry_point(tmp_path: Path, micro_base: Path, micro_train_file: Path, prepared_dir: Path, capsys: Any) -> None:
    from reasoning_ner.training.sft import main

    code = main(["--profile", "tiny-cpu", "--set", "sft.max_steps=2", "--set", "sft.save_steps=0",
                 "--data", str(micro_train_file), "--out", str(tmp_path / "run"), "--base-model", str(micro_base),
                 "--eval", str(prepared_dir / "conll2003" / "dev.jsonl"), "--eval-n", "8", "--no-progress"])
    assert code == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["metrics"]["eval_n"] == 8
    # CoNLL-2003 only: its research-only terms, and no CC BY-NC claim it does not carry.
    assert_exported_model(Path(summary["model_dir"]),
                          ("## Base model", str(micro_base), "research use only", "| finetune | full |",
                           "| eval_parse_rate |", "md5", "cot.jsonl"), card_absent=("CC BY-NC",))
    assert (tmp_path / "run" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    leaked = tmp_path / "crossner_music.jsonl"
    write_jsonl(leaked, cot_records(prepared_dir, "crossner_music", 2))
    assert main(["--data", str(leaked), "--out", str(tmp_path / "x"), "--base-model", str(micro_base)]) == 2
    assert "zero-shot" in capsys.readouterr().err


def test_model_card_carries_the_licences_of_its_training_data() -> None:
    from reasoning_ner.training.export import model_card

    nc = model_card("Qwen/Qwen3-8B-Base", "SFT", ["pile_ner", "conll2003"], {"dvc_rev": "abc"}, {"learning_rate": 2e-5}, {})
    assert "Pile-NER (Universal-NER / SLIMER): CC BY-NC 4.0" in nc and "**Non-commercial**" in nc
    assert "research use only" in nc and "base_model: Qwen/Qwen3-8B-Base" in nc and '"dvc_rev": "abc"' in nc
    research = model_card("Qwen/Qwen3-8B-Base", "SFT", ["conll2003"], None, {}, {})
    assert "CC BY-NC" not in research and "Non-commercial" not in research
    unknown = model_card("x", "GRPO", ["my_corpus"], None, {}, {})
    assert "licence not recorded" in unknown
