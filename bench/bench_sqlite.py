"""A journaled step on SQLite against a raw ``sqlite3`` INSERT + COMMIT per step.

Subject: ``await root.exec(step, key=f"k{i}")`` on a root made with
``scope.create_context(id="bench-tree")`` in a scope whose store is
``runtree.stores.SqliteStore(path)``; every key is new, so every exec runs the step and
records its outcome durably.

Floor: the same row written by hand with the ``sqlite3`` module, one INSERT + COMMIT per
step (``json.dumps`` of the value included), in a database with the same file settings
(WAL, ``synchronous=NORMAL``) and SQLite's defaults otherwise. The raw table is a copy of
the store's own journal table (its ``CREATE TABLE`` read from the store's database), so
both write the same columns, keys and indexes; when no such table can be found or filled,
a table with the fields of a journal row is used instead, and the note says so. Both
files live in one temporary directory.

Budget (DESIGN "Budgets"): runtree's throughput >= 0.7x the raw one. Skipped, with the
reason, while ``runtree.stores.SqliteStore`` cannot be imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import Env, Group, Pair, Result, Settings, Timed

import runtree

__all__ = ["FALLBACK_SCHEMA", "build"]

BUDGET = 0.7
TREE_ID = "bench-tree"

# The fields of a journal row (runtree._journal.StepRecord plus its key), used when the
# store's own table cannot be copied.
FALLBACK_SCHEMA = """
CREATE TABLE journal (
    tree_id TEXT NOT NULL, key TEXT NOT NULL, name TEXT NOT NULL, ok INTEGER NOT NULL,
    value TEXT, error_type TEXT, error_message TEXT, owner TEXT NOT NULL,
    recorded_at REAL NOT NULL, PRIMARY KEY (tree_id, key)
)
"""

VALUE = {"n": 1}


async def step(ctx: runtree.ExecutionContext) -> dict[str, int]:
    """The journaled step: returns a small JSON value."""
    return VALUE


# What the raw writer puts in each column of a journal row, by column name.
COLUMN_VALUES: dict[str, Callable[[str], object]] = {
    "tree_id": lambda key: TREE_ID,
    "key": lambda key: key,
    "name": lambda key: "step",
    "ok": lambda key: 1,
    "value": lambda key: json.dumps(VALUE),
    "error_type": lambda key: None,
    "error_message": lambda key: None,
    "owner": lambda key: "raw-bench",
    "recorded_at": lambda key: time.time(),
    # The store writes the digest of the step's input (its first 16 hex digits).
    "input_digest": lambda key: hashlib.sha256(key.encode()).hexdigest()[:16],
}


def _skip(reason: str) -> Group:
    group = Group("sqlite")
    group.rows.append(
        Result(
            "sqlite_step",
            "journaled step, SQLite",
            "SKIP",
            budget=f">= {BUDGET:g}x thr",
            note=reason,
        )
    )
    return group


def _store_journal_ddl(path: Path) -> tuple[str, str] | None:
    """``(table, CREATE TABLE …)`` of the store's journal table, if there is exactly one."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            rows = conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name LIKE ?",
                ("%journal",),
            ).fetchall()
    except sqlite3.Error:
        return None
    return (rows[0][0], rows[0][1]) if len(rows) == 1 else None


class RawWriter:
    """One INSERT + COMMIT per step with the ``sqlite3`` module."""

    def __init__(self, path: Path, ddl: tuple[str, str] | None) -> None:
        self.conn = sqlite3.connect(path)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        created = self._create(*ddl) if ddl is not None else None
        self.schema = f"copy of the store's {ddl[0]}" if ddl and created else "fallback"
        if created is None:
            created = self._create("journal", FALLBACK_SCHEMA)
            assert created is not None
        table, columns = created
        self.makers = [COLUMN_VALUES[c] for c in columns]
        marks = ", ".join("?" * len(columns))
        self.sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        self.conn.commit()

    def _create(self, table: str, sql: str) -> tuple[str, list[str]] | None:
        """Create the table; return it and its columns, or ``None`` if some column is
        not one we know how to fill."""
        self.conn.execute(sql)
        columns = [row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")]
        if not all(c in COLUMN_VALUES for c in columns):
            self.conn.execute(f"DROP TABLE {table}")
            return None
        return table, columns

    def insert(self, key: str) -> None:
        self.conn.execute(self.sql, [make(key) for make in self.makers])
        self.conn.commit()

    async def aclose(self) -> None:
        self.conn.close()


async def build(settings: Settings) -> Group:
    try:
        from runtree.stores import SqliteStore
    except ImportError as exc:
        return _skip(f"runtree.stores.SqliteStore is not importable yet ({exc})")

    tmp = Path(tempfile.mkdtemp(prefix="runtree-bench-"))
    group = Group("sqlite")
    group.cleanups.append(lambda: _remove(tmp))
    try:
        store: Any = SqliteStore(tmp / "runtree.db")
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        return _skip(f"SqliteStore(path) failed: {type(exc).__name__}: {exc}")
    aclose = getattr(store, "aclose", None)
    if aclose is not None:
        group.cleanups.append(aclose)
    scope = runtree.create_scope(store=store)
    group.cleanups.append(scope.dispose)
    root = scope.create_context(id=TREE_ID)
    group.cleanups.append(root.close)
    flow = runtree.flow(step, name="step")
    await root.exec(flow, key="warm")  # opens the database, creates the tables

    raw = RawWriter(tmp / "raw.db", _store_journal_ddl(tmp / "runtree.db"))
    group.cleanups.append(raw.aclose)
    counter = itertools.count()

    def keys(ops: int) -> Env:
        return {"keys": iter([f"k{next(counter)}" for _ in range(ops)])}

    async def raw_env(ops: int) -> Env:
        return {"insert": raw.insert, **keys(ops)}

    async def runtree_env(ops: int) -> Env:
        return {"ctx": root, "flow": flow, **keys(ops)}

    group.pairs.append(
        Pair(
            "sqlite_step",
            "journaled step, SQLite (WAL, NORMAL)",
            # Longer batches: a WAL checkpoint (an fsync) lands in some batches only.
            Timed(
                "runtree",
                "await ctx.exec(flow, key=next(keys))",
                runtree_env,
                unroll=1,
                scale=4,
            ),
            Timed("raw sqlite3", "insert(next(keys))", raw_env, unroll=1, scale=4),
            budget=BUDGET,
            throughput=True,
            note=lambda p: _note(p["sqlite_step"], raw.schema),
        )
    )
    return group


def _note(pair: Pair, schema: str) -> str:
    if not pair.stats.rounds:
        return ""
    return (
        f"runtree {pair.stats.subject / 1000:.1f} us/step, raw {pair.stats.floor / 1000:.1f} "
        f"us/step; raw table: {schema}"
    )


async def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
