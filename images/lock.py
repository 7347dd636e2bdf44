"""Write and check the image locks (``images/<name>/requirements.lock``), one fully pinned set per image.

Each lock is the exact set pip resolves for the image's roots, for CPython 3.11 on linux/x86_64 (the
images' platform), written as sorted ``name==version`` lines. The project itself is not in a lock: the
Dockerfiles install it with ``--no-deps`` on top, so its own pins (``pyproject.toml``) must be in the
lock at the same versions (checked).

* ``cpu``: the project's runtime dependencies with the main lock as constraints
  (``requirements/constraints.txt``), torch as the CPU build (``torch==<pin>+cpu``, PyTorch CPU index):
  the same versions as ``.venv``, without the dev tools.
* ``serve``: only what ``rner serve --backend=remote`` imports (kserve, fastapi via kserve, aiohttp,
  orjson, prometheus-client, pydantic, PyYAML, typer, rich); the main lock as constraints. No torch.
* ``train-gpu``: the project's runtime dependencies + the vLLM version trl supports + deepspeed +
  liger-kernel, CUDA torch from PyPI. The main lock is a constraint except for the few packages that
  vLLM caps lower (:data:`GPU_UNCONSTRAINED`).

Usage (pip resolves from metadata only, nothing large is downloaded)::

    python images/lock.py write cpu --find-links /opt/wheels     # torch+cpu from a local wheel folder
    python images/lock.py write serve
    python images/lock.py write train-gpu
    python images/lock.py check cpu serve                        # what tests/test_images.py runs (~15 s)

``write cpu`` takes torch's CPU build from the PyTorch CPU index unless ``--find-links`` names a folder
holding it. ``check`` needs no torch download either: it verifies every pin on PyPI with
``pip install --dry-run --no-deps --report`` (metadata only) and then checks, from that metadata, that
the pins are a complete and consistent closure of the roots (what ``pip check`` would say after an
install) and that nothing in the lock is unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
IMAGES_DIR = REPO / "images"
MAIN_LOCK = REPO / "requirements" / "constraints.txt"
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

#: The vLLM release in the train-gpu image: the newest one inside trl 1.16's supported range
#: (``trl[vllm]``: ``vllm>=0.22.0,<=0.31.0``) that also accepts the project's pins: vLLM 0.31.0 caps
#: ``transformers<5.18`` (we pin 5.24.0); 0.30.0 requires ``torch==2.13.0`` (our pin) and
#: ``transformers>=5.10.4``.
VLLM = "vllm==0.30.0"
#: ``trl[deepspeed]`` needs ``deepspeed>=0.18.6``; the newest release.
DEEPSPEED = "deepspeed==0.19.8"
#: ``trl[liger]`` needs ``liger-kernel>=0.8.2`` (``sft.use_liger_kernel`` on GPU).
LIGER = "liger-kernel==0.8.5"
#: Main-lock pins vLLM 0.30 does not accept (fastapi<0.137; numpy<2.4 through mistral-common); they
#: resolve freely in the GPU lock.
GPU_UNCONSTRAINED = {"fastapi", "numpy"}
#: What ``rner serve --backend=remote`` imports at run time (KServe model server + our routes).
SERVE_ROOTS = ["kserve", "fastapi", "uvicorn", "aiohttp", "httpx", "orjson", "prometheus-client", "pydantic",
               "PyYAML", "typer", "rich"]


def project() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def project_dependencies() -> list[str]:
    return list(project()["dependencies"])


def torch_pin() -> str:
    for dep in project_dependencies():
        req = Requirement(dep)
        if canonicalize_name(req.name) == "torch":
            (spec,) = req.specifier
            return spec.version
    raise RuntimeError("pyproject.toml does not pin torch")


def parse_lock(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a lock; every requirement line must be ``name==version``."""
    pins: dict[str, str] = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", line)
        if not m:
            raise ValueError(f"{path}:{n}: {raw!r} is not pinned as name==version")
        name = canonicalize_name(m.group(1))
        if name in pins:
            raise ValueError(f"{path}:{n}: {name} is pinned twice")
        pins[name] = m.group(2)
    return pins


def main_lock_without(names: set[str]) -> str:
    keep = [line for line in MAIN_LOCK.read_text().splitlines()
            if line.strip() and canonicalize_name(line.split("==")[0]) not in names]
    return "\n".join(keep) + "\n"


@dataclass
class Spec:
    name: str
    roots: list[str]
    constraints: str
    header: str
    extra_pip_args: list[str] = field(default_factory=list)


