"""Export a trained model as a plain Hugging Face directory.

LoRA adapters are merged into the base weights (``merge_and_unload``), so every consumer (GRPO,
evaluation, vLLM/KServe) loads the result with ``AutoModelForCausalLM.from_pretrained`` and never
needs peft. The directory holds the weights (safetensors), ``config.json``, the tokenizer with its
chat template, a ``generation_config.json`` that stops at ``<|im_end|>`` and a model card
(``README.md``) recording the base model, data lineage, hyperparameters, final metrics and the
licences the model inherits from its training data. The directory is written to a temporary
sibling and moved into place only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..prompt import IM_END

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Licence terms of the training sources, as documented in README.md ("Data licences").
DATA_LICENSES: dict[str, str] = {
    "conll2003": "CoNLL-2003 (Reuters RCV1): research use only, no redistribution of the text",
    "pile_ner": "Pile-NER (Universal-NER / SLIMER): CC BY-NC 4.0",
    "ner_cot": "NER-CoT (HuiHuang/NER-CoT): CC BY-NC 4.0",
    "gliner": "GLiNER sample data (Pile-NER derived): CC BY-NC 4.0",
}
_NON_COMMERCIAL = {"pile_ner", "ner_cot", "gliner"}


def merge_lora(model: Any) -> PreTrainedModel:
    """The plain transformers model: LoRA merged for a ``PeftModel``, unchanged otherwise."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a pinned dependency
        return model
    if isinstance(model, PeftModel):
        return model.merge_and_unload()
    return model


def licence_lines(datasets: Iterable[str]) -> list[str]:
    out = []
    for name in sorted(set(datasets)):
        out.append(f"- `{name}`: {DATA_LICENSES.get(name, 'licence not recorded: check the source before any use')}")
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)


def model_card(
    base_model: str,
    stage: str,
    datasets: Iterable[str],
    lineage: dict[str, Any] | None,
    hyperparameters: dict[str, Any],
    metrics: dict[str, Any],
    parameters: int | None = None,
    extra: str = "",
) -> str:
    """The README.md of an exported model (YAML front matter + markdown)."""
    datasets = sorted(set(datasets))
    non_commercial = bool(set(datasets) & _NON_COMMERCIAL)
    tags = ["reasoning-ner", "named-entity-recognition", stage.lower(), "trl"]
    front = [
        "---",
        "license: other",
        "license_name: inherits-training-data-terms",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        *([] if Path(base_model).expanduser().exists() else [f"base_model: {base_model}"]),
        "tags:",
        *[f"- {t}" for t in tags],
        "---",
        "",
    ]
    lines = [
        f"# reasoning-ner {stage} model",
        "",
        f"Stage **{stage}** of ReasoningNER (arXiv 2511.11978): the model writes a reasoning chain in "
        "`<think>...</think>` and then the entities as JSON, `{\"entities\": {label: [span, ...]}}`.",
        "Prompt: one ChatML user turn (`reasoning_ner.prompt.render_prompt`, no system prompt); "
        "generation stops at `<|im_end|>`.",
        "",
        "## Base model",
        "",
        f"`{base_model}`" + (f" ({parameters:,} parameters after merging)" if parameters else ""),
        "",
        "## Training data and licences",
        "",
        "Datasets: " + (", ".join(f"`{d}`" for d in datasets) if datasets else "(not recorded)"),
        "",
        *licence_lines(datasets),
        "",
        (
            "**Non-commercial**: the model was trained on CC BY-NC data and inherits its terms."
            if non_commercial
            else "The model inherits the terms of its training data."
        ),
        "CoNLL-2003 text is Reuters material licensed for research only." if "conll2003" in datasets else "",
        "Zero-shot evaluation datasets (CrossNER, MIT Movie/Restaurant) were refused as training data.",
        "",
        "## Data lineage",
        "",
        "```json",
        json.dumps(lineage or {}, indent=2, ensure_ascii=False, default=str),
        "```",
        "",
        "## Hyperparameters",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in hyperparameters.items()],
        "",
        "## Final metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in metrics.items()],
        "",
    ]
    if extra:
        lines += [extra.rstrip(), ""]
    return "\n".join(front + lines)


def _generation_config(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int | None) -> Any:
    from transformers import GenerationConfig

    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    eos: list[int] = []
    for candidate in (im_end, tokenizer.eos_token_id, *_as_list(model.generation_config.eos_token_id)):
        if isinstance(candidate, int) and candidate != tokenizer.unk_token_id and candidate not in eos:
            eos.append(candidate)
    cfg = GenerationConfig(
        do_sample=False,
        num_beams=1,
        eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=model.generation_config.bos_token_id,
    )
    if max_new_tokens:
        cfg.max_new_tokens = max_new_tokens
    return cfg


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def export_model(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path | str,
    *,
    base_model: str,
    stage: str = "SFT",
    datasets: Iterable[str] = (),
    lineage: dict[str, Any] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    state_dict: dict[str, Any] | None = None,
    max_new_tokens: int | None = None,
) -> Path:
    """Merge (LoRA), then save weights + tokenizer + generation config + README.md into ``out_dir``.

    ``state_dict`` is for sharded training (DeepSpeed ZeRO-3/FSDP): the full weights gathered by
    ``accelerator.get_state_dict``; ``model`` then only provides the class and config.
    """
    import torch

    out_dir = Path(out_dir)
    merged = merge_lora(model)
    merged.generation_config = _generation_config(merged, tokenizer, max_new_tokens)
    if merged.config.get_text_config().eos_token_id is None:
        merged.config.get_text_config().eos_token_id = tokenizer.convert_tokens_to_ids(IM_END)
    # A fused/patched training forward lives on the instance; saving ignores it, loading gets the class forward.
    parameters = sum(p.numel() for p in merged.parameters()) if state_dict is None else None

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with torch.no_grad():
            merged.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(tmp, save_jinja_files=False)
        card = model_card(
            base_model=base_model,
            stage=stage,
            datasets=datasets,
            lineage=lineage,
            hyperparameters=hyperparameters or {},
            metrics=metrics or {},
            parameters=parameters,
        )
        (tmp / "README.md").write_text(card, encoding="utf-8")
        for path in tmp.iterdir():  # safetensors writes 0600; servers may run as another user
            path.chmod(0o644)
        backup = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        if out_dir.exists():
            os.replace(out_dir, backup)
        os.replace(tmp, out_dir)
        shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
