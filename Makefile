# Two commands on a fresh machine:  `make run` (the main job)  and  `make test` (the test suite).
# Both create .venv, install the pinned requirements and fetch MNIST first; later calls reuse them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VOLUME ?= volume
DATA := $(VOLUME)/data/mnist.npz
# Extra flags for the runner, e.g. `make run ARGS="--workers 5 --split dirichlet"`.
ARGS ?=

.PHONY: setup data run test test-fast browser bench serve cluster cluster-down cluster-test cluster-packages
setup: $(VENV)/.installed $(DATA)

data: $(DATA)

$(VENV)/.installed: requirements-dev.txt requirements.txt requirements-server.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

$(DATA): | $(VENV)/.installed
	$(BIN)/python -m dataset --out $(DATA)

run: setup
	$(BIN)/python -m runner --volume $(VOLUME) $(ARGS)

# Headless Chromium for the browser tests (Debian's package; Playwright never downloads a browser here).
browser:
	@command -v chromium >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "install Chromium (Debian: apt-get install chromium) for the browser tests"; fi; }

test: setup browser
	$(BIN)/python -m pytest $(ARGS)

# Unit tests only (no TensorFlow training): seconds.
test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not e2e" $(ARGS)

serve: setup
	$(BIN)/python -m server --model-dir $(VOLUME)/models/mnist $(ARGS)

bench: setup
	$(BIN)/python -m bench.local_vs_central
	$(BIN)/python -m bench.aggregator_memory
	$(BIN)/python -m bench.model_choice
	$(BIN)/python -m bench.client_overhead
	$(BIN)/python -m bench.flower_ab

# A real single-node Kubernetes with Argo on this machine (root; docs/kubernetes.md, "Try the Kubernetes path on
# one machine"). Builds from pinned sources the first time (cluster/versions.env), then starts in a minute or two.
CLUSTER_PACKAGES := containerd runc containernetworking-plugins buildah debootstrap iptables conntrack curl openssl gcc libc6-dev
cluster-packages:
	@missing=$$(for p in $(CLUSTER_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

cluster: cluster-packages
	cluster/up.sh

cluster-down:
	cluster/down.sh

# Brings the cluster up, runs the production commands and the fault checks on it, tears it down.
cluster-test: setup cluster-packages
	cluster/e2e.sh
