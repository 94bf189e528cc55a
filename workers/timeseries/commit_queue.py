"""What waits to be committed: rows by rows, bytes and age (`commit_max_*`).

Large commits make few, large files; the age bound keeps latency bounded when PI is quiet.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pyarrow as pa

from workers.settings import Settings


class CommitBuffer:
    """Accumulates Arrow tables until a commit is worth it: by rows, bytes or age.

    Large commits make few, large files; the age bound keeps latency bounded when PI is quiet.
    """

    def __init__(
        self,
        max_rows: int,
        max_bytes: int,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._clock = clock
        self._tables: list[pa.Table] = []
        self._rows = 0
        self._bytes = 0
        self._since: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> CommitBuffer:
        return cls(settings.commit_max_rows, settings.commit_max_bytes, settings.commit_max_age)

    def add(self, table: pa.Table) -> None:
        if self._since is None:
            self._since = self._clock()
        if table.num_rows:
            self._tables.append(table)
            self._rows += table.num_rows
            self._bytes += table.nbytes

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def age(self) -> float:
        return 0.0 if self._since is None else self._clock() - self._since

    def should_flush(self) -> bool:
        return (
            self._rows >= self.max_rows
            or self._bytes >= self.max_bytes
            or (self._since is not None and self.age >= self.max_age)
        )

    def drain(self, schema: pa.Schema) -> pa.Table:
        """All buffered rows as one table (empty with `schema` when none); resets the buffer."""
        tables, self._tables = self._tables, []
        self._rows = self._bytes = 0
        self._since = None
        return pa.concat_tables(tables) if tables else schema.empty_table()
