"""SFT data: canonical CoT records -> trl prompt/completion strings, truncation that keeps the answer.

Training data is checked before any GPU hour is spent: a file or record that cannot be read, a record of a
zero-shot evaluation dataset, or nothing left to train on is a :class:`TrainingDataError` naming it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..config import Config
from ..prompt import IM_END, chatml, render_prompt, render_target
from ..records import NERRecord, RecordError, read_jsonl

IGNORE_INDEX = -100


class TrainingDataError(ValueError):
    """Training data that must not or cannot be trained on; the message names file and record."""


class ZeroShotDataError(TrainingDataError):
    """A record of a zero-shot evaluation dataset (``data.zero_shot_datasets``) was offered for training."""



def load_sft_records(files: Sequence[Path | str], cfg: Config) -> list[NERRecord]:
    """Read, validate and vet canonical CoT records for SFT.

    Raises :class:`ZeroShotDataError` for any record (or file under a folder) of a zero-shot
    evaluation dataset, :class:`TrainingDataError` for test-split records, records without a
    ``cot`` when ``prompt.with_cot`` is on, and missing or empty files. Applies
    ``sft.max_train_records`` as a seeded random sample (``cfg.seed``).
    """
    if not files:
        raise TrainingDataError("no training files given")
    zero_shot = set(cfg.data.zero_shot_datasets)
    records: list[NERRecord] = []
    for path in map(Path, files):
        if not path.is_file():
            raise TrainingDataError(f"training file {path} does not exist")
        if path.parent.name in zero_shot:
            raise ZeroShotDataError(
                f"{path}: folder {path.parent.name!r} is a zero-shot evaluation dataset "
                f"(data.zero_shot_datasets); it is never used for training"
            )
        n_before = len(records)
        try:
            for i, obj in enumerate(read_jsonl(path), 1):
                rec = NERRecord.from_dict(obj)
                rec.validate()
                where = f"{path} record {i} ({rec.id})"
                if rec.dataset in zero_shot:
                    raise ZeroShotDataError(
                        f"{where} belongs to the zero-shot evaluation dataset {rec.dataset!r}; the datasets in "
                        f"data.zero_shot_datasets ({', '.join(sorted(zero_shot))}) are never used for training"
                    )
                if rec.split == "test":
                    raise TrainingDataError(f"{where} is from a test split; evaluation splits are never trained on")
                if cfg.prompt.with_cot and not (rec.cot or "").strip():
                    raise TrainingDataError(
                        f"{where} has no 'cot': SFT trains on CoT records (stage 1 output). Synthesize chains first, "
                        "or set prompt.with_cot=false for the paper's w/o-CoT ablation"
                    )
                records.append(rec)
        except RecordError as exc:
            raise TrainingDataError(f"{path}: {exc}") from exc
        if len(records) == n_before:
            raise TrainingDataError(f"training file {path} holds no records")
    limit = cfg.sft.max_train_records
    if limit is not None and len(records) > limit:
        keep = sorted(random.Random(cfg.seed).sample(range(len(records)), limit))
        records = [records[i] for i in keep]
    return records


def as_records(items: Iterable[NERRecord | dict[str, Any]] | Path | str | None) -> list[NERRecord]:
    """Records from a JSONL path, a list of records or dicts, or None (empty list)."""
    if items is None:
        return []
    if isinstance(items, (str, Path)):
        return [NERRecord.from_dict(o) for o in read_jsonl(items)]
    return [r if isinstance(r, NERRecord) else NERRecord.from_dict(r) for r in items]


def sft_example(record: NERRecord, cfg: Config) -> dict[str, str]:
    """One trl prompt/completion example (plain strings, see the module docstring)."""
    prompt = chatml(render_prompt(record.text, record.schema, cfg.prompt.style))
    return {"prompt": prompt, "completion": render_target(record, cfg.prompt) + IM_END}


def keep_last_tokens(input_ids: list[int], labels: list[int], max_length: int | None) -> tuple[list[int], list[int]]:
    """Left truncation: the last ``max_length`` tokens (the answer and ``<|im_end|>`` survive)."""
    if max_length is None or len(input_ids) <= max_length:
        return input_ids, labels
    return input_ids[-max_length:], labels[-max_length:]


def has_trainable_labels(labels: Sequence[int]) -> bool:
    """True if some token after the first is a target (position 0 is never predicted)."""
    return any(label != IGNORE_INDEX for label in labels[1:])
