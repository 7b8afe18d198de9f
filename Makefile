# Quick start: `make run` serves on the embedded default; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# `make run HOST=0.0.0.0 PORT=9000`
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-unit install install-dev browser-deps lock openapi asyncapi bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Exact versions from the lock files (`make lock` writes them from pyproject.toml's ranges), then the package.
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .

install-dev: $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip install --quiet --no-deps -e clients/python

lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --no-header -q -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --no-header -q --extra dev \
		-o requirements-dev.lock

run: install
	$(BIN)/consent serve --host $(HOST) --port $(PORT)

# The browser tests drive Debian's chromium with chromium-driver (`.ci/run` installs them) and run axe-core,
# fetched once from the npm registry into .cache/.
AXE_VERSION := 4.14.1
browser-deps: .cache/axe-core/axe.min.js
.cache/axe-core/axe.min.js:
	mkdir -p .cache/axe-core
	cd .cache/axe-core && npm pack --silent axe-core@$(AXE_VERSION) >/dev/null \
		&& tar -xzf axe-core-$(AXE_VERSION).tgz --strip-components=1 package/axe.min.js

test: install-dev browser-deps
	$(BIN)/ruff check consent tests examples bench clients
	$(BIN)/python -m pytest -q

# The tests that need no server (domain, settings, caches): seconds, not minutes.
test-unit: install-dev
	$(BIN)/python -m pytest -q tests/unit

openapi: install
	$(BIN)/python -m consent.api.openapi_export > openapi/openapi.json
	$(BIN)/python -m consent.api.openapi_export catalog > openapi/catalog.schema.json

asyncapi: install
	$(BIN)/python -m consent.adapters.asyncapi > openapi/asyncapi.yaml

bench: install-dev
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .cache consent.db consent.db-wal consent.db-shm consent.db.master-key
