"""WebID 2.0 "Full" encoding, as the PI Web API builds it.

Layout: type `F`, version `1`, a two-letter marker, an optional owner marker (attributes),
then the IDs (GUIDs as the 16 bytes of .NET `Guid.ToByteArray`, int32 point IDs as 4
little-endian bytes), each URL-safe base64 without padding, then the upper-cased path
(without the leading `\\\\`) as UTF-8, URL-safe base64 without padding.
"""

from __future__ import annotations

import base64
import struct
import uuid

MARKERS = {
    "DataServer": "DS",
    "PIPoint": "DP",
    "AssetServer": "RS",
    "AssetDatabase": "RD",
    "Element": "Em",
    "Attribute": "Ab",
    "EventFrame": "Fm",
    "ElementTemplate": "ET",
    "PIEnumerationSet": "DE",
    "PIEnumerationValue": "DV",
}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def encode_guid(guid: uuid.UUID) -> str:
    return _b64(guid.bytes_le)


def encode_int(value: int) -> str:
    return _b64(struct.pack("<I", value))


def encode_path(path: str) -> str:
    return _b64(path.lstrip("\\").upper().encode("utf-8"))


def stable_guid(seed: int, *parts: object) -> uuid.UUID:
    """A GUID that depends only on the seed and the object's identity."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"mock-pi:{seed}:" + "/".join(map(str, parts)))


def data_server(server_id: uuid.UUID, name: str) -> str:
    return "F1DS" + encode_guid(server_id) + encode_path(name)


def pi_point(server_id: uuid.UUID, point_id: int, server_name: str, point_name: str) -> str:
    return (
        "F1DP"
        + encode_guid(server_id)
        + encode_int(point_id)
        + encode_path(f"{server_name}\\{point_name}")
    )


def asset_server(server_id: uuid.UUID, name: str) -> str:
    return "F1RS" + encode_guid(server_id) + encode_path(name)


def asset_database(server_id: uuid.UUID, db_id: uuid.UUID, path: str) -> str:
    return "F1RD" + encode_guid(server_id) + encode_guid(db_id) + encode_path(path)


def element(element_id: uuid.UUID, path: str) -> str:
    return "F1Em" + encode_guid(element_id) + encode_path(path)


def element_template(template_id: uuid.UUID, path: str) -> str:
    return "F1ET" + encode_guid(template_id) + encode_path(path)


def event_frame(frame_id: uuid.UUID, path: str) -> str:
    return "F1Fm" + encode_guid(frame_id) + encode_path(path)


def attribute(owner_marker: str, owner_id: uuid.UUID, attribute_id: uuid.UUID, path: str) -> str:
    """Owner marker `E` for an element attribute, `F` for an event frame attribute."""
    return (
        "F1Ab"
        + owner_marker
        + encode_guid(owner_id)
        + encode_guid(attribute_id)
        + encode_path(path)
    )


def enumeration_set(server_id: uuid.UUID, set_id: uuid.UUID, path: str) -> str:
    """A data server's digital state set."""
    return "F1DE" + encode_guid(server_id) + encode_guid(set_id) + encode_path(path)


def enumeration_value(
    server_id: uuid.UUID, set_id: uuid.UUID, value_id: uuid.UUID, path: str
) -> str:
    """One state of a data server's digital state set."""
    return (
        "F1DV" + encode_guid(server_id) + encode_guid(set_id) + encode_guid(value_id)
        + encode_path(path)
    )  # fmt: skip


def point_id_of(webid: str) -> int | None:
    """The PI point ID inside a full PI point WebID, or None if it is not one."""
    if not webid.startswith("F1DP") or len(webid) < 4 + 22 + 6:
        return None
    try:
        raw = base64.urlsafe_b64decode(webid[26:32] + "==")
    except ValueError:
        return None
    return struct.unpack("<I", raw)[0] if len(raw) == 4 else None


def same_ids(a: str, b: str) -> bool:
    """Two full PI point WebIDs naming the same server and point ID, whatever their paths."""
    return a[:32] == b[:32]
