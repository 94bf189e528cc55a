"""The PI Web API client: one pooled aiohttp session per worker, bounded and polite.

Few large requests with many in flight is what makes ingestion fast, so the client keeps
`pi_max_concurrency` connections alive, asks for gzip, and holds the request rate under
`pi_max_requests_per_second` (below the server's `RateLimitMaxRequests`) so that 429s stay
rare. Everything transient is retried the same way: 429, 500, 502, 503, 504, timeouts,
connection resets and cut bodies, with exponential backoff and full jitter, never sooner
than a `Retry-After`, bounded by `pi_max_attempts` and `pi_max_retry_seconds`; then a typed
error. A 4xx other than 401-with-refreshable-credentials is the caller's mistake and is
raised at once with PI's own error text. POSTs are retried too: the ones pidelta sends
(/batch of reads, stream-update registration) are safe to repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp.compression_utils import set_zlib_backend
from asyncio_throttle import Throttler
from isal import isal_zlib
from multidict import CIMultiDictProxy
from yarl import URL

from workers.errors import (
    RETRYABLE_STATUSES,
    AuthError,
    ClientNotOpen,
    ForeignURL,
    PIConnectionError,
    PIWebAPIError,
    RetriesAbandoned,
    redact_url,
)
from workers.observe import NullObserver, RequestObserver
from workers.pi.auth import Authenticator, make_authenticator, tls_context
from workers.pi.auth_protocol import Challenge
from workers.pi.replies import (
    parse_retry_after,
    pi_errors,
    retry_closure,
    sub_retry_after,
    sub_status,
)
from workers.settings import Settings

log = logging.getLogger(__name__)

# Inflating gzip bodies was a tenth of a worker's CPU with zlib; ISA-L does it in a quarter.
set_zlib_backend(isal_zlib)

BACKOFF_BASE = 0.25
BACKOFF_CAP = 30.0
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# OpenSSL's reasons when a TLS client hello meets a plain-HTTP server's answer.
PLAIN_HTTP_REPLIES = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST"})
# How a refused or unroutable connection starts its detail (`_exchange`): said at once,
# then retried, since a PI Web API that is restarting comes back.
UNREACHABLE = "ClientConnectorError"
# Characters left as they are in a query: unreserved plus the sub-delimiters PI uses
# (`;` in selectedFields, `*` in name filters and PI times, `:` in ISO times).
_QUERY_SAFE = "-_.~*:;,!$'()@/"
_PATH_SAFE = "/-_.~%:@!$&'()*+,;="


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1)))."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(0.0, ceiling)


@dataclass(slots=True)
class _Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    value: Any = None
    authorization: str = ""  # the Authorization header the request carried


@dataclass(slots=True)
class _Failure:
    reason: str  # "timeout", "reset", "truncated", "oversized"
    detail: str


READ_CHUNK_BYTES = 1 << 20
# A body over the limit is refused this many times at most, however many attempts the
# other failures get: a server that sends one will likely send it again.
OVERSIZED_ATTEMPTS = 3


def _over(what: str, limit: int) -> str:
    return f"{what} larger than PIDELTA_PI_MAX_RESPONSE_BYTES={limit}"


class PIClient:
    """`async with PIClient(settings) as client:`; one per worker, shared by its tasks."""

    def __init__(
        self,
        settings: Settings,
        observer: RequestObserver | None = None,
        *,
        auth: Authenticator | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self._stop = stop
        self.observer: RequestObserver = observer or NullObserver()
        self.auth: Authenticator = auth or make_authenticator(settings)
        self._base = settings.pi_url.rstrip("/")
        self._semaphore = asyncio.Semaphore(settings.pi_max_concurrency)
        rps = settings.pi_max_requests_per_second
        self._throttler = (
            Throttler(rate_limit=int(rps), period=1.0)
            if rps >= 1
            else Throttler(rate_limit=1, period=1.0 / rps)
        )
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"PIClient(url={redact_url(self._base)!r}, auth={self.auth.scheme!r})"

    async def __aenter__(self) -> PIClient:
        limit = self.settings.pi_max_concurrency
        connector = aiohttp.TCPConnector(
            limit=limit,
            limit_per_host=limit,
            ssl=tls_context(self.settings, self._base),
            ttl_dns_cache=300,
            keepalive_timeout=30,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.pi_request_timeout),
            headers={
                "Accept": "application/json",
                "Accept-Encoding": "gzip, deflate" if self.settings.pi_gzip else "identity",
            },
            auto_decompress=True,
        )
        # aiohttp silently re-sends an idempotent request once when a reused connection
        # drops; every retry here is ours instead, with backoff and counted by the observer
        # (aiohttp's own test client turns it off the same way).
        if hasattr(self._session, "_retry_connection"):
            self._session._retry_connection = False
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ public API

    def url_length(self, path: str, params: Sequence[tuple[str, str]] = ()) -> int:
        """Bytes of the URL as sent, so callers can split WebID lists under the limit."""
        return len(self._url(path, params).encode("ascii"))

    async def get_bytes(
        self, path: str, params: Sequence[tuple[str, str]] = (), *, endpoint: str
    ) -> bytes:
        """The complete raw body of a GET (cut bodies are detected and retried)."""
        reply = await self._send("GET", self._url(path, params), None, endpoint, parse=False)
        return reply.body

    async def get_json(
        self, path: str, params: Sequence[tuple[str, str]] = (), *, endpoint: str
    ) -> Any:
        reply = await self._send("GET", self._url(path, params), None, endpoint, parse=True)
        return reply.value

    async def post_json(
        self, path: str, body: Any, params: Sequence[tuple[str, str]] = (), *, endpoint: str
    ) -> Any:
        """POST a JSON body; the parsed answer (None when PI answers without a body)."""
        reply = await self._send(
            "POST", self._url(path, params), orjson.dumps(body), endpoint, parse=True
        )
        return reply.value

    async def batch(self, requests: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """POST /batch; the 207 object keyed by request id, in the order of `requests`.

        Sub-responses with 429 or 5xx are sent again, with every request they depend on
        (`ParentIds`, transitively) and every request that depends on them, so that
        `{0}` substitutions see fresh parent results; bounded like any other retry. What
        still fails then, and every other error status, is returned as it came: read each
        id with `batch_content`, which raises PIWebAPIError for a non-2xx status.
        """
        order = list(requests)
        results: dict[str, Any] = {}
        pending = set(order)
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            sub = {rid: requests[rid] for rid in order if rid in pending}
            reply = await self.post_json("batch", sub, endpoint="batch")
            if not isinstance(reply, dict):
                raise PIWebAPIError(
                    "POST", self._url("batch", ()), 207, [], "batch answer is not a JSON object"
                )
            results.update({rid: reply[rid] for rid in sub if rid in reply})
            failed = {rid for rid in sub if sub_status(reply.get(rid)) in RETRYABLE_STATUSES}
            if not failed:
                break
            retry_after = max(
                (v for rid in failed if (v := sub_retry_after(reply[rid])) is not None),
                default=0.0,
            )
            delay = max(backoff_delay(attempt), retry_after)
            if attempt >= self.settings.pi_max_attempts or (
                time.monotonic() - start + delay > self.settings.pi_max_retry_seconds
            ):
                log.warning(
                    "batch: %d of %d requests still failing after %d attempts",
                    len(failed),
                    len(order),
                    attempt,
                )
                break
            for rid in failed:
                self.observer.on_retry("429" if sub_status(reply[rid]) == 429 else "5xx")
            pending = retry_closure(requests, failed)
            log.debug(
                "batch: retrying %d requests (%d failed) in %.2f s",
                len(pending),
                len(failed),
                delay,
            )
            await self.pause(delay)
        return {rid: results[rid] for rid in order if rid in results}

    # ------------------------------------------------------------------ internals

    async def pause(self, seconds: float) -> None:
        """Back off, but give up at once when the worker is asked to stop.

        A SIGTERM during a PI outage must not wait out every retry: the batch in flight
        is abandoned (its recorded plan re-runs on start) and what is buffered is flushed.
        """
        if self._stop is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        if self._stop.is_set():
            raise RetriesAbandoned("the worker is stopping: retries abandoned")

    def _url(self, path: str, params: Sequence[tuple[str, str]]) -> str:
        if path.startswith(("http://", "https://")):
            if not (path == self._base or path.startswith((self._base + "/", self._base + "?"))):
                raise ForeignURL(f"{redact_url(path)} is not under PIDELTA_PI_URL")
            url = path
        else:
            url = f"{self._base}/{quote(path.lstrip('/'), safe=_PATH_SAFE)}"
        if params:
            query = "&".join(
                f"{quote(str(k), safe=_QUERY_SAFE)}={quote(str(v), safe=_QUERY_SAFE)}"
                for k, v in params
            )
            url += ("&" if "?" in url else "?") + query
        return url

    async def _send(
        self, method: str, url: str, body: bytes | None, endpoint: str, *, parse: bool
    ) -> _Reply:
        start = time.monotonic()
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            outcome = await self._attempt(method, url, body, endpoint, parse)
            retry_after: float | None = None
            if isinstance(outcome, _Reply):
                status = outcome.status
                offers = outcome.headers.getall("WWW-Authenticate", [])
                if 200 <= status < 300:
                    problem = self.auth.verify(outcome.authorization, offers)
                    if problem:
                        raise AuthError(method, url, status, [], problem)
                    return outcome
                if 300 <= status < 400:
                    target = redact_url(outcome.headers.get("Location", ""))
                    raise PIWebAPIError(
                        method,
                        url,
                        status,
                        [],
                        f"redirected to {target}; set PIDELTA_PI_URL to the final address",
                    )
                if status == 401:
                    challenge = Challenge(outcome.authorization, offers, refreshed)
                    if await self.auth.refresh(self._open(), challenge) and not refreshed:
                        refreshed = True
                        continue
                if status in (401, 403):
                    raise _auth_error(method, url, outcome, self.settings.pi_auth)
                if status not in RETRYABLE_STATUSES:
                    raise PIWebAPIError(method, url, status, pi_errors(outcome.body))
                reason = "429" if status == 429 else "5xx"
                retry_after = parse_retry_after(outcome.headers.get("Retry-After"))
            else:
                reason = outcome.reason
                if attempt == 1 and outcome.detail.startswith(UNREACHABLE):
                    log.warning(
                        "PI Web API unreachable: %s; retrying (up to %d attempts in %.0f s); "
                        "check PIDELTA_PI_URL",
                        outcome.detail,
                        self.settings.pi_max_attempts,
                        self.settings.pi_max_retry_seconds,
                    )
            delay = max(backoff_delay(attempt), retry_after or 0.0)
            elapsed = time.monotonic() - start
            if (
                attempt >= self.settings.pi_max_attempts
                or elapsed + delay > self.settings.pi_max_retry_seconds
                or (reason == "oversized" and attempt >= OVERSIZED_ATTEMPTS)
            ):
                if isinstance(outcome, _Reply):
                    raise PIWebAPIError(
                        method,
                        url,
                        outcome.status,
                        pi_errors(outcome.body),
                        "retries exhausted",
                        attempt,
                    )
                raise PIConnectionError(method, url, outcome.reason, outcome.detail, attempt)
            self.observer.on_retry(reason)
            log.debug(
                "%s %s: %s, attempt %d, retrying in %.2f s",
                method,
                redact_url(url),
                reason,
                attempt,
                delay,
            )
            await self.pause(delay)

    async def _attempt(
        self, method: str, url: str, body: bytes | None, endpoint: str, parse: bool
    ) -> _Reply | _Failure:
        session = self._open()
        headers = await self.auth.headers(session)
        if method in WRITE_METHODS:
            headers["X-Requested-With"] = "XMLHttpRequest"
        if body is not None:
            headers["Content-Type"] = "application/json"
        async with self._semaphore:
            await self._throttler.acquire()
            started = time.monotonic()
            try:
                outcome = await self._exchange(session, method, url, body, headers, parse)
            except PIConnectionError as exc:
                self.observer.on_request(endpoint, f"error:{exc.reason}", 0.0)
                raise
            seconds = time.monotonic() - started
        if isinstance(outcome, _Reply):
            outcome.authorization = headers.get("Authorization", "")
        label = str(outcome.status) if isinstance(outcome, _Reply) else f"error:{outcome.reason}"
        self.observer.on_request(endpoint, label, seconds)
        return outcome

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str],
        parse: bool,
    ) -> _Reply | _Failure:
        try:
            async with session.request(
                method, URL(url, encoded=True), data=body, headers=headers, allow_redirects=False
            ) as resp:
                data = await _read_bounded(resp, self.settings.response_limit)
                if isinstance(data, _Failure):
                    return data  # leaving the block closes the connection, unread
                reply = _Reply(resp.status, resp.headers, data)
        except aiohttp.ClientSSLError as exc:
            raise PIConnectionError(method, url, "tls", _tls_cause(exc)) from None
        except TimeoutError:
            return _Failure("timeout", f"no answer within {self.settings.pi_request_timeout} s")
        except aiohttp.ClientPayloadError as exc:
            return _Failure("truncated", type(exc).__name__)
        except aiohttp.ClientConnectorError as exc:
            # Names host, port and the OS error (e.g. "Connection refused"), never userinfo.
            return _Failure("reset", f"{type(exc).__name__}: {exc}")
        except (aiohttp.ClientConnectionError, OSError) as exc:
            return _Failure("reset", type(exc).__name__)
        if 200 <= reply.status < 300:
            return _check_body(method, reply, parse)
        return reply

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ClientNotOpen("PIClient used outside `async with`")
        return self._session


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes | _Failure:
    """The body, unless it passes `pi_max_response_bytes` on the wire or inflated.

    aiohttp inflates gzip in bounded pieces as the body is read, so a gzip bomb or a
    never-ending chunked body costs at most the limit before it is refused.
    """
    declared = resp.content_length
    if declared is not None and declared > limit:
        return _Failure("oversized", _over(f"Content-Length {declared}", limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(READ_CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            return _Failure("oversized", _over("body", limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _check_body(method: str, reply: _Reply, parse: bool) -> _Reply | _Failure:
    """Parse (or, for raw reads not framed by length or chunks, validate) a 2xx body."""
    if not reply.body and (reply.status == 204 or method != "GET"):
        return reply
    framed = "Content-Length" in reply.headers or (
        "chunked" in reply.headers.get("Transfer-Encoding", "").lower()
    )
    if not parse and framed:
        return reply
    try:
        value = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        return _Failure("truncated", f"invalid JSON in a {len(reply.body)}-byte body")
    if parse:
        reply.value = value
    return reply


def _tls_cause(exc: aiohttp.ClientSSLError) -> str:
    """Why a TLS handshake failed, in the words an operator needs."""
    ssl_error = getattr(exc, "os_error", exc)
    if getattr(ssl_error, "reason", None) in PLAIN_HTTP_REPLIES:
        return "the server speaks plain HTTP, not TLS: use http:// in PIDELTA_PI_URL"
    return (
        f"{type(exc).__name__}: TLS handshake failed; check PIDELTA_PI_CA_BUNDLE "
        "(or PIDELTA_PI_VERIFY_TLS)"
    )


def _auth_error(method: str, url: str, reply: _Reply, auth: str) -> AuthError:
    offered = ", ".join(
        sorted({h.split(" ", 1)[0] for h in reply.headers.getall("WWW-Authenticate", [])})
    )
    hint = (
        f"credentials refused (PIDELTA_PI_AUTH={auth})"
        if reply.status == 401
        else "access denied to this resource"
    )
    if offered:
        hint += f"; server offers {offered}"
    return AuthError(method, url, reply.status, pi_errors(reply.body), hint)
