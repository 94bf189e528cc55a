"""A real MIT Kerberos KDC for the session, its principals, and mock-pi speaking Negotiate."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service import cli
from tests.conftest import MockServer
from tests.e2e.helpers import worker_env
from tests.kerberos import realm as krb

PASSWORD = "alice-Pa55-not-for-logs"
SERVICE_HOST = "127.0.0.1"
ALIAS_HOST = "pi.alias.test"


@dataclass
class Principals:
    """The realm and what the tests log in with."""

    realm: krb.Realm
    service: str  # svc-pidelta@REALM, key in `service_keytab`
    service_keytab: Path
    short: str  # tickets of one minute, key in `short_keytab`
    short_keytab: Path
    user: str  # alice@REALM, password PASSWORD
    cache_user: str  # bob@REALM, password PASSWORD, for the ticket cache case
    stale_keytab: Path  # svc-stale's key before it was changed
    stale: str
    http_keytab: Path  # HTTP/127.0.0.1
    alias_keytab: Path  # HTTP/pi.alias.test

    def env(self, **extra: str) -> dict[str, str]:
        return {**self.realm.env(), **extra}


@pytest.fixture(scope="session")
def kerberos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Principals]:
    if not krb.available():
        pytest.fail(
            "MIT Kerberos KDC tools missing (krb5kdc, kadmin.local, kinit): run `make kerberos`"
        )
    root = tmp_path_factory.mktemp("realm")
    realm = krb.create(root)
    saved = {k: os.environ.get(k) for k in realm.env()}
    # In-process gssapi (the client's unit tests) reads the same realm.
    os.environ.update(realm.env())
    try:
        service, service_keytab = realm.add_keytab("svc-pidelta")
        short, short_keytab = realm.add_keytab("svc-short", maxlife="1 minute")
        stale, stale_keytab = realm.add_keytab("svc-stale")
        shutil.copy(stale_keytab, root / "svc-stale-old.keytab")
        realm.export("svc-stale")  # the KDC has a new key now; the old file is stale
        yield Principals(
            realm=realm,
            service=service,
            service_keytab=service_keytab,
            short=short,
            short_keytab=short_keytab,
            user=realm.add_user("alice", PASSWORD),
            cache_user=realm.add_user("bob", PASSWORD),
            stale=stale,
            stale_keytab=root / "svc-stale-old.keytab",
            http_keytab=realm.add_keytab(f"HTTP/{SERVICE_HOST}")[1],
            alias_keytab=realm.add_keytab(f"HTTP/{ALIAS_HOST}")[1],
        )
    finally:
        realm.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def kerberos_mock(
    kerberos: Principals, mock_pi_factory: Callable[..., MockServer]
) -> Callable[..., MockServer]:
    """mock-pi with auth=kerberos and the HTTP/127.0.0.1 keytab unless told otherwise."""

    def start(**settings: object) -> MockServer:
        values: dict[str, object] = {
            "auth": "kerberos",
            "keytab": kerberos.http_keytab,
            "tag_count": 20,
            "rate_limit": 0,
        }
        values.update(settings)
        return mock_pi_factory(**values)

    return start


def auth_counts(mock: MockServer) -> dict[str, object]:
    """What the mock's Negotiate acceptor saw: challenged, accepted, refused, clients."""
    with urllib.request.urlopen(f"{mock.url}/mock/auth", timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


@pytest.fixture
def discover(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> Callable[..., tuple[int, str]]:
    """`pidelta discover` in this process (a new interpreter per case would cost the
    group's time budget): (0, stdout) or (exit code, stderr, with nothing on stdout)."""
    monkeypatch.setattr("service.logs.configure_logging", lambda settings: None)

    def run(url: str, env: dict[str, str], **settings: object) -> tuple[int, str]:
        full = {**worker_env(url, tmp_path / "lake", pi_auth="kerberos", **settings), **env}
        for key, value in full.items():
            if key.startswith(("PIDELTA_", "KRB5")):
                monkeypatch.setenv(key, value)
        capsys.readouterr()
        code = cli.run_cli(["discover"])
        out, err = capsys.readouterr()
        if code == 0:
            return code, out
        assert out == ""
        return code, err

    return run
