"""templates/configmap-scripts.yaml: the registration and smoke-test scripts, verbatim from files/."""

from __future__ import annotations

import ast

from .chart_tools import CHART, template_objects, validate

TEMPLATE = "templates/configmap-scripts.yaml"


def test_scripts_verbatim_and_stdlib_only() -> None:
    (cm,) = template_objects(TEMPLATE)
    for name in ("register_pipeline.py", "smoke_test.py"):
        source = (CHART / "files" / name).read_text()
        assert cm["data"][name] == source.rstrip("\n")
        tree = ast.parse(source)
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert imported <= {"__future__", "json", "os", "sys", "time", "urllib", "uuid"}, imported


def test_only_when_something_uses_it() -> None:
    assert template_objects(TEMPLATE, {"pipeline": {"register": {"enabled": False}}, "tests": {"enabled": False}}) == []
    assert template_objects(TEMPLATE, {"tests": {"enabled": False}}) != []


def test_valid() -> None:
    assert validate(template_objects(TEMPLATE)) == []
