# The README's two commands: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint types unit browser keycloak demo-keycloak install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ciba-service demo

lint: $(STAMP)
	$(BIN)/ruff check ciba_service tests scripts
	$(BIN)/lint-imports
	$(BIN)/ruff format --check ciba_service

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -m "not browser and not keycloak"

browser: $(STAMP)
	$(BIN)/pytest -q -m browser

keycloak: $(STAMP)
	$(BIN)/pytest -q -m keycloak

# Everything: lint, types, and every test (browser and real-Keycloak tests included).
test: lint types
	$(BIN)/pytest -q -ra

demo-keycloak: $(STAMP)
	$(BIN)/python scripts/demo_keycloak.py

clean:
	rm -rf $(VENV) .ciba-data .mypy_cache .ruff_cache .pytest_cache
