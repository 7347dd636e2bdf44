"""Per-row decoding control for the in-process backend: a grammar for the answer after the reasoning
block (OpenAI ``response_format``), a thinking budget with a forced ``</think>``, seeded sampling and
logprobs, all inside ONE batched ``generate`` call (rows without any of it are left alone).

The grammar engine is **llguidance** (guidance-ai; Rust, one ~3 MB wheel with no dependencies, one of
vLLM's structured-output backends; the pin, 1.7.x, is the range vLLM 0.30 requires, so the train-gpu image
resolves). It compiles a JSON schema lazily (no per-schema index over the vocabulary, unlike outlines-core,
which also cannot express "any JSON object") and computes a token mask per step in microseconds
(lm-format-enforcer walks the vocabulary in Python); xgrammar pulls in triton (~290 MB) and apache-tvm-ffi,
too much for a CPU serving image.

A constrained row goes through phases: ``start`` (its first token: ``<think>`` or the answer's first
token), ``think`` (free text, but no end of turn: an answer is owed), ``forcing`` (``\\n</think>`` token by
token, when the thinking budget is spent or only the answer's reserve is left) and ``answer`` (the grammar's
mask). Near the end of the row's token limit the answer is **closed**: once the shortest way to a complete
answer (simulated on a copy of the matcher) plus :data:`CLOSE_MARGIN` no longer fits, every token is chosen
to finish it (close the string, the brackets, the required keys), so even an untrained model ends with a
complete, schema-valid answer instead of a truncated one. Only a limit too small for any complete answer
ends with ``finish_reason: length``.
"""

from __future__ import annotations

import json
import random
from typing import Any

from ..prompt import THINK_CLOSE, THINK_OPEN
from .errors import InvalidRequest

#: JSON layout of constrained answers: json.dumps's separators (the training answers' layout) and no free
#: whitespace, so a model cannot spend its tokens on blank space.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
#: Tokens one free token may add to the shortest completion (``[{"`` opens three levels at once).
CLOSE_MARGIN = 8
#: Only the last tokens of a row simulate the closing (it costs a few masks per step).
CLOSE_WINDOW = 64


def response_format_grammar(fmt: Any) -> str | None:
    """The llguidance grammar for an OpenAI ``response_format`` (None for text). The answer may start
    with one newline (``</think>\\n{...}`` is the training layout); InvalidRequest names a bad schema."""
    import llguidance

    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        schema, param = {"type": "object"}, "response_format"
    else:
        schema, param = fmt.json_schema.schema_ or {}, "response_format.json_schema.schema"
    try:
        grammar = f'start: "\\n"? answer\nanswer: %json {json.dumps({**schema, "x-guidance": JSON_OPTIONS})}'
        error = llguidance.LLMatcher.validate_grammar(grammar)
    except BaseException as exc:  # noqa: BLE001 - also a Rust panic (pyo3's PanicException is a BaseException)
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        error = str(exc) or type(exc).__name__
    if error:
        raise InvalidRequest(f"{param}: not a JSON schema this server can enforce: {error.splitlines()[0][:300]}", param=param)
    return grammar


class Vocab:
    """What the controls need of one tokenizer (built once per backend: the llguidance tokenizer ~1 s on a
    150k vocabulary)."""

    def __init__(self, tokenizer: Any, n_vocab: int, eos_ids: list[int]):
        import llguidance
        from tokenizers import Tokenizer

        self.n_vocab = n_vocab
        self.eos = set(eos_ids)
        # What llguidance.hf.from_tokenizer does, on a copy without the normalizer: the grammar runs on the
        # tokens' bytes, and llguidance tokenizes the bytes it forces; a normalizer that inserts text (the
        # tiny tokenizer's "answers" mode) would give it tokens whose bytes differ from what it asked for.
        # Under the strict JSON layout every space that the decoder later drops is inside a string.
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.normalizer = None
        backend.no_padding()
        backend.no_truncation()
        self.lltok = llguidance.LLTokenizer(backend.to_str(), n_vocab=n_vocab, eos_token=sorted(eos_ids))

        def single(text: str) -> int | None:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            return ids[0] if len(ids) == 1 else None

        # The think tags must be single tokens (the project's and Qwen's tokenizers): the phases switch on ids.
        self.think_open, self.think_close = single(THINK_OPEN), single(THINK_CLOSE)
        self.close_ids = tokenizer("\n" + THINK_CLOSE, add_special_tokens=False)["input_ids"]
        # Closing an answer: inside a string end it; outside prefer what ends a level, then the shortest values.
        self.in_string = [t for t in (single('"'),) if t is not None]
        self.outside = [t for t in map(single, ["}", "]", ":", ",", "0", '"', "[", "{", "n"]) if t is not None]

    @property
    def thinks(self) -> bool:
        return self.think_open is not None and self.think_close is not None

    def token_bytes(self, token: int) -> bytes:
        return self.lltok.decode_bytes([token])


