"""The mock's Asset Framework over HTTP, checked exactly against `mock_pi.af.AfModel`."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from typing import Any

import pytest

from mock_pi.af import AfModel
from mock_pi.af_attributes import AfAttributes
from mock_pi.catalog import Catalog
from tests.conftest import MockServer, get_json
from tests.spec import validate_response

SEED, TAGS = 42, 1000


def ok(url: str, spec_path: str | None = None) -> Any:
    status, body = get_json(url)
    assert status == 200, (url, body)
    if spec_path is not None:
        validate_response(body, spec_path)
    return body


def database(server: MockServer) -> tuple[str, str]:
    servers = ok(f"{server.url}/assetservers", "/assetservers")
    srv = servers["Items"][0]["WebId"]
    dbs = ok(
        f"{server.url}/assetservers/{srv}/assetdatabases", "/assetservers/{webId}/assetdatabases"
    )
    return srv, dbs["Items"][0]["WebId"]


def full_tree(server: MockServer, db: str, page: int = 1000) -> list[dict[str, Any]]:
    """Page through the whole hierarchy with startIndex/maxCount."""
    out: list[dict[str, Any]] = []
    while True:
        body = ok(
            f"{server.url}/assetdatabases/{db}/elements?searchFullHierarchy=true"
            f"&startIndex={len(out)}&maxCount={page}",
            "/assetdatabases/{webId}/elements",
        )
        out.extend(body["Items"])
        if len(body["Items"]) < page:
            return out


def expected(model: AfModel) -> dict[str, dict[str, Any]]:
    return {
        e.webid: {
            "Id": str(e.id),
            "Name": e.name,
            "Path": e.path,
            "TemplateName": e.template_name,
            "HasChildren": e.has_children,
            "CategoryNames": list(e.category_names),
            "Description": e.description,
        }
        for e in model.elements()
    }


def served(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    keys = ("Id", "Name", "Path", "TemplateName", "HasChildren", "CategoryNames", "Description")
    return {e["WebId"]: {k: e[k] for k in keys} for e in items}


def test_servers_and_database(mock_pi: MockServer) -> None:
    model = AfModel(SEED, TAGS)
    srv, db = database(mock_pi)
    assert (srv, db) == (model.server_webid, model.database_webid)
    body = ok(f"{mock_pi.url}/assetservers/{srv}", "/assetservers/{webId}")
    assert body["Path"] == "\\\\MOCKAF01"
    body = ok(f"{mock_pi.url}/assetdatabases/{db}", "/assetdatabases/{webId}")
    assert body["Path"] == "\\\\MOCKAF01\\PlantDB"
    assert body["Links"]["Elements"].endswith(f"/assetdatabases/{db}/elements")


def test_whole_tree_equals_model_and_pages_cover_each_element_once(mock_pi: MockServer) -> None:
    model = AfModel(SEED, TAGS)
    _, db = database(mock_pi)
    items = full_tree(mock_pi, db, page=37)
    assert len(items) == len({e["WebId"] for e in items}) == len(model.elements())
    assert served(items) == expected(model)
    assert [e["Name"].lower() for e in items] == sorted(e["Name"].lower() for e in items)
    root = ok(f"{mock_pi.url}/assetdatabases/{db}/elements", "/assetdatabases/{webId}/elements")
    assert [e["Path"] for e in root["Items"]] == ["\\\\MOCKAF01\\PlantDB\\Enterprise"]


def test_children_follow_the_model(mock_pi: MockServer) -> None:
    model = AfModel(SEED, TAGS)
    for element in model.elements():
        if element.depth > 2:
            continue
        body = ok(f"{mock_pi.url}/elements/{element.webid}/elements", "/elements/{webId}/elements")
        want = sorted((model.element(k) for k in model.children(element.key)), key=lambda e: e.name)
        assert [e["WebId"] for e in body["Items"]] == [e.webid for e in want]
        parent = ok(f"{mock_pi.url}/elements/{element.webid}", "/elements/{webId}")
        assert parent["Path"] == element.path
        if element.parent_webid:
            assert parent["Links"]["Parent"].endswith(f"/elements/{element.parent_webid}")


def test_every_tag_has_exactly_one_attribute_home(mock_pi: MockServer) -> None:
    model = AfModel(SEED, TAGS)
    attributes = AfAttributes(model)
    catalog = Catalog(SEED, TAGS)
    homes: Counter[str] = Counter()
    for element in model.elements():
        if element.template_name not in ("Pump", "Compressor", "Heat Exchanger", "Tank"):
            continue
        body = ok(
            f"{mock_pi.url}/elements/{element.webid}/attributes", "/elements/{webId}/attributes"
        )
        want = attributes.of(element.key)
        assert [a["WebId"] for a in body["Items"]] == [a.webid for a in want]
        for got, attr in zip(body["Items"], want, strict=True):
            assert got["Path"] == f"{element.path}|{got['Name']}"
            if attr.point is None:
                assert got["DataReferencePlugIn"] == ""
                assert "Point" not in got["Links"]
                continue
            point = catalog.point(attr.point.index)
            assert got["DataReferencePlugIn"] == "PI Point"
            assert got["Links"]["Point"].endswith(f"/points/{point.webid}")
            tag = got["ConfigString"].split(";")[0].split("\\")[-1].split("?")[0]
            assert tag == point.name
            assert got["DefaultUnitsNameAbbreviation"] == point.units
            homes[point.name] += 1
    assert homes == Counter({catalog.point(i).name: 1 for i in range(TAGS)})


def test_filters_sorting_and_paging(mock_pi: MockServer) -> None:
    model = AfModel(SEED, TAGS)
    _, db = database(mock_pi)
    base = f"{mock_pi.url}/assetdatabases/{db}/elements?searchFullHierarchy=true"
    pumps = ok(f"{base}&templateName=pump")["Items"]
    assert {e["WebId"] for e in pumps} == {
        e.webid for e in model.elements() if e.template_name == "Pump"
    }
    units = ok(f"{base}&nameFilter=unit0?")["Items"]
    assert {e["WebId"] for e in units} == {e.webid for e in model.elements() if e.key[0] == "unit"}
    starred = ok(f"{base}&nameFilter=*-00001*&sortOrder=Descending")["Items"]
    names = [e["Name"] for e in starred]
    assert names == sorted(names, reverse=True)
    assert set(names) == {e.name for e in model.elements() if "-00001" in e.name}
    fields = ok(f"{base}&maxCount=3&selectedFields=Items.Name;Items.Path")
    assert all(set(e) == {"Name", "Path"} for e in fields["Items"])
    assert ok(f"{base}&maxCount=0")["Items"] == []
    assert ok(f"{base}&startIndex=100000")["Items"] == []


def test_attributes_resolve_and_streamset_values(mock_pi: MockServer) -> None:
    model = AfModel(SEED, TAGS)
    attributes = AfAttributes(model)
    equipment = model.element(("equipment", 7))
    for attr in attributes.of(equipment.key):
        body = ok(f"{mock_pi.url}/attributes/{attr.webid}", "/attributes/{webId}")
        assert (body["Name"], body["Path"], body["Type"]) == (attr.name, attr.path, attr.type)
    values = ok(f"{mock_pi.url}/streamsets/{equipment.webid}/value", "/streamsets/{webId}/value")
    by_name = {v["Name"]: v for v in values["Items"]}
    assert set(by_name) == {a.name for a in attributes.of(equipment.key)}
    for attr in attributes.of(equipment.key):
        value = by_name[attr.name]["Value"]
        if attr.point is None:
            assert (value["Timestamp"], value["Value"]) == ("1970-01-01T00:00:00Z", attr.value)
        else:
            assert value["UnitsAbbreviation"] == attr.point.units
            assert value["Timestamp"] > "2000"
    filtered = ok(f"{mock_pi.url}/streamsets/{equipment.webid}/value?nameFilter=Manu*")
    assert [v["Name"] for v in filtered["Items"]] == ["Manufacturer"]
    leaf = attributes.of(equipment.key)[0].webid
    assert ok(f"{mock_pi.url}/streamsets/{leaf}/value")["Items"] == []


def test_templates(mock_pi: MockServer) -> None:
    _, db = database(mock_pi)
    body = ok(
        f"{mock_pi.url}/assetdatabases/{db}/elementtemplates",
        "/assetdatabases/{webId}/elementtemplates",
    )
    kinds = {t["Name"]: t["InstanceType"] for t in body["Items"]}
    assert kinds["Pump"] == "Element"
    assert kinds["Alarm"] == "EventFrame"
    one = ok(body["Items"][0]["Links"]["Self"], "/elementtemplates/{webId}")
    assert one["Name"] == body["Items"][0]["Name"]


def test_errors(mock_pi: MockServer) -> None:
    model = AfModel(SEED, TAGS)
    _, db = database(mock_pi)
    unknown = model.element(("equipment", 3)).webid.replace("F1EmGG", "F1EmHH")
    for path in (
        f"/elements/{unknown}",
        f"/elements/{unknown}/attributes",
        "/elements/nonsense",
        "/assetdatabases/F1RDxyz/elements",
        "/assetservers/F1RSxyz",
        f"/attributes/{model.element(('equipment', 3)).webid}",
        f"/streamsets/{unknown}/value",
    ):
        status, body = get_json(mock_pi.url + path)
        assert status == 404, path
        assert body["Errors"], path
    for query in ("maxCount=-1", "startIndex=x", "searchFullHierarchy=maybe", "sortOrder=Up"):
        status, body = get_json(f"{mock_pi.url}/assetdatabases/{db}/elements?{query}")
        assert status == 400, query
        assert body["Errors"], query


def post_version(server: MockServer, body: dict[str, int] | None = None) -> int:
    req = urllib.request.Request(
        f"{server.url}/mock/af/version",
        data=json.dumps(body).encode() if body is not None else b"",
        method="POST",
        headers={"X-Requested-With": "test", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return int(json.loads(resp.read())["Version"])


def parent_id(tree: dict[str, dict[str, Any]], element_id: str) -> str | None:
    """The Id of an element's parent, through the WebID its Parent link names."""
    by_webid = {e["WebId"]: i for i, e in tree.items()}
    parent = tree[element_id]["Links"].get("Parent")
    return by_webid[parent.rsplit("/", 1)[1]] if parent else None


