"""The layering docs/architecture.md draws, checked on the code's own imports: the library never
imports kfp, the kubernetes package, components/ or pipelines/ (the CLI reaches pipelines/ lazily,
for the `rner pipeline` commands only)."""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "src" / "reasoning_ner"
FORBIDDEN = ("kfp", "kubernetes", "components", "pipelines")
#: (file, module) pairs allowed anyway: the `rner pipeline` commands import the pipeline lazily.
ALLOWED = {("cli/pipeline.py", "pipelines")}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_library_imports_no_face_and_no_cluster_client() -> None:
    files = sorted(LIBRARY.rglob("*.py"))
    assert len(files) > 40
    offenders = []
    for path in files:
        rel = path.relative_to(LIBRARY).as_posix()
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top in FORBIDDEN and (rel, top) not in ALLOWED:
                offenders.append(f"{rel} imports {module}")
    assert offenders == []


def test_the_check_sees_an_offending_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from kubernetes import client\n    import kfp.dsl\n")
    assert {m.split(".")[0] for m in imported_modules(bad)} == {"kubernetes", "kfp"}


def relative_imports(path: Path) -> set[str]:
    """Package-relative imports resolved to ``reasoning_ner``'s first-level names (``k8s``, ``config``)."""
    package = path.relative_to(LIBRARY).parent.parts
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            parts = list(base) + (node.module.split(".") if node.module else [a.name for a in node.names][:1])
            if parts:
                names.add(parts[0])
    return names


def test_the_configuration_imports_only_the_base_layer() -> None:
    """config/ sits below k8s/ and the stages: profiles carry their serving values themselves."""
    files = sorted((LIBRARY / "config").rglob("*.py"))
    assert files, "src/reasoning_ner/config/ is missing"
    base = {"config", "records", "labels", "images", "lineage"}
    offenders = {f"{p.relative_to(LIBRARY)} imports {m}" for p in files for m in relative_imports(p) - base}
    assert offenders == set()


def test_relative_imports_are_resolved_to_their_package() -> None:
    nested = LIBRARY / "k8s" / "rollout.py"
    assert {"config", "k8s"} <= relative_imports(nested)


def test_every_entry_point_resolves_the_configuration_one_way() -> None:
    """The CLI, the `python -m` mains, the KFP components and the pipeline call config.resolve_config
    (one precedence for params.yaml, --profile and --set); load_config is the layer beneath it."""
    repo = LIBRARY.parents[1]
    files = [p for p in LIBRARY.rglob("*.py") if "config" not in p.relative_to(LIBRARY).parts]
    files += sorted((repo / "components").rglob("*.py")) + sorted((repo / "pipelines").rglob("*.py"))
    callers = sorted(
        str(p.relative_to(repo)) for p in files
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "load_config"
    )
    assert callers == []
    resolving = {p.relative_to(repo).as_posix() for p in files if "resolve_config(" in p.read_text()}
    assert {"src/reasoning_ner/cli/common.py", "src/reasoning_ner/training/run.py",
            "components/train_sft/component.py", "components/evaluate_model/component.py"} <= resolving
