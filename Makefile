# kube-changejob developer entry points. `make` alone lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables

PYTHON ?= python3
VENV := .venv
VENV_STAMP := $(VENV)/.installed
PY := $(VENV)/bin/python
# Which cluster `make cluster-up/down` manage; the test fixture uses changejob-test too, so a cluster
# started here is reused (and kept) by `make test`.
CLUSTER_NAME ?= changejob-test
# Extra arguments for pytest, e.g. `make test PYTEST_ARGS='-k smoke -x'`.
PYTEST_ARGS ?=
# Extra arguments for benchmarks/run.py, e.g. `make bench BENCH_ARGS='--quick'`.
BENCH_ARGS ?=
# Tools to build (tools/build.sh; empty = all pinned tools). Cached builds take a second.
TOOLS ?=
# `make cluster-up REAL_NODE=1` adds the real node (kubelet + containerd, tools/real-node.sh).
REAL_NODE ?=

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  make %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: tools
tools: ## Build the pinned binaries (Kubernetes, etcd, kwok, helm, ...) into .tools/bin
	tools/build.sh $(TOOLS)

.PHONY: venv
venv: $(VENV_STAMP) ## Create .venv with the project and its test extras

# Reinstalls only when pyproject.toml changes.
$(VENV_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required, $(PYTHON) is %d.%d" % sys.version_info[:2])'
	[[ -x $(PY) ]] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# The runtime dependencies, pinned with hashes for `pip install --require-hashes` (the image uses it).
# uv resolves one universal lock for every platform and Python >= 3.11 (the image runs 3.12 on amd64
# and arm64), keeping the pins already in the file unless pyproject.toml needs others.
# The file's header records the command as run here: the update bot (.github/renovate.json) reruns it.
LOCK_COMPILE = $(VENV)/bin/uv pip compile --quiet pyproject.toml --universal --python-version 3.11 --generate-hashes

.PHONY: lock
lock: venv ## Regenerate requirements.lock (hashed runtime dependencies) from pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[lock]'
	$(LOCK_COMPILE) --output-file requirements.lock

.PHONY: lock-check
lock-check: venv ## Fail if requirements.lock is not what `make lock` would write
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[lock]'
	tmp=$$(mktemp -d) && cp requirements.lock "$$tmp/" && $(LOCK_COMPILE) --output-file "$$tmp/requirements.lock" \
	  && diff -u <(tail -n +3 requirements.lock) <(tail -n +3 "$$tmp/requirements.lock") && rm -rf "$$tmp"

.PHONY: test
test: venv tools ## Run the unit, integration and e2e tests (boots the local cluster, real node and images itself)
	$(PY) -m pytest tests/unit tests/integration tests/security tests/e2e $(PYTEST_ARGS)

.PHONY: e2e
e2e: venv tools ## Run only the e2e tests: the chart and the operator image on the real node
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

.PHONY: unit
unit: venv ## Run only the unit tests (no cluster)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

.PHONY: lint
lint: venv ## ruff check, ruff format --check, mypy, import-linter
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: cluster-up
cluster-up: tools ## Start (or reuse) the local cluster CLUSTER_NAME (REAL_NODE=1: with the real node); prints its KUBECONFIG
	tools/cluster.sh up $(CLUSTER_NAME) $(if $(filter 1 yes true,$(REAL_NODE)),--real-node)

.PHONY: cluster-down
cluster-down: ## Delete the local cluster CLUSTER_NAME and its real node, undoing the node's host changes
	tools/cluster.sh down $(CLUSTER_NAME)

.PHONY: image
image: tools ## Build the operator image from the Dockerfile (no daemon, no registry); load it into a running real node
	tools/image.sh build
	if tools/real-node.sh socket $(CLUSTER_NAME) >/dev/null 2>&1; then tools/image.sh load $(CLUSTER_NAME); \
	else echo "no real node runs in cluster $(CLUSTER_NAME): the images are loaded when it starts"; fi

.PHONY: cluster-status
cluster-status: ## List the local clusters and their health
	tools/cluster.sh status

.PHONY: demo
demo: venv tools ## The guide's first ChangeTriggeredJob with the operator on the local cluster
	tools/demo.sh

.PHONY: bench
bench: venv tools ## Benchmarks on the local cluster: tables in the output, JSON in benchmarks/results/
	$(PY) benchmarks/run.py $(BENCH_ARGS)

.PHONY: bench-tracing
bench-tracing: venv tools ## Change-to-Job latency with tracing (real Jaeger) on vs off
	$(PY) benchmarks/tracing_overhead.py
