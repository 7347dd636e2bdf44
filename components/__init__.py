"""Kubeflow Pipelines components: thin, typed adapters over the reasoning_ner library.

Each component is a self-contained lightweight component (imports inside the function, so the
compiled YAML carries everything it needs) running on a pinned image that has the library
installed. The docstring is what the Kubeflow dashboard shows.
"""
