"""A small Unity Catalog REST server for the tests, and an S3 gate that makes its vended
credentials expire.

No Unity Catalog server installs here, so this implements the subset pidelta uses
(`GET /tables/{full_name}`, `POST /tables`, `POST /temporary-table-credentials`, and the
Databricks OAuth token endpoint), and validates every JSON body it returns against the
component schemas of `../shared/reference/unitycatalog-api.yaml`.

Expiry: moto accepts any credentials, so the gate sits between pidelta and moto. Every
S3 request is signed with AWS SigV4; the gate reads the access key id from the
`Authorization` header (or `X-Amz-Credential`), and a key this server vended is refused
with `400 ExpiredToken` once its `expiration_time` has passed (and `403
InvalidAccessKeyId` if it was never vended). Everything else is forwarded to moto as is.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import yaml
from aiohttp import web

from tests.spec import REFERENCE

SPEC = REFERENCE / "unitycatalog-api.yaml"
API = "/api/2.1/unity-catalog"
VENDED_PREFIX = "ASIAUCTEST"
_KEY = re.compile(r"Credential=([A-Z0-9]+)/")
_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


class SpecValidator:
    """Checks bodies against `#/components/schemas/<name>` of the Unity Catalog spec."""

    def __init__(self, path: Path = SPEC) -> None:
        self.doc = yaml.safe_load(path.read_text())

    def check(self, name: str, body: Any) -> list[str]:
        schema = {"$ref": f"#/components/schemas/{name}", "components": self.doc["components"]}
        validator = jsonschema.Draft7Validator(schema)
        return [f"{name}: {e.message}" for e in validator.iter_errors(body)]


@dataclass
class Gate:
    """The vended keys and their expiry; counts what it refused. Its clock is the UC
    server's too: a test whose workers run on a `SimClock` sets it to that clock."""

    expiry: dict[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.time  # the workers' clock (a test's SimClock)
    refused_expired: int = 0
    refused_unknown: int = 0
    forwarded: int = 0

    def verdict(self, key: str | None) -> tuple[int, str] | None:
        if key is None or not key.startswith(VENDED_PREFIX):
            return None
        expires = self.expiry.get(key)
        if expires is None:
            self.refused_unknown += 1
            return 403, "InvalidAccessKeyId"
        if self.clock() >= expires:
            self.refused_expired += 1
            return 400, "ExpiredToken"
        return None

    def revoke_all(self) -> None:
        """Make every vended key expire now (a credential that dies mid-flight)."""
        now = self.clock()
        for key in self.expiry:
            self.expiry[key] = min(self.expiry[key], now)


@dataclass
class UCState:
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)
    vended: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    tokens: dict[str, float] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)


