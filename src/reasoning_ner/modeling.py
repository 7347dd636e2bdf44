"""Tiny base model and model loading.

Two kinds of base model go through the same code:

* a **tiny** Qwen3/Qwen2-architecture model built here from a config, with a byte-level BPE
  tokenizer trained in seconds on a built-in corpus plus the prepared training data
  (:mod:`reasoning_ner.tokenizer`; no pretrained weights exist offline; see
  shared/reference/platform.md section 9), and
* any causal LM on the hub or on disk (e.g. ``Qwen/Qwen3-8B-Base``), loaded with the Auto classes.

Both end up as an ordinary Hugging Face directory, so training, evaluation and serving never
special-case the tiny model. torch and transformers are imported inside the functions that
need them, so ``import reasoning_ner.modeling`` stays cheap for the CLI and the tests. The
tokenizer names are re-exported here, so callers import the whole base-model API from one place.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasoning_ner.config import ModelConfig, PromptConfig, TinyModelConfig
from reasoning_ner.copy_circuit import install_copy_circuit
from reasoning_ner.tokenizer import (
    CHATML_TEMPLATE,
    EOS_TOKEN,
    IM_START_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    THINK_TOKENS,
    builtin_corpus,
    corpus_from_prepared,
    train_tokenizer,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "CHATML_TEMPLATE",
    "EOS_TOKEN",
    "IM_START_TOKEN",
    "ModelLoadError",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "THINK_TOKENS",
    "builtin_corpus",
    "build_tiny_model",
    "corpus_from_prepared",
    "count_parameters",
    "init_tiny",
    "load_model_and_tokenizer",
    "resolve_base_model",
    "train_tokenizer",
]

_DTYPES = ("auto", "float32", "bfloat16", "float16")
_GENERATION_MAX_NEW_TOKENS = 256


class ModelLoadError(ValueError):
    """A model or tokenizer could not be found or loaded; the message says how to fix it."""


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def build_tiny_model(tokenizer: PreTrainedTokenizerBase, cfg: TinyModelConfig) -> PreTrainedModel:
    """A randomly initialised fp32 Qwen3 (or Qwen2) causal LM sized by ``cfg``.

    Same tokenizer and seed give bit-identical weights; the global torch RNG is left as it was.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    if cfg.hidden_size % cfg.num_attention_heads and cfg.head_dim is None:
        raise ValueError(
            f"hidden_size {cfg.hidden_size} is not divisible by num_attention_heads {cfg.num_attention_heads}; "
            "set model.tiny.head_dim"
        )
    if cfg.num_attention_heads % cfg.num_key_value_heads:
        raise ValueError(
            f"num_attention_heads {cfg.num_attention_heads} must be a multiple of "
            f"num_key_value_heads {cfg.num_key_value_heads}"
        )
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim or cfg.hidden_size // cfg.num_attention_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_word_embeddings,
        # Qwen convention: <|endoftext|> doubles as bos and pad; generation stops at <|im_end|>.
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        dtype="float32",
    )
    if cfg.architecture == "qwen2":
        config, model_cls = Qwen2Config(**settings), Qwen2ForCausalLM
    else:
        config, model_cls = Qwen3Config(**settings), Qwen3ForCausalLM
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = model_cls(config).to(torch.float32)
    if cfg.copy_circuit:
        install_copy_circuit(model, cfg.seed)
    model.generation_config = GenerationConfig(
        do_sample=False,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=pad_id,
        max_new_tokens=_GENERATION_MAX_NEW_TOKENS,
    )
    model.eval()
    return model


