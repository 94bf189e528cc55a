"""What the core tells the outside about its work, without knowing who listens.

The process layer (`service.metrics`) implements `Observer` on Prometheus; tests and tools
that need no metrics use `NullObserver`. Labels stay bounded: shard, table, reason, never a
tag name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class RequestObserver(Protocol):
    """Hooks of the PI client."""

    def on_request(self, endpoint: str, status: str, seconds: float) -> None:
        """One HTTP attempt ended: status is "200", "429", ... or "error:<reason>"."""

    def on_retry(self, reason: str) -> None:
        """A retry is about to happen: reason is "429", "5xx", "timeout", "reset", "truncated"."""


class CommitObserver(Protocol):
    """Hooks of the Delta writer."""

    def committed(self, table: str, shard: str, rows: int, seconds: float, version: int) -> None:
        """One successful Delta commit."""

    def commit_conflicts(self, table: str, count: int) -> None:
        """A commit met `count` concurrent commits: it landed that many versions past its
        snapshot, or (count 1) was refused because one outdated its snapshot."""

    def commit_retried(self, table: str) -> None:
        """A refused commit is about to be made again on a fresh snapshot."""


class DimensionObserver(CommitObserver, Protocol):
    """Hooks of the points sync and of the summary and grid cycles, with the writer's."""

    def points_synced(
        self,
        shard: str,
        served: int,
        changes: Mapping[str, int],
        states: int,
        merge_retries: int,
        seconds: float,
    ) -> None:
        """A points sync succeeded: the shard's points PI serves, versions written by change
        (`opened`, `changed`, `deleted`), digital states written (0 when unchanged or not
        this shard's), MERGEs that lost a race, and its duration."""

    def aggregate_synced(
        self,
        table: str,
        shard: str,
        rows: Mapping[str, int],
        requests: int,
        refused: Mapping[str, int],
        oldest_pending_seconds: float,
    ) -> None:
        """A `pi_summaries` or `pi_interpolated` cycle succeeded: rows by kind (`new`,
        `rewritten`), PI requests, refused ranges by state (`noted` and `recovered` this
        cycle, `pending` now) and the age of the oldest pending one (0 when none)."""


class Observer(RequestObserver, CommitObserver, Protocol):
    """Hooks of a shard's time-series loop, with those of its client and writer."""

    def tags_owned(self, shard: str, count: int) -> None:
        """Discovery found this many tags owned by the shard."""

    def values_read(self, table: str, shard: str, count: int) -> None:
        """Values decoded from PI for a table."""

    def buffered(self, shard: str, rows: int, oldest_seconds: float) -> None:
        """Rows waiting for a commit, and the age of the oldest of them."""

    def lag(self, shard: str, seconds: float) -> None:
        """Now minus the oldest checkpoint of the shard's tags."""

    def error(self, kind: str) -> None:
        """A failure the worker outlived (for instance `pi_unavailable`)."""

    def quarantined(self, counts: Mapping[str, int]) -> None:
        """Values written to the quarantine table, by reason."""

    def changes_applied(self, shard: str, counts: Mapping[str, int]) -> None:
        """Stream-update changes applied to pi_timeseries, by action (Add, Update, Delete)."""

    def markers(self, shard: str, event: str, count: int) -> None:
        """Stream-update markers `registered`, `expired` (refused by PI), or `taken_over`
        from another shard's follower (a reshard moved their tags)."""

    def fallback_reread(self, shard: str, reason: str, tags: int) -> None:
        """Tags whose gap no marker covered, re-read through recorded values: `gap` (a
        marker expired, a tag moved or the worker restarted) or `updates_off`."""


class VerifyObserver(Protocol):
    """Hooks of verification (`workers.verify`)."""

    def verified(self, shard: str, results: Mapping[str, int]) -> None:
        """Buckets checked, by result (equal, repaired, failed, differs)."""

    def completeness(self, shard: str, share: float, oldest_unverified_seconds: float) -> None:
        """Share of tag-buckets in the horizon verified, and the age of the oldest bucket not
        verified (0 when none)."""


class NullObserver:
    """An observer that records nothing."""

    def on_request(self, endpoint: str, status: str, seconds: float) -> None:
        return None

    def on_retry(self, reason: str) -> None:
        return None

    def tags_owned(self, shard: str, count: int) -> None:
        return None

    def values_read(self, table: str, shard: str, count: int) -> None:
        return None

    def buffered(self, shard: str, rows: int, oldest_seconds: float) -> None:
        return None

    def lag(self, shard: str, seconds: float) -> None:
        return None

    def error(self, kind: str) -> None:
        return None

    def quarantined(self, counts: Mapping[str, int]) -> None:
        return None

    def changes_applied(self, shard: str, counts: Mapping[str, int]) -> None:
        return None

    def markers(self, shard: str, event: str, count: int) -> None:
        return None

    def fallback_reread(self, shard: str, reason: str, tags: int) -> None:
        return None

    def committed(self, table: str, shard: str, rows: int, seconds: float, version: int) -> None:
        return None

    def verified(self, shard: str, results: Mapping[str, int]) -> None:
        return None

    def completeness(self, shard: str, share: float, oldest_unverified_seconds: float) -> None:
        return None

    def commit_conflicts(self, table: str, count: int) -> None:
        return None

    def commit_retried(self, table: str) -> None:
        return None

    def points_synced(
        self,
        shard: str,
        served: int,
        changes: Mapping[str, int],
        states: int,
        merge_retries: int,
        seconds: float,
    ) -> None:
        return None

    def aggregate_synced(
        self,
        table: str,
        shard: str,
        rows: Mapping[str, int],
        requests: int,
        refused: Mapping[str, int],
        oldest_pending_seconds: float,
    ) -> None:
        return None
