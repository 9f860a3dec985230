"""Claims that wait for a row lock on PostgreSQL. Under READ COMMITTED a ``SELECT … FOR
UPDATE`` that waited re-checks the row it locked but keeps the rows joined to it as they
were when it began: a new owner that committed meanwhile would read as dead (its
``procs`` row unseen) and be taken over while it runs — two live owners. These tests hold
the lock in another transaction, let a claim wait on it, then commit a live owner."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from runtree.stores import PostgresStore

DSN = os.environ.get("RUNTREE_TEST_PG_DSN", "")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not DSN, reason="RUNTREE_TEST_PG_DSN is not set"),
]


@contextlib.asynccontextmanager
async def two_stores() -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores (two processes, as far as claims go) on one fresh schema."""
    schema = f"rt_race_{secrets.token_hex(4)}"
    a = await PostgresStore(DSN, schema=schema).open()
    b = await PostgresStore(DSN, schema=schema).open()
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()
        import psycopg

        async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]


def sql(store: PostgresStore, name: str) -> str:
    return store._q[name].replace("?", "%s")


async def while_locked(
    a: PostgresStore,
    lock_sql: str,
    lock_params: tuple[object, ...],
    take_sql: str,
    take_params: tuple[object, ...],
    claim: Callable[[], Coroutine[Any, Any, Any]],
) -> Any:
    """In a transaction of its own: lock the row, make ``a`` its owner (alive), start
    ``claim`` (it waits for the lock), then commit; return what ``claim`` returned."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(DSN) as conn:
        await conn.execute(lock_sql, lock_params)  # type: ignore[arg-type]
        info = a._info
        await conn.execute(
            sql(a, "p_upsert"),  # type: ignore[arg-type]
            (a._proc, info.host, info.pid, info.start, time.time() + 60),
        )
        await conn.execute(take_sql, take_params)  # type: ignore[arg-type]
        waiting = asyncio.ensure_future(claim())
        await asyncio.sleep(0.3)
        assert not waiting.done()  # it waits for our lock
        await conn.commit()
    return await asyncio.wait_for(waiting, 10)


async def test_a_run_claimed_while_a_claim_waits_is_not_claimed_twice() -> None:
    async with two_stores() as (a, b):
        await _run_race(a, b)


async def _run_race(a: PostgresStore, b: PostgresStore) -> None:
    root = "race-run"
    await b.runs_start((root, root, "job", "mod:job", "null", 1, time.time(), None, None))
    dead = "dead-" + secrets.token_hex(4)
    await b._write(
        lambda tx: tx.execute(
            f'UPDATE "{b.schema}".runs SET owner = %s WHERE root_id = %s', (dead, root)
        )
    )
    assert [r[0] for r in await b.runs_orphans()] == [root]
    state = await while_locked(
        a,
        f'SELECT 1 FROM "{a.schema}".runs WHERE root_id = %s FOR UPDATE',
        (root,),
        sql(a, "r_claim"),
        (a._proc, time.time(), root),
        lambda: b.runs_claim(root, orphan_only=True),
    )
    assert state[0] == "running"  # a's claim stands: its owner is alive


async def test_a_tree_taken_while_a_claim_waits_is_not_taken_over() -> None:
    """A tree claim's ``INSERT … ON CONFLICT DO NOTHING`` already waits for a take-over
    in flight, so its locking read starts fresh; the read-again guards it all the same."""
    async with two_stores() as (a, b):
        await _tree_race(a, b)


async def _tree_race(a: PostgresStore, b: PostgresStore) -> None:
    tree = "race-tree"
    dead = "dead-" + secrets.token_hex(4)
    await b._write(
        lambda tx: tx.execute(
            f'INSERT INTO "{b.schema}".leases (tree_id, owner, proc, acquired_at) '
            "VALUES (%s, 'gone', %s, %s)",
            (tree, dead, time.time()),
        )
    )
    result = await while_locked(
        a,
        f'SELECT 1 FROM "{a.schema}".leases WHERE tree_id = %s FOR UPDATE',
        (tree,),
        sql(a, "l_take"),
        ("a-owner", a._proc, time.time(), tree, "gone", dead),
        lambda: b._write(b._op_acquire, tree, "k", "b-owner"),
    )
    assert result == ("held", "a-owner")  # not taken over from the live owner
