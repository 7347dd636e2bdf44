"""The dataset validation gate: Great Expectations (GX Core 1.x) suites for canonical NER and CoT data.

Records are flattened to three pandas frames, each validated by its own named suite:

* ``records``  one row per record of every file (train and eval): required fields, field types,
  non-empty text, unique ids.
* ``entities`` one row per entity: entity fields, offsets in range, offsets that reproduce the
  surface text, label within the record's schema.
* ``training`` one row per *training* record: not empty, no zero-shot dataset, no sentence shared
  with an evaluation split, and (kind ``cot``) the reasoning-chain checks.

Row-level logic GX cannot express on pandas (``UnexpectedRowsExpectation`` is SQL-only) is computed
first (:mod:`.validation_frames`) as a *problem* column: ``None`` when the row is fine, otherwise a
short description of what is wrong (``"entity text 'Obam' != text[0:5] 'Obama'"``). The expectation is then
``ExpectColumnValuesToBeNull`` on that column, so Data Docs list the actual problems as the
unexpected values. Checks that do not apply to a row (an offset check when ``start`` is not an
int) leave it ``None`` so one corruption fails one expectation, not a cascade.

Every expectation carries ``meta={"name": ...}`` and a description starting with that name; the
report, ``validation.json`` and Data Docs all use it. See docs/validation.md.
"""

from __future__ import annotations

import html
import os
import statistics as stats_mod
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .records import write_json

