"""Kubeflow pipeline definitions (compiled YAML committed next to the source)."""
