# Quick start: `make run` serves on the embedded default; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# `make run HOST=0.0.0.0 PORT=9000`
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install install-dev openapi asyncapi bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'

run: install
	$(BIN)/consent serve --host $(HOST) --port $(PORT)

test: install-dev
	$(BIN)/ruff check consent tests examples bench
	$(BIN)/python -m pytest -q

openapi: install
	$(BIN)/python -m consent.api.openapi_export > openapi/openapi.json

asyncapi: install
	$(BIN)/python -m consent.adapters.asyncapi > openapi/asyncapi.yaml

bench: install-dev
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) .pytest_cache consent.db consent.db-wal consent.db-shm consent.db.master-key
