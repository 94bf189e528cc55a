"""`POST /piwebapi/batch`: many requests in one, executed inside this server.

The body is an object keyed by request id; each request has `Method`, `Resource` (an
absolute URL, a path relative to /piwebapi, or a JsonPath into a parent's response), and
optionally `Content` (a string of JSON), `Headers`, `Parameters` (JsonPaths whose tokens
replace `{0}`, `{1}`... in the resource), `ParentIds` and `RequestTemplate`. The answer is
207 with `{id: {Status, Headers, Content}}`.

Sub-requests go through this application's router to the same handlers as direct calls, so
every endpoint works inside a batch; the middlewares (auth, faults, limits) act once, on the
outer request. Independent requests run concurrently; a request runs after its parents, and
one whose parent failed (status outside 2xx) is not run and answers 409. A structurally bad
batch (bad JSON, wrong types, unknown parents, cycles, bad JsonPaths) is refused whole with
400, as PI refuses a body it cannot bind.

A `RequestTemplate` makes one sub-request per token its parameters select (a parameter with
one token is reused for all); the outer response's Content is `{"Items": [{Status, Headers,
Content}, ...]}` with Status 207. In a plain `Resource`, a parameter selecting several tokens
may only stand as a query value (`webId={0}`): the pair is repeated once per token, which
is how a streamset call takes many WebIDs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import StreamReader, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from mock_pi.errors import error_response
from mock_pi.faults import INTERNAL_ERROR
from mock_pi.middleware import http_exception_response
from mock_pi.state import MockState

log = logging.getLogger("mock_pi")

BATCH_PATH = "/piwebapi/batch"
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
CONCURRENCY = 16
# Outer request headers a sub-request must not inherit: they describe the outer body or
# would compress the sub-response.
DROPPED_HEADERS = frozenset(
    {"content-length", "content-type", "transfer-encoding", "expect", "accept-encoding"}
)
# Response headers that describe the outer HTTP message, not the sub-response.
HOP_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "date", "server", "content-encoding"}
)

BODY_INVALID = "The batch request must be a JSON object of requests keyed by request ID."
PLACEHOLDER = re.compile(r"\{(\d+)\}")


class BatchError(Exception):
    """The whole batch is refused with HTTP 400."""


class SubRequestError(Exception):
    """One request of the batch fails with its own status; the others go on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ----------------------------------------------------------------------------- JsonPath


_STEP = re.compile(r"""\.([^.\[\]]+)|\[(\*|-?\d+)\]|\[\s*(['"])(.*?)\3\s*\]""")


@dataclass(frozen=True, slots=True)
class JsonPath:
    """The JsonPath subset PI batches use: `$.id.Content.Items[*].WebId`, `[0]`, `['k']`."""

    text: str
    root: str
    steps: tuple[str | int | None, ...]  # key, index, or None for a wildcard

    @classmethod
    def parse(cls, text: str) -> JsonPath:
        if not text.startswith("$"):
            raise ValueError(text)
        steps: list[str | int | None] = []
        pos = 1
        while pos < len(text):
            m = _STEP.match(text, pos)
            if m is None:
                raise ValueError(text)
            key, index, _, quoted = m.groups()
            if key is not None:
                steps.append(None if key == "*" else key)
            elif index is not None:
                steps.append(None if index == "*" else int(index))
            else:
                steps.append(quoted)
            pos = m.end()
        if not steps or not isinstance(steps[0], str):
            raise ValueError(text)
        return cls(text, steps[0], tuple(steps[1:]))

    def select(self, responses: dict[str, Any]) -> list[Any]:
        """The tokens selected in `{request id: {Status, Headers, Content}}`."""
        nodes = [responses[self.root]] if self.root in responses else []
        for step in self.steps:
            found: list[Any] = []
            for node in nodes:
                if step is None:
                    if isinstance(node, list):
                        found.extend(node)
                    elif isinstance(node, dict):
                        found.extend(node.values())
                elif isinstance(step, int):
                    if isinstance(node, list) and -len(node) <= step < len(node):
                        found.append(node[step])
                elif isinstance(node, dict) and step in node:
                    found.append(node[step])
            nodes = found
        return nodes


