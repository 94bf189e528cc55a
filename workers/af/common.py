"""What AF hierarchy and event-frame syncs share: who syncs, paging, databases and
templates, and the small readers of PI's loosely typed AF fields."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlencode

import orjson

from workers.af.tables import (
    Quarantine,
)
from workers.lake.schemas import AF_QUARANTINE
from workers.pi.client import PIClient
from workers.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

TEMPLATE_FIELDS = "Items.Name;Items.InstanceType;Items.CanBeAcknowledged;Items.CategoryNames"
_QUERY_SAFE = ";*:"


class AfObserver(Protocol):
    """Metrics hook (see `service.commands_af`), so this module needs no metrics import."""

    def on_bad_input(self, kind: str, reason: str, count: int) -> None:
        """`count` objects of `kind` met bad input `reason` (and got quarantine rows)."""
        ...

    def on_commit(self, table: str, rows: int, seconds: float, version: int) -> None:
        """One Delta commit of an AF or event-frame table."""
        ...


class NullAfObserver:
    def on_bad_input(self, kind: str, reason: str, count: int) -> None:
        return None

    def on_commit(self, table: str, rows: int, seconds: float, version: int) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Commit:
    table: str
    rows: int
    seconds: float
    version: int


_skip_logged: set[str] = set()


def owns_af(settings: Settings, what: str) -> bool:
    """True on the one shard that syncs AF and event frames; the others log it once."""
    if settings.shard_index == settings.af_shard:
        return True
    if what not in _skip_logged:
        _skip_logged.add(what)
        log.info(
            "%s: skipped on shard %d, shard %d (PIDELTA_AF_SHARD) syncs them",
            what,
            settings.shard_index,
            settings.af_shard,
        )
    return False


def now_us() -> int:
    return time.time_ns() // 1000


def iso_us(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def resource(settings: Settings, path: str, params: Sequence[tuple[str, str]] = ()) -> str:
    """An absolute URL for a `/batch` sub-request (PI resolves nothing relative)."""
    url = f"{settings.pi_url}/{path}"
    return f"{url}?{urlencode(params, safe=_QUERY_SAFE, quote_via=quote)}" if params else url


def webid_of_link(link: Any) -> str | None:
    """The WebID at the end of a PI `Links` URL, e.g. `.../points/{webId}`."""
    if not isinstance(link, str) or "/" not in link:
        return None
    last = link.rstrip("/").rsplit("/", 1)[1].split("?", 1)[0]
    return last or None


def strings(value: Any) -> list[str] | None:
    """A PI string list (`CategoryNames`), None when absent or not a list of strings."""
    if not isinstance(value, list):
        return None
    return [v for v in value if isinstance(v, str)]


def text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def raw_json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


async def paged(
    fetch: Callable[[int], Awaitable[T]], count: Callable[[T], int], page_size: int, parallel: int
) -> list[T]:
    """Pages 0, 1, ... until one holds fewer than `page_size`: the first alone (most
    searches fit in one page), then `parallel` at a time.

    PI does not say how many items a search has, and a full page may have more behind it.
    """
    pages: list[T] = []
    start, wave_size = 0, 1
    while True:
        wave = await asyncio.gather(*(fetch(start + i) for i in range(wave_size)))
        for page in wave:
            pages.append(page)
            if count(page) < page_size:
                return pages
        start += wave_size
        wave_size = parallel


# ----- databases and templates ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Database:
    webid: str
    name: str
    path: str


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    instance_type: str
    can_be_acknowledged: bool
    categories: tuple[str, ...]

    @property
    def is_alarm(self) -> bool:
        """Alarm templates: event frame templates that can be acknowledged or say `Alarm`."""
        return self.instance_type == "EventFrame" and (
            self.can_be_acknowledged or any(c.lower() == "alarm" for c in self.categories)
        )


def database_matches(pattern: str, db: Database) -> bool:
    """`af_database_filter`: a name filter, or a path filter when it holds a backslash."""
    subject = db.path if "\\" in pattern else db.name
    return fnmatch.fnmatchcase(subject.upper(), pattern.upper())


async def databases(client: PIClient, settings: Settings) -> list[Database]:
    """Every asset database of every asset server that the database filter admits."""
    servers = await client.get_json(
        "assetservers", [("selectedFields", "Items.WebId;Items.Name")], endpoint="af"
    )
    out: list[Database] = []
    for server in servers.get("Items") or []:
        server_webid = text(server.get("WebId")) if isinstance(server, dict) else None
        if server_webid is None:
            log.warning("asset server without a WebId skipped: %s", raw_json(server)[:200])
            continue
        found = await client.get_json(
            f"assetservers/{server_webid}/assetdatabases",
            [("selectedFields", "Items.WebId;Items.Name;Items.Path")],
            endpoint="af",
        )
        for item in found.get("Items") or []:
            got = item if isinstance(item, dict) else {}
            webid, name, path = (text(got.get(k)) for k in ("WebId", "Name", "Path"))
            if webid is None or name is None or path is None:
                log.warning("asset database skipped, incomplete: %s", raw_json(item)[:200])
                continue
            db = Database(webid, name, path)
            if database_matches(settings.af_database_filter, db):
                out.append(db)
    return out


async def templates(client: PIClient, db: Database) -> dict[str, Template]:
    """The database's element and event frame templates, by upper-cased name."""
    found = await client.get_json(
        f"assetdatabases/{db.webid}/elementtemplates",
        [("selectedFields", TEMPLATE_FIELDS), ("maxCount", "150000")],
        endpoint="af",
    )
    out = {}
    for item in found.get("Items") or []:
        name = text(item.get("Name"))
        if name:
            out[name.upper()] = Template(
                name,
                text(item.get("InstanceType")) or "",
                item.get("CanBeAcknowledged") is True,
                tuple(strings(item.get("CategoryNames")) or ()),
            )
    return out


def report_bad_input(q: Quarantine, observer: AfObserver) -> None:
    for (kind, reason), count in sorted(q.counts().items()):
        observer.on_bad_input(kind, reason, count)
        log.warning("bad input: %d %s(s) with %s (rows in %s)", count, kind, reason, AF_QUARANTINE)
