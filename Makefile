# Runloom: the verbs a newcomer needs. `make run` starts everything, `make test` checks everything.
# A fresh machine needs only Python 3.11+ and make: `setup` installs uv (into .cache/uv) if missing.

SHELL := /bin/bash
.DEFAULT_GOAL := help
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
UV_HOME := .cache/uv
UV := $(shell command -v uv 2>/dev/null || echo $(UV_HOME)/bin/uv)
CONTRACTS_BASE ?= HEAD
PYTEST_ARGS ?=
export UV_LINK_MODE ?= copy

.PHONY: help setup run cluster chaos soak netns-deps bench-cluster test pytest lint fmt contracts \
	contracts-check bench bench-run eval browser-deps promtool clean clean-data k8s k8s-tools

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(UV_HOME)/bin/uv:
	@echo "uv not found: installing it into $(UV_HOME) (a private virtualenv)"
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required (found " + sys.version.split()[0] + "); set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/python -m pip install --quiet --disable-pip-version-check uv

setup: $(if $(filter $(UV_HOME)/bin/uv,$(UV)),$(UV_HOME)/bin/uv) ## install uv if missing, then the locked environment (.venv)
	$(UV) sync --frozen

run: setup ## start the whole platform (nats-server, PostgreSQL, every service) on embedded defaults
	$(UV) run --frozen runloom up

cluster: setup ## the same on a 3-node NATS cluster (R3 streams) with 2 replicas of every service
	$(UV) run --frozen runloom up --cluster

test: setup browser-deps netns-deps k8s-tools promtool lint contracts-check pytest ## lint, contracts check and every test

pytest: setup k8s-tools ## only the tests (PYTEST_ARGS="tests/foundation -x" to choose)
	@rc=0; $(UV) run --frozen pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: pytest collected no tests (exit 5): that is a failure, not a pass" >&2; fi; \
	exit $$rc

lint: setup ## ruff (lint + format check), mypy, and import-linter (the service boundaries)
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy
	$(UV) run --frozen lint-imports --no-cache

fmt: setup ## format and auto-fix
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

contracts: setup ## regenerate libs/contracts/generated (JSON Schema, TypeScript, AsyncAPI)
	$(UV) run --frozen python -m runloom.contracts.codegen

contracts-check: setup ## fail on drift of the generated contracts or on a breaking change (CONTRACTS_BASE=HEAD)
	$(UV) run --frozen python -m runloom.contracts.codegen --check
	$(UV) run --frozen python -m runloom.contracts.compat --against $(CONTRACTS_BASE)

bench: setup ## run the benchmarks (bench/): streaming figures, what tracing costs (export on vs off), a noisy neighbour (fair vs FIFO)
	@if [ -d bench ]; then $(UV) run --frozen python -m bench; else echo "no bench/ folder yet: nothing to run"; fi
	@if [ -f bench/tracing.py ]; then $(UV) run --frozen python -m bench.tracing; fi
	@if [ -f bench/noisy_neighbour.py ]; then $(UV) run --frozen python -m bench.noisy_neighbour; fi

chaos: setup netns-deps ## the fault matrix on a 3-node cluster in network namespaces (<= 10 min); prints the table
	@mkdir -p test-artifacts; rm -f test-artifacts/chaos.jsonl; rc=0; \
	RUNLOOM_CHAOS=1 RUNLOOM_CHAOS_REPORT=$(CURDIR)/test-artifacts/chaos.jsonl timeout 600 \
		$(UV) run --frozen pytest tests/chaos -q || rc=$$?; \
	$(UV) run --frozen python -m runloom.devkit.chaos test-artifacts/chaos.jsonl; exit $$rc

SOAK_MINUTES ?= 30
SOAK_SEED ?=

soak: setup netns-deps ## the cluster under steady load + seeded random faults for SOAK_MINUTES (30); checker, growth table, plot (not in make test)
	$(UV) run --frozen python -m runloom.devkit.soak --minutes $(SOAK_MINUTES) $(if $(SOAK_SEED),--seed $(SOAK_SEED)) --out test-artifacts/soak

netns-deps: ## install Debian's iproute2 (ip netns, veth, bridge) for the fault tests when missing (root + apt only)
	@if command -v ip >/dev/null; then \
		echo "iproute2: $$(command -v ip)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "iproute2 missing: installing it with apt-get"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null; \
	else \
		echo "iproute2 missing and cannot be installed here: the fault tests will be skipped" >&2; \
	fi

CHECKOV_VERSION := 3.3.30
CHECKOV := .cache/checkov/bin/checkov

k8s-tools: $(CHECKOV) ## checkov in its own environment (.cache/checkov: its pins clash with ours)

$(CHECKOV): | setup
	$(UV) venv --quiet --allow-existing --python .venv/bin/python .cache/checkov
	$(UV) pip install --quiet --python .cache/checkov/bin/python checkov==$(CHECKOV_VERSION)

k8s: setup k8s-tools ## render every overlay and run all the Kubernetes checks, the image's environment included
	@for o in deploy/k8s/overlays/*/; do \
		n=$$($(UV) run --frozen kubectl kustomize $$o | grep -c '^kind:'); \
		echo "$$o: $$n objects"; \
	done
	RUNLOOM_K8S_IMAGE=1 $(UV) run --frozen pytest tests/k8s -q $(PYTEST_ARGS)

bench-run: setup ## one research run end to end, this tree vs BEFORE=<git ref> interleaved (5 rounds, medians); embedding cost
	$(UV) run --frozen python -m bench.research_run $(if $(BEFORE),--before $(BEFORE)) $(BENCH_RUN_ARGS)
	$(UV) run --frozen python -m bench.embedding_cost

bench-cluster: setup ## event-log figures on one node vs a 3-node R3 cluster (appends/s, leader-loss stall)
	$(UV) run --frozen python -m bench.cluster --rounds 3

eval: setup ## research quality: retrieval recall and on-topic sections, keyword-only vs hybrid
	$(UV) run --frozen python -m evaluation $(EVAL_ARGS)

browser-deps: ## install Debian's chromium for the browser tests when missing (root + apt only)
	@if [ -x /usr/bin/chromium ]; then \
		echo "chromium: /usr/bin/chromium"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "chromium missing: installing it with apt-get"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "chromium missing and cannot be installed here (needs root and apt-get):" \
		     "install it (e.g. sudo apt-get install chromium) for the browser tests" >&2; \
	fi

promtool: ## install Debian's prometheus (for promtool: alert rules, /metrics checks) when missing
	@if command -v promtool >/dev/null; then \
		echo "promtool: $$(command -v promtool)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "promtool missing: installing Debian's prometheus with apt-get"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else \
		echo "promtool missing and cannot be installed here (needs root and apt-get):" \
		     "install it (e.g. sudo apt-get install prometheus) for the observability tests" >&2; \
	fi

clean: ## remove caches, build output and the virtualenv (keeps .runloom data)
	rm -rf .venv .cache .pytest_cache .mypy_cache .ruff_cache .hypothesis test-artifacts dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

clean-data: ## delete .runloom (events, database, API key) and, as root, its PostgreSQL folder
	@pg=$$(cat .runloom/postgres/system-dir 2>/dev/null || true); \
	case "$$pg" in /var/lib/runloom/[0-9a-f]*) echo "rm -rf $$pg"; rm -rf "$$pg";; esac
	rm -rf .runloom
