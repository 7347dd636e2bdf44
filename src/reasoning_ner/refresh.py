"""The refresh pipeline's library side: retrain the champion on harvested traffic (docs/flywheel.md).

The pipeline (``pipelines/refresh_pipeline.py``) looks up the champion, harvests a window of logged
traffic (``flywheel.harvest``), mixes the harvested CoT records with the original ones
(:func:`mix_cot`, ``refresh.mix_ratio``), fine-tunes the champion on the mix, evaluates it on the
frozen suites plus the held-out harvested slice (:func:`evaluate_refresh`) and promotes it under the
``no-zero-shot-regression`` rule (``promotion.py``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from .config import Config
from .evaluation import evaluate, run_suite, write_report
from .inference import InferenceEngine
from .promotion import Registry
from .records import read_records

#: The report suite holding the held-out slice of harvested traffic (not a gate: the served domains
#: are what the refresh trains on, so this suite shows the gain, zero-shot shows the cost).
HARVESTED_SUITE = "harvested"


class NoChampionError(RuntimeError):
    """A refresh starts from the champion; the registry has none yet."""


def champion_model(registry: Registry) -> dict[str, Any]:
    """The champion pointer (``version``, ``model_uri``) a refresh starts from; a clear error when there is none."""
    registry.check()
    champion = registry.champion()
    if champion is None or not champion.get("model_uri"):
        raise NoChampionError(f"registry {registry.uri} has no champion: a refresh retrains the champion, so run the "
                              "main pipeline (or `rner promote`) first")
    return champion


def check_window(cfg: Config, since: str, until: str) -> dict[str, Any]:
    """Whether the harvest window holds anything to train on, decided before any teacher call.

    The same two tests after which :func:`~reasoning_ner.flywheel.harvest.harvest` raises
    ``EmptyWindowError``: no usable logged record in the window, or every sentence is one of an
    evaluation split. Returns the resolved window (``since``/``until``, so a run crossing midnight
    harvests the days it checked), ``usable`` sentences and a ``message`` for the run's log.
    """
    import tempfile

    from .cot.synthesize import eval_sentences
    from .flywheel.harvest import window
    from .flywheel.harvest_read import evaluation_files, read_window
    from .validation_frames import normalize_sentence

    fw = cfg.flywheel
    first, last = window(cfg, since, until)
    logged = read_window(fw.log_root, first, last, cfg.serve.max_text_chars, frozenset(fw.opt_out_labels))
    with tempfile.TemporaryDirectory(prefix="rner-refresh-eval-") as scratch:
        held_out = eval_sentences(evaluation_files(cfg.data, Path(scratch))[0])
    usable = sum(1 for s in logged.sentences if normalize_sentence(s.text) not in held_out)
    where = f"{fw.log_root} {first}..{last}"
    if usable:
        message = f"{usable} distinct sentence(s) to harvest in {where}"
    else:
        skipped = ", ".join(f"{k} {v}" for k, v in logged.skipped.most_common()) or "none"
        message = (f"empty window: no usable logged records in {where} ({len(logged.parts)} part file(s), "
                   f"{logged.lines} line(s), {len(logged.sentences)} distinct sentence(s) of which "
                   f"{len(logged.sentences) - usable} are evaluation sentences; skipped lines: {skipped})")
    return {"since": first.isoformat(), "until": last.isoformat(), "usable": usable, "message": message}


def mix_cot(harvested: Path, original: Path, out: Path, mix_ratio: float, seed: int) -> dict[str, Any]:
    """Write the refresh SFT data to ``out``: every harvested CoT record plus a seeded sample of the
    original ones, ``mix_ratio`` harvested : original (fewer original records when there are not enough).

    The original data keeps the model on the paper's training distribution while the harvested
    records pull it towards the served traffic; the ratio is the knob between the two.
    """
    if mix_ratio <= 0:
        raise ValueError(f"refresh.mix_ratio must be > 0 (harvested : original), got {mix_ratio}")
    new = [line for line in harvested.read_text().splitlines() if line.strip()]
    if not new:
        raise ValueError(f"{harvested} holds no harvested CoT records: nothing to refresh on")
    old = [line for line in original.read_text().splitlines() if line.strip()]
    wanted = min(len(old), round(len(new) / mix_ratio))
    mixed = new + random.Random(seed).sample(old, wanted)
    random.Random(seed).shuffle(mixed)  # interleaved, so no batch is all one source
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(mixed) + "\n")
    return {"harvested": len(new), "original": wanted, "original_available": len(old), "mix_ratio": mix_ratio}


def evaluate_refresh(engine: InferenceEngine, cfg: Config, suites: list[str], data_dir: Path, heldout: Path,
                     out_dir: Path, model_name: str, lineage: dict[str, Any] | None = None) -> dict[str, Any]:
    """The frozen suites (the same files the main pipeline evaluates) plus the held-out harvested
    slice as the ``harvested`` suite, in one report (report.json / .html under ``out_dir``)."""
    report = evaluate(engine, cfg, suites, data_dir, out_dir, model_name, lineage)
    records = read_records(heldout) if heldout.is_file() else []
    if records:  # a tiny window may leave nothing held out; the frozen suites still decide
        by_source: dict[str, list] = {}
        for record in records:
            by_source.setdefault(record.dataset or HARVESTED_SUITE, []).append(record)
        report["suites"][HARVESTED_SUITE] = run_suite(engine, cfg, HARVESTED_SUITE, by_source, out_dir)
        write_report(report, out_dir)
    return report
