"""Container images: names and tags come from here only, and the tag is the package version.

The CI workflow (.github/workflows/images.yml) builds and pushes exactly these references; the
pipeline components, the manifests and the Helm chart read them from here (or from the chart's
values, which a test keeps equal).
"""

from __future__ import annotations

from . import __version__

REGISTRY = "ghcr.io/reasoning-ner"

#: image name -> what it holds
IMAGES = {
    "cpu": "data steps, promotion and deploy (torch CPU, the reasoning_ner package, dvc, great-expectations)",
    "train-gpu": "SFT, GRPO and evaluation (CUDA torch, trl, peft, deepspeed, the vLLM version trl supports)",
    "serve": "the NER service (rner serve) in front of KServe's Hugging Face runtime; CPU only",
}


def image(name: str, tag: str | None = None) -> str:
    if name not in IMAGES:
        raise ValueError(f"unknown image {name!r}; known: {', '.join(IMAGES)}")
    return f"{REGISTRY}/reasoning-ner-{name}:{tag or __version__}"
