"""A misbehaving PI Web API: an aiohttp proxy in front of a real mock-pi, switchable per test.

Every request is forwarded to mock-pi unchanged, unless a behaviour is set for its endpoint
(the path after `/piwebapi/`, e.g. `streamsets/recorded`, `batch`): then the behaviour
answers, usually from the forwarded answer (a body rewritten, a gzip bomb instead, ...).
The proxy runs on its own event loop in a thread of the test process, so a `pidelta`
subprocess can talk to it while the test switches behaviours and reads what came in.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from tests.conftest import MockServer, free_port


@dataclass(frozen=True, slots=True)
class Upstream:
    """mock-pi's answer to the request, read whole."""

    status: int
    content_type: str
    body: bytes


Forward = Callable[[], Awaitable[Upstream]]
Behaviour = Callable[[web.Request, Forward], Awaitable[web.StreamResponse]]


class HostileProxy:
    """`with HostileProxy(mock) as proxy:` then point the worker at `proxy.url`."""

    def __init__(self, mock: MockServer) -> None:
        self.upstream = mock.url
        self.port = free_port()
        self.behaviours: dict[str, Behaviour] = {}
        self.seen: list[tuple[str, str]] = []  # (method, path with query) as they came in
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/piwebapi"

    def misbehave(self, endpoint: str, behaviour: Behaviour | None) -> None:
        """Answer `endpoint` with `behaviour` from now on (None: forward it again)."""
        if behaviour is None:
            self.behaviours.pop(endpoint, None)
        else:
            self.behaviours[endpoint] = behaviour

    def __enter__(self) -> HostileProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession()  # bodies inflated: behaviours see JSON
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/piwebapi/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs))
        endpoint = request.match_info["tail"]
        body = await request.read()

        async def forward() -> Upstream:
            assert self._session is not None
            headers = {
                k: v
                for k, v in request.headers.items()
                if k.lower() in {"authorization", "content-type", "x-requested-with", "accept"}
            }
            async with self._session.request(
                request.method,
                f"{self.upstream}/{endpoint}",
                params=request.query,
                data=body or None,
                headers=headers,
                allow_redirects=False,
            ) as resp:
                return Upstream(resp.status, resp.content_type, await resp.read())

        behaviour = self.behaviours.get(endpoint)
        if behaviour is not None:
            return await behaviour(request, forward)
        answer = await forward()
        return web.Response(
            status=answer.status, body=answer.body, content_type=answer.content_type
        )


# ----------------------------------------------------------------------------- behaviours


def gzip_bomb(inflated: int) -> Behaviour:
    """A 200 whose gzip body inflates to `inflated` bytes of spaces (about 1/1000 on the
    wire), chunked so that no Content-Length gives it away; built once."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    piece = b" " * (1 << 24)
    parts = [packer.compress(piece) for _ in range(inflated // len(piece))]
    bomb = b"".join([*parts, packer.compress(b" " * (inflated % len(piece))), packer.flush()])

    async def answer(request: web.Request, forward: Forward) -> web.StreamResponse:
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        response = web.StreamResponse(headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            await response.write(bomb)
        return response

    return answer


def endless(piece: bytes = b"[" * 65536, limit: int = 8 << 30) -> Behaviour:
    """A 200 with a chunked body that does not end (until `limit` bytes or a hang-up)."""

    async def answer(request: web.Request, forward: Forward) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(limit // len(piece)):
                await response.write(piece)
        return response

    return answer


def rewrite(change: Callable[[bytes], bytes]) -> Behaviour:
    """mock-pi's answer with its body changed by `change` (status and type kept)."""

    async def answer(request: web.Request, forward: Forward) -> web.StreamResponse:
        upstream = await forward()
        return web.Response(
            status=upstream.status, body=change(upstream.body), content_type=upstream.content_type
        )

    return answer


def unreadable_for(webid: str, body: bytes = b"<html>Service Unavailable</html>") -> Behaviour:
    """An HTML page with status 200 to every read that asks for `webid`; the others pass."""

    async def answer(request: web.Request, forward: Forward) -> web.StreamResponse:
        if webid in request.query.getall("webId", []):
            return web.Response(status=200, body=body, content_type="text/html")
        upstream = await forward()
        return web.Response(
            status=upstream.status, body=upstream.body, content_type=upstream.content_type
        )

    return answer


def fixed(status: int, body: bytes, content_type: str = "application/json") -> Behaviour:
    """The same answer to every request, whatever mock-pi would say."""

    async def answer(request: web.Request, forward: Forward) -> web.StreamResponse:
        return web.Response(status=status, body=body, content_type=content_type)

    return answer
