"""`pidelta discover` against mock-pi speaking Negotiate, with each credential source."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import MockServer
from tests.e2e.helpers import ok, pidelta, worker_env
from tests.kerberos.conftest import PASSWORD, Principals, auth_counts


def discover(mock: MockServer, tmp_path: Path, env: dict[str, str], **settings: object) -> str:
    full = {**worker_env(mock, tmp_path / "lake", pi_auth="kerberos", **settings), **env}
    result = ok(pidelta("discover", env=full, timeout=120))
    assert PASSWORD not in result.stdout + result.stderr
    return result.stdout


def assert_lists_every_tag(out: str) -> None:
    lines = out.strip().splitlines()
    assert lines[0] == "name\twebid\tpoint_type\tunits\tshard"
    assert len(lines) == 21


def test_keytab_login(
    kerberos: Principals, kerberos_mock: Callable[..., MockServer], tmp_path: Path
) -> None:
    mock = kerberos_mock()
    out = discover(
        mock,
        tmp_path,
        kerberos.env(),
        pi_keytab=kerberos.service_keytab,
        pi_principal=kerberos.service,
    )
    assert_lists_every_tag(out)
    counts = auth_counts(mock)
    # One bare request met the challenge; every other request carried a token at once.
    assert counts["challenged"] == 1
    assert counts["refused"] == 0
    assert counts["accepted"] >= 1
    assert counts["clients"] == [kerberos.service]


def test_password_login_without_kinit(
    kerberos: Principals, kerberos_mock: Callable[..., MockServer], tmp_path: Path
) -> None:
    mock = kerberos_mock()
    cache = tmp_path / "untouched-cache"
    out = discover(
        mock,
        tmp_path,
        kerberos.env(KRB5CCNAME=f"FILE:{cache}"),
        pi_username="alice",
        pi_password=PASSWORD,
    )
    assert_lists_every_tag(out)
    assert auth_counts(mock)["clients"] == [kerberos.user]
    assert not cache.exists(), "the user's ticket cache is never written"


def test_an_existing_ticket_cache(
    kerberos: Principals, kerberos_mock: Callable[..., MockServer], tmp_path: Path
) -> None:
    mock = kerberos_mock()
    cache = tmp_path / "krb5cc"
    kerberos.realm.kinit(kerberos.user, PASSWORD, cache)
    out = discover(mock, tmp_path, kerberos.env(KRB5CCNAME=f"FILE:{cache}"))
    assert_lists_every_tag(out)
    assert auth_counts(mock)["clients"] == [kerberos.user]
