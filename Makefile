# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8440
DEMO_SECONDS ?= 0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv dev compiler tools test lint bench demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install --quiet -e .

dev: compiler $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

# gcc for the C reader of PI bodies (workers/timeseries/_pijson.c), built in place by the editable
# install; pip goes on without it, the suite does not (test_the_c_reader_is_built). `make
# demo` and `make bench` (venv) do not ask for it: without a compiler they run on msgspec.
compiler:
	@command -v gcc >/dev/null 2>&1 || { \
		echo "installing Debian's gcc (the C reader of PI bodies)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends gcc libc6-dev; }

# Real servers the suite runs on loopback: Prometheus/promtool (Debian's prometheus
# package) and Azurite (npm, kept in .tools/). Installed only when missing.
tools:
	@command -v promtool >/dev/null 2>&1 || { \
		echo "installing Debian's prometheus package (promtool, prometheus)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }
	@test -x .tools/node_modules/.bin/azurite-blob || \
		npm install --no-audit --no-fund --silent --prefix .tools azurite

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: dev tools lint
	$(BIN)/pytest -q

bench: venv
	$(BIN)/python scripts/bench.py

demo: venv
	DEMO_SECONDS=$(DEMO_SECONDS) PORT=$(PORT) $(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) lakehouse .pytest_cache build *.egg-info workers/*/*.so
