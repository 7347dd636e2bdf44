"""checkov (IaC security scanner) on the rendered chart and on manifests/: zero failed checks.

The chart is rendered for the defaults, every example and all switches on; manifests/ is rendered
per overlay with `kubectl kustomize`. Skips come only from the repository's .checkov.yaml (each
with its reason) and from checkov.io/skipN annotations on single objects (each with its reason).
checkov is found at <repo>/.venv-tools/bin/checkov, else $RNER_CHECKOV.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from .chart_tools import EXAMPLES, REPO_ROOT, kubectl, load_values, render_files, tool
from .test_chart import EVERYTHING

CONFIG = REPO_ROOT / ".checkov.yaml"
OVERLAYS = ["base", "knative", "standard-keda", "standard-external-keda", "cpu-smoke"]


def test_every_configured_skip_has_a_reason() -> None:
    text = CONFIG.read_text()
    entries = re.findall(r"^\s*-\s*(CKV\S*)(.*)$", text, re.M)
    assert entries, f"no skip-check entries in {CONFIG}"
    for check, rest in entries:
        reason = rest.partition("#")[2].strip()
        assert len(reason) > 20, f"{check} is skipped without a reason in {CONFIG}"


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> dict:
    checkov = tool("checkov", "RNER_CHECKOV")
    assert checkov is not None, ("checkov not found at .venv-tools/bin/checkov (the Makefile installs "
                                 "requirements/tools.txt there) nor in $RNER_CHECKOV")
    root = tmp_path_factory.mktemp("checkov")
    cases = {"defaults": None, **{p.stem: load_values(p) for p in EXAMPLES}, "everything": EVERYTHING}
    for case, values in cases.items():
        for path, text in render_files(values).items():
            if text.strip() and not path.endswith("NOTES.txt"):
                (root / "chart").mkdir(exist_ok=True)
                (root / "chart" / f"{case}--{path.replace('/', '_')}").write_text(text)
    kubectl_bin = kubectl()
    if kubectl_bin:
        (root / "manifests").mkdir()
        for overlay in OVERLAYS:
            target = REPO_ROOT / "manifests" / ("base" if overlay == "base" else f"overlays/{overlay}")
            out = subprocess.run([kubectl_bin, "kustomize", str(target)], capture_output=True, text=True, check=True)
            (root / "manifests" / f"{overlay}.yaml").write_text(out.stdout)
    proc = subprocess.run([checkov, "-d", str(root), "--framework", "kubernetes", "--config-file", str(CONFIG),
                           "-o", "json", "--compact", "--skip-download"],
                          capture_output=True, text=True, timeout=300, cwd=root)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov produced no JSON (rc {proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    reports = report if isinstance(report, list) else [report]
    return {"reports": reports, "kubectl": bool(kubectl_bin), "root": root}


def _results(scan: dict, kind: str) -> list[dict]:
    return [r for rep in scan["reports"] for r in rep["results"].get(kind, [])]


def test_no_failed_checks(scan: dict) -> None:
    failed = [f"{f['check_id']} {f['check_name']}: {f['resource']} ({f['file_path']})" for f in _results(scan, "failed_checks")]
    assert failed == [], "checkov failures:\n" + "\n".join(failed)


def test_everything_was_scanned(scan: dict) -> None:
    summary = scan["reports"][0]["summary"]
    assert summary["parsing_errors"] == 0
    files = {r["file_path"].split("/")[1] for r in _results(scan, "passed_checks")}
    assert "chart" in files
    if scan["kubectl"]:
        assert "manifests" in files
    passed_ids = {r["check_id"] for r in _results(scan, "passed_checks")}
    # the security defaults are really checked, not skipped: non-root, read-only root, no escalation,
    # capabilities, seccomp, resources, service account tokens
    assert {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_31", "CKV_K8S_37", "CKV_K8S_38",
            "CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13", "CKV2_K8S_6"} <= passed_ids


def test_object_level_skips_carry_reasons(scan: dict) -> None:
    configured = set(re.findall(r"^\s*-\s*(CKV\S*)", CONFIG.read_text(), re.M))
    for skipped in _results(scan, "skipped_checks"):
        if skipped["check_id"] in configured:
            continue
        reason = (skipped.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason.strip()) > 20, f"{skipped['check_id']} skipped on {skipped['resource']} without a reason"
