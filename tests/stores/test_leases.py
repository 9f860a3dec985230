"""Tree leases when a release fails (a transient busy, disk-full or connection error at
root close): the root closes cleanly, a new root with that id in the same process is not
blocked, the store's renewer releases the orphaned claim so other owners go on, and a store
closed without releasing blocks nobody past its lease — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import runtree
from runtree.errors import StoreError
from runtree.stores import SqliteStore, Store
from runtree.stores._sql import SqlStore

StoreFactory = Callable[..., Store]


def sql(store: Store) -> SqlStore:
    assert isinstance(store, SqlStore)
    return store


def fail_releases(store: SqlStore, monkeypatch: pytest.MonkeyPatch, times: int) -> list[str]:
    """The next ``times`` releases of a claim fail as a locked or lost database would."""
    failed: list[str] = []

    def flaky(real: Any) -> Any:
        async def write(op: Any, *args: Any) -> Any:
            if getattr(op, "__name__", "") == "_op_release" and len(failed) < times:
                failed.append(args[0])
                raise StoreError("database is locked (injected)")
            return await real(op, *args)

        return write

    # A root's release is one statement (_write1); the renewer's retry may take _write.
    monkeypatch.setattr(store, "_write", flaky(store._write))
    monkeypatch.setattr(store, "_write1", flaky(store._write1))
    return failed


async def test_a_failed_release_never_blocks_a_new_root_with_that_id(
    open_durable: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_durable(lease=30.0) as store, runtree.create_scope(store=store) as scope:
        failed = fail_releases(sql(store), monkeypatch, 1)
        async with scope.create_context(id="job") as ctx:
            assert await ctx.run(lambda: 1, key="a", name="s") == 1
        assert failed == ["job"]  # the close did not raise
        # A new root with the same id, at once (the renewer ticks only every 10 s here).
        async with scope.create_context(id="job") as again:
            assert await asyncio.wait_for(again.run(lambda: 2, key="b", name="s"), 5) == 2
            assert await again.run(lambda: 99, key="a", name="s") == 1  # replayed


async def test_the_renewer_releases_an_orphaned_claim_for_other_owners(
    open_durable: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_durable(lease=0.3) as first, open_durable(lease=0.3) as second:
        failed = fail_releases(sql(first), monkeypatch, 2)  # the renewer's first try fails too
        async with (
            runtree.create_scope(store=first) as scope,
            scope.create_context(id="job") as ctx,
        ):
            await ctx.run(lambda: 1, key="a", name="s")
        assert failed == ["job"]
        # Another owner (another store: as another process would) gets the tree.
        record = await asyncio.wait_for(sql(second).journal_acquire("job", "b", "other"), 5)
        assert record is None
        assert len(failed) == 2
        await sql(second).journal_release("job", "other")


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from runtree.errors import StoreError
    from runtree.stores import SqliteStore

    async def main():
        store = SqliteStore(sys.argv[1], lease=0.5)
        assert await store.journal_acquire("job", "k", "holder") is None
        async def broken(*args, **kwargs):
            raise StoreError("disk I/O error (injected)")
        store._write = broken  # the goodbye at close fails
        store._write1 = broken
        await store.aclose()
        print("closed", flush=True)
        await asyncio.sleep(60)  # the process lives on

    asyncio.run(main())
    """
)


async def test_a_store_closed_without_releasing_blocks_no_one_past_its_lease(
    tmp_path: Path,
) -> None:
    db = tmp_path / "runtree.db"
    SqliteStore(db)._conn.close()  # type: ignore[union-attr]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, holder.stdout.readline)
        assert line.strip() == "closed"
        async with SqliteStore(db, lease=0.5) as store:
            # The holder's pid is alive, but its store stopped renewing: after its lease
            # the claim is taken over.
            record = await asyncio.wait_for(store.journal_acquire("job", "k", "next"), 10)
            assert record is None
            await store.journal_release("job", "next")
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def _refuse_leases(store: Store, on: bool) -> None:
    """A trigger that makes the database refuse new tree leases (or drop it)."""
    if isinstance(store, SqliteStore):
        import sqlite3

        with sqlite3.connect(store.path) as conn:
            conn.execute(
                "CREATE TRIGGER refuse_lease BEFORE INSERT ON runtree_leases "
                "BEGIN SELECT RAISE(ABORT, 'refused by policy'); END"
                if on
                else "DROP TRIGGER refuse_lease"
            )
        return
    import psycopg

    from runtree.stores import PostgresStore

    assert isinstance(store, PostgresStore)
    s = store.schema
    with psycopg.connect(store._dsn, autocommit=True) as conn:
        if on:
            conn.execute(
                f'CREATE FUNCTION "{s}".refuse() RETURNS trigger AS $$ BEGIN '
                "RAISE EXCEPTION 'refused by policy'; END $$ LANGUAGE plpgsql"
            )
            conn.execute(
                f'CREATE TRIGGER refuse_lease BEFORE INSERT ON "{s}".leases '
                f'FOR EACH ROW EXECUTE FUNCTION "{s}".refuse()'
            )
        else:
            conn.execute(f'DROP TRIGGER refuse_lease ON "{s}".leases')


