# saar: the two commands a fresh machine needs are `make run` and `make test`.
# Both create the virtual environment and install everything themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config/local.yaml

.PHONY: run test check lint typecheck proto proto-check envoy-validate docs docs-check deploy-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: Envoy + saar + emulated vLLM pools, embedded state; prints the endpoint and a request.
run: $(STAMP)
	$(BIN)/saar up --config $(CONFIG)

## test: everything CI runs (lint, types, generated code, Envoy config validation, all tests).
test: $(STAMP)
	$(MAKE) --no-print-directory check

check: lint typecheck proto-check envoy-validate docs-check deploy-check
	$(BIN)/pytest -q

lint:
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/lint-imports

typecheck:
	$(BIN)/mypy

## proto: regenerate the Python code of the project's own gRPC API from proto/.
proto: $(STAMP)
	$(BIN)/python scripts/genproto.py

proto-check:
	$(BIN)/python scripts/genproto.py --check

envoy-validate:
	$(BIN)/python scripts/validate_envoy.py

## docs-check: generated references (actions and reasons, metrics) match the code.
docs-check:
	$(BIN)/python scripts/gen_policy_docs.py --check
	$(BIN)/python scripts/gen_metrics_docs.py --check

## deploy-check: the ConfigMaps in deploy/ are generated from envoy/ and config/ and current.
deploy-check:
	$(BIN)/python scripts/gen_deploy.py --check

docs: $(STAMP)
	$(BIN)/python scripts/gen_policy_docs.py
	$(BIN)/python scripts/gen_metrics_docs.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
