"""Evaluation suites and the report (JSON for machines; Markdown, HTML and PNG for people).

Suites: ``zero-shot`` = the config's zero-shot datasets (CrossNER x5, MIT Movie, MIT Restaurant),
each with its own label set; ``supervised`` = CoNLL-2003 plus any dataset the config names. Each
dataset is scored with both metrics (see :mod:`reasoning_ner.metrics`), per label, with parse
and ungrounded-span rates and throughput; the suite figure is the macro average over datasets.
"""

from __future__ import annotations

import base64
import html
import json
import random
import time
from pathlib import Path
from typing import Any

from .config import Config
from .data.prepare import reference_test_path
from .flywheel.baseline import BASELINE_FILE, baseline_from_counts, drift_counts
from .inference import InferenceEngine, predict
from .records import NERRecord, read_records, write_json, write_jsonl
from .scoring import score_predictions

#: The paper's Table 1 (zero-shot F1, %) for reference markers on the plots.
TABLE1 = {
    "ReasoningNER-8B": {"mit_movie": 76.3, "mit_restaurant": 56.8, "crossner_ai": 71.0, "crossner_literature": 69.4,
                        "crossner_music": 78.7, "crossner_politics": 78.8, "crossner_science": 75.8},
    "GPT-4": {"mit_movie": 60.4, "mit_restaurant": 59.7, "crossner_ai": 50.0, "crossner_literature": 55.2,
              "crossner_music": 69.2, "crossner_politics": 63.4, "crossner_science": 63.2},
    "GLiNER-L": {"mit_movie": 57.2, "mit_restaurant": 42.9, "crossner_ai": 57.2, "crossner_literature": 64.4,
                 "crossner_music": 69.6, "crossner_politics": 72.6, "crossner_science": 62.6},
}
TABLE1_AVERAGE = {"ReasoningNER-8B": 72.4, "GPT-4": 60.1, "GLiNER-L": 60.9}

METRIC_DEFINITIONS = (
    "parity_f1: scored exactly as the ReasoningNER reference (the numbers of the paper's Table 1): in parity mode "
    "(eval.parity) the zero-shot suite reads the reference's InstructUIE test.json with its gold rules (labels "
    "lower-cased, gold outside the dataset's labels.json dropped, nothing renamed), the answer is read by the "
    "reference's parser (no text around the JSON, ```json fences only, predicted labels never filtered), then "
    "micro P/R/F1 over per-sentence sets of (SQuAD-normalized span, label). "
    "paper_f1: the same set F1 with this project's parser, which also reads prose around the JSON, bare fences, "
    "a missing <think> opener, bare strings and '_' in labels "
    "(lower-case, punctuation and articles removed, whitespace folded; duplicates collapse; misc/else/other "
    "labels dropped; a zero denominator gives 0). strict_f1: micro P/R/F1 "
    "over (start, end, label) character offsets of grounded predictions. Suite figures are macro averages "
    "over datasets. parse_rate: share of generations whose answer parses; ungrounded_rate: share of "
    "predicted spans that do not occur in the sentence."
)


def suite_datasets(cfg: Config, suite: str) -> list[str]:
    if suite == "zero-shot":
        return list(cfg.data.zero_shot_datasets)
    if suite == "supervised":
        return list(dict.fromkeys(cfg.eval.supervised_datasets))
    raise ValueError(f"unknown suite {suite!r}; use zero-shot, supervised or all")


def sample_records(records: list[NERRecord], limit: int | None, seed: int) -> list[NERRecord]:
    """A deterministic sample (same seed, same sentences), kept in file order."""
    if limit is None or limit >= len(records):
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), limit))
    return [records[i] for i in keep]


def suite_file(cfg: Config, suite: str, data_dir: Path, name: str) -> Path:
    """The prepared file a dataset of a suite is evaluated on: in parity mode, the zero-shot suite
    reads the reference's evaluation file (``reference-test.jsonl``), otherwise ``<split>.jsonl``."""
    if suite == "zero-shot" and cfg.eval.parity:
        path = reference_test_path(data_dir / name, cfg.eval.split)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: paper parity (eval.parity) evaluates on the reference's InstructUIE test.json; run "
                f"`rner data prepare --dataset {name}` with <source>/ie_instructions_ner present, or set eval.parity=false")
        return path
    path = data_dir / name / f"{cfg.eval.split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `rner data prepare --dataset {name}` first")
    return path


