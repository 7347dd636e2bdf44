"""What a tiny model needs to carry the hand-set copy circuit (reasoning_ner.copy_circuit), checked
when the configuration loads so that a bad shape fails with the setting's name, before any build."""

from __future__ import annotations

#: Dimensions of the code of the previous token (the code of the token two back has half as many).
PREV_DIMS = 24
#: Rotary frequency pairs (fastest first) that the layer-0 heads use.
FAST_PAIRS = 6


def check_copy_circuit_shape(hidden_size: int, head_dim: int, num_hidden_layers: int, num_attention_heads: int,
                             tie_word_embeddings: bool) -> None:
    """Raise ``ValueError`` naming the setting when a model cannot carry the circuit."""
    if num_attention_heads < 2:
        raise ValueError("model.tiny.copy_circuit needs num_attention_heads >= 2 (two heads in layer 0)")
    if num_hidden_layers < 2:
        raise ValueError("model.tiny.copy_circuit needs num_hidden_layers >= 2 (the two heads sit in layers 0 and 1)")
    if head_dim < max(2 * FAST_PAIRS, PREV_DIMS) or head_dim % 2:
        raise ValueError(f"model.tiny.copy_circuit needs an even head_dim >= {max(2 * FAST_PAIRS, PREV_DIMS)}")
    if hidden_size < PREV_DIMS + PREV_DIMS // 2 + 1 + head_dim:
        raise ValueError(f"model.tiny.copy_circuit needs hidden_size >= {PREV_DIMS + PREV_DIMS // 2 + 1 + head_dim}")
    if not tie_word_embeddings:
        raise ValueError("model.tiny.copy_circuit needs tie_word_embeddings (the LM head reads the copied embedding)")
