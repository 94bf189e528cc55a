"""The Negotiate exchange in this process: the SPN override, mutual authentication, no
retry storm, delegation only when asked, and renewal that survives a KDC outage."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from mock_pi.kerberos import Negotiator
from tests.conftest import MockServer
from tests.kerberos import realm as krb
from tests.kerberos.conftest import ALIAS_HOST, PASSWORD, SERVICE_HOST, Principals, auth_counts
from tests.workers.test_pi_client import serve
from workers.errors import AuthError, KerberosError
from workers.pi.client import PIClient
from workers.pi.kerberos import KerberosAuth
from workers.settings import Settings


def keytab_settings(kerberos: Principals, url: str, **extra: object) -> Settings:
    return Settings(
        pi_url=url,
        pi_auth="kerberos",
        pi_keytab=kerberos.service_keytab,
        pi_principal=kerberos.service,
        **extra,
    )


async def data_servers(client: PIClient) -> list[str]:
    doc = await client.get_json("dataservers", endpoint="dataservers")
    return [item["Name"] for item in doc["Items"]]


async def test_the_hostname_override_reaches_a_server_by_another_name(
    kerberos: Principals, kerberos_mock: Callable[..., MockServer]
) -> None:
    """Reached as localhost, known to Kerberos as HTTP/127.0.0.1 (a DNS alias's case)."""
    mock = kerberos_mock()
    url = f"http://localhost:{mock.port}/piwebapi"
    settings = keytab_settings(kerberos, url, pi_kerberos_hostname=SERVICE_HOST)
    async with PIClient(settings) as client:
        assert len(await data_servers(client)) == 1
    assert auth_counts(mock)["clients"] == [kerberos.service]


async def test_the_hostname_override_names_a_load_balancers_spn(
    kerberos: Principals, kerberos_mock: Callable[..., MockServer]
) -> None:
    """Reached by address, its service principal is HTTP/pi.alias.test."""
    mock = kerberos_mock(keytab=kerberos.alias_keytab, kerberos_principal=f"HTTP/{ALIAS_HOST}")
    settings = keytab_settings(kerberos, mock.url, pi_kerberos_hostname=ALIAS_HOST)
    async with PIClient(settings) as client:
        assert len(await data_servers(client)) == 1
    counts = auth_counts(mock)
    assert (counts["refused"], counts["clients"]) == (0, [kerberos.service])


async def test_a_refused_token_costs_one_more_request_never_a_storm(
    kerberos: Principals,
) -> None:
    seen: list[str] = []

    async def refuse(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response(
            {"Errors": ["Authorization has been denied for this request."]},
            status=401,
            headers={"WWW-Authenticate": "Negotiate"},
        )

    app = web.Application()
    app.router.add_get("/piwebapi/{tail:.*}", refuse)
    async with serve(app) as base:
        settings = keytab_settings(kerberos, base)
        auth = KerberosAuth(settings)
        async with PIClient(settings, auth=auth) as client:
            with pytest.raises(AuthError) as info:
                await data_servers(client)
            assert str(info.value) == (
                f"GET {base}/dataservers -> HTTP 401 "
                "credentials refused (PIDELTA_PI_AUTH=kerberos); server offers Negotiate: "
                "Authorization has been denied for this request."
            )
            # The bare request met the challenge, answered once with a token.
            assert [h.split(" ")[0] for h in seen] == ["", "Negotiate"]
            seen.clear()
            results = await asyncio.gather(
                *(data_servers(client) for _ in range(8)), return_exceptions=True
            )
    assert all(isinstance(r, AuthError) for r in results)
    assert len(seen) == 16, "each request: its token, then one fresh token"
    assert all(h.startswith("Negotiate ") for h in seen)
    assert len(set(seen)) == 16, "a token is never sent twice"
    assert auth.renewals == 1, "one new login for all of them, not one each"


async def test_a_mutual_authentication_token_that_does_not_verify_is_refused(
    kerberos: Principals,
) -> None:
    negotiator = Negotiator(kerberos.http_keytab, f"HTTP/{SERVICE_HOST}")
    forged = "Negotiate " + base64.b64encode(b"\x6f\x10" + bytes(16)).decode()

    async def impostor(request: web.Request) -> web.Response:
        accepted, offer = negotiator.accept(request.headers.get("Authorization"))
        if not accepted:
            return web.json_response({}, status=401, headers={"WWW-Authenticate": offer or ""})
        return web.json_response({"Items": []}, headers={"WWW-Authenticate": forged})

    app = web.Application()
    app.router.add_get("/piwebapi/{tail:.*}", impostor)
    async with serve(app) as base, PIClient(keytab_settings(kerberos, base)) as client:
        with pytest.raises(AuthError) as info:
            await data_servers(client)
    assert str(info.value) == (
        f"GET {base}/dataservers -> HTTP 200 the server's Kerberos mutual-authentication "
        f"token for HTTP/{SERVICE_HOST} does not verify (Invalid token was supplied): it may "
        "not be the PI server it claims"
    )


@pytest.mark.parametrize(("delegate", "delegated"), [(False, 0), (True, 2)])
async def test_no_delegation_unless_asked(
    kerberos: Principals,
    kerberos_mock: Callable[..., MockServer],
    delegate: bool,
    delegated: int,
) -> None:
    mock = kerberos_mock()
    settings = keytab_settings(kerberos, mock.url, pi_kerberos_delegate=delegate)
    async with PIClient(settings) as client:
        await data_servers(client)
        await data_servers(client)
    counts = auth_counts(mock)
    assert (counts["accepted"], counts["delegated"]) == (2, delegated)


async def test_a_failed_renewal_keeps_the_tickets_in_hand_until_the_kdc_is_back(
    kerberos: Principals,
    kerberos_mock: Callable[..., MockServer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    mock = kerberos_mock()
    now = [0.0]
    settings = Settings(
        pi_url=mock.url, pi_auth="kerberos", pi_username="alice", pi_password=PASSWORD
    )
    auth = KerberosAuth(settings, clock=lambda: now[0])
    down = kerberos.realm.write_krb5_conf(tmp_path / "down.conf", krb.free_port())
    caplog.set_level(logging.INFO, logger="workers.pi.kerberos")
    async with PIClient(settings, auth=auth) as client:
        await data_servers(client)
        now[0] = 6 * 3600.0  # past the renewal point of 10-hour tickets
        monkeypatch.setenv("KRB5_CONFIG", str(down))
        tries: list[bool] = []
        acquire = auth.tickets.acquire

        def counted(*, fresh: bool = False) -> object:
            tries.append(fresh)
            return acquire(fresh=fresh)

        monkeypatch.setattr(auth.tickets, "acquire", counted)
        await asyncio.gather(*(data_servers(client) for _ in range(8)))
        assert (tries, auth.renewals) == ([False], 0), "one attempt, not one per request"
        assert (
            "Kerberos renewal failed, the tickets in hand stay valid 14400 s: Kerberos: no KDC "
            f"reachable for realm {krb.REALM} (check the kdc entries of KRB5_CONFIG="
            f"{kerberos.realm.krb5_conf} and the network)"
        ) in caplog.messages
        monkeypatch.setenv("KRB5_CONFIG", str(kerberos.realm.krb5_conf))
        now[0] += 2 * 3600.0  # half of the time left: asked again
        await data_servers(client)
        assert auth.renewals == 1
        monkeypatch.setenv("KRB5_CONFIG", str(down))
        now[0] += 11 * 3600.0  # the renewed tickets have expired, and no KDC answers
        with pytest.raises(KerberosError) as info:
            await data_servers(client)
    assert str(info.value).startswith("Kerberos: no KDC reachable for realm")
    assert PASSWORD not in caplog.text + repr(auth) + repr(auth.login)
    assert auth_counts(mock)["refused"] == 0
