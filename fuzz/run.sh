#!/usr/bin/env bash
# The decode fuzz target (fuzz/decode_fuzz.py) under AddressSanitizer and
# UndefinedBehaviorSanitizer, with atheris's ASan runtime (it holds libFuzzer) preloaded.
#
#   fuzz/run.sh SECONDS        fuzz from fuzz/corpus for SECONDS; new inputs stay in a
#                              scratch folder
#   fuzz/run.sh runs:N         the same for N inputs from a fixed seed, so that a run
#                              meets the same inputs every time (make fuzz-short, in
#                              make test: a test that can fail must fail every time)
#   fuzz/run.sh SECONDS merge  the same, then merge the inputs that add coverage into
#                              fuzz/corpus (make fuzz, with FUZZ_KEEP_GOING=1: see
#                              fuzz/decode_fuzz.py)
#   fuzz/run.sh repro FILE...  decode each file once (a crash file, fuzz/findings/*)
#
# A finding (a Python exception, a difference between the readers, a sanitizer report)
# exits non-zero and leaves its input in fuzz/artifacts/; a clean run prints one line.
# PYTHON (default .venv/bin/python) must have atheris and the sanitizer build
# (`make fuzz-build`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
runtime="$("$PY" -c 'import atheris; print(atheris.path())')/asan_with_fuzzer.so"
test -f "$runtime" || { echo "fuzz: no ASan runtime at $runtime" >&2; exit 2; }
export LD_PRELOAD="$runtime"
# Every allocation through malloc, where ASan sees it: pymalloc would hide an overflow of
# the body or of a small buffer of the C reader inside its arenas.
export PYTHONMALLOC=malloc
# Python frees nothing at exit by design (leaks off); a failed malloc is Python's MemoryError.
export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# libFuzzer's merge runs the target itself as a command: its shebang finds this python.
export PATH="$(dirname "$PY"):$PATH"
artifacts=fuzz/artifacts
mkdir -p "$artifacts"

if [ "${1:-}" = repro ]; then
    shift
    exec "$PY" fuzz/decode_fuzz.py -dict=fuzz/pi.dict "$@"
fi
limit=${1:?usage: fuzz/run.sh SECONDS|runs:N [merge] | repro FILE...}
case "$limit" in
    runs:*) budget=(-runs="${limit#runs:}" -seed=1); export PYTHONHASHSEED=0 ;;
    *) budget=(-max_total_time="$limit") ;;
esac
scratch=$(mktemp -d)
log="$artifacts/last-run.log"
trap 'rm -rf "$scratch"' EXIT
status=0
"$PY" fuzz/decode_fuzz.py -dict=fuzz/pi.dict "${budget[@]}" -timeout=30 \
    -rss_limit_mb=4096 -artifact_prefix="$artifacts/" -print_final_stats=1 \
    "$scratch" fuzz/corpus >"$log" 2>&1 || status=$?
if [ "$status" != 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz: FINDING (exit $status); input in $artifacts/, log in $log;" \
        "reproduce with fuzz/run.sh repro FILE" >&2
    exit 1
fi
new=$(find "$artifacts" -name 'finding-*' -newer "$scratch" | wc -l)
if [ "$new" != 0 ]; then
    grep '^fuzz: finding' "$log" >&2
    echo "fuzz: $new FINDINGS in $artifacts/ (log in $log);" \
        "reproduce with fuzz/run.sh repro FILE" >&2
    exit 1
fi
if [ "${2:-}" = merge ]; then
    "$PY" fuzz/decode_fuzz.py -merge=1 fuzz/corpus "$scratch" >>"$log" 2>&1
fi
runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -n 1 || true)
cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1 || true)
echo "fuzz: clean, ${runs:-no run line} (s), $cov, corpus $(ls fuzz/corpus | wc -l) files"
