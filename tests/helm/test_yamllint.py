"""yamllint on the chart's static YAML (Chart.yaml, values.yaml, examples, .checkov.yaml) and on
every YAML file of the repository, with the repository's .yamllint. yamllint is found at <repo>/.venv-tools/bin/yamllint, else $RNER_YAMLLINT."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .chart_tools import CHART, REPO_ROOT, tool

CONFIG = REPO_ROOT / ".yamllint"


@pytest.fixture(scope="module")
def yamllint() -> str:
    found = tool("yamllint", "RNER_YAMLLINT")
    if found is None:
        pytest.skip("yamllint not found at .venv-tools/bin/yamllint (the Makefile installs requirements/tools.txt there) nor in $RNER_YAMLLINT")
    return found


def lint(yamllint: str, *paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([yamllint, "-c", str(CONFIG), "-f", "parsable", "--strict", *map(str, paths)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)


def test_chart_static_yaml(yamllint: str) -> None:
    files = [CHART / "Chart.yaml", CHART / "values.yaml", REPO_ROOT / ".checkov.yaml", *sorted((CHART / "examples").glob("*.yaml"))]
    proc = lint(yamllint, *files)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_repository_yaml(yamllint: str) -> None:
    proc = lint(yamllint, REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_linter_is_real(yamllint: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\na: 2\nb:   [1,2]\n")
    proc = lint(yamllint, bad)
    assert proc.returncode != 0 and "duplication of key" in proc.stdout
