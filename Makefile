# `make demo` and `make test` set everything up on a fresh Debian machine (as root): the
# distribution's Mosquitto packages, a virtualenv in .venv, and this package installed into it.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install-system-packages
	./scripts/install-system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(BIN)/mosquitto-guard demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check mosquitto_guard tests benchmarks
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/audit.py
	$(BIN)/python benchmarks/integrity.py
	$(BIN)/python benchmarks/watch_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
