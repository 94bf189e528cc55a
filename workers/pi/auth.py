"""How the PI client authenticates: none, HTTP Basic, a static bearer token, OIDC or Kerberos.

OIDC uses the client-credentials grant: the token is cached and fetched again before it
expires (at 80 % of its lifetime, or 60 s before the end for long-lived tokens), and a 401
from PI (a token revoked early) forces one fresh grant and one retry. Kerberos (HTTP
Negotiate) is `workers/pi/kerberos.py`, loaded only when asked for, as it needs python-gssapi
and the MIT Kerberos libraries.

Secrets stay in SecretStr until the moment a header or form is built, and no header value
is ever logged or put into an exception.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
from collections.abc import Sequence

import aiohttp
import orjson

from workers.errors import AuthError, ConfigError, PIConnectionError, PIError
from workers.pi.auth_protocol import Authenticator, Challenge
from workers.settings import Settings

log = logging.getLogger(__name__)

TOKEN_ATTEMPTS = 3
RENEW_RETRY_SECONDS = 5.0


class NoAuth:
    scheme = "none"

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {}

    async def refresh(self, session: aiohttp.ClientSession, challenge: Challenge) -> bool:
        return False

    def verify(self, sent: str, offers: Sequence[str]) -> str | None:
        return None


class StaticAuth:
    """Basic or bearer: one fixed header; a 401 means the credentials are wrong."""

    def __init__(self, scheme: str, header: str) -> None:
        self.scheme = scheme
        self._header = header

    def __repr__(self) -> str:
        return f"StaticAuth(scheme={self.scheme!r})"

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {"Authorization": self._header}

    async def refresh(self, session: aiohttp.ClientSession, challenge: Challenge) -> bool:
        return False

    def verify(self, sent: str, offers: Sequence[str]) -> str | None:
        return None


def refresh_delay(expires_in: float) -> float:
    """Seconds after a grant at which to fetch the next token: well before it expires."""
    return max(0.0, expires_in - min(60.0, 0.2 * expires_in))


class OIDCAuth:
    """OAuth 2.0 client-credentials grant against `pi_token_url`, cached and renewed early."""

    scheme = "oidc"

    def __init__(self, settings: Settings) -> None:
        if not (settings.pi_token_url and settings.pi_client_id and settings.pi_client_secret):
            raise ConfigError(
                "PIDELTA_PI_AUTH=oidc needs PIDELTA_PI_TOKEN_URL, PIDELTA_PI_CLIENT_ID "
                "and PIDELTA_PI_CLIENT_SECRET"
            )
        self._settings = settings
        self._token_url = settings.pi_token_url
        self._tls = _token_tls(settings)
        if self._token_url.startswith("http://"):
            log.warning(
                "PIDELTA_PI_TOKEN_URL is plain http:// (PIDELTA_ALLOW_HTTP_CREDENTIALS=true): "
                "the client secret and the tokens cross the network in clear"
            )
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._generation = 0
        self.grants = 0

    def __repr__(self) -> str:
        return f"OIDCAuth(token_url={self._token_url!r}, grants={self.grants})"

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        if self._token is None or time.monotonic() >= self._refresh_at:
            generation = self._generation
            async with self._lock:
                if self._generation == generation:
                    await self._renew(session)
        assert self._token is not None
        return {"Authorization": f"Bearer {self._token}"}

    async def refresh(self, session: aiohttp.ClientSession, challenge: Challenge) -> bool:
        if challenge.retried:
            return False
        generation = self._generation
        async with self._lock:
            if self._generation == generation:
                await self._grant(session)
        return True

    def verify(self, sent: str, offers: Sequence[str]) -> str | None:
        return None

    async def _renew(self, session: aiohttp.ClientSession) -> None:
        """A new grant; while the current token is still valid, a failed one only warns."""
        try:
            await self._grant(session)
        except PIError as exc:
            now = time.monotonic()
            if self._token is None or now >= self._expires_at:
                raise
            self._refresh_at = now + min(RENEW_RETRY_SECONDS, (self._expires_at - now) / 2)
            log.warning(
                "OIDC token renewal failed, the current token stays valid %.1f s: %s",
                self._expires_at - now,
                exc,
            )

    async def _grant(self, session: aiohttp.ClientSession) -> None:
        settings = self._settings
        assert settings.pi_client_secret is not None
        form = {"grant_type": "client_credentials", "client_id": settings.pi_client_id or ""}
        form["client_secret"] = settings.pi_client_secret.get_secret_value()
        if settings.pi_token_scope:
            form["scope"] = settings.pi_token_scope
        headers = {"Accept": "application/json"}
        for attempt in range(1, TOKEN_ATTEMPTS + 1):
            failure: PIError
            try:
                async with session.post(
                    self._token_url,
                    data=form,
                    headers=headers,
                    ssl=self._tls,
                    timeout=aiohttp.ClientTimeout(total=settings.pi_request_timeout),
                    # A redirect would carry the client secret to whatever host it names.
                    allow_redirects=False,
                ) as resp:
                    body = await resp.read()
                    status = resp.status
            except aiohttp.ClientSSLError as exc:
                raise PIConnectionError(
                    "POST", self._token_url, "tls", type(exc).__name__
                ) from None
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                failure = PIConnectionError(
                    "POST", self._token_url, "connect", type(exc).__name__, attempt
                )
            else:
                if status == 200:
                    self._accept(body)
                    return
                retryable = status >= 500 or status == 429
                if retryable:
                    reason = "token endpoint unavailable"
                elif 300 <= status < 400:
                    reason = (
                        "token endpoint redirected, not followed (the client secret stays "
                        "with PIDELTA_PI_TOKEN_URL); set it to the final address"
                    )
                else:
                    reason = (
                        "token request refused; check PIDELTA_PI_CLIENT_ID / "
                        "PIDELTA_PI_CLIENT_SECRET / PIDELTA_PI_TOKEN_SCOPE"
                    )
                failure = AuthError(
                    "POST", self._token_url, status, _oauth_errors(body), reason, attempt
                )
                if not retryable:
                    raise failure
            if attempt >= TOKEN_ATTEMPTS:
                raise failure
            await asyncio.sleep(min(2.0, 0.25 * 2**attempt))

    def _accept(self, body: bytes) -> None:
        try:
            doc = orjson.loads(body)
            token = str(doc["access_token"])
            expires_in = float(doc.get("expires_in", 3600))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise AuthError(
                "POST", self._token_url, 200, [], "token response without access_token"
            ) from None
        now = time.monotonic()
        self._token = token
        self._expires_at = now + expires_in
        self._refresh_at = now + refresh_delay(expires_in)
        self._generation += 1
        self.grants += 1
        log.debug(
            "OIDC token obtained, valid %.0f s, renewed in %.0f s",
            expires_in,
            refresh_delay(expires_in),
        )


def _oauth_errors(body: bytes) -> list[str]:
    """`error` and `error_description` of an OAuth error answer (RFC 6749 section 5.2)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [body[:200].decode("utf-8", "replace")] if body else []
    if not isinstance(doc, dict):
        return []
    return [str(doc[k]) for k in ("error", "error_description") if doc.get(k)]


