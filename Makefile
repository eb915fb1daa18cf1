# Two commands on a fresh machine: `make demo` (the main job) and `make test` (everything CI runs).
# Needs Python 3.11+, and on Debian/Ubuntu installs Java 17, Maven and Prometheus when run as root
# (deploy/local/install-system-deps.sh prints the exact command otherwise).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install system-deps test lint demo bench mutants kafka-up kafka-down clean

# The workspace's distributions (see "Layout" in the README), each installed editable, then the root
# one that pins them together and brings the test tools.
DISTS := core edge services training benchmarks demo

$(BIN)/.installed: pyproject.toml $(DISTS:%=%/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(DISTS:%=-e ./%) -e '.[dev]'
	$(BIN)/pip check
	touch $@

install: $(BIN)/.installed

system-deps:
	bash deploy/local/install-system-deps.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# The tests start the real local Kafka broker (and Prometheus) they need themselves.
# Two workers (pytest-xdist), one test file each at a time: most tests wait on the broker, not the CPU.
test: system-deps lint
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile

# `make demo DEMO_ARGS=--quick` for the few-epoch run the tests use; `--keep-running` to look around after.
DEMO_ARGS ?=
demo: system-deps install
	$(BIN)/streamedge demo $(DEMO_ARGS)

# Each regression listed in tools/mutants.py (docs/testing.md), applied to a copy of the tree with the
# tests that must catch it run there; needs the system deps (broker) like `make test`. Last line:
# `mutants: C caught of N`.
mutants: system-deps install
	$(BIN)/python -m tools.mutants

bench: install
	$(BIN)/streamedge bench edge --out runs/bench/edge.json
	$(BIN)/streamedge bench stream --repeats 3 --out runs/bench/stream.json

kafka-up: install
	$(BIN)/streamedge kafka up

kafka-down: install
	$(BIN)/streamedge kafka down

clean:
	rm -rf $(VENV) .streamedge runs