def _procs(store: Store) -> set[str]:
    if isinstance(store, SqliteStore):
        import sqlite3

        with sqlite3.connect(store.path) as conn:
            return {r[0] for r in conn.execute("SELECT proc FROM runtree_procs")}
    import psycopg

    from runtree.stores import PostgresStore

    assert isinstance(store, PostgresStore)
    with psycopg.connect(store._dsn, autocommit=True) as conn:
        return {str(r[0]) for r in conn.execute(f'SELECT proc FROM "{store.schema}".procs')}


def _drop_procs(store: Store) -> None:
    if isinstance(store, SqliteStore):
        import sqlite3

        with sqlite3.connect(store.path) as conn:
            conn.execute("DELETE FROM runtree_procs")
        return
    import psycopg

    from runtree.stores import PostgresStore

    assert isinstance(store, PostgresStore)
    with psycopg.connect(store._dsn, autocommit=True) as conn:
        conn.execute(f'DELETE FROM "{store.schema}".procs')


async def test_a_claim_after_a_failed_write_writes_the_liveness_row_again(
    open_durable: StoreFactory,
) -> None:
    # Claims skip the procs upsert while the row written half a lease ago stands. A claim
    # whose transaction rolled back took its upsert with it: the next claim must write
    # the row again, or other processes would take this live owner for dead.
    async with open_durable(lease=30.0) as store, runtree.create_scope(store=store) as scope:
        await sql(store).journal_load("job-a")  # the tables exist now
        _refuse_leases(store, True)
        with pytest.raises(StoreError, match="refused by policy"):
            async with scope.create_context(id="job-a") as ctx:
                await ctx.run(lambda: 1, key="k", name="step")
        # Whether the failed claim's upsert rolled back (SQLite: one transaction) or not
        # (PostgreSQL: statement by statement), the next claim may not count on the row:
        # take it away, as a rollback would.
        _drop_procs(store)
        _refuse_leases(store, False)
        async with scope.create_context(id="job-b") as ctx:
            assert await ctx.run(lambda: 2, key="k", name="step") == 2
            assert sql(store)._proc in _procs(store)
            async with open_durable(lease=30.0) as other:
                # Another store sees the claim held by a live owner: it waits.
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.3):
                        await sql(other).journal_acquire("job-b", "k2", "someone-else")


async def test_a_key_the_live_holder_records_replays_for_a_waiting_owner_at_once(
    open_durable: StoreFactory,
) -> None:
    # Another owner waits on a tree whose live holder has not recorded key "a" yet; once
    # the holder records it, the waiter replays it without waiting for the release.
    go, hold = asyncio.Event(), asyncio.Event()
    ran: list[str] = []
    async with open_durable(lease=30.0) as store:

        async def holder() -> None:
            async with (
                runtree.create_scope(store=store) as scope,
                scope.create_context(id="shared") as ctx,
            ):
                await ctx.run(lambda: ran.append("x") or "X", key="x", name="s")
                await go.wait()
                await ctx.run(lambda: ran.append("holder") or "A", key="a", name="s")
                await hold.wait()

        task = asyncio.create_task(holder())
        while not ran:
            await asyncio.sleep(0.01)
        async with (
            open_durable(lease=30.0) as other,
            runtree.create_scope(store=other) as scope,
            scope.create_context(id="shared") as ctx,
        ):
            waiter = asyncio.create_task(
                ctx.run(lambda: ran.append("other") or "B", key="a", name="s")
            )
            done, _ = await asyncio.wait({waiter}, timeout=0.3)
            assert not done  # the holder holds the tree and has not recorded "a"
            go.set()
            assert await asyncio.wait_for(waiter, 5) == "A"
            assert not task.done()  # replayed while the holder still holds the tree
        hold.set()
        await task
    assert ran == ["x", "holder"]
