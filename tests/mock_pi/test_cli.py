"""`mock-pi` refuses bad settings with one line per bad variable and exit code 2."""

from __future__ import annotations

import pytest

from mock_pi.cli import main


def test_each_bad_setting_gets_its_own_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--tag-count", "0", "--bad-fraction", "2", "--auth", "magic"])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "mock-pi: invalid configuration: MOCK_PI_TAG_COUNT: "
        "Input should be greater than or equal to 1",
        "mock-pi: invalid configuration: MOCK_PI_AUTH: "
        "Input should be 'none', 'basic', 'bearer' or 'kerberos'",
        "mock-pi: invalid configuration: MOCK_PI_BAD_FRACTION: "
        "Input should be less than or equal to 1",
    ]


def test_a_validators_own_message_stands_without_pydantics_prefix(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOCK_PI_FAULTS", "503=2")
    assert main([]) == 2
    assert capsys.readouterr().err == (
        "mock-pi: invalid configuration: "
        "MOCK_PI_FAULTS: bad fault '503=2': rate must be in [0, 1]\n"
    )
