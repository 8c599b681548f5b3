# candleflow: `make demo` runs the main job, `make test` runs every test. Both create .venv/ if needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench

DEMO_SYMBOLS_1D := AAPL,MSFT,AMZN,GOOGL,META,NVDA,TSLA,JPM,XOM,SPY
DEMO_SYMBOLS_1M := AAPL,SPY

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export PREFECT_SERVER_LOGGING_LEVEL ?= CRITICAL
export GX_ANALYTICS_ENABLED ?= false

.PHONY: venv demo test test-fast lint format types all bench bench-e2e clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: venv  ## backfill 10 symbols of daily bars for 2024 and 2 symbols of 1m bars for March 2024 (synthetic, SQLite)
	$(VENV)/bin/candleflow backfill --provider synthetic --symbols $(DEMO_SYMBOLS_1D) --timeframe 1d --start 2024-01-01 --end 2024-12-31
	$(VENV)/bin/candleflow backfill --provider synthetic --symbols $(DEMO_SYMBOLS_1M) --timeframe 1m --start 2024-03-01 --end 2024-03-31
	$(VENV)/bin/candleflow status

test: venv  ## every test: SQLite always, PostgreSQL on 127.0.0.1:5432
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv  ## the edit loop: every test that needs no Prefect server (no flow runs, no team server)
	$(PY) -m pytest -m "not flows and not server" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

types: venv  ## mypy --strict (pyproject.toml) on the package code
	$(VENV)/bin/mypy candleflow providers warehouse expectations ingest tasks flows deployments cli

all: lint types test

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[dev,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)  ## load 1M synthetic 1m bars into PostgreSQL several ways and print rows/s (not a test)
	$(PY) bench/load_bench.py $(BENCH_ARGS)

bench-e2e: $(BENCH_STAMP)  ## backfills and updates end to end vs the COPY floor, a plain to_sql loop and dlt (not a test)
	$(PY) bench/e2e_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
