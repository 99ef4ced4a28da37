# Huracan. `make run` and `make test` are the whole set-up on a fresh machine: every target
# installs what it needs first (into .venv) and starts what it needs (the private PostgreSQL).

SHELL := /bin/bash
.DEFAULT_GOAL := help
.SUFFIXES:

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.PHONY: help install run test lint migrate retrain bench chaos db-start db-stop clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

# Re-installs only when pyproject.toml changed, so a second `make install` takes no time.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing huracan and its dependencies into $(VENV) (first time: a few minutes)"
	@$(BIN)/python -m pip install --quiet -e '.[dev]' > $(VENV)/pip.log 2>&1 \
		|| { cat $(VENV)/pip.log; echo "make install: pip failed (full log: $(VENV)/pip.log)"; exit 1; }
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with dev extras

run: install ## run the daemon on the embedded default (replay venue, private PostgreSQL); Ctrl-C stops it
	$(BIN)/huracan run $(ARGS)

test: install lint ## lint, type-check and run the test suite (starts its own throwaway PostgreSQL)
	$(BIN)/pytest $(ARGS)

lint: install ## ruff (lint and format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

migrate: install ## apply pending migrations (to the private cluster or the configured DSN)
	$(BIN)/huracan migrate $(ARGS)

retrain: install ## retrain the agent with walk-forward validation
	$(BIN)/huracan retrain $(ARGS)

bench: install ## run the benchmarks in bench/ (figures go to bench/RESULTS.md by hand)
	@set -e; for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script; done

chaos: install ## kill -9 the whole live daemon at 200 random points against the emulator (KILLS=N), then verify
	$(BIN)/python -m huracan.testing.chaos --mode daemon --kills $${KILLS:-200}

db-start: install ## start (or reuse) the private PostgreSQL cluster under var/
	$(BIN)/huracan db start

db-stop: install ## stop the private PostgreSQL cluster
	$(BIN)/huracan db stop

clean: ## remove the venv and caches (keeps var/: the database is the daemon's memory)
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis *.egg-info build
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
