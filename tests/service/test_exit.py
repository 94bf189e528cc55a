"""How the process ends: `console` flushes, runs the exit handlers, and skips finalization.

A pyarrow scan left Arrow threads that aborted the interpreter's finalization (exit -6) in
about one short run of twenty, so the console script ends with `os._exit`; these cases pin
what must still happen before it, and that Databricks keeps its own exit.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from service import cli
from service.version import package_version
from tests.conftest import ROOT

# A process that buffers its output and registers an exit handler, then leaves by `console`.
_PROGRAM = """
import atexit, logging, sys
logging.basicConfig(stream=sys.stderr, format="%(message)s")
atexit.register(lambda: print("exit handler ran", flush=True))
print("buffered before", end=" ")
logging.getLogger("probe").warning("logged before")
sys.argv = ["pidelta", *sys.argv[1:]]
from service.cli import console
console()
print("never printed")
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PROGRAM, *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_console_flushes_and_runs_exit_handlers_before_it_ends() -> None:
    proc = _run("--version")
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        f"buffered before pidelta {package_version()}\nexit handler ran\n",
        "logged before\n",
    )


def test_console_keeps_the_exit_code_of_a_usage_error() -> None:
    proc = _run("no-such-command")
    assert proc.returncode == 2
    assert proc.stdout == "buffered before exit handler ran\n"
    assert proc.stderr.splitlines()[0] == "logged before"
    assert proc.stderr.splitlines()[1].startswith("pidelta: argument COMMAND: invalid choice:")


def test_on_databricks_the_runtime_keeps_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    monkeypatch.setattr(sys, "argv", ["pidelta", "no-such-command"])
    with pytest.raises(SystemExit) as raised:
        cli.console()
    assert raised.value.code == 2
