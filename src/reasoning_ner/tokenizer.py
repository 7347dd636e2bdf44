"""The tokenizer side of the base model: special tokens, the ChatML template and a byte-level BPE
tokenizer trained on a built-in corpus plus the prepared training data.

Split from :mod:`reasoning_ner.modeling` (which re-exports every public name here) because the
tokenizer and its corpora are independent of building and loading models. ``tokenizers`` and
``transformers`` are imported inside :func:`train_tokenizer`, so importing this module is cheap.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from reasoning_ner.config import ZERO_SHOT_DATASETS, PromptConfig
from reasoning_ner.prompt import chat_example, chatml, render_answer, render_prompt
from reasoning_ner.records import read_jsonl

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "CHATML_TEMPLATE",
    "EOS_TOKEN",
    "IM_START_TOKEN",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "THINK_TOKENS",
    "builtin_corpus",
    "corpus_from_prepared",
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


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

_ADDED_TOKEN_PATTERN = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS + THINK_TOKENS))


def _without_added_tokens(texts: Iterable[str]) -> Iterator[str]:
    # The added tokens get their own ids; if BPE also saw them as text it would spend merges
    # (and vocabulary rows) on pieces such as "<|im" that can never be produced.
    for text in texts:
        yield _ADDED_TOKEN_PATTERN.sub("\n", text)


_ANSWER_ITEM_OPENERS = ('["', '", "')
#: GPT-2's pre-tokenization pattern (what ByteLevel(use_regex=True) applies), with the answer list openers first.
_GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_ANSWERS_SPLIT = r"""(?:\["|", ")(?= )|""" + _GPT2_SPLIT


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
    the cost of ~9% longer CoNLL-2003 examples. ``"answers"`` gets the same ids without longer
    examples: the normalizer inserts a space after ``["`` and ``", "`` (the openers of the items of a
    one-line JSON list), so ``["German"]`` is encoded like `` German`` in a sentence, and the decoder
    removes exactly that space again (``decode(encode(x)) == x`` still holds; incremental decoders
    need a few tokens of context, as vLLM's keeps).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    reserved = len(SPECIAL_TOKENS) + len(THINK_TOKENS)
    if vocab_size < 256 + reserved:
        raise ValueError(f"vocab_size {vocab_size} is below the byte alphabet plus {reserved} added tokens")

    backend = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    if space_before_names == "isolated":
        name_space = pre_tokenizers.Split(Regex(r" (?=[\p{Lu}\p{N}])"), behavior="isolated")
        backend.pre_tokenizer = pre_tokenizers.Sequence([name_space, byte_level])
    elif space_before_names == "answers":
        backend.normalizer = normalizers.Sequence([normalizers.Replace(p, p + " ") for p in _ANSWER_ITEM_OPENERS])
        backend.decoder = decoders.Sequence([decoders.ByteLevel(), *(decoders.Replace(p + " ", p) for p in _ANSWER_ITEM_OPENERS)])
        # GPT-2's split, except that a list item's opener with its inserted space ahead ('["', '", "')
        # stays one piece: after the normalizer, a name in a list follows a token of its own, not the
        # ' "' that also opens the next key ("], "location") and that a small model then confuses.
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_ANSWERS_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    elif space_before_names == "merged":
        backend.pre_tokenizer = byte_level
    else:
        raise ValueError(f"space_before_names must be 'merged', 'isolated' or 'answers', not {space_before_names!r}")
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
