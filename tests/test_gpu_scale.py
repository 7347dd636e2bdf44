"""bench/gpu_scale.py and the GPU speed options it measures (issue 16), checked on CPU."""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import pytest
import torch

from reasoning_ner.config import ConfigError, load_config
from tests.conftest import _bench

SPEED = ["sft.use_liger_kernel=false", "sft.torch_compile=true", "sft.bf16_weights=true"]


@pytest.fixture(scope="module")
def bench():
    return _bench("gpu_scale")


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch):
    """resolve_runtime as on a bf16 GPU with every optional package installed."""
    from reasoning_ner.training import runtime, sft

    monkeypatch.setattr(runtime, "_cuda_bf16", lambda: True)
    monkeypatch.setattr(runtime, "_installed", lambda module: True)
    return sft


def test_tiny_mode_writes_its_json(bench, tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "r.json"
    code = bench.main(["--tiny", "--data", str(data_dir), "--work", str(tmp_path / "w"), "--out", str(out),
                       "--sft", "baseline,all", "--grpo", "hf_generate,static_compiled"])
    assert code == 0
    r = json.loads(out.read_text())
    assert r["device"] == "cpu" and r["shape"] == "tiny" and r["mfu_peak_flops"] == 989e12
    assert set(r["sft"]) == {"baseline", "all"} and set(r["grpo"]) == {"hf_generate", "static_compiled"}
    for name, s in r["sft"].items():
        assert s["ok"], s
        assert s["tokens_per_second"] > 0 and 0 < s["mfu"] < 1
        assert s["mfu"] == pytest.approx(6 * s["parameters"] * s["tokens_per_second"] / 989e12, abs=1e-6)  # rounded to 6 places
        assert len(s["step_seconds"]) == r["settings"]["warmup"] + r["settings"]["steps"] + 1
        assert set(s["kernels"]["share"]) == {"matmul", "attention", "elementwise", "other"}
        assert sum(s["kernels"]["share"].values()) == pytest.approx(1.0, abs=0.01)
        assert s["kernels"]["share"]["matmul"] > 0 and s["peak_allocated_gib"] is None  # CPU: no GPU memory
    # On CPU every GPU option resolves off, and says so.
    assert r["sft"]["all"]["runtime"]["notes"] and not r["sft"]["all"]["runtime"]["use_liger_kernel"]
    for g in r["grpo"].values():
        assert g["ok"], g
        assert g["seconds_per_step"] > 0 and 0 < g["generation_share"] <= 1
        assert g["generate_seconds_per_step"] <= g["seconds_per_step"]
    assert r["grpo"]["static_compiled"]["trl"]["cache_implementation"] is None  # static/compile are CUDA-only


def test_mfu_arithmetic_and_kernel_groups(bench) -> None:
    # 1e9 parameters at 10k tokens/s: 6e13 FLOP/s of 989e12.
    assert bench.mfu(1_000_000_000, 10_000) == pytest.approx(0.0606673, rel=1e-5)
    # The baseline of shared/reference/gpu-scale.md: 1.72 B parameters at 19.5k tokens/s is 20 %.
    assert bench.mfu(1_720_574_976, 19_500) == pytest.approx(0.2035, abs=1e-4)
    assert bench.mfu(2, 3, peak=36.0) == 1.0
    groups = {"nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT": "matmul", "sm90_xmma_gemm_bf16bf16_bf16f32": "matmul",
              "pytorch_flash::flash_fwd_kernel": "attention", "fmha_cutlassF_bf16_aligned_64x128_rf_sm80": "attention",
              "void at::native::vectorized_elementwise_kernel<4, ...>": "elementwise",
              "_rms_norm_forward_kernel": "elementwise", "triton_poi_fused_add_mul_0": "elementwise",
              "Memset (Device)": "other", "aten::mm": "matmul", "aten::scaled_dot_product_attention": "attention"}
    assert {k: bench.kernel_group(k) for k in groups} == groups


def test_speed_options_validate_and_reach_the_trainer(fake_cuda, tmp_path: Path) -> None:
    sft = fake_cuda
    cfg = load_config(profile="qwen3-1.7b", overrides=SPEED)
    with pytest.raises(ConfigError, match="sft.bf16_weights"):
        load_config(profile="qwen3-1.7b", overrides=["sft.bf16_weights=maybe"])
    runtime = sft.resolve_runtime(cfg.sft, device="cuda")
    assert runtime.torch_compile and runtime.bf16_weights and not runtime.use_liger_kernel
    liger = sft.resolve_runtime(load_config(profile="qwen3-1.7b", overrides=["sft.use_liger_kernel=true"]).sft, device="cuda")
    assert liger.use_liger_kernel and not liger.torch_compile
    # Liger and torch.compile do not combine (measured): refused before any model is loaded.
    with pytest.raises(ConfigError, match="sft.use_liger_kernel and sft.torch_compile"):
        sft.resolve_runtime(load_config(profile="qwen3-1.7b", overrides=[*SPEED, "sft.use_liger_kernel=true"]).sft, device="cuda")
    assert sft.training_dtype(cfg, runtime) == "bfloat16"
    assert sft.training_dtype(load_config(profile="qwen3-1.7b"), sft.resolve_runtime(
        load_config(profile="qwen3-1.7b", overrides=["sft.use_liger_kernel=false"]).sft, device="cuda")) == "float32"
    # LoRA keeps model.dtype: bf16_weights does not apply, and the runtime says so.
    lora = sft.resolve_runtime(load_config(profile="qwen3-1.7b", overrides=[*SPEED, "sft.finetune=lora"]).sft, device="cuda")
    assert not lora.bf16_weights and any("bf16_weights" in n for n in lora.notes)
    # On CPU every one of them is off (CPU behaviour unchanged).
    cpu = sft.resolve_runtime(cfg.sft, device="cpu")
    assert not (cpu.use_liger_kernel or cpu.torch_compile or cpu.bf16_weights) and "torch_compile" in cpu.notes[0]

    # The SFTConfig carries liger; the trainer compiles the decoder layers and steps AdamW on fp32 masters.
    from transformers import Qwen3Config, Qwen3ForCausalLM

    args = sft.build_sft_args(cfg, tmp_path, dataclasses.replace(liger, device="cpu", bf16=False), progress=False)
    assert args.use_liger_kernel and args.liger_kernel_config is None
    model = Qwen3ForCausalLM(Qwen3Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=8)).to(torch.bfloat16)
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<|endoftext|>": 0, "<|im_end|>": 1, "a": 2},
                                                                             unk_token="a")),
                                  pad_token="<|endoftext|>", eos_token="<|im_end|>")
    from reasoning_ner.records import NERRecord

    rec = NERRecord(id="r", text="a a", entities=[], schema=["person"], dataset="conll2003", split="train", cot="a")
    cpu_args = sft.build_sft_args(cfg, tmp_path, dataclasses.replace(runtime, device="cpu", bf16=False), progress=False)
    trainer = sft.build_trainer(cfg, [rec], model, tok, tmp_path, runtime=runtime, args=cpu_args, progress=False)
    assert trainer.compiled_layers == 2 and all(layer._compiled_call_impl is not None for layer in model.model.layers)
    opt = trainer.create_optimizer()
    assert isinstance(opt, sft.FP32MasterAdamW) and all(m.dtype == torch.float32 for g in opt.param_groups for m in g["params"])
    assert opt.param_groups[0]["lr"] == cfg.sft.learning_rate