from .validation_frames import (
    REQUIRED_FIELDS,
    Loaded,
    build_frames,
    find_eval_files,
    normalize_sentence,
    read_inputs,
    short_value,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

# The input side lives in validation_frames; its public names stay importable from here.
__all__ = [
    "MAX_EXAMPLES",
    "REQUIRED_FIELDS",
    "THINK_TAG_REGEX",
    "FailedExpectation",
    "Kind",
    "ValidationReport",
    "build_frames",
    "checks",
    "find_eval_files",
    "format_report",
    "normalize_sentence",
    "validate_dataset",
]

Kind = Literal["ner", "cot"]

#: Think tags belong to the rendered target (prompt.py adds them), never inside the chain itself.
THINK_TAG_REGEX = r"(?i)</?\s*think\s*>"
MAX_EXAMPLES = 5


@dataclass
class FailedExpectation:
    name: str
    expectation_type: str
    suite: str
    description: str
    unexpected_count: int
    element_count: int
    #: up to MAX_EXAMPLES rows: {"id", "file", "line", "value"} (+ "entity" on entity rows)
    examples: list[dict[str, Any]] = field(default_factory=list)
    #: table-level expectations (row counts) report what they saw instead of rows
    observed_value: Any = None
    #: set when GX itself raised while evaluating the expectation
    error: str | None = None


@dataclass
class ValidationReport:
    success: bool
    kind: str
    failed: list[FailedExpectation]
    #: every expectation that ran: {"name", "expectation_type", "suite", "success"}
    expectations: list[dict[str, Any]]
    statistics: dict[str, Any]
    validation_json: str
    data_docs_index: str | None

    @property
    def failed_names(self) -> list[str]:
        return [f.name for f in self.failed]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------ the suites


@dataclass(frozen=True)
class _Check:
    name: str
    frame: str
    gx_class: str
    kwargs: dict[str, Any]
    #: the frame column shown as the example "value"
    show: str
    description: str


def checks(kind: Kind, zero_shot_datasets: list[str], min_chain_words: int, max_chain_words: int) -> list[_Check]:
    """The named expectations, in report order (docs/validation.md describes each)."""
    out = [
        _Check(f"{k}_present", "records", "ExpectColumnValuesToNotBeNull", {"column": k}, k,
               f"required field '{k}' is present and not null")
        for k in REQUIRED_FIELDS
    ]
    out += [
        _Check("record_field_types", "records", "ExpectColumnValuesToBeNull", {"column": "type_errors"}, "type_errors",
               "id/text/dataset/split are strings, entities a list, schema a list of strings, cot a string and "
               "meta an object (meta.teacher a non-empty string) when present"),
        _Check("text_nonempty", "records", "ExpectColumnValueLengthsToBeBetween",
               {"column": "text_stripped", "min_value": 1}, "text", "text has at least one non-space character"),
        _Check("ids_unique", "records", "ExpectColumnValuesToBeUnique", {"column": "id"}, "id",
               "no two records (over all train and eval files) share an id"),
        _Check("entity_field_types", "entities", "ExpectColumnValuesToBeNull", {"column": "entity_errors"},
               "entity_errors", "each entity is an object with int start/end and string label/text"),
        _Check("entity_offsets_in_range", "entities", "ExpectColumnValuesToBeNull", {"column": "offset_problem"},
               "offset_problem", "0 <= start < end <= len(text) for every entity"),
        _Check("entity_offsets_match_text", "entities", "ExpectColumnValuesToBeNull", {"column": "surface_problem"},
               "surface_problem", "text[start:end] equals the entity's text"),
        _Check("entity_label_in_schema", "entities", "ExpectColumnValuesToBeNull", {"column": "label_problem"},
               "label_problem", "every entity label is in its record's schema"),
        _Check("training_data_nonempty", "training", "ExpectTableRowCountToBeBetween", {"min_value": 1}, "id",
               "the training files hold at least one record"),
        _Check("no_zero_shot_datasets_in_training", "training", "ExpectColumnValuesToNotBeInSet",
               {"column": "dataset", "value_set": sorted(zero_shot_datasets)}, "dataset",
               "no training record comes from a zero-shot evaluation dataset (data.zero_shot_datasets)"),
        _Check("no_train_eval_leakage", "training", "ExpectColumnValuesToBeNull", {"column": "leaked_into"},
               "leaked_into", "no training sentence equals (case- and whitespace-folded) a sentence of any eval file"),
    ]
    if kind == "cot":
        out += [
            _Check("cot_present", "training", "ExpectColumnValuesToNotBeNull", {"column": "cot_nonempty"},
                   "cot_display", "every training record has a non-empty cot string"),
            _Check("cot_no_think_tags", "training", "ExpectColumnValuesToNotMatchRegex",
                   {"column": "cot_str", "regex": THINK_TAG_REGEX}, "cot_str",
                   "the cot holds no <think> or </think> tag (the target template adds them)"),
            _Check("cot_word_count_in_bounds", "training", "ExpectColumnValuesToBeBetween",
                   {"column": "cot_words", "min_value": min_chain_words, "max_value": max_chain_words}, "cot_words",
                   f"the cot has between {min_chain_words} and {max_chain_words} words"),
        ]
    return out


def _import_gx() -> Any:
    # Must be set before the import; GX reads it at context creation. Imported lazily: ~4 s.
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx

    return gx


def _context(gx: Any, docs_dir: Path | None) -> Any:
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_dir is not None:
        sites["rner"] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        # In-memory stores; no default temp docs site (it would leave a /tmp folder per run).
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),  # tqdm bars would garble the CLI output
    )
    return gx.get_context(mode="ephemeral", project_config=config)


# ------------------------------------------------------------------------------ running the suites


def _run_suites(
    gx: Any, ctx: Any, kind: str, frames: dict[str, pd.DataFrame], all_checks: list[_Check]
) -> dict[str, Any]:
    """One suite per frame, run on that frame; returns expectation name -> (frame name, GX result)."""
    import great_expectations.expectations as gxe

    source = ctx.data_sources.add_pandas("rner")
    results: dict[str, Any] = {}
    for frame_name, frame in frames.items():
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"{kind}_{frame_name}"))
        for c in (c for c in all_checks if c.frame == frame_name):
            cls = getattr(gxe, c.gx_class)
            # GX renders the description as an unescaped HTML template: escape the "<" in "start < end".
            described = html.escape(f"{c.name}: {c.description}", quote=False)
            suite.add_expectation(cls(**c.kwargs, meta={"name": c.name}, description=described))
        batch = source.add_dataframe_asset(name=frame_name).add_batch_definition_whole_dataframe("all")
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=suite.name, data=batch, suite=suite))
        res = vd.run(
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
        )
        for r in res.results:
            results[r.expectation_config.meta["name"]] = (frame_name, r)
    return results


