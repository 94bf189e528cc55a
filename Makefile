# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8440
DEMO_SECONDS ?= 0
FUZZ_RUNS ?= 20000
FUZZ_SECONDS ?= 3600
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv dev compiler tools test lint bench demo clean fuzz-build fuzz-short fuzz \
	kerberos drill-kerberos drill-shards drill-changes drill-exit

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installed once, and again only when the packaging or the C reader changed: `make demo`
# does not reinstall. setuptools' warning that an editable install is one is not news.
PIP_INSTALL := PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install --quiet -e
PACKAGING := pyproject.toml setup.py workers/timeseries/_pijson.c

$(VENV)/.installed: $(PACKAGING) | $(BIN)/python
	$(PIP_INSTALL) .
	@touch $@

$(VENV)/.installed-dev: $(PACKAGING) | $(BIN)/python
	$(PIP_INSTALL) '.[dev]'
	@touch $@ $(VENV)/.installed

venv: $(VENV)/.installed

dev: compiler kerberos $(VENV)/.installed-dev

# gcc for the C reader of PI bodies (workers/timeseries/_pijson.c), built in place by the editable
# install; pip goes on without it, the suite does not (test_the_c_reader_is_built). `make
# demo` and `make bench` (venv) do not ask for it: without a compiler they run on msgspec.
compiler:
	@command -v gcc >/dev/null 2>&1 || { \
		echo "installing Debian's gcc (the C reader of PI bodies)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends gcc libc6-dev; }

# MIT Kerberos: libkrb5-dev to build python-gssapi (the `kerberos` extra, in `dev`), and the
# KDC, kadmin.local and kinit that tests/kerberos runs a throw-away realm with. Installed
# only when missing.
kerberos:
	@{ command -v krb5-config && test -x /usr/sbin/krb5kdc && test -x /usr/sbin/kadmin.local \
		&& command -v kinit; } >/dev/null 2>&1 || { \
		echo "installing Debian's MIT Kerberos (libkrb5-dev, krb5-kdc, krb5-admin-server, krb5-user)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			libkrb5-dev krb5-kdc krb5-admin-server krb5-user; }

# The issue's three-minute run on one-minute tickets (the suite runs 75 s of it).
drill-kerberos: dev
	KERBEROS_RUN_SECONDS=180 $(BIN)/pytest -q tests/kerberos/test_renewal.py

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
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=25
	$(MAKE) --no-print-directory fuzz-short

# Fuzzing of the decode path of PI bodies (fuzz/decode_fuzz.py): Debian's clang with its
# sanitizer runtimes and atheris (the `fuzz` extra), then the C reader built under ASan and
# UBSan with libFuzzer's coverage hooks into fuzz/build/; the in-place build stays as it is.
fuzz-build: $(BIN)/python
	@command -v clang >/dev/null 2>&1 && \
		ls "$$(clang -print-runtime-dir)"/libclang_rt.asan_static-*.a >/dev/null 2>&1 || { \
		echo "installing Debian's clang and its sanitizer runtimes (the fuzz build)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			clang libclang-rt-dev; }
	@$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/pip install --quiet -e '.[fuzz]'
	@mkdir -p fuzz/build
	clang -fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined \
		-fno-omit-frame-pointer -g -O1 -fPIC -shared \
		-I"$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
		workers/timeseries/_pijson.c -o fuzz/build/_pijson$$($(BIN)/python -c \
		'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')

# About a minute from the corpus in fuzz/corpus (part of `make test`): a fixed number of
# inputs from a fixed seed, the same run every time; exits non-zero on any finding, which
# fuzz/artifacts/ keeps.
fuzz-short: fuzz-build
	PYTHON=$(BIN)/python fuzz/run.sh runs:$(FUZZ_RUNS)

# A long run (FUZZ_SECONDS) that goes on past Python findings and merges the inputs that
# add coverage into fuzz/corpus.
fuzz: fuzz-build
	FUZZ_KEEP_GOING=1 PYTHON=$(BIN)/python fuzz/run.sh $(FUZZ_SECONDS) merge

bench: venv
	$(BIN)/python scripts/bench.py
	$(BIN)/python scripts/bench_changes.py

# The change-capture tests (tests/changes) at drill length: more kill -9s, longer runs.
drill-changes: dev
	CHANGES_DRILL_SCALE=4 $(BIN)/pytest -q tests/changes

# Many shards, one lakehouse (not part of `make test`, which runs an 8-shard version):
# DRILL_SHARDS workers (32) of DRILL_TAGS_PER_SHARD tags (200) in `run` for DRILL_MINUTES (6),
# a quarter killed and restarted, a reshard to N+4, then the ground truth and the figures.
# DRILL_TARGET=s3 runs on a moto server (the dev extra).
drill-shards: dev
	$(BIN)/python -m scripts.drill_shards

# How often a process that scanned a Delta table aborts as it ends, finalizing or not.
drill-exit: venv
	$(BIN)/python scripts/exit_race.py

demo: venv
	DEMO_SECONDS=$(DEMO_SECONDS) PORT=$(PORT) $(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) lakehouse .pytest_cache build *.egg-info workers/*/*.so fuzz/build
