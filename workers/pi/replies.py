"""What PI's answers say, apart from their data: the error texts of a failed request, how
long a `Retry-After` asks to wait, and the sub-responses of a `/batch` with the requests
that must be sent again together (a sub-request and its `ParentIds`, both ways).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

import orjson

from workers.errors import AuthError, PIWebAPIError


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def pi_errors(body: bytes) -> list[str]:
    """The texts of a PI error body `{"Errors": [...]}` (or `Message`), else a short snippet."""
    if not body:
        return []
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [" ".join(body[:200].decode("utf-8", "replace").split())]
    return errors_of(doc)


def errors_of(doc: Any) -> list[str]:
    """The texts of a parsed error document (or of a sub-response's `Content`)."""
    if isinstance(doc, dict):
        errors = doc.get("Errors")
        if isinstance(errors, list) and errors:
            return [str(e) for e in errors]
        if doc.get("Message"):
            return [str(doc["Message"])]
        return []
    if isinstance(doc, str) and doc:
        return [doc]
    return []


def batch_content(responses: Mapping[str, Any], request_id: str, method: str = "GET") -> Any:
    """The `Content` of one sub-response of `PIClient.batch`, or its PIWebAPIError."""
    sub = responses.get(request_id)
    if not isinstance(sub, Mapping):
        raise PIWebAPIError(method, f"batch:{request_id}", 0, [], "no response for this id")
    status = int(sub.get("Status") or 0)
    if 200 <= status < 300:
        return sub.get("Content")
    cls = AuthError if status in (401, 403) else PIWebAPIError
    raise cls(method, f"batch:{request_id}", status, errors_of(sub.get("Content")))


def sub_status(sub: Any) -> int:
    """A sub-response's `Status`; 0 when it has none that reads as a number."""
    if isinstance(sub, Mapping):
        try:
            return int(sub.get("Status") or 0)
        except (TypeError, ValueError):
            return 0
    return 0


def sub_retry_after(sub: Mapping[str, Any]) -> float | None:
    """The seconds a sub-response's own `Retry-After` header asks for, if any."""
    headers = sub.get("Headers")
    if not isinstance(headers, Mapping):
        return None
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            return parse_retry_after(str(value))
    return None


def retry_closure(requests: Mapping[str, Mapping[str, Any]], failed: set[str]) -> set[str]:
    """Failed ids, everything that depends on them, and everything those depend on."""
    children: dict[str, set[str]] = {}
    for rid, req in requests.items():
        for parent in req.get("ParentIds") or ():
            children.setdefault(parent, set()).add(rid)
    out = set(failed)
    stack = list(failed)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in out:
                out.add(child)
                stack.append(child)
    stack = list(out)
    while stack:
        for parent in requests.get(stack.pop(), {}).get("ParentIds") or ():
            if parent in requests and parent not in out:
                out.add(parent)
                stack.append(parent)
    return out
