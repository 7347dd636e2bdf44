"""Tokenizer, tiny base model and model loading.

Two kinds of base model go through the same code:

* a **tiny** Qwen3/Qwen2-architecture model built here from a config, with a byte-level BPE
  tokenizer trained in seconds on a built-in corpus plus the prepared training data (no
  pretrained weights exist offline; see shared/reference/platform.md section 9), and
* any causal LM on the hub or on disk (e.g. ``Qwen/Qwen3-8B-Base``), loaded with the Auto classes.

Both end up as an ordinary Hugging Face directory, so training, evaluation and serving never
special-case the tiny model. torch and transformers are imported inside the functions that
need them, so ``import reasoning_ner.modeling`` stays cheap for the CLI and the tests.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasoning_ner.config import ZERO_SHOT_DATASETS, ModelConfig, PromptConfig, TinyModelConfig
from reasoning_ner.prompt import chat_example, chatml, render_answer, render_prompt
from reasoning_ner.records import read_jsonl

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

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

PAD_TOKEN = "<|endoftext|>"
IM_START_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
#: Special tokens, in id order 0, 1, 2 (the same strings Qwen uses, so prompts are portable).
SPECIAL_TOKENS = [PAD_TOKEN, IM_START_TOKEN, EOS_TOKEN]
#: Added as ordinary (non-special) tokens: `decode(..., skip_special_tokens=True)` must keep the
#: reasoning block, because the answer parser looks for `</think>`.
THINK_TOKENS = ["<think>", "</think>"]

#: Qwen ChatML without a default system prompt. The same string is used for the tiny model and
#: for hub tokenizers that come without a template.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

_DTYPES = ("auto", "float32", "bfloat16", "float16")
_GENERATION_MAX_NEW_TOKENS = 256


class ModelLoadError(ValueError):
    """A model or tokenizer could not be found or loaded; the message says how to fix it."""


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

_ADDED_TOKEN_PATTERN = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS + THINK_TOKENS))


def _without_added_tokens(texts: Iterable[str]) -> Iterator[str]:
    # The added tokens get their own ids; if BPE also saw them as text it would spend merges
    # (and vocabulary rows) on pieces such as "<|im" that can never be produced.
    for text in texts:
        yield _ADDED_TOKEN_PATTERN.sub("\n", text)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, model_max_length: int = 1024, space_before_names: str = "merged"
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer and wrap it as a transformers fast tokenizer.

    ``vocab_size`` counts everything (BPE pieces, the 256-byte alphabet, special and think
    tokens); a small corpus can yield fewer tokens than asked for. Byte-level pre-tokenization
    plus the byte-level decoder make ``decode(encode(x)) == x`` for any unicode string: no
    normalizer, no unknown token, no prefix space and no clean-up of spaces.

    Padding is on the **left**: a decoder-only model generates after the last position, so in a
    batch every prompt must end at the same column; right padding would put pad tokens between
    a short prompt and its continuation. Training code is unaffected (pad positions are masked
    and RoPE only sees relative offsets).

    ``space_before_names="isolated"`` splits the space before a capitalized word or a number
    off as its own token. With the default, ``German`` is ``ĠGerman`` inside a sentence but
    ``German`` inside the JSON answer (after a quote), so a model must learn that mapping per
    name; isolated, the ids are the same everywhere and a name is copied token for token, at
    the cost of ~9% longer CoNLL-2003 examples.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    reserved = len(SPECIAL_TOKENS) + len(THINK_TOKENS)
    if vocab_size < 256 + reserved:
        raise ValueError(f"vocab_size {vocab_size} is below the byte alphabet plus {reserved} added tokens")

    backend = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if space_before_names == "isolated":
        name_space = pre_tokenizers.Split(Regex(r" (?=[\p{Lu}\p{N}])"), behavior="isolated")
        backend.pre_tokenizer = pre_tokenizers.Sequence([name_space, byte_level])
    elif space_before_names == "merged":
        backend.pre_tokenizer = byte_level
    else:
        raise ValueError(f"space_before_names must be 'merged' or 'isolated', not {space_before_names!r}")
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        # The think tags are added after training, so leave room for them.
        vocab_size=vocab_size - len(THINK_TOKENS),
        special_tokens=SPECIAL_TOKENS,
        # Every byte gets a token even if the corpus never shows it: no input is unencodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        # A piece seen once is noise for a tokenizer that has to generalise to new text.
        min_frequency=2,
        show_progress=False,
    )
    backend.train_from_iterator(_without_added_tokens(texts), trainer=trainer)
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        bos_token=None,  # Qwen prepends nothing; the chat template carries all structure.
        unk_token=None,
        additional_special_tokens=[IM_START_TOKEN],
        model_max_length=model_max_length,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


# --------------------------------------------------------------------------------------------
# Tokenizer corpora
# --------------------------------------------------------------------------------------------

# Invented or generic names, written for this project: enough variety for BPE to learn
# capitalised words, multi-word names, digits and punctuation before any data is prepared.
_PEOPLE = [
    "Ada Lovelace", "Alan Turing", "Grace Hopper", "Marie Curie", "Nikola Tesla", "Rosa Parks",
    "Maria Santos", "John Smith", "Anna Petrova", "Kenji Watanabe", "Fatima Al-Sayed", "Liam O'Brien",
    "Chen Wei", "Olga Nowak", "Pedro Alvarez", "Sofia Rossi", "Ahmed Hassan", "Emily Clarke",
    "Jean-Luc Moreau", "Priya Raman", "Tomás Novák", "Zoë Müller", "Dr. Helen Brooks", "Mr. Omar Diallo",
]
_ORGANIZATIONS = [
    "United Nations", "Red Cross", "Northwind Traders", "Acme Corporation", "Blue River Bank",
    "City Council", "National Health Service", "Stanford University", "European Commission",
    "Green Valley Farms", "Orion Labs", "Harbor Press", "Atlas Airlines", "Summit Football Club",
    "Bureau of Statistics", "Riverside Hospital", "Maple Software", "World Chess Federation",
]
_LOCATIONS = [
    "London", "Paris", "New York", "Tokyo", "Cairo", "Lima", "Berlin", "São Paulo", "Nairobi",
    "Mumbai", "Sydney", "Toronto", "Mexico City", "Istanbul", "Oslo", "Madrid", "the Alps",
    "the Nile", "Lake Victoria", "Mount Kenya", "Germany", "Brazil", "Japan", "Canada", "Kenya",
]
_MISC = [
    ("product", "Model T"), ("product", "Walkman"), ("event", "World Cup"), ("event", "Olympic Games"),
    ("date", "March 3, 2021"), ("date", "1999"), ("language", "Python"), ("language", "Spanish"),
    ("disease", "influenza"), ("chemical", "sodium chloride"), ("algorithm", "gradient descent"),
    ("field", "machine learning"), ("award", "Nobel Prize"), ("genre", "jazz"), ("book", "War and Peace"),
]
_LABEL_SETS = [
    ["person", "organization", "location"],
    ["person", "location"],
    ["organization", "location", "date"],
    ["person", "organization", "location", "product", "event"],
    ["algorithm", "field", "language", "person", "organization"],
    ["disease", "chemical"],
    ["award", "book", "genre", "person"],
]
_SENTENCE_TEMPLATES = [
    "{p} met {q} in {l} last week.",
    "{p} works for {o}, which is based in {l}.",
    "On Monday, {o} announced that {p} will lead its office in {l}.",
    "According to {o}, about 1,250 people attended the meeting in {l}.",
    "{p} was born in {l} in 1987 and later joined {o}.",
    "The report by {o} (published 2019-04-12) mentions {l} twice.",
    "\"We are proud of the results,\" said {p} of {o}.",
    "{l} beat {m} 3-1 on Saturday; {p} scored twice.",
    "Shares of {o} rose 4.5% to $12.30 in {l} trading.",
    "{p}, a researcher at {o}, studies rivers near {l}.",
    "Flights from {l} to {m} were delayed by 2 hours.",
    "In a letter to {o}, {p} and {q} asked for 3 new schools in {l}.",
    "Temperatures in {l} reached 38°C; officials in {m} issued warnings.",
    "{p} won the final at the tournament in {l} after 5 sets.",
    "The museum in {l} opened a new wing, funded by {o}.",
    "Is {p} still the director of {o}? Nobody in {l} seems to know!",
]
_PLAIN_LINES = [
    "The quick brown fox jumps over the lazy dog.",
    "It rained for three days, and the river rose by 1.8 metres.",
    "Prices were listed as 10, 20, 50 and 100 units; totals: 180.",
    "She read the first chapter, then the second; by noon she had finished.",
    "No entities are mentioned in this sentence at all.",
    "Call 555-0100 between 9:00 and 17:30, Monday to Friday.",
    "The committee voted 7 to 2 in favour of the proposal.",
    "Version 2.4.1 fixes a bug (issue #42) reported last month.",
    "Water boils at 100 degrees Celsius at sea level.",
    "A list: apples, pears, plums - and, of course, cherries.",
    "Naïve café owners serve crème brûlée; Straße, façade, jalapeño.",
    "Numbers like 3.14159, 2.71828 and 1/3 appear in many proofs.",
]


def builtin_corpus() -> list[str]:
    """A few hundred deterministic lines so a tokenizer can be trained with no data at all.

    Covers ChatML scaffolding, the JSON answer shape, ``<think>`` chains, and English sentences
    with names, digits and punctuation. Written for this project (no dataset text).
    """
    rng = random.Random(0)
    texts: list[str] = list(_PLAIN_LINES)
    for i in range(240):
        template = _SENTENCE_TEMPLATES[i % len(_SENTENCE_TEMPLATES)]
        p, q = rng.sample(_PEOPLE, 2)
        o = rng.choice(_ORGANIZATIONS)
        l, m = rng.sample(_LOCATIONS, 2)
        sentence = template.format(p=p, q=q, o=o, l=l, m=m)
        texts.append(sentence)
        if i % 2:  # every other sentence also as a full extraction example
            continue
        schema = _LABEL_SETS[i % len(_LABEL_SETS)]
        found = {
            "person": [n for n in (p, q) if n in sentence],
            "organization": [o] if o in sentence else [],
            "location": [n for n in (l, m) if n in sentence],
        }
        grouped = {label: found[label] for label in schema if found.get(label)}
        spans = [s for label in schema for s in found.get(label, [])]
        think = (
            f"<think>\nThe text mentions {', '.join(spans)}.\n"
            + "".join(f"{s} is a {label}.\n" for label in schema for s in found.get(label, []))
            + "</think>\n"
            if spans
            else "<think>\nNo span matches the requested types.\n</think>\n"
        )
        prompt = render_prompt(sentence, schema, "paper" if i % 4 == 0 else "compact")
        answer = render_answer(grouped, indent=2 if i % 4 == 0 else None)
        texts.append(chatml(prompt, think + answer))
    for i, (label, name) in enumerate(_MISC):
        sentence = f"Many people in {_LOCATIONS[i]} talked about {name} this year."
        texts.append(sentence)
        prompt = render_prompt(sentence, [label, "location"], "compact")
        answer = render_answer({label: [name], "location": [_LOCATIONS[i]]}, indent=None)
        texts.append(chatml(prompt, f"<think>\n{name} is a {label}; {_LOCATIONS[i]} is a location.\n</think>\n{answer}"))
    texts.append(chatml(render_prompt("It was cold.", ["person"], "compact"), render_answer({}, None)))
    texts.append(f"{IM_START_TOKEN}system\nYou are a helpful assistant.{EOS_TOKEN}\n")
    return texts


def corpus_from_prepared(
    data_dir: Path | str | None,
    limit: int,
    prompt_cfg: PromptConfig | None = None,
    exclude_datasets: Iterable[str] = ZERO_SHOT_DATASETS,
    datasets: Iterable[str] | None = None,
) -> list[str]:
    """Tokenizer texts from ``<data_dir>/*/train.jsonl``: one per record, up to ``limit``.

    ``datasets``: only these (e.g. the profile's training datasets, so the vocabulary is spent
    on the text the model will train on); None reads every prepared dataset.

    Each text is the record's text followed by its rendered chat example (prompt + target), so
    the tokenizer learns the words and the scaffolding in the proportions training will see.
    Datasets are read round-robin in name order, so a limit never starves one of them and the
    result is deterministic. Zero-shot evaluation datasets are left out by default: their
    vocabulary must not shape the model before it is evaluated on them.
    """
    if data_dir is None or limit <= 0:
        return []
    root = Path(data_dir)
    if not root.is_dir():
        return []
    excluded = set(exclude_datasets)
    files = [f for f in sorted(root.glob("*/train.jsonl")) if f.parent.name not in excluded]
    if datasets is not None:
        wanted = set(datasets)
        files = [f for f in files if f.parent.name in wanted]
    cfg = prompt_cfg if prompt_cfg is not None else PromptConfig()
    streams = [read_jsonl(f) for f in files]
    texts: list[str] = []
    for round_ in itertools.zip_longest(*streams):
        for record in round_:
            if record is None or record.get("dataset") in excluded:
                continue
            texts.append(f"{record['text']}\n{chat_example(record, cfg)}")
            if len(texts) >= limit:
                return texts
    return texts


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
    name_space = "a token of its own" if cfg.space_before_names == "isolated" else "merged into the word, GPT-2 style"
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
fine-tuning its output is random tokens.

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
