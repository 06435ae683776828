# The two commands for a fresh machine: `make up` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test lint bench clean ui chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,train]'
	touch $(VENV)/.installed $@

up: $(VENV)/.installed ui
	$(BIN)/rlhf up $(ARGS)

test: $(VENV)/.installed-dev ui chromium
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.ingest

# The Curate UI (frontend/): npm ci from the lock file, the API types generated again from the
# services' OpenAPI (a renamed field then fails tsc), and a Vite build into the gateway's package
# (services/gateway/static, package data: an installed wheel serves it without Node). Each step
# runs only when what it is made from changed.
UI := frontend
UI_BUILD := services/gateway/static/index.html
UI_SOURCES := $(shell find $(UI)/src $(UI)/public -type f 2>/dev/null) $(UI)/index.html $(UI)/vite.config.ts $(UI)/tsconfig.json $(UI)/package.json
API_SOURCES := $(wildcard services/*/api.py services/*/schemas.py services/*/main.py) services/__init__.py services/gateway/openapi.py \
	services/experiments/chat.py shared/http.py shared/events.py  # the error shapes every route declares; shared fields

ui: $(UI_BUILD)

$(UI)/node_modules/.package-lock.json: $(UI)/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: the UI needs Node.js 20.19+ and npm to build"; exit 1; }
	cd $(UI) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(UI)/src/api/schema.d.ts: $(API_SOURCES) $(UI)/node_modules/.package-lock.json | $(VENV)/.installed
	$(BIN)/python -m services.gateway.openapi --out $(UI)/openapi.json
	cd $(UI) && npm run --silent api-types

$(UI_BUILD): $(UI_SOURCES) $(UI)/src/api/schema.d.ts $(UI)/node_modules/.package-lock.json
	cd $(UI) && npm run --silent build

# The browser tests drive Debian's Chromium (Playwright's own browser download does not work
# offline). As root (CI) it is installed when missing; elsewhere the tests skip and say how.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "Chromium is missing: the browser tests (tests/ui) will be skipped. Install it with: sudo apt-get install chromium"; fi

clean:
	rm -rf $(VENV) .rlhf $(UI)/node_modules services/gateway/static