def _allowed(mask: bytes, token: int) -> bool:
    return token >> 3 < len(mask) and bool(mask[token >> 3] >> (token & 7) & 1)


def _scan(state: tuple[bool, bool], data: bytes) -> tuple[bool, bool]:
    """(inside a JSON string, after a backslash) after ``data``."""
    in_str, esc = state
    for b in data:
        if in_str:
            if esc:
                esc = False
            elif b == 0x5C:
                esc = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
    return in_str, esc


class RowControl:
    """One row's decoding control; :class:`Controls` calls :meth:`process` before each token and the
    backend calls :meth:`advance` with the token chosen."""

    def __init__(self, vocab: Vocab, *, max_new: int, grammar: str | None = None, think_budget: int | None = None,
                 answer_reserve: int = 0, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                 logprobs: int | None = None):
        self.vocab, self.max_new = vocab, max_new
        self.think_budget = think_budget if vocab.thinks else None
        self.temperature, self.top_p = temperature, top_p
        self.seed = seed if seed is not None else random.getrandbits(63)
        self.generator = None  # a torch.Generator on the logits' device, made at the first step
        self.logprobs = logprobs
        self.entries: list[tuple[int, float, list[tuple[int, float]]]] = []
        self._lp = None  # the last step's log-probabilities, until its token is known
        self.n = 0  # tokens consumed
        self.forced: list[int] = []
        self.closing = False
        self.scan = (False, False)
        self.matcher = None
        if grammar is not None:
            import llguidance

            self.matcher = llguidance.LLMatcher(vocab.lltok, grammar, log_level=0)
            # Thinking stops while the answer's reserve (at least its shortest completion + margin) is left.
            answer_reserve = max(answer_reserve, self._closing_length(max_new) + CLOSE_MARGIN)
        self.reserve = answer_reserve
        thinking = vocab.thinks and (self.matcher is not None or self.think_budget is not None)
        self.phase = "start" if thinking else "answer"

    # -- the mask before each token ---------------------------------------------------------------

    def process(self, scores) -> None:
        """Constrain (and, when sampling, sample) this row's next token in place on its logits row."""
        import torch

        if self.logprobs is not None:
            self._lp = torch.log_softmax(scores.float(), dim=-1)  # the model's own distribution (vLLM's raw logprobs)
        token = self._forced_token()
        if token is None:
            allowed = self._allowed_mask(scores.shape[-1])
            if allowed is not None:
                scores.masked_fill_(~allowed.to(scores.device), float("-inf"))
            if self.temperature > 0:
                token = self._sample(scores)
        if token is not None:
            scores.fill_(float("-inf"))
            scores[token] = 0.0

    def _forced_token(self) -> int | None:
        v, remaining = self.vocab, self.max_new - self.n
        if self.phase in ("start", "think"):
            spent = self.think_budget is not None and self.n >= self.think_budget
            squeezed = self.matcher is not None and remaining <= self.reserve + len(v.close_ids)
            if self.phase == "start" and squeezed and self.matcher is not None:
                self.phase = "answer"  # no room to think: answer at once
            elif spent or (squeezed and self.phase == "think"):
                self.forced = ([v.think_open] if self.phase == "start" else []) + list(v.close_ids)
                self.phase = "forcing"
        if self.phase == "forcing":
            return self.forced[0]
        if self.phase == "answer" and self.matcher is not None and not self.matcher.is_stopped():
            if not self.closing and remaining <= CLOSE_WINDOW:
                self.closing = self._closing_length(remaining) + CLOSE_MARGIN >= remaining
            if self.closing:
                return self._closer(self.matcher, self.scan)
        return None

    def _allowed_mask(self, width: int):
        import numpy as np
        import torch

        if self.matcher is None or self.phase not in ("start", "think", "answer"):
            return None
        if self.phase == "think":  # free thinking, but the turn cannot end before the answer
            allowed = torch.ones(width, dtype=torch.bool)
            allowed[sorted(self.vocab.eos)] = False
            return allowed
        bits = np.unpackbits(np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        allowed = torch.zeros(width, dtype=torch.bool)
        n = min(width, len(bits))
        allowed[:n] = torch.from_numpy(bits[:n].astype(bool))
        if self.phase == "start":
            allowed[self.vocab.think_open] = True  # think first, or answer at once
        return allowed

    def _sample(self, scores) -> int:
        import torch

        if self.generator is None:
            self.generator = torch.Generator(device=scores.device).manual_seed(self.seed)
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            drop = sorted_p.cumsum(0) - sorted_p >= self.top_p  # keep the smallest head reaching top_p
            probs[order[drop]] = 0.0
        return int(torch.multinomial(probs, 1, generator=self.generator).item())

    # -- closing the answer ------------------------------------------------------------------------

    def _closer(self, matcher: Any, scan: tuple[bool, bool]) -> int | None:
        """The token that gets ``matcher`` to a complete answer soonest (end of turn once it is complete)."""
        v = self.vocab
        if matcher.is_accepting():
            return min(v.eos)
        mask = matcher.compute_bitmask()
        forced = matcher.compute_ff_bytes()
        if forced:  # required keys, separators: what the grammar forces anyway
            ids = v.lltok.tokenize_bytes(forced)
            if ids and _allowed(mask, ids[0]):
                return ids[0]
        for t in (v.in_string if scan[0] else v.outside):
            if _allowed(mask, t):
                return t
        import numpy as np  # else the lowest allowed token (a string's minLength, a key the grammar narrows)

        bits = np.unpackbits(np.frombuffer(mask, dtype=np.uint8), bitorder="little")[:v.n_vocab]
        bits[[t for t in v.eos if t < len(bits)]] = 0
        allowed = np.flatnonzero(bits)
        return int(allowed[0]) if len(allowed) else None

    def _closing_length(self, limit: int) -> int:
        """Tokens (the end of turn included) the closer needs from here; ``limit + 1`` when more."""
        m, scan = self.matcher.deep_copy(), self.scan
        for n in range(1, limit + 1):
            t = self._closer(m, scan)
            if t in self.vocab.eos:
                return n
            if t is None or not m.consume_token(t):
                break
            scan = _scan(scan, self.vocab.token_bytes(t))
        return limit + 1

    # -- after each token --------------------------------------------------------------------------

    def advance(self, token: int) -> None:
        v = self.vocab
        self.n += 1
        if self._lp is not None:
            lp, self._lp = self._lp, None
            top = lp.topk(self.logprobs) if self.logprobs else None
            self.entries.append((token, float(lp[token]), [] if top is None else
                                 list(zip(top.indices.tolist(), top.values.tolist()))))
        if self.phase == "forcing":
            self.forced.pop(0)
            if not self.forced:
                self.phase = "answer"
        elif self.phase == "start":
            self.phase = "think" if token == v.think_open else "answer"
            if self.phase == "answer":
                self._consume(token)
        elif self.phase == "think":
            if token == v.think_close:
                self.phase = "answer"
        elif self.matcher is not None:
            self._consume(token)

    def _consume(self, token: int) -> None:
        if self.matcher is not None and token not in self.vocab.eos:
            self.matcher.consume_token(token)
            self.scan = _scan(self.scan, self.vocab.token_bytes(token))

    def logprob_entries(self, upto: int) -> list[dict[str, Any]]:
        """OpenAI's ``logprobs.content`` for the first ``upto`` tokens."""
        def item(token: int, logprob: float) -> dict[str, Any]:
            data = self.vocab.token_bytes(token)
            return {"token": data.decode("utf-8", errors="replace"), "logprob": max(logprob, -9999.0), "bytes": list(data)}

        return [{**item(t, lp), "top_logprobs": [item(a, b) for a, b in top]} for t, lp, top in self.entries[:upto]]


class Controls:
    """The transformers logits processor of one batch: each live row with a control processes its logits
    row (rows that finished or need nothing are skipped)."""

    def __init__(self, rows: list[Any]):
        self.rows = rows  # objects with .done and .control

    def __call__(self, input_ids, scores):
        for r, row in enumerate(self.rows):
            if row.control is not None and not row.done:
                row.control.process(scores[r])
        return scores
