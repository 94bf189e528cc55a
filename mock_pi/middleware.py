"""What a PI Web API server does before and after a route: limits, auth, CSRF, faults, errors.

Order, outermost first: injected faults (they stand for the network and the load balancer,
so they come before the server looks at anything), URL length (414), rate limit (429),
authentication (401; Kerberos in `kerberos.py`), CSRF defence (403), body size (413), then
the route, whose exceptions become `{"Errors": [...]}` bodies. The test-only
`/piwebapi/mock/*` endpoints are exempt from all of it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import MatchInfoError

from mock_pi.errors import error_response
from mock_pi.faults import (
    BROKEN_JSON,
    INTERNAL_ERROR,
    RETRY_AFTER_SECONDS,
    SERVICE_UNAVAILABLE,
    SLOW_SECONDS,
    FaultInjector,
)
from mock_pi.settings import MockSettings
from mock_pi.state import MockState

if TYPE_CHECKING:
    from mock_pi.kerberos import Negotiator

log = logging.getLogger("mock_pi")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MOCK_PREFIX = "/piwebapi/mock/"
FAULTS_PATH = "/piwebapi/mock/faults"
AUTH_PATH = "/piwebapi/mock/auth"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REALM = "PI Web API"

# Texts are constant so that clients and tests can match them.
RATE_LIMITED = "Rate limit was reached"
UNAUTHORIZED = "Authorization has been denied for this request."
CSRF_REFUSED = (
    "The request is missing the X-Requested-With header, which is required for POST, PUT, "
    "PATCH and DELETE requests while CSRF defense is enabled."
)


def url_too_long(limit: int) -> str:
    return f"The request URL exceeds the maximum allowed length of {limit} bytes."


def body_too_large(limit: int) -> str:
    return f"The request body exceeds the maximum allowed size of {limit} bytes."


def handler_args(settings: MockSettings) -> dict[str, Any]:
    """HTTP parser limits above ours, so that a long URL reaches the 414 check, not a 400."""
    return {"max_line_size": max(4 * settings.max_url_bytes, 65_536), "max_field_size": 65_536}


class RateLimiter:
    """Sliding one-second window of accepted requests per client address."""

    def __init__(
        self, limit: int, window: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.hits: dict[str, deque[float]] = {}

    def retry_after(self, client: str) -> int | None:
        """None when the request is accepted (and counted), else whole seconds to wait."""
        now = self.clock()
        hits = self.hits.setdefault(client, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return max(1, int(-(-(hits[0] + self.window - now) // 1)))
        hits.append(now)
        return None


def authorized(settings: MockSettings, header: str | None) -> bool:
    """Check credentials in constant time; they are never logged."""
    if settings.auth == "none":
        return True
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if settings.auth == "bearer":
        expected = settings.token.get_secret_value().encode()
        return scheme.lower() == "bearer" and secrets.compare_digest(value.encode(), expected)
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    ok_user = secrets.compare_digest(user.encode(), settings.username.encode())
    expected = settings.password.get_secret_value().encode()
    ok_pass = secrets.compare_digest(password.encode(), expected)
    return bool(sep) and ok_user and ok_pass


def challenge(settings: MockSettings) -> str:
    return f'Basic realm="{REALM}"' if settings.auth == "basic" else "Bearer"


def http_exception_response(request: web.BaseRequest, exc: web.HTTPException) -> web.Response:
    """An aiohttp HTTP exception as PI shapes errors (also used for batch sub-requests)."""
    unmatched = isinstance(request.match_info, MatchInfoError)
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    if (exc.content_type or "").startswith("application/json") and exc.text:
        return web.Response(
            status=exc.status, text=exc.text, content_type="application/json", headers=headers
        )
    if unmatched and exc.status == 404:
        message = f"No HTTP resource was found that matches the request URI '{request.url}'."
    elif unmatched and exc.status == 405:
        message = f"The requested resource does not support http method '{request.method}'."
    elif exc.text and exc.text != f"{exc.status}: {exc.reason}":
        message = exc.text
    else:
        message = exc.reason
    return error_response(exc.status, message, headers=headers)


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP reset, as a crashed proxy or a dead link does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _truncate(request: web.Request, response: web.Response) -> web.StreamResponse | None:
    """Send the headers with the full Content-Length, half of the body, then close."""
    body = response.body
    if not isinstance(body, bytes | bytearray) or request.transport is None:
        return None
    cut = web.StreamResponse(status=response.status, reason=response.reason)
    for key, value in response.headers.items():
        if key.lower() not in ("content-length", "transfer-encoding"):
            cut.headers.add(key, value)
    cut.content_length = max(len(body), 1)
    await cut.prepare(request)
    await cut.write(bytes(body[: len(body) // 2]))
    request.transport.close()
    return cut


def fault_middleware(injector: FaultInjector) -> Any:
    @web.middleware
    async def faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(MOCK_PREFIX):
            if request.path == FAULTS_PATH and request.method == "GET":
                return web.Response(
                    body=orjson.dumps(injector.snapshot()), content_type="application/json"
                )
            return await handler(request)
        draw = injector.draw()
        if draw.slow:
            injector.record("slow")
            await asyncio.sleep(SLOW_SECONDS)
        kind = draw.terminal
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        if kind == "reset":
            injector.record(kind)
            _reset(request)
            return web.Response(status=500)
        if kind == "503":
            injector.record(kind)
            return error_response(503, SERVICE_UNAVAILABLE, headers=retry)
        if kind == "429":
            injector.record(kind)
            return error_response(429, RATE_LIMITED, headers=retry)
        if kind == "500":
            injector.record(kind)
            return error_response(500, INTERNAL_ERROR)
        response = await handler(request)
        if kind == "badjson" and isinstance(response, web.Response) and response.status == 200:
            injector.record(kind)
            return web.Response(body=BROKEN_JSON, content_type="application/json")
        if kind == "truncate" and isinstance(response, web.Response) and not response.prepared:
            cut = await _truncate(request, response)
            if cut is not None:
                injector.record(kind)
                return cut
        return response

    return faults


def limits_middleware(settings: MockSettings, limiter: RateLimiter | None) -> Any:
    @web.middleware
    async def limits(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(MOCK_PREFIX):
            return await handler(request)
        if len(request.raw_path.encode()) > settings.max_url_bytes:
            return error_response(414, url_too_long(settings.max_url_bytes))
        if limiter is not None:
            wait = limiter.retry_after(request.remote or "")
            if wait is not None:
                return error_response(429, RATE_LIMITED, headers={"Retry-After": str(wait)})
        return await handler(request)

    return limits


def security_middleware(settings: MockSettings, negotiator: Negotiator | None = None) -> Any:
    @web.middleware
    async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(MOCK_PREFIX):
            if negotiator is not None and request.path == AUTH_PATH and request.method == "GET":
                return web.Response(
                    body=orjson.dumps(negotiator.snapshot()), content_type="application/json"
                )
            return await handler(request)
        mutual: str | None = None
        if negotiator is not None:
            accepted, offer = negotiator.accept(request.headers.get(hdrs.AUTHORIZATION))
            if not accepted:
                return error_response(401, UNAUTHORIZED, headers={"WWW-Authenticate": offer or ""})
            mutual = offer
        elif not authorized(settings, request.headers.get(hdrs.AUTHORIZATION)):
            return error_response(
                401, UNAUTHORIZED, headers={"WWW-Authenticate": challenge(settings)}
            )
        if (
            settings.csrf
            and request.method in UNSAFE_METHODS
            and "X-Requested-With" not in request.headers
        ):
            return error_response(403, CSRF_REFUSED)
        response = await handler(request)
        if mutual is not None and not response.prepared:
            response.headers["WWW-Authenticate"] = mutual
        return response

    return security


def body_middleware(settings: MockSettings) -> Any:
    @web.middleware
    async def body_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        limit = settings.max_body_bytes
        if request.body_exists:
            length = request.content_length
            if length is not None and length > limit:
                return error_response(413, body_too_large(limit))
            if length is None:
                try:
                    size = len(await request.read())
                except web.HTTPRequestEntityTooLarge:
                    size = limit + 1
                if size > limit:
                    return error_response(413, body_too_large(limit))
        return await handler(request)

    return body_limit


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Route exceptions become PI-shaped error bodies; the traceback goes to the log."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_exception_response(request, exc)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, INTERNAL_ERROR)


def negotiator(settings: MockSettings) -> Negotiator | None:
    """The Kerberos acceptor for auth=kerberos (python-gssapi is imported only then)."""
    if settings.auth != "kerberos":
        return None
    from mock_pi.kerberos import Negotiator

    assert settings.keytab is not None
    return Negotiator(settings.keytab, settings.service_principal)


def build(state: MockState) -> list[Any]:
    """The middleware list for `web.Application(middlewares=...)`."""
    settings = state.settings
    injector = FaultInjector.from_spec(settings.seed, settings.faults)
    limiter = RateLimiter(settings.rate_limit) if settings.rate_limit > 0 else None
    return [
        fault_middleware(injector),
        limits_middleware(settings, limiter),
        security_middleware(settings, negotiator(settings)),
        body_middleware(settings),
        error_middleware,
    ]
