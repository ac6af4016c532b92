# The README's two commands: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint types unit browser keycloak demo-keycloak install system clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# chromium, redis-server, unzip: apt-get when missing (as root), else one line saying what to run.
system:
	bash scripts/system-deps.sh

demo: $(STAMP)
	$(BIN)/ciba-service demo

lint: $(STAMP)
	$(BIN)/ruff check ciba_service tests scripts examples
	$(BIN)/lint-imports
	$(BIN)/ruff format --check ciba_service

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) system
	$(BIN)/pytest -q -m "not browser and not keycloak"

browser: $(STAMP) system
	$(BIN)/pytest -q -m browser

keycloak: $(STAMP) system
	$(BIN)/pytest -q -m keycloak

# Everything: lint, types, and every test (browser and real-Keycloak tests included).
test: system lint types
	$(BIN)/pytest -q -ra

demo-keycloak: $(STAMP) system
	$(BIN)/python scripts/demo_keycloak.py

clean:
	rm -rf $(VENV) .ciba-data .mypy_cache .ruff_cache .pytest_cache
