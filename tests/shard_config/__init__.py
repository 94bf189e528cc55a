"""Synthetic tag keys for the shard tests: real PI point WebIDs from mock-pi's encoder."""

from __future__ import annotations

from functools import cache

from mock_pi import webid
from mock_pi.catalog import KINDS, SERVER_NAME, Catalog

SEED = 42
_PREFIXES = tuple(kind.prefix for kind, _ in KINDS)


def point_name(index: int) -> str:
    """A mock-pi style point name, cycling through the instrument kinds."""
    return f"{_PREFIXES[index % len(_PREFIXES)]}-{index:07d}.PV"


@cache
def webids(count: int) -> tuple[str, ...]:
    """WebIDs of points 1..count on mock-pi's data server, as `webid.pi_point` builds them.

    The server part is encoded once instead of per point, which halves the cost of a
    million keys; `test_ring` checks the strings equal `pi_point`'s. Cached so the
    million-key tests of both modules build them once per session.
    """
    head = "F1DP" + webid.encode_guid(Catalog(SEED, 0).server_id)
    return tuple(
        head + webid.encode_int(i + 1) + webid.encode_path(f"{SERVER_NAME}\\{point_name(i)}")
        for i in range(count)
    )
