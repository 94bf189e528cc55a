# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8440
DEMO_SECONDS ?= 0

.PHONY: venv dev test lint bench demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install --quiet -e .

dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: dev lint
	$(BIN)/pytest -q

bench: venv
	$(BIN)/python scripts/bench.py

demo: venv
	DEMO_SECONDS=$(DEMO_SECONDS) PORT=$(PORT) $(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) lakehouse .pytest_cache build *.egg-info
