"""Each Kerberos mistake ends `pidelta discover` with its one line, exit 2, no secret shown.

The cases run `service.cli.run_cli` in this process (a new interpreter per case would
cost the group's time budget); one case runs as a real process, to show the exit code and
that the line is all there is on stderr.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import MockServer
from tests.e2e.helpers import pidelta, worker_env
from tests.kerberos import realm as krb
from tests.kerberos.conftest import ALIAS_HOST, PASSWORD, Principals

SKEW_SECONDS = 3600


@pytest.fixture(scope="module")
def skewed_kdc(kerberos: Principals) -> Iterator[Path]:
    """A second KDC on the realm's database whose clock runs an hour ahead."""
    port = krb.free_port()
    proc = kerberos.realm.start_kdc(port, offset_seconds=SKEW_SECONDS)
    yield kerberos.realm.write_krb5_conf(kerberos.realm.root / "skewed.conf", port)
    proc.terminate()
    proc.wait(10)


def test_wrong_password_as_a_process(kerberos: Principals, tmp_path: Path) -> None:
    env = {**worker_env("http://127.0.0.1:9/piwebapi", tmp_path / "lake"), **kerberos.env()}
    env.update(PIDELTA_PI_AUTH="kerberos", PIDELTA_PI_USERNAME="alice")
    env["PIDELTA_PI_PASSWORD"] = PASSWORD + "-wrong"
    result = pidelta("discover", env=env, timeout=120)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "pidelta: Kerberos: wrong password for alice (check PIDELTA_PI_PASSWORD)\n"
    )
    assert not (tmp_path / "lake").exists(), "nothing written"


def test_wrong_keytab(kerberos: Principals, discover: Callable[..., tuple[int, str]]) -> None:
    code, err = discover(
        "http://127.0.0.1:9/piwebapi",
        kerberos.env(),
        pi_keytab=kerberos.stale_keytab,
        pi_principal=kerberos.stale,
    )
    assert (code, err) == (
        2,
        f"pidelta: Kerberos: the key of {kerberos.stale} in "
        f"PIDELTA_PI_KEYTAB={kerberos.stale_keytab} is not the KDC's (a stale or wrong "
        "keytab: export it again)\n",
    )


def test_keytab_without_the_principal(
    kerberos: Principals, discover: Callable[..., tuple[int, str]]
) -> None:
    code, err = discover(
        "http://127.0.0.1:9/piwebapi",
        kerberos.env(),
        pi_keytab=kerberos.service_keytab,
        pi_principal=kerberos.user,
    )
    assert (code, err) == (
        2,
        f"pidelta: Kerberos: PIDELTA_PI_KEYTAB={kerberos.service_keytab} holds no key for "
        f"{kerberos.user} (check PIDELTA_PI_PRINCIPAL)\n",
    )


def test_unknown_principal(kerberos: Principals, discover: Callable[..., tuple[int, str]]) -> None:
    code, err = discover(
        "http://127.0.0.1:9/piwebapi", kerberos.env(), pi_username="mallory", pi_password="x"
    )
    assert (code, err) == (
        2,
        "pidelta: Kerberos: the KDC does not know the principal mallory "
        "(check PIDELTA_PI_USERNAME)\n",
    )


def test_no_kdc_reachable(kerberos: Principals, discover: Callable[..., tuple[int, str]]) -> None:
    down = kerberos.realm.write_krb5_conf(kerberos.realm.root / "down.conf", krb.free_port())
    code, err = discover(
        "http://127.0.0.1:9/piwebapi",
        kerberos.env(KRB5_CONFIG=str(down)),
        pi_username="alice",
        pi_password=PASSWORD,
    )
    assert (code, err) == (
        2,
        f"pidelta: Kerberos: no KDC reachable for realm {krb.REALM} (check the kdc entries "
        f"of KRB5_CONFIG={down} and the network)\n",
    )


def test_no_service_principal_for_the_host(
    kerberos: Principals, discover: Callable[..., tuple[int, str]]
) -> None:
    code, err = discover(
        "http://localhost:9/piwebapi",
        kerberos.env(),
        pi_keytab=kerberos.service_keytab,
        pi_principal=kerberos.service,
    )
    assert (code, err) == (
        2,
        "pidelta: Kerberos: the KDC has no service principal HTTP/localhost "
        "for the PI server (set PIDELTA_PI_KERBEROS_HOSTNAME to the host name of its SPN)\n",
    )


def test_an_empty_ticket_cache(
    kerberos: Principals, discover: Callable[..., tuple[int, str]], tmp_path: Path
) -> None:
    cache = f"FILE:{tmp_path / 'krb5cc'}"
    code, err = discover("http://127.0.0.1:9/piwebapi", kerberos.env(KRB5CCNAME=cache))
    assert (code, err) == (
        2,
        f"pidelta: Kerberos: no ticket in the ticket cache KRB5CCNAME={cache} (run kinit, "
        "or set PIDELTA_PI_KEYTAB and PIDELTA_PI_PRINCIPAL)\n",
    )


def test_clock_skew_beyond_the_limit(
    kerberos: Principals,
    kerberos_mock: Callable[..., MockServer],
    skewed_kdc: Path,
    discover: Callable[..., tuple[int, str]],
) -> None:
    mock = kerberos_mock()
    code, err = discover(
        mock.url,
        kerberos.env(KRB5_CONFIG=str(skewed_kdc)),
        pi_keytab=kerberos.service_keytab,
        pi_principal=kerberos.service,
    )
    assert (code, err) == (
        2,
        "pidelta: Kerberos: the clocks of this host, the KDC and the PI server differ by more "
        "than the allowed skew (sync them with NTP; clockskew in KRB5_CONFIG)\n",
    )


def test_the_server_has_no_key_for_the_ticket(
    kerberos: Principals,
    kerberos_mock: Callable[..., MockServer],
    discover: Callable[..., tuple[int, str]],
) -> None:
    """The server's SPN is an alias: the ticket for HTTP/127.0.0.1 is refused with a reason."""
    mock = kerberos_mock(keytab=kerberos.alias_keytab, kerberos_principal=f"HTTP/{ALIAS_HOST}")
    code, err = discover(
        mock.url, kerberos.env(), pi_keytab=kerberos.service_keytab, pi_principal=kerberos.service
    )
    assert (code, err) == (
        2,
        "pidelta: Kerberos: the PI server cannot read the ticket for HTTP/127.0.0.1 (its "
        "keytab lacks that key: ask the PI administrator, or set "
        "PIDELTA_PI_KERBEROS_HOSTNAME to the host name of its SPN)\n",
    )