def _gx_error(exception_info: Any) -> str | None:
    """The message of an exception GX raised while evaluating an expectation, if any."""
    if isinstance(exception_info, dict) and exception_info.get("raised_exception"):
        return str(exception_info.get("exception_message"))
    if isinstance(exception_info, dict):  # per-metric errors are keyed by metric id
        msgs = [v.get("exception_message") for v in exception_info.values()
                if isinstance(v, dict) and v.get("raised_exception")]
        return "; ".join(str(m) for m in msgs) or None
    return None


def _examples(frame: pd.DataFrame, indexes: list[Any], show: str) -> list[dict[str, Any]]:
    out = []
    for idx in indexes[:MAX_EXAMPLES]:
        row = frame.loc[idx]
        ex = {"id": row["id"], "file": row["file"], "line": int(row["line"]), "value": short_value(row[show])}
        if "entity" in frame.columns:
            ex["entity"] = int(row["entity"])
        out.append(ex)
    return out


def _failed_expectation(c: _Check, r: Any, suite_name: str, frame: pd.DataFrame) -> FailedExpectation:
    result = r.result or {}
    return FailedExpectation(
        name=c.name,
        expectation_type=r.expectation_config.type,
        suite=suite_name,
        description=c.description,
        unexpected_count=int(result.get("unexpected_count", 0)),
        element_count=int(result.get("element_count", len(frame))),
        examples=_examples(frame, list(result.get("partial_unexpected_index_list") or []), c.show),
        observed_value=result.get("observed_value"),
        error=_gx_error(r.exception_info),
    )


def _outcomes(
    kind: str, all_checks: list[_Check], results: dict[str, Any], frames: dict[str, pd.DataFrame]
) -> tuple[list[dict[str, Any]], list[FailedExpectation]]:
    """(every expectation that ran, the failed ones with examples), both in report order."""
    ran: list[dict[str, Any]] = []
    failed: list[FailedExpectation] = []
    for c in all_checks:
        frame_name, r = results[c.name]
        suite_name = f"{kind}_{frame_name}"
        ran.append({"name": c.name, "expectation_type": r.expectation_config.type, "suite": suite_name,
                    "success": bool(r.success)})
        if not r.success:
            failed.append(_failed_expectation(c, r, suite_name, frames[frame_name]))
    return ran, failed


# ------------------------------------------------------------------------------ the report


def _statistics(train: list[Loaded], evals: list[Loaded], frames: dict[str, pd.DataFrame], kind: str) -> dict[str, Any]:
    training = frames["training"]
    out: dict[str, Any] = {
        "files": [{"path": str(p), "role": role, "records": len(objs)}
                  for role, files in (("train", train), ("eval", evals)) for p, objs in files],
        "train_records": len(training),
        "eval_records": sum(len(objs) for _, objs in evals),
        "entities": len(frames["entities"]),
        "training_datasets": dict(sorted(Counter(str(d) for d in training["dataset"]).items())),
        "leaked_train_records": int(training["leaked_into"].notna().sum()),
    }
    if kind == "cot":
        words = [int(w) for w in training["cot_words"] if w is not None]
        out["cot_words"] = (
            {"min": min(words), "median": stats_mod.median(words), "max": max(words)} if words else None
        )
    return out


def _chain_bounds(min_chain_words: int | None, max_chain_words: int | None) -> tuple[int, int]:
    """Chain-length bounds; a missing one is ``CoTConfig``'s default."""
    if min_chain_words is None or max_chain_words is None:
        from .config import CoTConfig

        fields = CoTConfig.model_fields
        min_chain_words = fields["min_chain_words"].default if min_chain_words is None else min_chain_words
        max_chain_words = fields["max_chain_words"].default if max_chain_words is None else max_chain_words
    return int(min_chain_words), int(max_chain_words)