def load_suite(cfg: Config, suite: str, data_dir: Path) -> dict[str, list[NERRecord]]:
    return {name: sample_records(read_records(suite_file(cfg, suite, data_dir, name)), cfg.eval.limit, cfg.eval.seed)
            for name in suite_datasets(cfg, suite)}


def run_suite(engine: InferenceEngine, cfg: Config, suite: str, data: dict[str, list[NERRecord]], out_dir: Path) -> dict[str, Any]:
    """Predict and score every dataset of one suite; predictions are kept as JSONL."""
    gold = [r for records in data.values() for r in records]
    started = time.perf_counter()
    rows = predict(engine, gold, cfg.prompt, cfg.eval.max_new_tokens)
    elapsed = time.perf_counter() - started
    write_jsonl(out_dir / f"predictions-{suite}.jsonl", rows)
    scored = score_predictions(gold, {row["id"]: row for row in rows})
    by_dataset: dict[str, list[dict]] = {}
    for row in rows:
        by_dataset.setdefault(row["dataset"], []).append(row)
    for name, ds in scored["datasets"].items():
        ds_rows = by_dataset.get(name, [])
        ds["completion_tokens_mean"] = sum(r["completion_tokens"] for r in ds_rows) / max(1, len(ds_rows))
    parse_rates = [ds["parse_rate"] for ds in scored["datasets"].values()]
    return {
        "suite": suite,
        "files": "reference (InstructUIE test.json)" if suite == "zero-shot" and cfg.eval.parity else f"{cfg.eval.split}.jsonl",
        **scored,
        "mean_parse_rate": sum(parse_rates) / max(1, len(parse_rates)),
        "sentences": len(gold),
        "seconds": round(elapsed, 2),
        "sentences_per_s": round(len(gold) / elapsed, 2) if elapsed > 0 else 0.0,
        "completion_tokens_per_s": round(sum(r["completion_tokens"] for r in rows) / elapsed, 1) if elapsed > 0 else 0.0,
        "drift_counts": drift_counts(gold, rows, cfg.prompt.style),
    }


