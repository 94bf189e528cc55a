"""README claims a test can check: its Commands table is the CLI's, every setting is
documented, the first screen says what each make target needs, and the query snippet runs."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from service.cli import build_parser
from tests.conftest import ROOT
from workers.lake.tables import TableStore
from workers.settings import Settings
from workers.settings_help import setting_variables

README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    found = re.search(rf"^## {title}\n(.*?)(?=^## )", README, re.M | re.S)
    assert found, title
    return found[1]


def test_the_commands_table_is_the_cli() -> None:
    rows = [line for line in _section("Commands").splitlines() if line.startswith("| `pidelta")]
    documented = {m for row in rows for m in re.findall(r"`pidelta ([\w-]+)", row.split("|")[1])}
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert documented == {*sub.choices, "--version"}


def test_every_setting_is_in_the_readme() -> None:
    missing = [
        setting_variables(name)[0]
        for name in Settings.model_fields
        if not any(v in README for v in setting_variables(name))
        and f"`{name.upper()}`" not in README
    ]
    assert missing == []


def test_the_first_screen_says_what_each_make_target_needs() -> None:
    first = README.split("## Commands")[0]
    assert "make demo" in first
    assert "make test" in first
    assert "`make demo` needs Python 3.11+ and `make`" in first
    assert "`make test` also needs `apt-get`" in first
    assert "`npm`" in first


def test_the_query_snippet_reads_a_local_folder(tmp_path: Path) -> None:
    snippet = re.search(r"```python\n(import polars as pl\n.*?)```", README, re.S)
    assert snippet
    assert len([line for line in snippet[1].splitlines() if line.strip()]) == 3
    TableStore(str(tmp_path / "lakehouse")).create_all()
    result = subprocess.run(
        [sys.executable, "-c", snippet[1]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "shape: (0, 3)" in result.stdout


def test_the_demo_ends_with_the_readme_query() -> None:
    from scripts.demo import QUERY

    snippet = re.search(r"```python\n(import polars as pl\n.*?)```", README, re.S)
    assert snippet
    code = [line for line in snippet[1].splitlines() if line.strip()]
    assert "\n".join(code) in QUERY


def test_packaging_builds_quietly_and_make_demo_installs_once(tmp_path: Path) -> None:
    """No deprecated license table (setuptools warned three times per build), and `make
    demo` reinstalls only when the packaging changed."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()

    def planned() -> str:
        result = subprocess.run(
            ["make", "-n", "demo", f"VENV={venv}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout

    assert "pip install --quiet -e ." in planned()
    (venv / ".installed").touch()
    assert "pip install" not in planned()
    assert "scripts/demo.py" in planned()
