"""Unity Catalog REST: a bearer token (PAT or OAuth M2M) and the few calls pidelta makes.

A small synchronous client (stdlib `urllib`): `TableStore` is synchronous and runs in worker
threads, and the catalog is asked once per table at start-up and once per credential
renewal, so an event loop would buy nothing. Tokens are never logged and never appear in an
error message.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from workers.errors import ConfigError, PideltaError
from workers.settings import Settings

log = logging.getLogger("pidelta.unity_catalog")

API = "/api/2.1/unity-catalog"


class UnityCatalogError(PideltaError):
    """A Unity Catalog call failed: method, path, status and the server's error text."""

    def __init__(self, method: str, path: str, status: int | None, detail: str) -> None:
        where = f"{method} {API}{path}"
        super().__init__(
            f"Unity Catalog {where} failed"
            + (f" with HTTP {status}" if status is not None else "")
            + f": {detail}"
        )
        self.status = status
        self._args = (method, path, status, detail)

    def __reduce__(self) -> tuple[type[UnityCatalogError], tuple[str, str, int | None, str]]:
        return (type(self), self._args)


# ---------------------------------------------------------------------------- auth


class TokenSource:
    """A bearer token for the workspace: a PAT, or OAuth M2M refreshed before it expires."""

    def __init__(
        self,
        host: str,
        *,
        token: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self._static = token
        self._client_id = client_id
        self._client_secret = client_secret
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._issued_at = 0.0

    def token(self) -> str:
        if self._static:
            return self._static
        with self._lock:
            lead = min(60.0, (self._expires_at - self._issued_at) / 3)
            if self._token is None or self._clock() >= self._expires_at - lead:
                self._fetch()
            assert self._token is not None
            return self._token

    def _fetch(self) -> None:
        """Client-credentials grant at `{host}/oidc/v1/token` (Databricks OAuth M2M)."""
        basic = base64.b64encode(f"{self._client_id}:{self._client_secret}".encode()).decode()
        body = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "all-apis"})
        request = urllib.request.Request(
            f"{self.host}/oidc/v1/token",
            data=body.encode(),
            method="POST",
            headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        try:
            with _OPENER.open(request, timeout=self._timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            hint = (
                f"{REDIRECTED}; set it to the final address"
                if 300 <= exc.code < 400
                else "check DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET"
            )
            raise ConfigError(
                f"OAuth token request to {self.host}/oidc/v1/token refused with HTTP "
                f"{exc.code}: {hint}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise UnityCatalogError("POST", "(oidc token)", None, _reason(exc)) from None
        now = self._clock()
        self._token = str(payload["access_token"])
        self._issued_at = now
        self._expires_at = now + float(payload.get("expires_in", 3600))
        log.info("OAuth M2M token obtained, valid %s s", payload.get("expires_in"))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Every request here carries a credential (a bearer token, or the M2M client secret):
    a 3xx is not followed to whatever host it names but raised as the HTTPError it is."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)
REDIRECTED = "redirected, not followed (credentials stay with DATABRICKS_HOST)"


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    return f"{type(exc).__name__}: {reason}"


# ---------------------------------------------------------------------------- client


class UnityCatalogClient:
    """The subset of the Unity Catalog REST API pidelta uses."""

    def __init__(self, host: str, tokens: TokenSource, timeout: float = 30.0) -> None:
        self.base = host.rstrip("/") + API
        self.tokens = tokens
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> UnityCatalogClient:
        host = (settings.databricks_host or "").rstrip("/")
        if "://" not in host:
            host = f"https://{host}"
        secret = settings.databricks_client_secret
        tokens = TokenSource(
            host,
            token=settings.databricks_token.get_secret_value()
            if settings.databricks_token
            else None,
            client_id=settings.databricks_client_id,
            client_secret=secret.get_secret_value() if secret else None,
            timeout=settings.uc_request_timeout,
        )
        return cls(host, tokens, settings.uc_request_timeout)

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Authorization": f"Bearer {self.tokens.token()}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = REDIRECTED if 300 <= exc.code < 400 else _error_text(exc)
            raise UnityCatalogError(method, path, exc.code, detail) from None
        except (urllib.error.URLError, OSError) as exc:
            raise UnityCatalogError(method, path, None, _reason(exc)) from None
        return json.loads(raw) if raw else {}

    def get_table(self, full_name: str) -> dict[str, Any] | None:
        """The table's info, or None when the catalog does not know it."""
        try:
            return self._call("GET", f"/tables/{urllib.parse.quote(full_name)}")
        except UnityCatalogError as exc:
            if exc.status == 404:
                return None
            raise

    def create_external_table(
        self, catalog: str, schema: str, name: str, columns: list[dict[str, Any]], location: str
    ) -> dict[str, Any]:
        return self._call(
            "POST",
            "/tables",
            {
                "name": name,
                "catalog_name": catalog,
                "schema_name": schema,
                "table_type": "EXTERNAL",
                "data_source_format": "DELTA",
                "columns": columns,
                "storage_location": location,
                "comment": "written by pidelta",
            },
        )

    def temporary_table_credentials(self, table_id: str) -> dict[str, Any]:
        return self._call(
            "POST",
            "/temporary-table-credentials",
            {"table_id": table_id, "operation": "READ_WRITE"},
        )


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(exc.read() or b"{}")
    except ValueError:
        return exc.reason or "no detail"
    if isinstance(payload, dict):
        code = payload.get("error_code", "")
        message = payload.get("message", "")
        return f"{code} {message}".strip() or str(exc.reason)
    return str(exc.reason)
