"""AF sync against mock-pi over HTTP, the tables read back and compared with the AF model."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from aiohttp import web
from deltalake import DeltaTable

from mock_pi.af import AfModel
from mock_pi.af_attributes import AfAttributes
from service.commands_af import AfMetricsObserver
from service.metrics import Metrics
from tests.conftest import ROOT
from workers.af import hierarchy as af_sync
from workers.af.common import Database, database_matches
from workers.af.events import sync_events
from workers.af.hierarchy import config_point_path, sync_af
from workers.af.tables import META_HASH, content_hash
from workers.lake.schemas import AF_QUARANTINE, PI_AF_ATTRIBUTES, PI_AF_HIERARCHY
from workers.settings import Settings, load_settings

SEED = 42
TAGS = 200


def settings_for(url: str, target: str, **extra: Any) -> Settings:
    return load_settings(pi_url=url, target=target, pi_max_attempts=3, **extra)


def read(target: str, name: str) -> tuple[list[dict[str, Any]], int]:
    table = DeltaTable(f"{target}/{name}")
    return table.to_pyarrow_table().to_pylist(), table.version()


def none_if_empty(value: str) -> str | None:
    return value or None


def expected_hierarchy(model: AfModel) -> dict[str, tuple[Any, ...]]:
    return {
        e.webid: (
            str(e.id), e.name, e.path, e.parent_webid, e.depth, e.template_name, None,
            e.description, list(e.category_names), e.has_children, "PlantDB",
            model.database_webid,
        )
        for e in model.elements()
    }  # fmt: skip


def expected_attributes(model: AfModel) -> dict[str, tuple[Any, ...]]:
    return {
        a.webid: (
            str(a.id), a.owner_webid, a.name, a.path, a.description, a.type,
            none_if_empty(a.type_qualifier), none_if_empty(a.units_abbreviation),
            none_if_empty(a.units_name), none_if_empty(a.data_reference),
            none_if_empty(a.config_string), a.point.webid if a.point else None,
            a.point.name if a.point else None, list(a.category_names),
            a.is_configuration_item, model.database_webid,
        )
        for a in AfAttributes(model).every()
    }  # fmt: skip


def actual(rows: list[dict[str, Any]], key: str) -> dict[str, tuple[Any, ...]]:
    skip = {key, "snapshot_id", "synced_at"}
    out = {r[key]: tuple(v for k, v in r.items() if k not in skip) for r in rows}
    assert len(out) == len(rows), "duplicate keys"
    return out


def post_version(url: str) -> None:
    req = urllib.request.Request(
        f"{url}/mock/af/version",
        data=b"",
        method="POST",
        headers={"X-Requested-With": "test"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


# ----- pure functions ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "path"),
    [
        ("\\\\MOCKPI01\\TI-0000001.PV", "\\\\MOCKPI01\\TI-0000001.PV"),
        (
            "\\\\MOCKPI01\\TI-0000001.PV;ptclassname=classic;pointtype=Float32;ReadOnly=False",
            "\\\\MOCKPI01\\TI-0000001.PV",
        ),
        (
            "\\\\MOCKPI01?8a7c2f0e-0000-0000-0000-000000000000\\TI-0000001.PV?2",
            "\\\\MOCKPI01\\TI-0000001.PV",
        ),
        ("\\\\%Server%\\%Element%.PV", None),
        ("TI-0000001.PV", None),
        ("", None),
        (None, None),
    ],
)
def test_config_point_path(config: str | None, path: str | None) -> None:
    assert config_point_path(config) == path


def test_database_filter_by_name_or_path() -> None:
    db = Database("w", "PlantDB", "\\\\MOCKAF01\\PlantDB")
    assert database_matches("*", db)
    assert database_matches("plant*", db)
    assert not database_matches("Other", db)
    assert database_matches("\\\\MOCKAF01\\*", db)
    assert not database_matches("\\\\OTHER\\*", db)


def test_content_hash_sees_content_only() -> None:
    a = pa.table({"k": ["a", "b"], "v": [1, 2]})
    chunked = pa.concat_tables([a.slice(0, 1), a.slice(1)])
    assert content_hash(a) == content_hash(chunked)
    assert content_hash(a) != content_hash(pa.table({"k": ["a", "b"], "v": [1, 3]}))


# ----- against mock-pi --------------------------------------------------------------------
async def test_tables_equal_the_af_model_and_follow_a_version_bump(
    mock_pi_factory: Any, tmp_path: Any
) -> None:
    server = mock_pi_factory(tag_count=TAGS, seed=SEED, rate_limit=0)
    target = str(tmp_path / "lake")
    settings = settings_for(server.url, target)
    metrics = Metrics(process=False)
    observer = AfMetricsObserver(metrics, "0")

    result = await sync_af(settings, observer=observer)
    assert result is not None
    assert result.written == (PI_AF_ATTRIBUTES, PI_AF_HIERARCHY)
    assert result.quarantined == 0
    model = AfModel(SEED, TAGS, 0)
    hierarchy, h_version = read(target, PI_AF_HIERARCHY)
    attributes, a_version = read(target, PI_AF_ATTRIBUTES)
    assert actual(hierarchy, "element_webid") == expected_hierarchy(model)
    assert actual(attributes, "attribute_webid") == expected_attributes(model)
    assert {r["snapshot_id"] for r in hierarchy + attributes} == {result.snapshot_id}

    # Every PI point attribute names a catalog point, and every catalog tag has one attribute.
    points = [(r["point_webid"], r["point_name"]) for r in attributes if r["point_webid"]]
    catalog = {p.webid: p.name for p in model.catalog.matching("*")}
    assert dict(points) == catalog
    assert len(points) == len(catalog)

    # A rerun with nothing changed commits nothing.
    again = await sync_af(settings, observer=observer)
    assert again is not None
    assert again.written == ()
    assert again.snapshot_id == result.snapshot_id
    assert read(target, PI_AF_HIERARCHY)[1] == h_version
    assert read(target, PI_AF_ATTRIBUTES)[1] == a_version

    # Added, renamed, moved and deleted elements: exactly one new commit per table.
    post_version(server.url)
    bumped = AfModel(SEED, TAGS, 1)
    assert {c.kind for c in bumped.changes} == {"added", "renamed", "moved", "deleted"}
    third = await sync_af(settings, observer=observer)
    assert third is not None
    assert third.snapshot_id != result.snapshot_id
    hierarchy, h_next = read(target, PI_AF_HIERARCHY)
    attributes, a_next = read(target, PI_AF_ATTRIBUTES)
    assert (h_next, a_next) == (h_version + 1, a_version + 1)
    assert actual(hierarchy, "element_webid") == expected_hierarchy(bumped)
    assert actual(attributes, "attribute_webid") == expected_attributes(bumped)
    history = DeltaTable(f"{target}/{PI_AF_HIERARCHY}").history(1)[0]
    assert history[META_HASH] == third.snapshot_id
    assert history["operationParameters"]["mode"] == "Overwrite"
    committed = metrics.rows_committed.labels(table=PI_AF_HIERARCHY, shard="0")._value.get()
    assert committed == len(model.elements()) + len(bumped.elements())

    # pi_timeseries.tag_webid joins pi_af_attributes.point_webid joins pi_af_hierarchy.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIDELTA_")}
    env.update(PIDELTA_PI_URL=server.url, PIDELTA_TARGET=target, PIDELTA_START="*-2h",
               PIDELTA_METRICS_PORT="0")  # fmt: skip
    once = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "service", "once"], cwd=ROOT, env=env,
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert once.returncode == 0, once.stderr.decode()[-2000:]
    series = pl.from_arrow(DeltaTable(f"{target}/pi_timeseries").to_pyarrow_table())
    tags = series.select("tag_webid", "tag_name").unique()
    assert tags.height == TAGS
    joined = tags.join(
        pl.from_arrow(pa.Table.from_pylist(attributes)).select(
            "point_webid", "point_name", "element_webid"
        ),
        left_on="tag_webid",
        right_on="point_webid",
    ).join(pl.from_arrow(pa.Table.from_pylist(hierarchy)), on="element_webid")
    assert joined.height == TAGS
    assert (joined["tag_name"] == joined["point_name"]).all()


async def test_other_shards_skip(tmp_path: Any) -> None:
    settings = settings_for(
        "http://127.0.0.1:9/piwebapi", str(tmp_path), shard_count=3, shard_index=2, af_shard=1
    )
    assert await sync_af(settings) is None
    assert await sync_events(settings) is None
    assert not (tmp_path / PI_AF_HIERARCHY).exists()


# ----- bad input from a crafted server -----------------------------------------------------
DB = "F1RDcrafted"
AF_ROOT = "\\\\AF\\DB"


def crafted_elements() -> list[dict[str, Any]]:
    return [
        {"WebId": "E1", "Name": "Site", "Path": f"{AF_ROOT}\\Site", "TemplateName": "Site",
         "CategoryNames": [], "HasChildren": True},
        {"WebId": "E2", "Name": "Pump", "Path": f"{AF_ROOT}\\Site\\Pump",
         "TemplateName": "NoSuchTemplate", "CategoryNames": ["Equipment"], "HasChildren": False},
        {"WebId": "E3", "Name": "Orphan", "Path": f"{AF_ROOT}\\Gone\\Orphan", "TemplateName": ""},
        {"Name": "no webid"},
    ]  # fmt: skip


def crafted_attributes(webid: str) -> dict[str, Any]:
    if webid == "E3":
        return {"Status": 404, "Headers": {}, "Content": {"Errors": ["Unknown WebID"]}}
    items: list[Any] = []
    if webid == "E2":
        items = [
            {"WebId": "A1", "Name": "Flow", "DataReferencePlugIn": "PI Point",
             "ConfigString": "\\\\PI\\FLOW.PV", "Links": {"Point": "http://x/points/P1"}},
            {"WebId": "A2", "Name": "Sub", "DataReferencePlugIn": "PI Point",
             "ConfigString": "\\\\%Server%\\%Element%.PV"},
            {"WebId": "A3", "Name": "Missing", "DataReferencePlugIn": "PI Point",
             "ConfigString": "\\\\PI\\NOPE.PV"},
            "not an attribute",
        ]  # fmt: skip
    return {"Status": 200, "Headers": {}, "Content": {"Items": items}}


def crafted_frames() -> list[dict[str, Any]]:
    return [
        {"WebId": "F1", "Name": "ok", "TemplateName": "Alarm",
         "StartTime": "2026-01-01T00:00:00Z", "EndTime": "9999-12-31T23:59:59Z",
         "CanBeAcknowledged": True, "IsAcknowledged": False, "RefElementWebIds": ["E1"],
         "Links": {"PrimaryReferencedElement": "http://x/elements/E1"}},
        {"WebId": "F2", "Name": "unknown template and element", "TemplateName": "Nope",
         "StartTime": "2026-01-01T00:00:00Z", "EndTime": "2026-01-01T01:00:00Z",
         "RefElementWebIds": ["E404"],
         "Links": {"PrimaryReferencedElement": "http://x/elements/E404"}},
        {"WebId": "F3", "Name": "bad start", "TemplateName": "Alarm", "StartTime": "soon",
         "EndTime": "2026-01-01T01:00:00Z"},
    ]  # fmt: skip


def crafted_values(webid: str) -> dict[str, Any]:
    items = [
        {"Name": "Limit", "Value": {"Value": 12.5, "Good": True}},
        {"Name": "State", "Value": {"Value": {"Name": "Open", "Value": 1}}},
        {"Name": "Weird", "Value": {"Value": {"no": "name"}}},
        {"Name": "Broken", "Value": {"Errors": [{"Message": ["bad"]}]}},
        {"Value": {"Value": 1}},
    ]
    return {"Status": 200, "Headers": {}, "Content": {"Items": items}}


def crafted_app() -> web.Application:
    """Just enough of PI Web API to deliver bad input to both syncs.

    Frames are served by the first search only; afterwards the open frame F1 is unknown
    (deleted in PI), so the next sync must find it by WebID and remove it.
    """
    served = {"frames": False}

    async def servers(_: web.Request) -> web.Response:
        return web.json_response({"Items": [{"WebId": "S1", "Name": "AF"}]})

    async def databases(_: web.Request) -> web.Response:
        return web.json_response({"Items": [{"WebId": DB, "Name": "DB", "Path": AF_ROOT}]})

    async def templates(_: web.Request) -> web.Response:
        items = [
            {"Name": "Site", "InstanceType": "Element", "CategoryNames": []},
            {"Name": "Alarm", "InstanceType": "EventFrame", "CanBeAcknowledged": True},
        ]
        return web.json_response({"Items": items})

    async def batch(request: web.Request) -> web.Response:
        body = await request.json()
        out: dict[str, Any] = {}
        if "e" in body:
            first = "startIndex=0&" in body["e"]["Resource"]
            elements = crafted_elements() if first else []
            out["e"] = {"Status": 200, "Content": {"Items": elements}}
            out["a"] = {
                "Status": 207,
                "Content": {"Items": [crafted_attributes(e.get("WebId", "")) for e in elements]},
            }
        elif "f" in body:
            first = "startIndex=0&" in body["f"]["Resource"] and not served["frames"]
            served["frames"] |= first
            frames = crafted_frames() if first else []
            out["f"] = {"Status": 200, "Content": {"Items": frames}}
            out["v"] = {"Status": 207, "Content": {"Items": [crafted_values("") for _ in frames]}}
        elif "f0" in body:
            for rid in body:
                out[rid] = {"Status": 404, "Content": {"Errors": ["Unknown or invalid WebID"]}}
        else:
            for rid, req in body.items():
                found = "points/P1" in req["Resource"]
                out[rid] = (
                    {"Status": 200, "Content": {"WebId": "P1", "Name": "FLOW.PV"}}
                    if found
                    else {"Status": 404, "Content": {"Errors": ["PI Point not found"]}}
                )
        return web.json_response(out, status=207)

    app = web.Application()
    app.router.add_get("/piwebapi/assetservers", servers)
    app.router.add_get("/piwebapi/assetservers/S1/assetdatabases", databases)
    app.router.add_get(f"/piwebapi/assetdatabases/{DB}/elementtemplates", templates)
    app.router.add_post("/piwebapi/batch", batch)
    return app


@pytest.fixture
async def aiohttp_server_factory() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """Serve crafted aiohttp apps on loopback; the PI base URL of each."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/piwebapi"

    yield start
    for runner in runners:
        await runner.cleanup()