def count_parameters(model: Any) -> int:
    """Distinct parameters (tied input/output embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def _model_card(cfg: TinyModelConfig, parameters: int, vocab_size: int, corpus_texts: int, prepared_texts: int) -> str:
    embedding = vocab_size * cfg.hidden_size
    head_dim = cfg.head_dim or cfg.hidden_size // cfg.num_attention_heads
    model_cls = "Qwen2ForCausalLM" if cfg.architecture == "qwen2" else "Qwen3ForCausalLM"
    name_space = {
        "isolated": "a token of its own",
        "answers": "merged into the word, GPT-2 style, also inside JSON answer lists (a space the decoder removes)",
    }.get(cfg.space_before_names, "merged into the word, GPT-2 style")
    before_training = (
        "pieces of its input repeated (four attention heads are set by hand to copy, the other residual branches "
        "start at zero, the remaining weights are random; reasoning_ner.copy_circuit)"
        if cfg.copy_circuit else "random tokens"
    )
    return f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: text-generation
tags:
- reasoning-ner
- named-entity-recognition
- tiny
- random-init
- {cfg.architecture}
---

# reasoning-ner tiny base model

A **randomly initialised** tiny causal language model, built locally by
`rner model init-tiny` as the base model of the `tiny-cpu` profile. No pretrained weights
were downloaded or used. **It knows nothing until it is trained**: before supervised
fine-tuning its output is {before_training}.

It exists so that the whole pipeline (SFT, GRPO, evaluation, serving) runs end to end on a
2-core CPU in minutes, with exactly the code used for real base models such as
`Qwen/Qwen3-8B-Base`.

## Architecture

| setting | value |
|---|---|
| class | `{model_cls}` |
| parameters | {parameters:,} ({embedding:,} in the {'tied ' if cfg.tie_word_embeddings else ''}embedding) |
| hidden size | {cfg.hidden_size} |
| intermediate size | {cfg.intermediate_size} |
| layers | {cfg.num_hidden_layers} |
| attention heads / KV heads | {cfg.num_attention_heads} / {cfg.num_key_value_heads} |
| head dim | {head_dim} |
| max positions | {cfg.max_position_embeddings} |
| RoPE theta | {cfg.rope_theta:g} |
| tied embeddings | {cfg.tie_word_embeddings} |
| dtype | float32 |
| init seed | {cfg.seed} |
| copy circuit (hand-set induction head, `reasoning_ner.copy_circuit`) | {cfg.copy_circuit} |

## Tokenizer

Byte-level BPE trained with `tokenizers` on {corpus_texts:,} texts ({prepared_texts:,} from the
prepared training splits, the rest a built-in corpus and extra texts); vocabulary {vocab_size:,}
tokens (requested {cfg.vocab_size:,}); the space before a capitalized word or a number is
{name_space}. Special tokens `<|endoftext|>` (pad), `<|im_start|>`, `<|im_end|>` (end of
turn, eos); `<think>` and `</think>` are single ordinary tokens. The chat template is Qwen ChatML
without a default system prompt. Padding is on the left for batched generation.

## Generation defaults

Greedy decoding, stop at `<|im_end|>`, at most {_GENERATION_MAX_NEW_TOKENS} new tokens.
"""


def _install_atomically(tmp_dir: Path, out_dir: Path) -> None:
    # A directory cannot be replaced in one step; the old one is moved aside first, so at every
    # moment out_dir is either the complete old model, absent, or the complete new model.
    backup = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        os.replace(out_dir, backup)
    os.replace(tmp_dir, out_dir)
    shutil.rmtree(backup, ignore_errors=True)


