"""The one error hierarchy: every error pidelta raises on purpose derives from `PideltaError`.

The PI client's errors say what failed, where (URL without credentials), and why.

Every message is one line and is built only from the method, a redacted URL, the HTTP
status and the PI error texts, so no credential or Authorization header can leak through
`str()`, `repr()` or a log line that formats the exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

MAX_QUERY_CHARS = 300
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class PideltaError(Exception):
    """Base of every error pidelta raises on purpose."""


class ConfigError(PideltaError):
    """Bad configuration or arguments: reported as one line, exit code 2."""


def redact_url(url: str, max_query: int = MAX_QUERY_CHARS) -> str:
    """The URL without user:password@, with a very long query cut (WebID lists run to 16 kB)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    query = parts.query
    if len(query) > max_query:
        query = f"{query[:max_query]}...(+{len(query) - max_query} chars)"
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class PIError(PideltaError):
    """Base of every failure to talk to the PI Web API."""


class PIWebAPIError(PIError):
    """The PI Web API answered with an error status (after retries when it was retryable)."""

    def __init__(
        self,
        method: str,
        url: str,
        status: int,
        errors: Sequence[str] = (),
        reason: str = "",
        attempts: int = 1,
    ) -> None:
        self.method = method.upper()
        self.url = redact_url(url)
        self.status = status
        self.errors = [str(e) for e in errors]
        self.reason = reason
        self.attempts = attempts
        super().__init__(self._line())

    @property
    def retryable(self) -> bool:
        """True for statuses worth trying again later (throttling, server trouble)."""
        return self.status in RETRYABLE_STATUSES

    def _line(self) -> str:
        text = f"{self.method} {self.url} -> HTTP {self.status}"
        if self.reason:
            text += f" {self.reason}"
        if self.errors:
            text += ": " + "; ".join(" ".join(e.split()) for e in self.errors)
        if self.attempts > 1:
            text += f" (after {self.attempts} attempts)"
        return text

    def __reduce__(self) -> tuple[object, ...]:
        return (
            type(self),
            (self.method, self.url, self.status, self.errors, self.reason, self.attempts),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._line()!r})"


class AuthError(PIWebAPIError):
    """Credentials refused (401/403) or no token could be obtained; never retried blindly."""


class RetriesAbandoned(PIError):
    """The worker is stopping: a request gave up its retries; its batch re-runs on start."""


class UpdatesUnavailable(PIError):
    """The PI Web API does not serve stream updates (404): the recorded fallback follows."""


class DiscoveryLimitError(PIError):
    """Discovery passed its bound on points or time: the server is broken or hostile, or the
    bound is too low for this plant. Failing beats a silently partial tag list."""


class PIConnectionError(PIError):
    """No usable answer: connection failures, timeouts or cut bodies, retries exhausted.

    `reason` is one of "timeout", "reset", "truncated", "tls", "connect".
    """

    def __init__(
        self, method: str, url: str, reason: str, detail: str = "", attempts: int = 1
    ) -> None:
        self.method = method.upper()
        self.url = redact_url(url)
        self.reason = reason
        self.detail = " ".join(detail.split())
        self.attempts = attempts
        super().__init__(self._line())

    def _line(self) -> str:
        text = f"{self.method} {self.url} failed: {self.reason}"
        if self.detail:
            text += f" ({self.detail})"
        if self.attempts > 1:
            text += f" after {self.attempts} attempts"
        return text

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.method, self.url, self.reason, self.detail, self.attempts))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._line()!r})"


class SinkError(PideltaError):
    """A Delta table could not be created, opened or written (URI and cause, no secrets)."""

    def __init__(self, message: str, *, table: str, uri: str) -> None:
        super().__init__(f"{message} (table {table} at {uri})")
        self.table = table
        self.uri = uri


class CommitAbandoned(PideltaError):
    """The worker is stopping while a commit kept meeting concurrent ones: its batch, begun
    and not finished, re-runs on start (docs/DESIGN.md "Following stream updates")."""


class StaleGeneration(PideltaError):
    """Another shard count owns the tags now: this worker must stop taking batches."""


class MalformedAnswer(PIError):
    """The PI Web API answered with a value pidelta cannot read (a timestamp that is none)."""


class ForeignURL(PideltaError, ValueError):
    """A URL (e.g. a link the server returned) outside PIDELTA_PI_URL: never requested, so
    the credentials go to no other host. Not a PIError, which the loop retries: asking again
    cannot help. A ValueError too, as callers have caught it so."""


class ClientNotOpen(PideltaError, RuntimeError):
    """A PI client used outside `async with`: a programming error, never bad input."""


class DecodeError(PideltaError):
    """The body is not JSON or not shaped like a PI answer (e.g. truncated): retry the call."""

    def __init__(self, message: str, *, source: str, size: int | None = None) -> None:
        where = f"{source}, {size} bytes" if size is not None else source
        super().__init__(f"cannot decode {where}: {message}")
        self.source = source
        self.size = size


class InconsistentAnswer(DecodeError):
    """An answer that contradicts its request (values outside the asked range, more items
    than maxCount): the call is sent again once, then what is inside is kept."""


class NeedsRawValues(PideltaError):
    """Internal to the read path: a body read into columns or structs holds a value to
    quarantine, whose raw text only a later reader keeps; that reader decodes it again."""


class UnpageableStream(PideltaError):
    """Internal to the read path: a stream holds more values at one timestamp than one call
    may return, so paging cannot get past it; the stream is quarantined, never raised on."""

    def __init__(self, webid: str, at_us: int, items: int) -> None:
        super().__init__(f"stream {webid} has more than {items} values at one timestamp")
        self.webid = webid
        self.at_us = at_us
        self.items = items


class KerberosError(PIError):
    """Kerberos failed after the worker had authenticated (a KDC gone, a ticket that could
    not be renewed): asked again like any PI outage. Before the first success the same
    causes are configuration and raise ConfigError instead."""