def token_text(token: Any) -> str:
    if isinstance(token, str):
        return token
    if token is None:
        return ""
    return orjson.dumps(token).decode()


# ------------------------------------------------------------------------ batch parsing


@dataclass
class BatchRequest:
    id: str
    method: str
    resource: str | None
    template: str | None
    content: str | None
    headers: dict[str, str]
    parameters: list[JsonPath]
    parent_ids: list[str]
    resource_path: JsonPath | None


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _parse_one(rid: str, raw: Any) -> BatchRequest:
    if not isinstance(raw, dict):
        raise BatchError(f"Request '{rid}' must be a JSON object.")
    method = raw.get("Method")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise BatchError(f"Request '{rid}' needs a Method: GET, POST, PUT, PATCH or DELETE.")
    resource = raw.get("Resource")
    template_raw = raw.get("RequestTemplate")
    template = None
    if template_raw is not None:
        if not isinstance(template_raw, dict) or not isinstance(template_raw.get("Resource"), str):
            raise BatchError(f"Request '{rid}': RequestTemplate must have a Resource string.")
        template = template_raw["Resource"]
    if (resource is None) == (template is None):
        raise BatchError(f"Request '{rid}' needs either a Resource or a RequestTemplate.")
    if resource is not None and not isinstance(resource, str):
        raise BatchError(f"Request '{rid}': Resource must be a string.")
    content = raw.get("Content")
    if content is not None and not isinstance(content, str):
        raise BatchError(f"Request '{rid}': Content must be a string.")
    headers = raw.get("Headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise BatchError(f"Request '{rid}': Headers must be an object of strings.")
    parameters = raw.get("Parameters") or []
    parent_ids = raw.get("ParentIds") or []
    if not _strings(parameters):
        raise BatchError(f"Request '{rid}': Parameters must be a list of strings.")
    if not _strings(parent_ids):
        raise BatchError(f"Request '{rid}': ParentIds must be a list of strings.")
    paths = []
    for text in [*parameters, *([resource] if resource and resource.startswith("$") else [])]:
        try:
            path = JsonPath.parse(text)
        except ValueError:
            raise BatchError(f"Request '{rid}': '{text}' is not a supported JsonPath.") from None
        if path.root not in parent_ids:
            raise BatchError(
                f"Request '{rid}': '{text}' refers to '{path.root}', which is not in its ParentIds."
            )
        paths.append(path)
    if template is not None and not parameters:
        raise BatchError(f"Request '{rid}': a RequestTemplate needs Parameters.")
    resource_path = paths.pop() if resource and resource.startswith("$") else None
    return BatchRequest(
        rid,
        method.upper(),
        resource,
        template,
        content,
        dict(headers),
        paths,
        list(parent_ids),
        resource_path,
    )


def parse_batch(body: bytes) -> tuple[list[str], list[BatchRequest]]:
    """Validate a batch body: the ids in body order, and the requests parents-first."""
    try:
        raw = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        raise BatchError(BODY_INVALID) from None
    if not isinstance(raw, dict) or not raw:
        raise BatchError(BODY_INVALID)
    requests = {str(rid): _parse_one(str(rid), value) for rid, value in raw.items()}
    for req in requests.values():
        for parent in req.parent_ids:
            if parent not in requests:
                raise BatchError(f"Request '{req.id}' names an unknown parent '{parent}'.")
    ordered: list[BatchRequest] = []
    done: set[str] = set()
    pending = dict(requests)
    while pending:
        ready = [r for r in pending.values() if all(p in done for p in r.parent_ids)]
        if not ready:
            ids = ", ".join(sorted(pending))
            raise BatchError(f"The ParentIds of requests {ids} form a cycle.")
        for req in ready:
            ordered.append(req)
            done.add(req.id)
            del pending[req.id]
    return list(requests), ordered


# --------------------------------------------------------------------- internal dispatch


class CaptureWriter(AbstractStreamWriter):
    """Collects what a handler writes, instead of sending it on the outer connection."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self.chunks.append(bytes(chunk))
        self.output_size += len(chunk)

    async def write_eof(self, chunk: bytes = b"") -> None:
        if chunk:
            await self.write(chunk)

    async def drain(self) -> None:
        return None

    def enable_compression(self, encoding: str = "deflate", strategy: int | None = None) -> None:
        return None

    def enable_chunking(self) -> None:
        return None

    async def write_headers(self, status_line: str, headers: CIMultiDict[str]) -> None:
        return None

    def send_headers(self) -> None:
        return None

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def local_target(resource: str) -> str:
    """Path and query on this server: a URL's authority is ignored, as PI ignores it."""
    url = URL(resource)
    if url.absolute:
        return str(url.relative())
    if resource.startswith("/"):
        return resource
    return "/piwebapi/" + resource


def outcome(status: int, headers: dict[str, str], content: Any) -> dict[str, Any]:
    return {"Status": status, "Headers": headers, "Content": content}


def error_outcome(status: int, message: str) -> dict[str, Any]:
    return outcome(
        status, {"Content-Type": "application/json; charset=utf-8"}, {"Errors": [message]}
    )


class Dispatcher:
    """Runs sub-requests through the application's router, at most CONCURRENCY at once."""

    def __init__(self, outer: web.Request) -> None:
        self.outer = outer
        self.app = outer.app
        self.limit = asyncio.Semaphore(CONCURRENCY)
        self.base_headers = CIMultiDict(
            (k, v) for k, v in outer.headers.items() if k.lower() not in DROPPED_HEADERS
        )

    def _request(
        self, method: str, target: str, headers: CIMultiDict[str], content: bytes | None
    ) -> tuple[web.Request, CaptureWriter]:
        """A request on the outer connection whose response is captured, not sent."""
        loop = asyncio.get_running_loop()
        payload = EMPTY_PAYLOAD
        if content is not None:
            # The body is already in memory: the reader's flow control has nothing to pause.
            payload = StreamReader(BaseProtocol(loop), 2 * len(content) + 2, loop=loop)
            payload.feed_data(content)
            payload.feed_eof()
        raw_headers = tuple((k.encode(), v.encode()) for k, v in headers.items())
        message = RawRequestMessage(
            method,
            target,
            HttpVersion11,
            CIMultiDictProxy(headers),
            raw_headers,
            False,
            None,
            False,
            False,
            URL(target),
        )
        writer = CaptureWriter()
        request = web.Request(
            message,
            payload,
            self.outer.protocol,
            writer,
            self.outer.task,
            loop,
            client_max_size=self.outer.client_max_size,
        )
        return request, writer

    async def run(
        self, method: str, target: str, content: str | None, extra: dict[str, str]
    ) -> dict[str, Any]:
        headers = CIMultiDict(self.base_headers)
        for key, value in extra.items():
            headers[key] = value
        body = None
        if content is not None:
            body = content.encode()
            headers.setdefault("Content-Type", "application/json")
            headers["Content-Length"] = str(len(body))
        async with self.limit:
            request, writer = self._request(method, target, headers, body)
            match_info = await self.app.router.resolve(request)
            match_info.add_app(self.app)
            match_info.freeze()
            # What Application._handle does before calling a handler, without the
            # middlewares: they already acted on the outer request.
            request._match_info = match_info
            if match_info.http_exception is not None:
                response = http_exception_response(request, match_info.http_exception)
                return await self._finish(request, response, writer)
            try:
                response = await match_info.handler(request)
            except web.HTTPException as exc:
                response = http_exception_response(request, exc)
            except Exception:
                log.exception("unhandled error in batch sub-request %s %s", method, target)
                response = error_response(500, INTERNAL_ERROR)
            return await self._finish(request, response, writer)

    async def _finish(
        self, request: web.Request, response: web.StreamResponse, writer: CaptureWriter
    ) -> dict[str, Any]:
        if not response.prepared:
            await response.prepare(request)
        await response.write_eof()
        headers = {str(k): v for k, v in response.headers.items() if k.lower() not in HOP_HEADERS}
        raw = writer.body
        content: Any = raw.decode("utf-8", errors="replace")
        if raw and "json" in (response.content_type or ""):
            with contextlib.suppress(orjson.JSONDecodeError):
                content = orjson.loads(raw)
        return outcome(response.status, headers, content)


# ----------------------------------------------------------------------------- execution


def substitute(resource: str, values: list[list[str]], template: bool) -> str:
    """Put parameter tokens in `{n}`; several tokens only as a repeated query value."""

    def one(m: re.Match[str]) -> str:
        index = int(m.group(1))
        if index >= len(values):
            raise SubRequestError(400, f"The resource refers to parameter {{{index}}}, not given.")
        tokens = values[index]
        if len(tokens) != 1:
            raise SubRequestError(
                400, f"Parameter {{{index}}} selects {len(tokens)} tokens where one is needed."
            )
        return tokens[0]

    if not template:
        path, sep, query = resource.partition("?")
        if sep:
            pairs = []
            for pair in query.split("&"):
                key, eq, value = pair.partition("=")
                m = PLACEHOLDER.fullmatch(value)
                if eq and m and int(m.group(1)) < len(values):
                    pairs.extend(f"{key}={t}" for t in values[int(m.group(1))])
                else:
                    pairs.append(pair)
            resource = path + "?" + "&".join(pairs)
    return PLACEHOLDER.sub(one, resource)


class BatchRun:
    def __init__(self, requests: list[BatchRequest], dispatcher: Dispatcher) -> None:
        self.requests = requests
        self.dispatcher = dispatcher
        self.results: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def execute(self) -> dict[str, dict[str, Any]]:
        for req in self.requests:  # parents first, so their tasks exist
            parents = [self.tasks[p] for p in req.parent_ids]
            self.tasks[req.id] = asyncio.ensure_future(self._one(req, parents))
        await asyncio.gather(*self.tasks.values())
        return self.results

    async def _one(self, req: BatchRequest, parents: list[asyncio.Task[None]]) -> None:
        await asyncio.gather(*parents)
        failed = [p for p in req.parent_ids if not 200 <= self.results[p]["Status"] < 300]
        if failed:
            message = f"The following ParentIds did not complete successfully: {', '.join(failed)}."
            self.results[req.id] = error_outcome(409, message)
            return
        try:
            self.results[req.id] = await self._run(req)
        except SubRequestError as exc:
            self.results[req.id] = error_outcome(exc.status, exc.message)

    async def _run(self, req: BatchRequest) -> dict[str, Any]:
        document = {p: self.results[p] for p in req.parent_ids}
        values = [[token_text(t) for t in path.select(document)] for path in req.parameters]
        run = self.dispatcher.run
        if req.template is not None:
            counts = {len(v) for v in values if len(v) != 1}
            if len(counts) > 1:
                raise SubRequestError(
                    400, "The template's parameters select unequal numbers of tokens."
                )
            n = counts.pop() if counts else 1
            targets = [
                local_target(
                    substitute(req.template, [v if len(v) == 1 else [v[i]] for v in values], True)
                )
                for i in range(n)
            ]
            items = await asyncio.gather(
                *(run(req.method, t, req.content, req.headers) for t in targets)
            )
            return outcome(207, {}, {"Items": list(items)})
        resource = req.resource or ""
        if req.resource_path is not None:
            tokens = req.resource_path.select(document)
            if len(tokens) != 1:
                raise SubRequestError(
                    400, f"The JsonPath '{req.resource_path.text}' selects {len(tokens)} tokens."
                )
            resource = token_text(tokens[0])
        for path, tokens in zip(req.parameters, values, strict=True):
            if not tokens:
                raise SubRequestError(400, f"The JsonPath '{path.text}' selects no token.")
        target = local_target(substitute(resource, values, False))
        return await run(req.method, target, req.content, req.headers)


async def post_batch(request: web.Request) -> web.Response:
    try:
        ids, requests = parse_batch(await request.read())
    except BatchError as exc:
        return error_response(400, str(exc))
    results = await BatchRun(requests, Dispatcher(request)).execute()
    body = orjson.dumps({rid: results[rid] for rid in ids})
    return web.Response(status=207, body=body, content_type="application/json", charset="utf-8")


def register(app: web.Application, state: MockState) -> None:
    """Add `POST /piwebapi/batch`."""
    app.router.add_post(BATCH_PATH, post_batch)
