# Two commands on a fresh machine: `make demo` (the main job) and `make test` (everything CI runs).
# Needs Python 3.11+, Java 17 and Maven (for the pinned Kafka broker jars).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint demo kafka-up kafka-down clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip check
	touch $@

install: $(BIN)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# The tests start the real local Kafka broker they need themselves (tests/conftest.py).
test: lint
	$(BIN)/pytest -q -p no:cacheprovider

demo: install
	$(BIN)/streamedge demo

kafka-up: install
	$(BIN)/streamedge kafka up

kafka-down: install
	$(BIN)/streamedge kafka down

clean:
	rm -rf $(VENV) .streamedge runs