def init_tiny(
    out_dir: Path | str,
    cfg: TinyModelConfig,
    corpus: list[str] | None = None,
    data_dir: Path | str | None = None,
    prompt_cfg: PromptConfig | None = None,
) -> dict[str, Any]:
    """Train the tokenizer, build the tiny model and save both as a Hugging Face directory.

    The tokenizer corpus is :func:`builtin_corpus` + :func:`corpus_from_prepared` (when
    ``data_dir`` is given; ``cfg.tokenizer_datasets`` limits it) + ``corpus``. Everything is
    written to a temporary sibling directory that replaces ``out_dir`` only when complete.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    prepared: list[str] = []
    if data_dir:
        prepared = corpus_from_prepared(data_dir, cfg.tokenizer_corpus_limit, prompt_cfg, datasets=cfg.tokenizer_datasets)
    texts = builtin_corpus() + prepared + list(corpus or [])
    tokenizer = train_tokenizer(texts, cfg.vocab_size, cfg.max_position_embeddings, cfg.space_before_names)
    model = build_tiny_model(tokenizer, cfg)
    parameters = count_parameters(model)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    try:
        model.save_pretrained(tmp_dir)  # model.safetensors, config.json, generation_config.json
        # save_jinja_files=False keeps the chat template inside tokenizer_config.json.
        tokenizer.save_pretrained(tmp_dir, save_jinja_files=False)
        card = _model_card(cfg, parameters, len(tokenizer), len(texts), len(prepared))
        (tmp_dir / "README.md").write_text(card, encoding="utf-8")
        for path in tmp_dir.iterdir():  # safetensors writes 0600; servers may run as another user
            path.chmod(0o644)
        _install_atomically(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return {
        "out_dir": str(out_dir),
        "parameters": parameters,
        "vocab_size": len(tokenizer),
        "corpus_texts": len(texts),
        "seconds": round(time.perf_counter() - started, 3),
    }


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    try:  # huggingface_hub reads the variable once, at import time
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - always installed with transformers
        return False


def _is_hub_name(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve_base_model(model_cfg: ModelConfig) -> str:
    """The path or hub name to load: ``tiny_dir`` for ``base_model: tiny``, else ``base_model``."""
    if model_cfg.base_model != "tiny":
        return model_cfg.base_model
    tiny_dir = Path(model_cfg.tiny_dir)
    if not (tiny_dir / "config.json").is_file():
        raise ModelLoadError(
            f"base_model is 'tiny' but no tiny model is built at {tiny_dir}; "
            f"run `rner model init-tiny --out {tiny_dir}` first"
        )
    return str(tiny_dir)


def load_model_and_tokenizer(
    name_or_path: str,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    device: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local directory or the hub, ready to generate.

    The tokenizer always has a pad token (eos if it had none), left padding and a chat template
    (:data:`CHATML_TEMPLATE` if it had none).
    """
    if dtype not in _DTYPES:
        raise ModelLoadError(f"dtype {dtype!r} is not one of {list(_DTYPES)}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    is_local = Path(name_or_path).expanduser().exists()
    if not is_local and not _is_hub_name(name_or_path):
        raise ModelLoadError(
            f"model {name_or_path!r} is neither an existing directory nor a hub name like 'Qwen/Qwen3-8B-Base'"
        )
    if is_local and Path(name_or_path).expanduser().is_dir():
        folder = Path(name_or_path).expanduser()
        missing = [f for f in ("config.json", "tokenizer_config.json") if not (folder / f).is_file()]
        if missing:  # say so before transformers guesses a tokenizer backend and blames sentencepiece
            raise ModelLoadError(f"{folder} is not a Hugging Face model folder: no {' and no '.join(missing)} "
                                 "(a trained model folder holds config.json, *.safetensors and the tokenizer files)")
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        if is_local:
            raise ModelLoadError(f"could not load the model at {name_or_path}: {exc}") from exc
        if _hub_offline():
            raise ModelLoadError(
                f"model {name_or_path!r} is not a local directory and is not in the Hugging Face cache, "
                "and HF_HUB_OFFLINE is set, so it cannot be downloaded. Fix: download it on a machine "
                f"with network access (`hf download {name_or_path}`) into this cache "
                "(HF_HOME), pass a local directory instead, or unset HF_HUB_OFFLINE."
            ) from exc
        raise ModelLoadError(
            f"could not load model {name_or_path!r} from the Hugging Face hub: {exc}. "
            "Check the name, the network and, for gated models, HF_TOKEN."
        ) from exc

    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"tokenizer of {name_or_path!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # batched generation; see train_tokenizer
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if device is not None:
        model.to(device)
    model.eval()
    return model, tokenizer
