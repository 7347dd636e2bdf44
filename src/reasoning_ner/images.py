"""Container images: names and tags come from here only, and the stable tag is the package version.

The CI workflow (.github/workflows/images.yml) pushes ``image(name)`` (the release tag) only from a
``v<version>`` git tag, and ``image(name, commit_tag(sha))`` from every push to main; no tag is ever
pushed twice. The pipeline components, the manifests and the Helm chart read the references from
here (or from the chart's values, which a test keeps equal). The committed compiled pipeline keeps
the stable ``image(name)``; what is registered with Kubeflow Pipelines is that YAML with its
references rewritten to a chosen tag or digests (:func:`rewrite_references`; the chart's
``rner.pipelineYaml`` does the same), named by its content (:func:`content_version`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Mapping

from . import __version__

REGISTRY = "ghcr.io/reasoning-ner"

#: image name -> what it holds
IMAGES = {
    "cpu": "data steps, promotion and deploy (torch CPU, the reasoning_ner package, dvc, great-expectations)",
    "train-gpu": "SFT, GRPO and evaluation (CUDA torch, trl, peft, deepspeed, the vLLM version trl supports)",
    "serve": "the NER service (rner serve) in front of KServe's Hugging Face runtime; CPU only",
}


DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def image(name: str, tag: str | None = None, digest: str | None = None, registry: str = REGISTRY) -> str:
    """``<registry>/reasoning-ner-<name>:<tag, default the package version>[@<digest>]``."""
    if name not in IMAGES:
        raise ValueError(f"unknown image {name!r}; known: {', '.join(IMAGES)}")
    tag = tag or __version__
    if not TAG_RE.match(tag):
        raise ValueError(f"image tag {tag!r} is not a valid tag")
    if digest and not DIGEST_RE.match(digest):
        raise ValueError(f"digest {digest!r} of image {name} is not sha256:<64 hex>")
    ref = f"{registry.rstrip('/')}/reasoning-ner-{name}:{tag}"
    return f"{ref}@{digest}" if digest else ref


def commit_tag(sha: str) -> str:
    """The immutable tag CI gives a build of main: ``sha-`` and the commit's first 12 hex digits."""
    if not re.fullmatch(r"[0-9a-f]{12,40}", sha):
        raise ValueError(f"{sha!r} is not a git commit sha")
    return f"sha-{sha[:12]}"


def rewrite_references(text: str, tag: str | None = None, digests: Mapping[str, str] | None = None,
                       registry: str = REGISTRY) -> str:
    """``text`` with every stable ``image(name)`` replaced by ``image(name, tag, digests[name], registry)``.

    Used on the compiled pipeline before it is uploaded, so its steps run the images of one build
    (a commit tag, or digests) while the committed YAML keeps the stable references.
    """
    digests = dict(digests or {})
    unknown = set(digests) - set(IMAGES)
    if unknown:
        raise ValueError(f"digests for unknown images {sorted(unknown)}; known: {', '.join(IMAGES)}")
    for name in IMAGES:
        text = text.replace(image(name), image(name, tag, digests.get(name), registry))
    return text


def content_version(text: str, prefix: str = __version__) -> str:
    """A pipeline version name that changes exactly when the uploaded YAML does:
    ``<prefix>-<first 12 hex of its sha256>`` (the chart's rner.pipelineVersion computes the same)."""
    return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
