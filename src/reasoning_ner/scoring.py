"""Score a predictions file against gold canonical records (``rner eval score``).

Predictions file (JSONL, one object per line, matched to gold by ``id``), either:

* a canonical record with predicted ``entities`` (``[{start, end, label, text}]``): used as is;
* a raw model output ``{"id": ..., "output": "<think>...</think>{...}"}``: parsed with
  :func:`parse_answer` and grounded in the gold record's text with :func:`ground`;
* a row of :func:`reasoning_ner.inference.predict` (``answer``, ``entities``, ``ungrounded``,
  ``parse_error``): already parsed and grounded, so its fields are used as they are.

The paper-parity metric uses the predicted span strings (grounded or not, as the reference
does); the strict metric uses only grounded offsets. A gold record with no prediction counts as
an empty prediction and is reported under ``missing_predictions``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .grounding import ground
from .metrics import SentenceScore, macro_average, score
from .parity import reference_parse
from .parsing import parse_answer
from .records import Entity, NERRecord, RecordError, read_jsonl, read_records


def prediction_to_sentence(pred: dict[str, Any], gold_text: str, schema: list[str]) -> tuple[SentenceScore, dict[str, Any]]:
    """Turn one prediction object into metric inputs plus per-sentence diagnostics."""
    info: dict[str, Any] = {"parsed": True, "ungrounded": 0, "predicted": 0}
    if "answer" in pred and "parse_error" in pred:
        # A row of inference.predict: parsed and grounded once, there; read, not redone.
        answer = pred["answer"]
        if not isinstance(answer, dict) or not all(isinstance(v, list) for v in answer.values()):
            raise RecordError(f"prediction {pred.get('id')}: 'answer' must map labels to lists of spans")
        pairs = [(str(span), str(label)) for label, spans in answer.items() for span in spans]
        offsets = [(e.start, e.end, e.label) for e in _entities(pred)]
        info.update(parsed=pred["parse_error"] is None, ungrounded=len(pred.get("ungrounded") or []), predicted=len(pairs))
    elif "output" in pred:
        parsed = parse_answer(pred["output"], schema)
        grounding = ground(gold_text, parsed.entities)
        pairs = parsed.pairs()
        offsets = [(e.start, e.end, e.label) for e in grounding.entities]
        info.update(parsed=parsed.ok, ungrounded=len(grounding.ungrounded), predicted=len(pairs))
    elif "entities" in pred:
        ents = _entities(pred)
        pairs = [(e.text, e.label) for e in ents]
        offsets = [(e.start, e.end, e.label) for e in ents]
        info["predicted"] = len(pairs)
    else:
        raise RecordError(f"prediction {pred.get('id')}: needs 'output' (raw generation) or 'entities'")
    parity = reference_parse(pred["output"]).pairs() if isinstance(pred.get("output"), str) else None
    return SentenceScore(pairs, [], offsets, [], parity_pred_pairs=parity), info


def _entities(pred: dict[str, Any]) -> list[Entity]:
    try:
        return [Entity.from_dict(e) for e in pred["entities"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"prediction {pred.get('id')}: bad entity ({exc})") from exc


def score_files(gold_path: str | Path, pred_path: str | Path, drop_invalid: bool = True) -> dict[str, Any]:
    gold = {r.id: r for r in read_records(gold_path)}
    preds: dict[str, dict[str, Any]] = {}
    for obj in read_jsonl(pred_path):
        if "id" not in obj:
            raise RecordError(f"{pred_path}: a prediction has no 'id'")
        pid = str(obj["id"])
        if pid not in gold:
            raise RecordError(f"{pred_path}: prediction id {pid!r} is not in the gold file {gold_path}")
        if pid in preds:
            raise RecordError(f"{pred_path}: prediction id {pid!r} appears twice")
        preds[pid] = obj
    return {"gold": str(gold_path), "predictions": str(pred_path), **score_predictions(list(gold.values()), preds, drop_invalid)}


def score_predictions(gold: list[NERRecord], preds: dict[str, dict[str, Any]], drop_invalid: bool = True) -> dict[str, Any]:
    """Per-dataset metrics (both), parse and ungrounded rates, and the macro averages."""
    by_dataset: dict[str, list[SentenceScore]] = defaultdict(list)
    diag: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    formats: dict[str, set[str]] = defaultdict(set)
    for rec in gold:
        rid = rec.id
        d = diag[rec.dataset]
        formats[rec.dataset].add(rec.source_format)
        if rid in preds:
            sentence, info = prediction_to_sentence(preds[rid], rec.text, rec.schema)
            d["parsed"] += int(info["parsed"])
            d["ungrounded"] += info["ungrounded"]
            d["predicted"] += info["predicted"]
        else:
            sentence = SentenceScore([], [], [], [])
            d["missing"] += 1
        sentence.gold_pairs = [(e.text, e.label) for e in rec.entities]
        sentence.gold_offsets = [(e.start, e.end, e.label) for e in rec.entities]
        by_dataset[rec.dataset].append(sentence)

    datasets: dict[str, Any] = {}
    for name, sentences in sorted(by_dataset.items()):
        d = diag[name]
        answered = len(sentences) - d["missing"]
        datasets[name] = {
            **score(sentences, drop_invalid),
            "source_format": ",".join(sorted(formats[name])),
            "missing_predictions": d["missing"],
            "parse_rate": d["parsed"] / answered if answered else 0.0,
            "ungrounded_rate": d["ungrounded"] / d["predicted"] if d["predicted"] else 0.0,
        }
    return {
        "datasets": datasets,
        "macro": {
            "paper_f1": macro_average({n: r["paper"]["f1"] for n, r in datasets.items()}),
            "parity_f1": macro_average({n: r["parity"]["f1"] for n, r in datasets.items()}),
            "strict_f1": macro_average({n: r["strict"]["f1"] for n, r in datasets.items()}),
        },
    }
