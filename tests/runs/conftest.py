"""Stores for run-tree tests: SQLite (a real file) and, when ``RUNTREE_TEST_PG_DSN``
names a server, PostgreSQL (a fresh schema per test); ``open_store`` adds memory."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtree.stores import InMemoryStore, PostgresStore, SqliteStore, Store

PG_DSN = os.environ.get("RUNTREE_TEST_PG_DSN")

_pg = pytest.param(
    "postgres",
    marks=[
        pytest.mark.postgres,
        pytest.mark.skipif(not PG_DSN, reason="RUNTREE_TEST_PG_DSN is not set"),
    ],
)

StoreFactory = Callable[..., Store]


def _drop_schema(schema: str) -> None:
    import psycopg

    assert PG_DSN is not None
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _factory(kind: str, tmp_path: Path) -> Iterator[StoreFactory]:
    if kind == "memory":
        shared = InMemoryStore()

        def memory(**options: Any) -> Store:
            return shared

        yield memory
        return
    if kind == "sqlite":
        path = tmp_path / ".runtree" / "runtree.db"

        def sqlite(**options: Any) -> Store:
            return SqliteStore(path, **options)

        yield sqlite
        return
    assert PG_DSN is not None
    schema = f"rt_runs_{secrets.token_hex(4)}"

    def postgres(**options: Any) -> Store:
        return PostgresStore(PG_DSN, schema=schema, **options)

    try:
        yield postgres
    finally:
        _drop_schema(schema)


@pytest.fixture(params=["memory", "sqlite", _pg])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens the test's store; for memory every call returns the one instance."""
    yield from _factory(request.param, tmp_path)


@pytest.fixture(params=["sqlite", _pg])
def open_durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens a new instance on the test's database at each call (SQLite, PostgreSQL)."""
    yield from _factory(request.param, tmp_path)
