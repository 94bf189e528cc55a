"""Authentication: OIDC client credentials against a token server run by the test, PI in
bearer mode accepting the token it issues. Kerberos has its own group: tests/kerberos."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from tests.conftest import MockServer
from tests.workers.test_pi_client import Recorder, serve
from workers.errors import AuthError
from workers.pi.auth import refresh_delay
from workers.pi.client import PIClient
from workers.settings import Settings

PI_TOKEN = "pi-accepts-this-token-7f3a"
CLIENT_SECRET = "client-secret-never-shown-91c2"


@dataclass
class TokenServer:
    """Issues `tokens` in turn (the last one forever), valid `expires_in` seconds."""

    tokens: list[str]
    expires_in: float = 2.0
    refuse: bool = False
    refuse_after: int | None = None
    grants: list[float] = field(default_factory=list)
    forms: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.forms.append(form)
        exhausted = self.refuse_after is not None and len(self.grants) >= self.refuse_after
        if self.refuse or exhausted or form.get("client_secret") != CLIENT_SECRET:
            return web.json_response(
                {"error": "invalid_client", "error_description": "Client authentication failed."},
                status=401,
            )
        token = self.tokens[min(len(self.grants), len(self.tokens) - 1)]
        self.grants.append(time.monotonic())
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
        )


@asynccontextmanager
async def token_server(tokens: list[str], **kw: object) -> AsyncIterator[tuple[TokenServer, str]]:
    issuer = TokenServer(tokens, **kw)  # type: ignore[arg-type]
    app = web.Application()
    app.router.add_post("/piwebapi/token", issuer.handle)
    async with serve(app) as base:
        yield issuer, f"{base}/token"


def oidc_settings(pi_url: str, token_url: str, **overrides: object) -> Settings:
    return Settings(
        pi_url=pi_url,
        pi_auth="oidc",
        pi_client_id="pidelta",
        pi_client_secret=CLIENT_SECRET,
        pi_token_url=token_url,
        allow_http_credentials=True,  # the test's token servers are plain HTTP on loopback
        **overrides,
    )


def test_tokens_are_renewed_well_before_they_expire() -> None:
    assert refresh_delay(2.0) == pytest.approx(1.6)
    assert refresh_delay(3600.0) == pytest.approx(3540.0)
    assert refresh_delay(0.0) == 0.0


async def test_oidc_refreshes_before_expiry_while_requests_go_on(
    mock_pi_factory: Callable[..., MockServer],
) -> None:
    pi = mock_pi_factory(auth="bearer", token=PI_TOKEN, tag_count=10, rate_limit=0)
    recorder = Recorder()
    async with token_server([PI_TOKEN]) as (issuer, token_url):
        settings = oidc_settings(pi.url, token_url, pi_token_scope="api://pi/.default")
        async with PIClient(settings, recorder) as client:
            # Many first requests at once share one grant.
            await asyncio.gather(
                *(client.get_json("dataservers", endpoint="dataservers") for _ in range(10))
            )
            assert len(issuer.grants) == 1
            deadline = time.monotonic() + 3.6
            while time.monotonic() < deadline:
                await client.get_json("dataservers", endpoint="dataservers")
                await asyncio.sleep(0.1)
    assert {r[1] for r in recorder.requests} == {"200"}
    assert len(issuer.grants) == 3  # at 0 s, ~1.6 s, ~3.2 s
    gaps = [b - a for a, b in zip(issuer.grants, issuer.grants[1:], strict=False)]
    assert all(1.4 < gap < 2.0 for gap in gaps), gaps  # renewed early, not per request
    assert issuer.forms[0] == {
        "grant_type": "client_credentials",
        "client_id": "pidelta",
        "client_secret": CLIENT_SECRET,
        "scope": "api://pi/.default",
    }


async def test_a_401_from_pi_forces_one_new_grant_and_one_retry(
    mock_pi_factory: Callable[..., MockServer],
) -> None:
    pi = mock_pi_factory(auth="bearer", token=PI_TOKEN, tag_count=10, rate_limit=0)
    recorder = Recorder()
    tokens = ["revoked-early", PI_TOKEN]
    async with (
        token_server(tokens, expires_in=3600) as (issuer, url),
        PIClient(oidc_settings(pi.url, url), recorder) as client,
    ):
        assert (await client.get_json("dataservers", endpoint="dataservers"))["Items"]
    assert len(issuer.grants) == 2
    assert [r[1] for r in recorder.requests] == ["401", "200"]

    async with (
        token_server(["never-valid"], expires_in=3600) as (issuer, url),
        PIClient(oidc_settings(pi.url, url)) as client,
    ):
        with pytest.raises(AuthError) as info:
            await client.get_json("dataservers", endpoint="dataservers")
    assert len(issuer.grants) == 2  # one refresh, then give up
    assert info.value.status == 401
    assert "PIDELTA_PI_AUTH=oidc" in str(info.value)


async def test_a_refused_grant_is_an_auth_error_without_the_secret(
    mock_pi_factory: Callable[..., MockServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pi = mock_pi_factory(auth="bearer", token=PI_TOKEN, tag_count=10, rate_limit=0)
    async with (
        token_server([PI_TOKEN], refuse=True) as (issuer, url),
        PIClient(oidc_settings(pi.url, url)) as client,
    ):
        with pytest.raises(AuthError) as info:
            await client.get_json("dataservers", endpoint="dataservers")
    err = info.value
    assert err.status == 401
    assert err.errors == ["invalid_client", "Client authentication failed."]
    assert "PIDELTA_PI_CLIENT_SECRET" in str(err)
    texts = [str(err), repr(err), *(r.getMessage() for r in caplog.records)]
    assert all(CLIENT_SECRET not in text and PI_TOKEN not in text for text in texts)
    assert len(issuer.forms) == 1  # a refusal is not retried


async def test_a_failed_renewal_keeps_the_valid_token_until_it_expires(
    mock_pi_factory: Callable[..., MockServer], caplog: pytest.LogCaptureFixture
) -> None:
    pi = mock_pi_factory(auth="bearer", token=PI_TOKEN, tag_count=10, rate_limit=0)
    async with (
        token_server([PI_TOKEN], refuse_after=1) as (issuer, url),
        PIClient(oidc_settings(pi.url, url)) as client,
    ):
        started = time.monotonic()
        await client.get_json("dataservers", endpoint="dataservers")
        await asyncio.sleep(max(0.0, started + 1.7 - time.monotonic()))
        assert (await client.get_json("dataservers", endpoint="dataservers"))["Items"]
        assert any("renewal failed" in r.getMessage() for r in caplog.records)
        await asyncio.sleep(max(0.0, started + 2.1 - time.monotonic()))
        with pytest.raises(AuthError, match="token request refused"):
            await client.get_json("dataservers", endpoint="dataservers")
    assert len(issuer.grants) == 1


async def test_a_redirecting_token_endpoint_gets_no_secret_across(
    mock_pi_factory: Callable[..., MockServer],
) -> None:
    pi = mock_pi_factory(auth="bearer", token=PI_TOKEN, tag_count=10, rate_limit=0)
    elsewhere: list[bytes] = []

    async def other_host(request: web.Request) -> web.Response:
        elsewhere.append(await request.read())
        return web.json_response({"access_token": "from-another-host", "expires_in": 3600})

    other = web.Application()
    other.router.add_route("*", "/{tail:.*}", other_host)
    async with serve(other) as other_base:

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(f"{other_base}/token")

        issuer = web.Application()
        issuer.router.add_post("/piwebapi/token", redirect)
        async with serve(issuer) as issuer_base:
            settings = oidc_settings(pi.url, f"{issuer_base}/token")
            async with PIClient(settings) as client:
                with pytest.raises(AuthError) as info:
                    await client.get_json("dataservers", endpoint="dataservers")
    assert elsewhere == []
    assert info.value.status == 307
    assert str(info.value) == (
        f"POST {issuer_base}/token -> HTTP 307 token endpoint redirected, not followed "
        "(the client secret stays with PIDELTA_PI_TOKEN_URL); set it to the final address: "
        "307: Temporary Redirect"
    )


def test_a_plain_http_token_url_is_refused_unless_allowed() -> None:
    with pytest.raises(ValueError, match="PIDELTA_PI_TOKEN_URL is plain http://"):
        Settings(
            pi_auth="oidc",
            pi_client_id="pidelta",
            pi_client_secret=CLIENT_SECRET,
            pi_token_url="http://idp.example/token",
        )
