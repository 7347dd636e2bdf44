"""ReasoningNER: reason first, then extract named entities (arXiv 2511.11978)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("reasoning-ner")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
