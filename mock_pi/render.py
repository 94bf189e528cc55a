"""Response helpers shared by the route modules: `selectedFields`, Links, JSON bodies.

`selectedFields` is read as PI reads it: semicolon-separated dotted paths, matched
case-insensitively; a path keeps its field with everything below it, lists are walked
through, and fields that no path names are dropped.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

ALL: dict[str, Any] = {}  # the subtree marker "keep everything below"


class Fields:
    """A parsed `selectedFields` tree; `Fields(None)` keeps everything."""

    __slots__ = ("tree",)

    def __init__(self, tree: dict[str, Any] | None) -> None:
        self.tree = tree

    @classmethod
    def parse(cls, text: str | None) -> Fields:
        if text is None or not text.strip():
            return cls(None)
        tree: dict[str, Any] = {}
        for raw in text.split(";"):
            parts = [p.strip().lower() for p in raw.strip().split(".") if p.strip()]
            node = tree
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                child = node.get(part)
                if child is ALL:
                    break
                if last:
                    node[part] = ALL
                else:
                    node = node.setdefault(part, {})
        return cls(tree)

    @property
    def everything(self) -> bool:
        return self.tree is None

    def has(self, key: str) -> bool:
        return self.tree is None or key.lower() in self.tree

    def sub(self, key: str) -> Fields | None:
        """The selection below `key`, or None when `key` itself is not selected."""
        if self.tree is None:
            return self
        child = self.tree.get(key.lower())
        if child is None:
            return None
        return Fields(None) if child is ALL else Fields(child)

    def prune(self, obj: Any) -> Any:
        if self.tree is None:
            return obj
        if isinstance(obj, list):
            return [self.prune(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        out = {}
        for key, value in obj.items():
            sub = self.sub(key)
            if sub is not None:
                out[key] = sub.prune(value)
        return out


def base_url(request: web.Request) -> str:
    """`scheme://host/piwebapi/`, the prefix of every link, as the client addressed us."""
    return f"{request.scheme}://{request.host}/piwebapi/"


def json_bytes(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json", charset="utf-8")


def json_response(obj: Any, fields: Fields | None = None, status: int = 200) -> web.Response:
    if fields is not None:
        obj = fields.prune(obj)
    return json_bytes(orjson.dumps(obj), status)
