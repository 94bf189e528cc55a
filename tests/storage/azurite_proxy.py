"""A loopback proxy in front of Azurite that applies the `startFrom` list parameter.

delta-rs 1.6 (object_store 0.13) lists a table's log from an offset with Azure's
`startFrom` parameter; Azurite 3.35 ignores it and returns the log from version 0, which
delta-rs then rejects ("Invalid table version"). Real Azure Blob honours it, so the proxy
filters list results the way Azure would; every other request passes through unchanged.
"""

from __future__ import annotations

import asyncio
import re
import threading

import aiohttp
from aiohttp import web

_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
_BLOB = re.compile(rb"<Blob>.*?</Blob>", re.S)
_NAME = re.compile(rb"<Name>(.*?)</Name>", re.S)


class StartFromProxy:
    """Forwards to `upstream` (Azurite), dropping listed blobs named before `startFrom`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = 0
        self.filtered = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> StartFromProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        async def _stop() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _forward(self, request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        data = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=data or None,
            allow_redirects=False,
            # Headers the client would add change what a SharedKey signature covers.
            skip_auto_headers=("Content-Type", "User-Agent", "Accept", "Accept-Encoding"),
        ) as upstream:
            body = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            start = request.query.get("startFrom")
            if start and request.query.get("comp") == "list" and upstream.status == 200:
                body = self._filter(body, start.encode())
            if request.method == "HEAD":
                out["Content-Length"] = upstream.headers.get("Content-Length", "0")
                return web.Response(status=upstream.status, headers=out)
            return web.Response(status=upstream.status, headers=out, body=body)

    def _filter(self, body: bytes, start: bytes) -> bytes:
        def keep(match: re.Match[bytes]) -> bytes:
            name = _NAME.search(match.group(0))
            if name is not None and name.group(1) < start:
                self.filtered += 1
                return b""
            return match.group(0)

        return _BLOB.sub(keep, body)
