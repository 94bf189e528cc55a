"""Kerberos settings refused at start-up, each with the variable to fix (no KDC needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.errors import ConfigError
from workers.settings import load_settings


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        (
            {"pi_keytab": "missing.keytab", "pi_principal": "svc"},
            "PIDELTA_PI_KEYTAB=missing.keytab is not a file",
        ),
        (
            {"pi_keytab": "{keytab}"},
            "PIDELTA_PI_KEYTAB needs PIDELTA_PI_PRINCIPAL (the key to use)",
        ),
        (
            {"pi_keytab": "{keytab}", "pi_keytab_base64": "BQI=", "pi_principal": "svc"},
            "set PIDELTA_PI_KEYTAB or PIDELTA_PI_KEYTAB_BASE64, not both",
        ),
        (
            {"pi_keytab_base64": "BQIAAA==", "pi_principal": None},
            "PIDELTA_PI_KEYTAB_BASE64 needs PIDELTA_PI_PRINCIPAL (the key to use)",
        ),
        (
            {"pi_password": "secret-never-shown"},
            "PIDELTA_PI_PASSWORD needs PIDELTA_PI_USERNAME (the principal)",
        ),
        (
            {"pi_kerberos_hostname": "https://pi.example/"},
            "PIDELTA_PI_KERBEROS_HOSTNAME='https://pi.example/' must be a bare host name, "
            "e.g. pi.plant.example (the SPN is HTTP@<it>)",
        ),
        ({"krb5_config": "missing.conf"}, "KRB5_CONFIG=missing.conf is not a file"),
    ],
)
def test_a_bad_kerberos_setting_is_one_line(
    settings: dict[str, object], line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pidelta.keytab").write_bytes(b"\x05\x02")
    values = {
        k: (str(tmp_path / "pidelta.keytab") if v == "{keytab}" else v) for k, v in settings.items()
    }
    with pytest.raises(ConfigError) as info:
        load_settings(pi_auth="kerberos", **values)
    assert str(info.value) == f"invalid configuration: {line}"
    assert "secret-never-shown" not in str(info.value)


def test_kerberos_settings_are_ignored_for_other_schemes() -> None:
    assert load_settings(pi_auth="none", pi_keytab="missing.keytab").pi_keytab == Path(
        "missing.keytab"
    )