def test_version_bumps_change_the_tree_exactly(mock_pi_factory: Any) -> None:
    seed, tags = 7, 600
    server = mock_pi_factory(tag_count=tags, seed=seed, rate_limit=0, af_version=1)
    _, db = database(server)
    v1 = AfModel(seed, tags, 1)
    before = {e["Id"]: e for e in full_tree(server, db)}
    assert served(list(before.values())) == expected(v1)
    assert post_version(server) == 2
    v2 = AfModel(seed, tags, 2)
    after = {e["Id"]: e for e in full_tree(server, db)}
    assert served(list(after.values())) == expected(v2)

    step = [c for c in v2.changes if c.version == 2]
    want = {
        kind: {str(c.element_id) for c in step if c.kind == kind}
        for kind in ("added", "renamed", "moved", "deleted")
    }
    assert set(after) - set(before) == want["added"]
    assert set(before) - set(after) == want["deleted"]
    common = set(before) & set(after)
    assert {i for i in common if before[i]["Name"] != after[i]["Name"]} == want["renamed"]
    moved = {i for i in common if parent_id(before, i) != parent_id(after, i)}
    assert moved == want["moved"]
    assert {k: len(v) for k, v in want.items()} == {
        "added": 1,
        "renamed": 2,
        "moved": 1,
        "deleted": 1,
    }

    # A moved element keeps its Id; its old WebID still resolves (by GUID) to the new one.
    (moved_id,) = want["moved"]
    old = before[moved_id]
    body = ok(f"{server.url}/elements/{old['WebId']}", "/elements/{webId}")
    assert body["Id"] == moved_id
    assert body["WebId"] == after[moved_id]["WebId"] != old["WebId"]
    (deleted_id,) = want["deleted"]
    status, _ = get_json(f"{server.url}/elements/{before[deleted_id]['WebId']}")
    assert status == 404
    # The deleted element's tags live on elsewhere: still exactly one home per tag.
    homes = Counter(a.point.index for a in AfAttributes(v2).every() if a.point is not None)
    assert homes == Counter(range(tags))

    assert post_version(server, {"Version": 4}) == 4
    assert served(full_tree(server, db)) == expected(AfModel(seed, tags, 4))
    status, version = get_json(f"{server.url}/mock/af/version")
    assert (status, version) == (200, {"Version": 4})


def test_a_million_tags_serve_without_walking_the_tree(mock_pi_factory: Any) -> None:
    """Start-up time is a benchmark figure (scripts/bench_mock.py), not an assertion."""
    model = AfModel(SEED, 1_000_000, 3)
    assert model.n_equipment == 100_000
    server = mock_pi_factory(tag_count=1_000_000, seed=SEED, rate_limit=0)
    database(server)
    attr = AfAttributes(AfModel(SEED, 1_000_000)).of_tag(987_654)
    body = ok(f"{server.url}/attributes/{attr.webid}", "/attributes/{webId}")
    tag = body["ConfigString"].split(";")[0].split("\\")[-1].split("?")[0]
    assert tag == Catalog(SEED, 1_000_000).point(987_654).name
    sites = ok(f"{server.url}/elements/{model.element(('enterprise', 0)).webid}/elements")
    assert len(sites["Items"]) == 1000  # 1667 sites, one default page


@pytest.mark.parametrize("count", [1, 9, 11])
def test_tiny_catalogs_still_give_every_tag_a_home(count: int) -> None:
    for version in range(4):
        model = AfModel(3, count, version)
        homes = Counter(a.point.index for a in AfAttributes(model).every() if a.point is not None)
        assert homes == Counter(range(count))