def test_fp32_master_adamw_matches_fp32_adamw() -> None:
    from reasoning_ner.training.sft import FP32MasterAdamW

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8, 8).bfloat16())
    ref = torch.nn.Parameter(w.detach().float().clone())
    opt = FP32MasterAdamW([{"params": [w], "weight_decay": 0.1}], lr=1e-4)
    ref_opt = torch.optim.AdamW([{"params": [ref], "weight_decay": 0.1}], lr=1e-4)
    for _ in range(4):
        g = torch.randn(8, 8).bfloat16()
        w.grad, ref.grad = g, g.float()
        opt.step(), ref_opt.step()
        opt.zero_grad(), ref_opt.zero_grad()
    master = opt.param_groups[0]["params"][0]
    assert torch.equal(master, ref.detach())  # no update lost to bf16 rounding
    assert torch.equal(w.detach(), ref.detach().bfloat16()) and w.grad is None
    again = FP32MasterAdamW([torch.nn.Parameter(torch.zeros(8, 8).bfloat16())], lr=1e-4)
    again.load_state_dict(opt.state_dict())  # a resumed run continues from the fp32 values
    assert torch.equal(again.param_groups[0]["params"][0], ref.detach())


def test_missing_liger_fails_early_naming_option_and_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from reasoning_ner.records import NERRecord, write_jsonl
    from reasoning_ner.training import runtime, sft

    real = runtime._installed
    monkeypatch.setattr(runtime, "_installed", lambda module: False if module == "liger_kernel" else real(module))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = load_config(profile="qwen3-1.7b", overrides=["sft.use_liger_kernel=true"])
    with pytest.raises(ConfigError, match=r"sft\.use_liger_kernel.*liger-kernel"):
        sft.resolve_runtime(cfg.sft)
    # train_sft stops there, before any model is loaded (the base model named here does not exist).
    data = tmp_path / "cot.jsonl"
    write_jsonl(data, [NERRecord(id="r", text="Ann", entities=[], schema=["person"], dataset="conll2003",
                                 split="train", cot="none")])
    with pytest.raises(ConfigError, match="liger-kernel"):
        sft.train_sft(cfg, [data], tmp_path / "out", base_model=str(tmp_path / "no-such-model"), progress=False)
    # Off, nothing is needed.
    assert not sft.resolve_runtime(load_config(profile="qwen3-1.7b", overrides=["sft.use_liger_kernel=false"]).sft,
                                   device="cpu").use_liger_kernel


def test_grpo_generation_settings() -> None:
    from transformers import GenerationConfig

    from reasoning_ner.training.grpo import apply_generation_settings, grpo_config_kwargs

    with pytest.raises(ConfigError, match="generation_cache=static"):
        load_config(profile="qwen3-1.7b", overrides=["grpo.compile_generation=true"])
    cfg = load_config(profile="qwen3-1.7b", overrides=["grpo.generation_cache=static", "grpo.compile_generation=true",
                                                       "grpo.use_vllm=false"])  # the HF path (no vLLM)
    gpu = grpo_config_kwargs(cfg, "/tmp/unused", [1.0], device="cuda")
    assert gpu["cache_implementation"] == "static"
    assert gpu["generation_kwargs"] == {"max_cache_len": cfg.grpo.max_prompt_length + cfg.grpo.max_completion_length}
    assert "cache_implementation" not in grpo_config_kwargs(cfg, "/tmp/unused", [1.0], device="cpu")
    trainer = types.SimpleNamespace(generation_config=GenerationConfig(disable_compile=True))
    assert not apply_generation_settings(trainer, cfg, "cpu") and trainer.generation_config.disable_compile
    assert apply_generation_settings(trainer, cfg, "cuda") and not trainer.generation_config.disable_compile
    plain = load_config(profile="qwen3-1.7b")
    assert plain.grpo.generation_cache == "dynamic" and not plain.grpo.compile_generation
    assert "cache_implementation" not in grpo_config_kwargs(plain, "/tmp/unused", [1.0], device="cuda")