def tls_context(settings: Settings, url: str) -> ssl.SSLContext | bool:
    """Verification on by default; `PIDELTA_PI_CA_BUNDLE` replaces the system CAs for PI.

    Returns False (no verification, with a warning) only when PIDELTA_PI_VERIFY_TLS=false.
    """
    if not settings.pi_verify_tls:
        if url.startswith("https://"):
            log.warning(
                "PIDELTA_PI_VERIFY_TLS=false: the PI server's certificate is NOT verified; "
                "anyone on the path can read the credentials"
            )
        return False
    if settings.pi_ca_bundle is not None:
        return ssl.create_default_context(cafile=str(settings.pi_ca_bundle))
    return True


def _token_tls(settings: Settings) -> ssl.SSLContext | bool:
    """For the identity provider: the system CAs plus the custom bundle, if any."""
    if not settings.pi_verify_tls:
        return False
    ctx = ssl.create_default_context()
    if settings.pi_ca_bundle is not None:
        ctx.load_verify_locations(cafile=str(settings.pi_ca_bundle))
    return ctx


def make_authenticator(settings: Settings) -> Authenticator:
    """The authenticator for `PIDELTA_PI_AUTH`; raises ConfigError for what this build lacks."""
    if settings.pi_auth == "basic":
        if settings.pi_username is None or settings.pi_password is None:
            raise ConfigError("PIDELTA_PI_AUTH=basic needs PIDELTA_PI_USERNAME and PASSWORD")
        raw = f"{settings.pi_username}:{settings.pi_password.get_secret_value()}"
        return StaticAuth("basic", "Basic " + base64.b64encode(raw.encode()).decode("ascii"))
    if settings.pi_auth == "bearer":
        if settings.pi_token is None:
            raise ConfigError("PIDELTA_PI_AUTH=bearer needs PIDELTA_PI_TOKEN")
        return StaticAuth("bearer", "Bearer " + settings.pi_token.get_secret_value())
    if settings.pi_auth == "oidc":
        return OIDCAuth(settings)
    if settings.pi_auth == "kerberos":
        try:
            from workers.pi.kerberos import KerberosAuth
        except ImportError:
            raise ConfigError(
                "PIDELTA_PI_AUTH=kerberos needs python-gssapi and the MIT Kerberos libraries: "
                "pip install 'pidelta[kerberos]' (Debian: libgssapi-krb5-2, and libkrb5-dev "
                "to build it)"
            ) from None
        return KerberosAuth(settings)
    return NoAuth()
