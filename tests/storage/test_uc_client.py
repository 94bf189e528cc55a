"""The Unity Catalog client never carries a credential across a redirect, and a plain
http:// workspace is refused unless a test server allows it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from workers.errors import ConfigError
from workers.lake.uc_client import TokenSource, UnityCatalogClient, UnityCatalogError
from workers.settings import Settings

SECRET = "m2m-secret-never-leaves-7c1d"
TOKEN = "dapi-workspace-token-0b9e"


@contextmanager
def http_server(answer: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirecting_workspace_gets_no_credential_across() -> None:
    received: list[tuple[str, str | None]] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            received.append((self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            return None

    with http_server(Elsewhere) as other:

        class Redirecting(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(302)
                self.send_header("Location", f"{other}{self.path}")
                self.end_headers()

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                return None

        with http_server(Redirecting) as host:
            client = UnityCatalogClient(host, TokenSource(host, token=TOKEN))
            with pytest.raises(UnityCatalogError) as info:
                client.get_table("main.pi.pi_timeseries")
            m2m = TokenSource(host, client_id="pidelta", client_secret=SECRET)
            with pytest.raises(ConfigError) as refused:
                m2m.token()
    assert received == []
    assert info.value.status == 302
    assert str(info.value) == (
        "Unity Catalog GET /api/2.1/unity-catalog/tables/main.pi.pi_timeseries failed with "
        "HTTP 302: redirected, not followed (credentials stay with DATABRICKS_HOST)"
    )
    assert str(refused.value) == (
        f"OAuth token request to {host}/oidc/v1/token refused with HTTP 302: redirected, "
        "not followed (credentials stay with DATABRICKS_HOST); set it to the final address"
    )


def test_a_plain_http_workspace_is_refused_unless_allowed() -> None:
    uc = {"target": "uc://main.pi", "databricks_token": TOKEN, "_env_file": None}
    with pytest.raises(ValueError, match="DATABRICKS_HOST is plain http://"):
        Settings(databricks_host="http://workspace.example", **uc)
    allowed = Settings(databricks_host="http://127.0.0.1:1", allow_http_credentials=True, **uc)
    assert allowed.databricks_host == "http://127.0.0.1:1"