def evaluate(
    engine: InferenceEngine,
    cfg: Config,
    suites: list[str],
    data_dir: Path,
    out_dir: Path,
    model_name: str,
    lineage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the suites and write report.json / report.md / report.html and the PNG plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "model": model_name,
        "engine": engine.name,
        "profile": cfg.profile,
        "lineage": lineage or {},
        "settings": {"split": cfg.eval.split, "limit": cfg.eval.limit, "seed": cfg.eval.seed,
                     "max_new_tokens": cfg.eval.max_new_tokens, "prompt_style": cfg.prompt.style},
        "metric_definitions": METRIC_DEFINITIONS,
        "suites": {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for suite in suites:
        data = load_suite(cfg, suite, data_dir)
        report["suites"][suite] = run_suite(engine, cfg, suite, data, out_dir)
    # What the server compares live traffic with once this model is promoted (flywheel/baseline.py).
    report["drift_baseline"] = baseline_from_counts([s["drift_counts"] for s in report["suites"].values()],
                                                    source={"model": model_name, "suites": suites, "created": report["created"]})
    write_json(out_dir / BASELINE_FILE, report["drift_baseline"])
    write_report(report, out_dir)
    return report


# ------------------------------------------------------------------------------------ rendering


def plot_dataset_f1(suite: dict[str, Any], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(suite["datasets"])
    parity = [100 * suite["datasets"][n]["parity"]["f1"] for n in names]
    strict = [100 * suite["datasets"][n]["strict"]["f1"] for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names) + 2), 4.5))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], parity, width=0.4, label="parity F1 (this model, as the paper scores)", color="#3b6ea8")
    ax.bar([x + 0.2 for x in xs], strict, width=0.4, label="strict offset F1 (this model)", color="#9fbfdf")
    markers = {"ReasoningNER-8B": ("*", "#c0392b"), "GPT-4": ("D", "#27ae60"), "GLiNER-L": ("^", "#8e44ad")}
    for ref, (marker, color) in markers.items():
        pts = [(x, TABLE1[ref][n]) for x, n in zip(xs, names) if n in TABLE1[ref]]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, s=60, zorder=3,
                       label=f"{ref} (paper Table 1)")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([n.replace("crossner_", "").replace("mit_", "mit ") for n in names], rotation=20)
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{suite['suite']}: per-dataset F1 (macro parity F1 {100 * suite['macro']['parity_f1']:.1f})")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def plot_label_f1(name: str, ds: dict[str, Any], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(ds["paper"]["per_label"])
    f1 = [100 * ds["paper"]["per_label"][lbl]["f1"] for lbl in labels]
    fig, ax = plt.subplots(figsize=(6.5, max(2.5, 0.35 * len(labels) + 1)))
    ax.barh(labels, f1, color="#3b6ea8")
    for y, (lbl, v) in enumerate(zip(labels, f1)):
        ax.text(v + 1, y, f"{v:.0f} (gold {ds['paper']['per_label'][lbl]['gold']})", va="center", fontsize=7)
    ax.set_xlim(0, 110)
    ax.invert_yaxis()
    ax.set_xlabel("paper F1 (%)")
    ax.set_title(f"{name}: per-label F1")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def _markdown(report: dict[str, Any], images: dict[str, list[str]]) -> str:
    lines = [f"# Evaluation report: {report['model']}", "",
             f"Engine `{report['engine']}`, profile `{report['profile']}`, created {report['created']}.", "",
             f"Settings: {json.dumps(report['settings'])}", "",
             f"Data lineage: `{json.dumps(report['lineage'])}`", ""]
    for suite_name, suite in report["suites"].items():
        lines += [f"## Suite: {suite_name}", "",
                  f"Macro parity F1 **{100 * suite['macro']['parity_f1']:.2f}** (files: {suite.get('files', 'prepared splits')}), "
                  f"macro paper F1 {100 * suite['macro']['paper_f1']:.2f}, macro strict F1 {100 * suite['macro']['strict_f1']:.2f}, "
                  f"mean parse rate {suite['mean_parse_rate']:.2f}; {suite['sentences']} sentences in {suite['seconds']} s "
                  f"({suite['sentences_per_s']} sentences/s).", "",
                  "| dataset | version | n | parity P | parity R | parity F1 | paper F1 | strict F1 | parse rate | ungrounded rate | paper Table 1 (R-NER-8B / GPT-4 / GLiNER-L) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, ds in suite["datasets"].items():
            refs = " / ".join(f"{TABLE1[m][name]:.1f}" if name in TABLE1[m] else "–" for m in ("ReasoningNER-8B", "GPT-4", "GLiNER-L"))
            lines.append(f"| {name} | {ds['source_format']} | {ds['sentences']} | {100 * ds['parity']['precision']:.1f} | "
                         f"{100 * ds['parity']['recall']:.1f} | {100 * ds['parity']['f1']:.1f} | {100 * ds['paper']['f1']:.1f} | "
                         f"{100 * ds['strict']['f1']:.1f} | "
                         f"{ds['parse_rate']:.2f} | {ds['ungrounded_rate']:.2f} | {refs} |")
        lines.append("")
        lines += [f"![{img}]({img})" for img in images.get(suite_name, [])]
        lines.append("")
    lines += ["## Metric definitions", "", report["metric_definitions"], ""]
    return "\n".join(lines)


def _html(markdown_text: str, out_dir: Path, images: dict[str, list[str]], report: dict[str, Any]) -> str:
    """Self-contained HTML (plots embedded), so the Kubeflow dashboard can show it as one artifact."""
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(report['model'])}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}</style></head><body>"]
    in_table = False
    for line in markdown_text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-"}:
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                parts.append("<table>")
                in_table = True
            parts.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            parts.append("</table>")
            in_table = False
        if line.startswith("!["):
            name = line[line.index("(") + 1 : -1]
            data = base64.b64encode((out_dir / name).read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}'/>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            parts.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.strip():
            parts.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    if in_table:
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    images: dict[str, list[str]] = {}
    for suite_name, suite in report["suites"].items():
        main_png = f"f1-{suite_name}.png"
        plot_dataset_f1(suite, out_dir / main_png)
        images[suite_name] = [main_png]
        for name, ds in suite["datasets"].items():
            if ds["paper"]["per_label"]:
                png = f"labels-{name}.png"
                plot_label_f1(name, ds, out_dir / png)
                images[suite_name].append(png)
    write_json(out_dir / "report.json", report)
    md = _markdown(report, images)
    (out_dir / "report.md").write_text(md, encoding="utf-8")
    (out_dir / "report.html").write_text(_html(md, out_dir, images, report), encoding="utf-8")
    return {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "html": out_dir / "report.html"}