class Recorder:
    def __init__(self) -> None:
        self.bad: Counter[tuple[str, str]] = Counter()
        self.commits: list[str] = []

    def on_bad_input(self, kind: str, reason: str, count: int) -> None:
        self.bad[(kind, reason)] += count

    def on_commit(self, table: str, rows: int, seconds: float, version: int) -> None:
        self.commits.append(table)


async def test_bad_input_is_counted_quarantined_and_never_a_crash(
    aiohttp_server_factory: Any, tmp_path: Any
) -> None:
    url = await aiohttp_server_factory(crafted_app())
    target = str(tmp_path / "lake")
    settings = settings_for(url, target, af_page_size=10, events_start="2025-12-31T00:00:00Z")
    recorder = Recorder()

    result = await sync_af(settings, observer=recorder)
    assert result is not None
    assert result.elements == 3
    assert result.attributes == 3
    assert recorder.bad == {
        ("element", "malformed element"): 1,
        ("element", "missing template"): 1,
        ("element", "unknown parent"): 1,
        ("element", "attributes not read"): 1,
        ("attribute", "malformed attribute"): 1,
        ("attribute", "unresolvable PI point reference"): 1,
        ("attribute", "unknown PI point"): 1,
    }
    attributes = {r["attribute_webid"]: r for r in read(target, PI_AF_ATTRIBUTES)[0]}
    assert (attributes["A1"]["point_webid"], attributes["A1"]["point_name"]) == ("P1", "FLOW.PV")
    assert attributes["A2"]["point_webid"] is None
    assert attributes["A3"]["point_webid"] is None
    hierarchy = read(target, PI_AF_HIERARCHY)[0]
    parents = {r["element_webid"]: r["parent_element_webid"] for r in hierarchy}
    assert parents == {"E1": None, "E2": "E1", "E3": None}

    recorder = Recorder()
    frames = await sync_events(settings, observer=recorder)
    assert frames is not None
    assert frames.frames == 2
    assert recorder.bad == {
        ("event_frame", "malformed event frame"): 1,
        ("event_frame", "missing template"): 1,
        ("event_frame", "unknown referenced element"): 1,
        ("event_frame", "malformed attribute value"): 3 * 2,
    }
    rows = {r["event_frame_webid"]: r for r in read(target, "pi_event_frames")[0]}
    assert rows["F1"]["end_time"] is None
    assert rows["F1"]["is_alarm"] is True
    assert rows["F2"]["is_alarm"] is False
    assert dict(rows["F1"]["attributes"]) == {
        "Limit": "12.5", "State": "Open", "Weird": None, "Broken": None,
    }  # fmt: skip
    quarantine = read(target, AF_QUARANTINE)[0]
    reasons = Counter((r["kind"], r["reason"]) for r in quarantine)
    assert reasons[("event_frame", "malformed attribute value")] == 6
    assert reasons[("element", "missing template")] == 1
    malformed = next(r for r in quarantine if r["reason"] == "malformed element")
    assert json.loads(malformed["raw"]) == {"Name": "no webid"}

    # The open frame disappears from PI: the next sync deletes its row in the merge.
    again = await sync_events(settings, observer=recorder)
    assert again is not None
    assert (again.frames, again.deleted) == (0, 1)
    assert {r["event_frame_webid"] for r in read(target, "pi_event_frames")[0]} == {"F2"}


async def test_config_strings_resolve_in_bulk_without_point_links(
    mock_pi_factory: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Servers that give no `Links.Point`: every point comes from its config string path."""
    monkeypatch.setattr(
        af_sync, "ATTRIBUTE_FIELDS", af_sync.ATTRIBUTE_FIELDS.replace(";Items.Links.Point", "")
    )
    server = mock_pi_factory(tag_count=TAGS, seed=SEED, rate_limit=0)
    target = str(tmp_path / "lake")
    result = await sync_af(settings_for(server.url, target))
    assert result is not None
    assert result.quarantined == 0
    attributes, _ = read(target, PI_AF_ATTRIBUTES)
    assert actual(attributes, "attribute_webid") == expected_attributes(AfModel(SEED, TAGS, 0))
