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
    assert found is not None, ("yamllint not found at .venv-tools/bin/yamllint (the Makefile installs "
                               "requirements/tools.txt there) nor in $RNER_YAMLLINT")
    return found


def lint(yamllint: str, *paths: Path, root: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """yamllint with ``root``'s .yamllint, run in ``root`` on paths relative to it (the ignore patterns
    are anchored at the repository root)."""
    rel = [str(p.relative_to(root)) if p.is_absolute() and p.is_relative_to(root) else str(p) for p in paths]
    return subprocess.run([yamllint, "-c", str(root / ".yamllint"), "-f", "parsable", "--strict", *rel],
                          capture_output=True, text=True, cwd=root, timeout=120)


def test_chart_static_yaml(yamllint: str) -> None:
    files = [CHART / "Chart.yaml", CHART / "values.yaml", REPO_ROOT / ".checkov.yaml", *sorted((CHART / "examples").glob("*.yaml"))]
    proc = lint(yamllint, *files)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_repository_yaml(yamllint: str) -> None:
    proc = lint(yamllint, Path("."))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_repository_lint_reports_a_bad_file_and_ignores_only_what_the_config_names(yamllint: str, tmp_path: Path) -> None:
    """A clone under a folder named ``work`` (as CI's and a developer's may be): the bad file outside the
    ignored paths is reported, the ignored ones are not, whatever the folders above the clone are called."""
    clone = tmp_path / "work" / "clone"
    bad = "a: 1\na: 2\n"
    for rel in ("docs/bad.yaml", "work/data/bad.yaml", "charts/c/templates/t.yaml", "pipelines/reasoning_ner_pipeline.yaml"):
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        (clone / rel).write_text(bad)
    (clone / ".yamllint").write_text(CONFIG.read_text())
    proc = lint(yamllint, Path("."), root=clone)
    reported = {line.split(":", 1)[0].removeprefix("./") for line in proc.stdout.splitlines() if line.strip()}
    assert proc.returncode != 0 and reported == {"docs/bad.yaml"}, proc.stdout


def test_the_linter_is_real(yamllint: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\na: 2\nb:   [1,2]\n")
    proc = lint(yamllint, bad)
    assert proc.returncode != 0 and "duplication of key" in proc.stdout