def spec(name: str, find_links: str | None = None) -> Spec:
    deps = project_dependencies()
    torch = torch_pin()
    if name == "cpu":
        roots = [d for d in deps if canonicalize_name(Requirement(d).name) != "torch"] + [f"torch=={torch}+cpu"]
        extra = ["--find-links", find_links] if find_links else ["--extra-index-url", PYTORCH_CPU_INDEX]
        return Spec(name, roots, MAIN_LOCK.read_text(), "the project's runtime dependencies, main lock versions, CPU torch",
                    extra)
    if name == "serve":
        return Spec(name, SERVE_ROOTS, MAIN_LOCK.read_text(), "rner serve --backend=remote (no torch), main lock versions")
    if name == "train-gpu":
        return Spec(name, deps + [VLLM, DEEPSPEED, LIGER], main_lock_without(GPU_UNCONSTRAINED),
                    f"the project's runtime dependencies + {VLLM}, {DEEPSPEED}, {LIGER}; CUDA torch from PyPI")
    raise SystemExit(f"unknown image {name!r}; known: cpu, serve, train-gpu")


def _pip(args: list[str], pip: list[str]) -> subprocess.CompletedProcess[str]:
    # --isolated: no user/site pip configuration (a machine's find-links or constraints must not leak
    # into a lock); the CA bundle is passed on explicitly when the environment names one.
    cmd = [*pip, "--isolated", "--disable-pip-version-check", *args]
    cert = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if cert:
        cmd += ["--cert", cert]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def resolve(s: Spec, pip: list[str]) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(s.constraints)
        report = Path(tmp) / "report.json"
        proc = _pip(["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
                     "-c", str(constraints), *s.extra_pip_args, *s.roots], pip)
        if proc.returncode != 0:
            raise RuntimeError(f"pip could not resolve the {s.name} lock:\n{proc.stdout}\n{proc.stderr}")
        data = json.loads(report.read_text())
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in data["install"]}


def write(name: str, pip: list[str], find_links: str | None = None) -> Path:
    s = spec(name, find_links)
    pins = resolve(s, pip)
    lines = [
        f"# images/{name}/requirements.lock: {s.header}.",
        f"# Generated by `python images/lock.py write {name}` for CPython 3.11, linux/x86_64. Do not edit by hand.",
        *[f"{n}=={v}" for n, v in sorted(pins.items())],
    ]
    out = IMAGES_DIR / name / "requirements.lock"
    out.write_text("\n".join(lines) + "\n")
    return out


# ------------------------------------------------------------------------------------------- checks


@dataclass
class LockCheck:
    name: str
    pins: dict[str, str]
    problems: list[str]
    seconds: float = 0.0


def _bare(req: Requirement) -> Requirement:
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return Requirement(f"{req.name}{extras}{req.specifier}")


def closure_problems(roots: list[str], pins: dict[str, str], requires: dict[str, list[str]],
                     env: dict[str, str]) -> list[str]:
    """What ``pip check`` would report after installing ``pins``, plus pins no root reaches.

    ``requires``: canonical name -> Requires-Dist lines of the locked version. Markers are evaluated
    for the report's environment; extras are followed (``uvicorn[standard]`` pulls uvicorn's
    ``extra == "standard"`` requirements).
    """
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    todo: list[tuple[Requirement, str]] = []
    for root in roots:
        req = Requirement(root)
        if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
            todo.append((_bare(req), "<root>"))
    while todo:
        req, parent = todo.pop()
        name = canonicalize_name(req.name)
        version = pins.get(name)
        if version is None:
            problems.append(f"{parent} requires {req}, which the lock does not pin")
            continue
        if req.specifier and not req.specifier.contains(Version(version), prereleases=True):
            problems.append(f"{parent} requires {req}, but the lock pins {name}=={version}")
        for extra in ["", *sorted(req.extras)]:
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            for line in requires.get(name, []):
                dep = Requirement(line)
                if dep.marker is not None:
                    if not dep.marker.evaluate({**env, "extra": extra}):
                        continue
                    if extra and dep.marker.evaluate({**env, "extra": ""}):
                        continue  # a base requirement, followed by the "" pass
                elif extra:
                    continue
                todo.append((_bare(dep), f"{name}[{extra}]=={version}" if extra else f"{name}=={version}"))
    reached = {n for n, _ in seen}
    for name in sorted(set(pins) - reached):
        problems.append(f"{name}=={pins[name]} is pinned but nothing requires it (stale pin)")
    return problems


def _installed_requires(name: str, version: str) -> list[str] | None:
    """Requires-Dist of an installed distribution when it is exactly that version (else None)."""
    try:
        dist = importlib_metadata.distribution(name)
    except importlib_metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    return list(dist.requires or [])


def _local_requires(pins: dict[str, str]) -> dict[str, list[str]]:
    """Requires-Dist of local-version pins (``torch==2.13.0+cpu``), which live on the PyTorch index,
    not PyPI: taken from the identical build installed in this interpreter (the main .venv installs
    the same CPU wheel); refuses to guess when that is not the case."""
    local: dict[str, list[str]] = {}
    for pkg, version in pins.items():
        if "+" in version:
            req = _installed_requires(pkg, version)
            if req is None:
                raise LookupError(f"{pkg}=={version} is not installed here, so its metadata cannot be checked offline")
            local[pkg] = req
    return local


