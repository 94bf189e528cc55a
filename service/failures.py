"""Everyday failures as one line: what went wrong and which setting to check.

The exceptions themselves say where (a redacted URL, a table); an operator reading the log
of a failed `once` also needs the cause in plain words and the variable to look at, without
a 40-line traceback above it (that is for `PIDELTA_LOG_LEVEL=DEBUG`).
"""

from __future__ import annotations

from pathlib import Path

from workers.errors import (
    AuthError,
    PIConnectionError,
    PIError,
    PIWebAPIError,
    SinkError,
)
from workers.settings import Settings

DEBUG_HINT = "PIDELTA_LOG_LEVEL=DEBUG shows the traceback"


def explain(exc: BaseException, settings: Settings) -> str:
    """One line naming the cause and the setting to check."""
    if isinstance(exc, AuthError):
        return f"the PI Web API refused the credentials: {exc}; check {_credentials(settings)}"
    if isinstance(exc, PIConnectionError):
        return _connection(exc)
    if isinstance(exc, PIWebAPIError):
        return f"the PI Web API answered with an error: {exc}; check PIDELTA_PI_URL"
    if isinstance(exc, PIError):
        return f"PI Web API: {exc}"
    if isinstance(exc, SinkError):
        return f"cannot write the tables: {exc}; check PIDELTA_TARGET and its credentials"
    if isinstance(exc, OSError) and exc.filename and _under(str(exc.filename), settings.target):
        return (
            f"cannot write the target: {exc.strerror}: {exc.filename}; check PIDELTA_TARGET "
            "(the worker creates a folder per table there)"
        )
    return f"{type(exc).__name__}: {exc} ({DEBUG_HINT})"


def _connection(exc: PIConnectionError) -> str:
    if exc.reason == "tls":
        return f"TLS with the PI Web API failed: {exc.detail} ({exc.url})"
    if exc.reason == "timeout":
        return f"the PI Web API did not answer in time: {exc}; check PIDELTA_PI_REQUEST_TIMEOUT"
    if exc.detail.startswith("ClientConnectorError"):
        return f"the PI Web API is unreachable: {exc}; check PIDELTA_PI_URL"
    return f"no usable answer from the PI Web API: {exc}; check PIDELTA_PI_URL"


def _credentials(settings: Settings) -> str:
    needed = {
        "none": "PIDELTA_PI_AUTH (the server asks for credentials)",
        "basic": "PIDELTA_PI_USERNAME and PIDELTA_PI_PASSWORD",
        "bearer": "PIDELTA_PI_TOKEN",
        "oidc": "PIDELTA_PI_CLIENT_ID, PIDELTA_PI_CLIENT_SECRET and PIDELTA_PI_TOKEN_URL",
    }
    return needed.get(settings.pi_auth, f"the credentials of PIDELTA_PI_AUTH={settings.pi_auth}")


def _under(path: str, target: str) -> bool:
    if "://" in target and not target.startswith("file://"):
        return False
    root = Path(target.removeprefix("file://")).resolve()
    return Path(path).resolve().is_relative_to(root) or root.is_relative_to(Path(path).resolve())
