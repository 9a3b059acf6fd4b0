# Two commands for a newcomer: `make demo` and `make test`. Each sets itself up idempotently.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
export MLFLOW_DISABLE_TELEMETRY := true
export ORT_DISABLE_TELEMETRY := 1
export MPLBACKEND := Agg

.PHONY: setup haproxy demo test check lint typecheck unit bench clean

setup: $(STAMP) $(NODE_STAMP) haproxy

# Reinstall only when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

# Azurite (the Azure Blob emulator) from npm into ./node_modules; 3.35.x is the last release for Node 20.
$(NODE_STAMP): package.json $(wildcard package-lock.json)
	@command -v npm >/dev/null || { echo "Azurite needs Node.js 20+ with npm (e.g. apt-get install nodejs npm)"; exit 1; }
	npm install --no-audit --no-fund
	touch $(NODE_STAMP)

# HAProxy, for `mct route --engine haproxy` and its tests: from Debian's packages when missing and we are
# root (as on CI); otherwise a hint, and the haproxy-engine tests are skipped with that reason.
haproxy:
	@command -v haproxy >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq haproxy >/dev/null) || echo "could not install haproxy"; \
	  else \
	    echo "haproxy is not installed (sudo apt-get install haproxy): the haproxy engine's tests are skipped"; \
	  fi; }

demo: setup
	$(BIN)/mct demo

test: check unit

check: lint typecheck

lint: setup
	$(BIN)/ruff format --check toolkit serving infra tests bench
	$(BIN)/ruff check toolkit serving infra tests bench

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -n 2 --dist loadfile

# The sync benchmark compares with Debian's rclone: installed here when missing and we are root.
# The anchors the benchmarks compare against, from Debian's packages.
BENCH_TOOLS := rclone wrk nginx

bench: setup
	@missing=$$(for tool in $(BENCH_TOOLS); do command -v $$tool >/dev/null || echo $$tool; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq $$missing || echo "could not install $$missing: those comparisons are skipped"; \
	  else \
	    echo "missing $$missing: install with sudo apt-get install $$missing to compare against them"; \
	  fi; \
	fi
	$(BIN)/python bench/onnx_vs_sklearn.py
	$(BIN)/python bench/sync_vs_rclone.py
	$(BIN)/python bench/server_vs_mlflow.py
	$(BIN)/python bench/router_vs_nginx.py

# The serving image (Dockerfile), for linux/amd64: what Fargate, Cloud Run and Container Apps run.
# `make image IMAGE=docker.io/you/mct-serving:0.1.0`, then `docker push` it where the clouds can pull.
IMAGE ?= mct-serving:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: image
image:
	@command -v docker >/dev/null || { echo "make image needs Docker (docker build) with a running engine"; exit 1; }
	docker build --platform linux/amd64 --tag $(IMAGE) .

clean:
	rm -rf $(VENV) node_modules .mct .pytest_cache .mypy_cache .ruff_cache
