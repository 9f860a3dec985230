"""InMemoryStore: the store contract in one process, nothing on disk.

It is SQLite's ``:memory:`` database behind the same SQL as :class:`SqliteStore`, so
both behave alike (JSON only, a key recorded once, sessions as rows); it vanishes when
the store is closed or the process ends.
"""

from __future__ import annotations

import sqlite3

from ..errors import StoreError
from ._base import DEFAULT_LEASE
from ._sqlite import _SqliteEngine

__all__ = ["InMemoryStore"]


class InMemoryStore(_SqliteEngine):
    """A store kept in this process's memory (tests, demos, one-shot runs).

    Each instance is its own empty database; ``from_url("memory://")`` makes a new one.

    .. versionadded:: 0.1
    """

    def __init__(self, *, lease: float = DEFAULT_LEASE) -> None:
        super().__init__(lease=lease, durability="normal", timeout=0.0)
        self._where = "the in-memory store"
        try:
            conn = self._conn = self._connect(":memory:")
            self._migrate(conn)
            self._pragmas(conn, loop=True)
        except sqlite3.Error as exc:  # pragma: no cover - a memory database opens
            raise StoreError(f"{self._where}: {exc}") from exc

    def _schedule_checkpoint(self) -> None:
        # A memory database has no WAL to checkpoint (and no thread to do it on).
        self._writes = 0

    @property
    def url(self) -> str:
        return "memory://"

    def __repr__(self) -> str:
        return "InMemoryStore()"
