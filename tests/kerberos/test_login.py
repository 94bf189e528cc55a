"""`pidelta discover` against mock-pi speaking Negotiate, with each credential source."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import MockServer, start_mock
from tests.e2e.helpers import ok, pidelta, worker_env
from tests.kerberos.conftest import PASSWORD, Principals, auth_counts

TAGS = 20


@pytest.fixture(scope="module")
def mock(kerberos: Principals) -> Iterator[MockServer]:
    server = start_mock(auth="kerberos", keytab=kerberos.http_keytab, tag_count=TAGS)
    yield server
    server.stop()


def assert_lists_every_tag(out: str) -> None:
    lines = out.strip().splitlines()
    assert lines[0] == "name\twebid\tpoint_type\tunits\tshard"
    assert len(lines) == TAGS + 1


def test_keytab_login(kerberos: Principals, mock: MockServer, tmp_path: Path) -> None:
    """As a real process: the exit code and output of the command as a user runs it."""
    before = auth_counts(mock)
    env = worker_env(
        mock,
        tmp_path / "lake",
        pi_auth="kerberos",
        pi_keytab=kerberos.service_keytab,
        pi_principal=kerberos.service,
    )
    result = ok(pidelta("discover", env={**env, **kerberos.env()}, timeout=120))
    assert_lists_every_tag(result.stdout)
    after = auth_counts(mock)
    # One bare request met the challenge; every other request carried a token at once.
    assert after["challenged"] == before["challenged"] + 1
    assert after["refused"] == before["refused"] == 0
    assert kerberos.service in after["clients"]


def test_password_login_without_kinit(
    kerberos: Principals,
    mock: MockServer,
    discover: Callable[..., tuple[int, str]],
    tmp_path: Path,
) -> None:
    cache = tmp_path / "untouched-cache"
    code, out = discover(
        mock.url,
        kerberos.env(KRB5CCNAME=f"FILE:{cache}"),
        pi_username="alice",
        pi_password=PASSWORD,
    )
    assert code == 0
    assert_lists_every_tag(out)
    assert kerberos.user in auth_counts(mock)["clients"]
    assert not cache.exists(), "the user's ticket cache is never written"


def test_an_existing_ticket_cache(
    kerberos: Principals,
    mock: MockServer,
    discover: Callable[..., tuple[int, str]],
    tmp_path: Path,
) -> None:
    cache = tmp_path / "krb5cc"
    kerberos.realm.kinit(kerberos.cache_user, PASSWORD, cache)
    code, out = discover(mock.url, kerberos.env(KRB5CCNAME=f"FILE:{cache}"))
    assert code == 0
    assert_lists_every_tag(out)
    assert kerberos.cache_user in auth_counts(mock)["clients"]


def test_a_keytab_given_as_base64_text(
    kerberos: Principals, mock: MockServer, discover: Callable[..., tuple[int, str]]
) -> None:
    """A Databricks secret scope holds text: the keytab comes base64-encoded."""
    text = base64.b64encode(kerberos.service_keytab.read_bytes()).decode()
    code, out = discover(
        mock.url, kerberos.env(), pi_keytab_base64=text, pi_principal=kerberos.service
    )
    assert code == 0
    assert_lists_every_tag(out)
    code, err = discover(
        mock.url, kerberos.env(), pi_keytab_base64="bm90IGEga2V5dGFi", pi_principal="x"
    )
    assert (code, err) == (
        2,
        "pidelta: invalid configuration: PIDELTA_PI_KEYTAB_BASE64 is not a base64-encoded "
        "keytab (base64 -w0 pidelta.keytab)\n",
    )
