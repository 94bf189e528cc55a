"""The command line as documented: flags on either side of the command, `--version`, and
a help text for every variable of `pidelta` and `mock-pi`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mock_pi.cli import build_parser as mock_parser
from mock_pi.settings import MockSettings
from service.cli import build_parser
from service.version import package_version
from tests.conftest import ROOT
from workers.settings import Settings
from workers.settings_help import setting_help, setting_variables


@pytest.mark.parametrize(
    ("argv", "target", "shard_count"),
    [
        (["status", "--target", "/x"], "/x", None),
        (["--target", "/x", "status"], "/x", None),
        (["--target", "/x", "status", "--shard-count", "3"], "/x", 3),
        (["shards", "plan", "--shards", "4", "--target", "/y"], "/y", None),
        (["--target", "/x", "status", "--target", "/z"], "/z", None),
    ],
)
def test_global_flags_stand_before_or_after_the_command(
    argv: list[str], target: str, shard_count: int | None
) -> None:
    args = build_parser().parse_args(argv)
    assert (args.target, args.shard_count) == (target, shard_count)


def test_backfill_start_is_its_range_and_the_global_start_stays_global() -> None:
    argv = ["--start", "*-2h", "backfill", "--start", "*-1d", "--end", "*-1h", "--target", "/t"]
    args = build_parser().parse_args(argv)
    assert (args.start, args.backfill_start, args.backfill_end, args.target) == (
        "*-2h",
        "*-1d",
        "*-1h",
        "/t",
    )


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_version() -> None:
    result = _run("-m", "service", "--version")
    assert (result.returncode, result.stdout) == (0, f"pidelta {package_version()}\n")


def test_help_has_a_text_and_no_undefined_default_for_every_variable() -> None:
    result = _run("-m", "service", "--help")
    assert result.returncode == 0
    assert "Undefined" not in result.stdout
    assert "a time without a zone is UTC" in result.stdout
    lines = result.stdout.splitlines()
    for name in Settings.model_fields:
        assert setting_help(name), f"{name} has no help text"
        variables = " or ".join(setting_variables(name))
        at = [
            i
            for i, line in enumerate(lines)
            if line.strip() == variables or line.strip().startswith(f"{variables} [")
        ]
        assert len(at) == 1, variables
        assert lines[at[0] + 1].strip() == " ".join(setting_help(name).split())
    assert "  PIDELTA_STORAGE_OPTIONS\n" in result.stdout


def test_mock_pi_help_has_a_text_for_every_variable() -> None:
    helps = {a.dest: a.help for a in mock_parser()._actions if a.dest != "help"}
    assert set(helps) == set(MockSettings.model_fields)
    for name, text in helps.items():
        assert f"(MOCK_PI_{name.upper()})" in text
        assert not text.startswith("(MOCK_PI_"), f"{name} has no description"
    result = _run("-m", "mock_pi", "--help")
    assert result.returncode == 0
    assert "MOCK_PI_CSRF" in result.stdout
