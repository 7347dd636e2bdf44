"""A copy circuit built into a freshly initialised tiny model: the induction-head initialisation.

Extracting entities is mostly copying: every name in the answer is a span of the sentence. A
transformer copies with attention heads working together (an *induction head*, Olsson et al.
2022): a head in one layer writes each position's previous token into the residual stream; a head
in a later layer looks for the earlier position whose previous token equals the current token and
predicts the token found there, so ``... Hapoel Beit ... Hap`` continues with ``oel``. Trained
from scratch, the 4.7M-parameter tiny model did not form these heads within the 1000 SFT steps
that fit `make run` (its chain echoed ``Turkey says Turkey says`` for ``Turkey says Syria ...``,
and 229 of 310 predicted names were not in the sentence), so it guessed names from frequency.

:func:`install_copy_circuit` sets the weights of these heads by hand before training starts, on
an ordinary Qwen3 model (nothing about the architecture changes; the result is a standard Hugging
Face checkpoint that every server loads). Training then starts from a model that already copies
and learns *what* to copy. The layout of the residual stream (``hidden_size`` dimensions):

* ``[0, content)``: token embeddings (random, std 0.02, as transformers would initialise them);
* the next ``PREV_DIMS`` dimensions: a code of the token one position back, then ``PREV_DIMS / 2``
  dimensions: a shorter code of the token two positions back, both written by layer 0;
* the last dimension: a constant, which gives the layer-0 heads a query and key that do not
  depend on the token (Qwen3 has no attention biases).

Layer 0, query heads 0 and 1: constant queries and key placed in the fastest rotary frequencies so
that the score peaks one and two positions back; the shared value is a random orthonormal code of
the token. Layer 1 has two induction heads on separate key/value heads, their queries and keys in
the slowest rotary frequencies (rotation below ~0.3 rad across 100 positions) so that matching is
by content, not position. The one-token head matches the current token against each position's
previous token; the two-token head matches the current and the previous token against the two
before each position. A repeated word (``at``, ``,``, ``the``) splits the one-token head between
its occurrences, a loop waiting to happen; the two-token head settles it (on random sequences over
8 distinct tokens the untrained model continues the repeat with accuracy 0.55, against 0.23 with
the one-token head alone). After a tag opener (``[ EU``) only the one-token head matches, so it
writes twice as strongly. Both heads also carry a recency penalty (``RECENCY_BAND``): a token the
model has just written twice by mistake (``C C``) matches its own latest occurrence as well as the
sentence's, and without the penalty it copies ``C`` again for ever (``The The The ...``, most of
the unparsed answers of the first tiny model with the circuit). Each head's value/output pair
writes the attended token's embedding back, which the tied LM head reads as "predict this token".
Every other residual branch (the other heads' output projections and all MLP down projections)
starts at zero, as in zero-initialised residual branches (SkipInit, Fixup), so the circuit is not
drowned in noise; their input projections keep their random values, so they train from the first
step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# The shape rules live with the configuration, which checks them when it loads.
from .config.copy_circuit import FAST_PAIRS, PREV_DIMS, check_copy_circuit_shape

#: Gain of the QK-norm weights on the circuit's dimensions: sharper attention.
QK_GAIN = 2.5
#: How strongly the copied token outweighs the current one in the LM head at initialisation. The
#: two-token head writes half as much: with 12-dimensional codes it sometimes matches a wrong
#: position when the right one is not there (after a tag opener), and then the one-token head
#: should win; where the one-token head is torn between repeats, the two-token head decides.
COPY_GAIN = 8.0
#: Size of the previous-token channel relative to a token embedding.
PREV_GAIN = 0.5
EMBED_STD = 0.02
#: The induction heads' recency penalty: constant query/key parts in the rotary pairs whose
#: frequencies lie in this band (radians per position) score ``-cos(freq * distance)``, summed: about
#: 4 units below the average for a match up to ~15 positions back, near it beyond ~30. A chain copies
#: its sentence from the prompt, further back than that, so a token the model has just written (a
#: word it repeated by mistake) no longer attracts the copy and starts a loop (``The The The``).
RECENCY_BAND = (0.024, 0.11)
#: Size of those query/key parts in the projections, and their QK-norm gain (the penalty's strength).
RECENCY_SCALE = 0.5
RECENCY_GAIN = 2.0


def _orthonormal_rows(rows: int, cols: int, generator: Any) -> Any:
    import torch

    # In float64: LAPACK's float32 QR rounds differently with 1 and 2 threads (the test suite's
    # background trainer switches when the machine is busy), so one seed gave two initial models.
    q, _ = torch.linalg.qr(torch.randn(cols, rows, generator=generator).double())
    return q.T.float().contiguous()


def _offset_query(key: Any, inv_freq: Any, fast: list[int], half: int, distance: int) -> Any:
    """The constant query whose rotary dot product with the constant ``key`` peaks ``distance`` positions back."""
    import torch

    query = torch.zeros_like(key)
    for j in fast:
        angle = distance * float(inv_freq[j])
        query[j], query[j + half] = math.cos(angle), -math.sin(angle)
    return query


@dataclass(frozen=True)
class _Layout:
    """Where the circuit lives in a model of this shape (see the module docstring)."""

    d: int  # hidden size
    hd: int  # head dim
    content: int  # token embedding dimensions [0, content)
    prev1: slice  # code of the token one position back
    prev2: slice  # ... and two back (a shorter code)
    const: int  # the constant dimension
    unit: float  # residual units: an embedding's RMS; heads read RMS-1 inputs and write in these units
    inv_freq: Any  # rotary frequency of each pair
    group: int  # query heads per key/value head

    @property
    def half(self) -> int:
        return self.hd // 2


def install_copy_circuit(model: Any, seed: int) -> None:
    """Overwrite ``model``'s fresh weights in place with the induction-head initialisation."""
    import torch

    cfg = model.config
    d, hd = cfg.hidden_size, cfg.head_dim
    check_copy_circuit_shape(d, hd, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.tie_word_embeddings)
    if not hasattr(model.model.layers[0].self_attn, "q_norm"):
        raise ValueError("model.tiny.copy_circuit needs the qwen3 architecture (QK-norm gives the constant query)")
    gen = torch.Generator().manual_seed(seed)
    content = d - PREV_DIMS - PREV_DIMS // 2 - 1
    layout = _Layout(
        d=d, hd=hd, content=content, const=d - 1,
        prev1=slice(content, content + PREV_DIMS), prev2=slice(content + PREV_DIMS, d - 1),
        unit=EMBED_STD * math.sqrt(content / d),
        inv_freq=1.0 / (cfg.rope_parameters["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)),
        group=cfg.num_attention_heads // cfg.num_key_value_heads,
    )
    layers = model.model.layers
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        embed.zero_()
        embed[:, :content] = torch.randn(embed.shape[0], content, generator=gen) * EMBED_STD
        embed[:, layout.const] = 2 * EMBED_STD
        for layer in layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        code = _orthonormal_rows(PREV_DIMS, content, gen)
        _previous_token_heads(layers[0].self_attn, layout, code)
        _induction_heads(layers[1].self_attn, layout, code, cfg.num_key_value_heads, gen)


def _previous_token_heads(attn: Any, layout: _Layout, code: Any) -> None:
    """Layer 0: query heads 0 and 1 attend one and two positions back and write the ``code`` of the
    token there: in each fast rotary pair q = R(-distance) k for a constant key, so q.R(n-m)k peaks at
    n = m - distance."""
    import torch

    hd, half, const, group = layout.hd, layout.half, layout.const, layout.group
    fast = list(range(FAST_PAIRS))
    key = torch.zeros(hd)
    key[fast] = 1.0
    for head, distance, channel in ((0, 1, layout.prev1), (1, 2, layout.prev2)):
        rows, kv_rows = slice(head * hd, (head + 1) * hd), slice(head // group * hd, (head // group + 1) * hd)
        width = channel.stop - channel.start
        attn.q_proj.weight[rows] = 0.0
        attn.q_proj.weight[rows, const] = _offset_query(key, layout.inv_freq, fast, half, distance)
        attn.k_proj.weight[kv_rows] = 0.0
        attn.k_proj.weight[kv_rows, const] = key
        attn.v_proj.weight[kv_rows] = 0.0
        attn.v_proj.weight[kv_rows.start : kv_rows.start + PREV_DIMS, : layout.content] = code
        scale = layout.unit * PREV_GAIN * math.sqrt(layout.d / width)
        attn.o_proj.weight[channel, head * hd : head * hd + width] = torch.eye(width) * scale
    gain = torch.ones(hd)
    gain[fast + [j + half for j in fast]] = QK_GAIN
    attn.q_norm.weight.copy_(gain)
    attn.k_norm.weight.copy_(gain)


def _induction_heads(attn: Any, layout: _Layout, code: Any, kv_heads: int, gen: Any) -> None:
    """Layer 1, two induction heads on their own key/value heads. Head 0 matches one token (the
    current token's code against the previous-token code at each position); the first head of the
    next key/value group matches two (the current and previous tokens against the two before each
    position). Both copy the token they find; where both find the same one the copy is sure, and a
    repeated word (`at`, `,`, `the`) cannot send it back to its latest occurrence (a loop), while a
    copy right after a tag opener (`[ EU`) still has head 0. Both carry the recency penalty."""
    import torch

    hd, half, content, group = layout.hd, layout.half, layout.content, layout.group
    code_dims, prev1 = PREV_DIMS // 2, layout.prev1
    slow = list(range(half - code_dims, half)) + list(range(hd - code_dims, hd))
    heads = [(0, [(slow, slice(0, content), prev1)])]
    if kv_heads > 1:
        first, second = slow[:code_dims], slow[code_dims:]
        heads.append((group, [(first, slice(0, content), slice(prev1.start, prev1.start + code_dims)),
                              (second, slice(prev1.start, prev1.start + code_dims), layout.prev2)]))
    band = RECENCY_BAND
    recency = [j for j in range(half) if j not in slow and band[0] <= float(layout.inv_freq[j]) <= band[1]]
    gain = torch.ones(hd)
    gain[slow] = QK_GAIN
    gain[recency] = RECENCY_GAIN
    attn.q_norm.weight.copy_(gain)
    attn.k_norm.weight.copy_(gain)
    for head, parts in heads:
        rows, kv = slice(head * hd, (head + 1) * hd), head // group
        attn.q_proj.weight[rows] = 0.0
        attn.k_proj.weight[kv * hd : (kv + 1) * hd] = 0.0
        for dims, query_from, key_from in parts:
            n = len(dims)
            query_code = code[:n] if query_from.start == 0 else torch.eye(n)
            attn.q_proj.weight[[head * hd + i for i in dims], query_from] = query_code
            attn.k_proj.weight[[kv * hd + i for i in dims], key_from] = torch.eye(n)
        # q = -k in each recency pair: the score falls as cos(freq * distance) rises, i.e. nearby
        attn.q_proj.weight[[head * hd + j for j in recency], layout.const] = -RECENCY_SCALE
        attn.k_proj.weight[[kv * hd + j for j in recency], layout.const] = RECENCY_SCALE
        readout = _orthonormal_rows(hd, content, gen)
        attn.v_proj.weight[kv * hd : (kv + 1) * hd] = 0.0
        attn.v_proj.weight[kv * hd : (kv + 1) * hd, :content] = readout
        copy_gain = COPY_GAIN if head == 0 else COPY_GAIN / 2  # see COPY_GAIN
        out = readout.T * copy_gain * layout.unit * math.sqrt(layout.d / content)
        attn.o_proj.weight[:content, head * hd : (head + 1) * hd] = out