def validate_dataset(
    train_files: list[Path],
    eval_files: list[Path],
    kind: Kind,
    zero_shot_datasets: list[str],
    out_dir: Path,
    min_chain_words: int | None = None,
    max_chain_words: int | None = None,
    data_docs: bool = True,
) -> ValidationReport:
    """Validate training files (and, for leakage, eval files); write validation.json and Data Docs.

    Chain-length bounds default to ``CoTConfig``'s ``min_chain_words``/``max_chain_words``.
    Raises :class:`RecordError` naming the file when an input is missing or not JSONL.
    """
    if kind not in ("ner", "cot"):
        raise ValueError(f"kind must be 'ner' or 'cot', not {kind!r}")
    if not train_files:
        raise ValueError("at least one training file is required")
    min_words, max_words = _chain_bounds(min_chain_words, max_chain_words)

    # Read everything before the slow GX import, so a bad path fails fast.
    train = read_inputs(train_files)
    evals = read_inputs(eval_files)
    frames = build_frames(train, evals)

    gx = _import_gx()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Earlier runs' pages in docs_dir are removed by GX's index builder (skip_and_clean_missing):
    # the in-memory stores only know this run, so the published site is always this run alone.
    docs_dir = out_dir / "data_docs"
    ctx = _context(gx, docs_dir if data_docs else None)
    all_checks = checks(kind, list(zero_shot_datasets), min_words, max_words)
    ran, failed = _outcomes(kind, all_checks, _run_suites(gx, ctx, kind, frames, all_checks), frames)

    index = None
    if data_docs:
        ctx.build_data_docs(site_names=["rner"])
        index = str(docs_dir / "index.html")

    statistics = _statistics(train, evals, frames, kind)
    statistics.update(
        evaluated_expectations=len(ran),
        successful_expectations=len(ran) - len(failed),
        unsuccessful_expectations=len(failed),
        min_chain_words=min_words if kind == "cot" else None,
        max_chain_words=max_words if kind == "cot" else None,
        zero_shot_datasets=sorted(zero_shot_datasets),
    )
    report = ValidationReport(
        success=not failed,
        kind=kind,
        failed=failed,
        expectations=ran,
        statistics=statistics,
        validation_json=str(out_dir / "validation.json"),
        data_docs_index=index,
    )
    write_json(out_dir / "validation.json", report.to_dict())
    return report


def format_report(report: ValidationReport) -> str:
    """Plain text for the CLI: verdict, counts, then each failing expectation with example rows."""
    s = report.statistics
    verdict = "PASSED" if report.success else "FAILED"
    lines = [
        f"Dataset validation ({report.kind}): {verdict} - "
        f"{s['successful_expectations']}/{s['evaluated_expectations']} expectations met",
        f"  {s['train_records']} training records, {s['eval_records']} evaluation records, {s['entities']} entities",
    ]
    if s["eval_records"] == 0:
        lines.append("  note: no evaluation records given, so train/eval leakage was not checked")
    for f in report.failed:
        lines.append("")
        lines.append(f"FAILED {f.name} ({f.expectation_type}, suite {f.suite}): {f.unexpected_count} of "
                     f"{f.element_count} rows")
        lines.append(f"  expects: {f.description}")
        if f.observed_value is not None:
            lines.append(f"  observed: {f.observed_value}")
        if f.error:
            lines.append(f"  GX error: {f.error}")
        for ex in f.examples:
            where = f"{ex['file']}:{ex['line']}" + (f" entities[{ex['entity']}]" if "entity" in ex else "")
            lines.append(f"  - id={ex['id']} ({where}): {ex['value']}")
        if f.unexpected_count > len(f.examples) and f.examples:
            lines.append(f"  ... and {f.unexpected_count - len(f.examples)} more")
    lines.append("")
    lines.append(f"Summary: {report.validation_json}")
    if report.data_docs_index:
        lines.append(f"Data Docs: {report.data_docs_index}")
    return "\n".join(lines)