def fetch_metadata(pins: dict[str, str], pip: list[str], jobs: int = 2) -> tuple[dict[str, str], dict[str, Any], list[str]]:
    """PyPI metadata of exactly these pins for this platform: (environment, {name: install item}, problems).

    ``pip install --dry-run --ignore-installed --no-deps --report`` on slices of the pins, ``jobs`` pip
    processes at once (pip looks packages up one after the other; the work is network and CPU bound).
    """
    names = sorted(pins)
    slices = [names[i::jobs] for i in range(jobs) if names[i::jobs]]

    def dry_run(part: list[str]) -> tuple[str, dict[str, Any] | None]:
        with tempfile.TemporaryDirectory() as tmp:
            reqs = Path(tmp) / "pins.txt"
            reqs.write_text("".join(f"{p}=={pins[p]}\n" for p in part))
            report = Path(tmp) / "report.json"
            proc = _pip(["install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet", "--report", str(report),
                         "-r", str(reqs)], pip)
            if proc.returncode != 0:
                return f"pip could not find every pin for this platform:\n{proc.stderr[-4000:]}", None
            return "", json.loads(report.read_text())

    with ThreadPoolExecutor(max_workers=max(1, len(slices))) as pool:
        outcomes = list(pool.map(dry_run, slices))
    problems = [err for err, _ in outcomes if err]
    reports = [r for _, r in outcomes if r is not None]
    env = dict(reports[0]["environment"]) if reports else {}
    items = {canonicalize_name(i["metadata"]["name"]): i for r in reports for i in r["install"]}
    if not problems:
        for pkg, version in pins.items():
            if pkg not in items or items[pkg]["metadata"]["version"] != version:
                problems.append(f"{pkg}=={version}: pip resolved nothing for it")
    return env, items, problems


def _roots(name: str, pins: dict[str, str]) -> list[str]:
    if name == "cpu":
        return [r for r in project_dependencies() if canonicalize_name(Requirement(r).name) != "torch"] + [
            f"torch=={pins.get('torch', '?')}"]
    if name == "serve":
        return list(SERVE_ROOTS)
    raise ValueError(f"{name}: only the cpu and serve locks are checked against PyPI")


def check_many(names: list[str], pip: list[str], jobs: int = 2) -> list[LockCheck]:
    """Check the cpu and/or serve locks against PyPI metadata (no wheel is downloaded).

    The locks share most pins at the same versions, so their union is looked up once (pins that differ
    between locks get a second round).
    """
    import time

    started = time.perf_counter()
    locks = {n: parse_lock(IMAGES_DIR / n / "requirements.lock") for n in names}
    local: dict[str, list[str]] = {}
    rounds: list[dict[str, str]] = []
    for pins in locks.values():
        local.update(_local_requires(pins))
        for pkg, version in pins.items():
            if "+" in version:
                continue
            for r in rounds:
                if r.get(pkg, version) == version:
                    r[pkg] = version
                    break
            else:
                rounds.append({pkg: version})
    metadata_by_pin: dict[tuple[str, str], list[str]] = {}
    env: dict[str, str] = {}
    lookup_problems: list[str] = []
    for r in rounds:
        env_r, items, problems = fetch_metadata(r, pip, jobs)
        env = env or env_r
        lookup_problems += problems
        for pkg, item in items.items():
            metadata_by_pin[(pkg, item["metadata"]["version"])] = list(item["metadata"].get("requires_dist") or [])
    results = []
    for name, pins in locks.items():
        # A failed lookup is reported for every lock checked (the slices mix their pins).
        problems = list(lookup_problems)
        requires = {pkg: metadata_by_pin.get((pkg, v), []) for pkg, v in pins.items()}
        requires.update({pkg: req for pkg, req in local.items() if pkg in pins})
        if not lookup_problems:
            problems += closure_problems(_roots(name, pins), pins, requires, env)
        results.append(LockCheck(name, pins, problems, time.perf_counter() - started))
    return results


def check(name: str, pip: list[str], jobs: int = 2) -> LockCheck:
    (result,) = check_many([name], pip, jobs)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python images/lock.py", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["write", "check"])
    parser.add_argument("images", nargs="+", choices=["cpu", "serve", "train-gpu"])
    parser.add_argument("--find-links", default=None, help="folder with torch's CPU wheel (instead of the PyTorch CPU index)")
    parser.add_argument("--pip", default=None, help="pip to run (default: this interpreter's)")
    ns = parser.parse_args(argv)
    pip = [ns.pip] if ns.pip else [sys.executable, "-m", "pip"]
    status = 0
    if ns.action == "write":
        for name in ns.images:
            print(f"wrote {write(name, pip, ns.find_links).relative_to(REPO)}")
    else:
        if "train-gpu" in ns.images:
            raise SystemExit("train-gpu is checked structurally by tests/test_images.py (resolving it means CUDA wheels)")
        for result in check_many(ns.images, pip):
            print(f"{result.name}: {len(result.pins)} pins, {len(result.problems)} problem(s), {result.seconds:.1f}s")
            for p in result.problems:
                print(f"  {p}")
            status |= bool(result.problems)
    return status


if __name__ == "__main__":
    sys.exit(main())