class UCServer:
    """The UC REST server and the S3 gate, on loopback, in a background thread."""

    def __init__(
        self,
        moto_url: str,
        *,
        token: str = "dapi-test-token",
        client_id: str = "pidelta-sp",
        client_secret: str = "sp-secret",
        credential_seconds: float = 60.0,
        oauth_seconds: float = 3600.0,
    ) -> None:
        self.moto_url = moto_url.rstrip("/")
        self.token = token
        self.client_id = client_id
        self.client_secret = client_secret
        self.credential_seconds = credential_seconds
        self.oauth_seconds = oauth_seconds
        self.state = UCState()
        self.gate = Gate()
        self.validator = SpecValidator()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runners: list[web.AppRunner] = []
        self.port = 0
        self.gate_port = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> UCServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        uc = web.Application()
        uc.router.add_get(API + "/tables/{full_name}", self._get_table)
        uc.router.add_post(API + "/tables", self._create_table)
        uc.router.add_post(API + "/temporary-table-credentials", self._credentials)
        uc.router.add_post("/oidc/v1/token", self._oauth)
        uc.router.add_post("/_test/revoke", self._revoke)
        gate = web.Application(client_max_size=1024**3)
        gate.router.add_route("*", "/{path:.*}", self._forward)
        for app, attr in ((uc, "port"), (gate, "gate_port")):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._runners.append(runner)
            setattr(self, attr, site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    def stop(self) -> None:
        async def _stop() -> None:
            for runner in self._runners:
                await runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.gate_port}"

    # ------------------------------------------------------------------ test set-up

    def add_table(self, full_name: str, **info: Any) -> dict[str, Any]:
        """Register a table as an administrator would (MANAGED, odd features, ...)."""
        catalog, schema, name = full_name.split(".")
        table = {
            "name": name,
            "catalog_name": catalog,
            "schema_name": schema,
            "table_type": "EXTERNAL",
            "data_source_format": "DELTA",
            "columns": [],
            "properties": {},
            "table_id": str(uuid.uuid4()),
            "created_at": int(self.gate.clock() * 1000),
            "owner": "admin",
            **info,
        }
        self.state.tables[full_name] = table
        return table

    # ------------------------------------------------------------------ handlers

    def _reply(self, schema: str, body: dict[str, Any], status: int = 200) -> web.Response:
        self.state.invalid.extend(self.validator.check(schema, body))
        return web.json_response(body, status=status)

    def _error(self, status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error_code": code, "message": message}, status=status)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        if token == self.token:
            return True
        expires = self.state.tokens.get(token)
        return expires is not None and self.gate.clock() < expires

    async def _get_table(self, request: web.Request) -> web.Response:
        self.state.requests.append(("GET", request.path))
        if not self._authorized(request):
            return self._error(401, "UNAUTHENTICATED", "invalid token")
        table = self.state.tables.get(request.match_info["full_name"])
        if table is None:
            name = request.match_info["full_name"]
            return self._error(404, "TABLE_DOES_NOT_EXIST", f"Table '{name}' does not exist.")
        return self._reply("TableInfo", table)

    async def _create_table(self, request: web.Request) -> web.Response:
        self.state.requests.append(("POST", request.path))
        if not self._authorized(request):
            return self._error(401, "UNAUTHENTICATED", "invalid token")
        body = await request.json()
        problems = self.validator.check("CreateTable", body)
        if problems:
            self.state.invalid.extend(f"request {p}" for p in problems)
            return self._error(400, "INVALID_PARAMETER_VALUE", "; ".join(problems))
        if body["table_type"] != "EXTERNAL":
            return self._error(400, "INVALID_PARAMETER_VALUE", "only EXTERNAL tables")
        full = f"{body['catalog_name']}.{body['schema_name']}.{body['name']}"
        if full in self.state.tables:
            return self._error(409, "TABLE_ALREADY_EXISTS", f"Table '{full}' already exists")
        table = self.add_table(full, **{k: v for k, v in body.items() if k != "view_dependencies"})
        table.setdefault("properties", {})
        return self._reply("TableInfo", table)

    async def _credentials(self, request: web.Request) -> web.Response:
        self.state.requests.append(("POST", request.path))
        if not self._authorized(request):
            return self._error(401, "UNAUTHENTICATED", "invalid token")
        body = await request.json()
        self.state.invalid.extend(
            f"request {p}" for p in self.validator.check("GenerateTemporaryTableCredential", body)
        )
        table = next(
            (t for t in self.state.tables.values() if t["table_id"] == body.get("table_id")), None
        )
        if table is None:
            return self._error(404, "TABLE_DOES_NOT_EXIST", "no table with that id")
        key = VENDED_PREFIX + secrets.token_hex(5).upper()
        expires = self.gate.clock() + self.credential_seconds
        self.gate.expiry[key] = expires
        self.state.vended += 1
        secret, session = secrets.token_hex(20), secrets.token_hex(32)
        self.state.secrets.extend((secret, session))
        return self._reply(
            "TemporaryCredentials",
            {
                "aws_temp_credentials": {
                    "access_key_id": key,
                    "secret_access_key": secret,
                    "session_token": session,
                },
                "expiration_time": int(expires * 1000),
                "url": table["storage_location"],
            },
        )

    async def _revoke(self, request: web.Request) -> web.Response:
        """Test control: every vended key expires now (for tests running pidelta code in a
        child process, which cannot reach this object)."""
        self.gate.revoke_all()
        return web.json_response({})

    async def _oauth(self, request: web.Request) -> web.Response:
        form = await request.post()
        auth = aiohttp.BasicAuth.decode(request.headers.get("Authorization", ""))
        if (
            form.get("grant_type") != "client_credentials"
            or auth.login != self.client_id
            or auth.password != self.client_secret
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = "oauth-" + secrets.token_hex(16)
        self.state.tokens[token] = self.gate.clock() + self.oauth_seconds
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.oauth_seconds}
        )

    # ------------------------------------------------------------------ S3 gate

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        found = _KEY.search(request.headers.get("Authorization", "")) or _KEY.search(
            "Credential=" + request.query.get("X-Amz-Credential", "")
        )
        verdict = self.gate.verdict(found.group(1) if found else None)
        if verdict is not None:
            status, code = verdict
            body = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>The provided token has expired.</Message></Error>"
            )
            return web.Response(status=status, text=body, content_type="application/xml")
        self.gate.forwarded += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        data = await request.read()
        async with self._session.request(
            request.method,
            self.moto_url + request.rel_url.raw_path_qs,
            headers=headers,
            data=data if data else None,
            allow_redirects=False,
            # Headers the client would add change what a SharedKey signature covers.
            skip_auto_headers=("Content-Type", "User-Agent", "Accept", "Accept-Encoding"),
        ) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            if request.method == "HEAD":
                out["Content-Length"] = upstream.headers.get("Content-Length", "0")
                return web.Response(status=upstream.status, headers=out)
            return web.Response(status=upstream.status, headers=out, body=payload)
