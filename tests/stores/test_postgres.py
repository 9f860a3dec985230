"""PostgresStore against a real server (``RUNTREE_TEST_PG_DSN``; ``source .ci/postgres.sh``
starts one). The shared contract runs in test_contract.py; these are PostgreSQL's own."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

import runtree
from runtree.errors import StoreError
from runtree.sessions import Sessions
from runtree.stores import PostgresStore, from_url

DSN = os.environ.get("RUNTREE_TEST_PG_DSN", "")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not DSN, reason="RUNTREE_TEST_PG_DSN is not set"),
]


def sync_execute(sql: str) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        cur = conn.execute(sql)  # type: ignore[arg-type]
        return list(cur.fetchall()) if cur.description else []


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"rt_pg_{secrets.token_hex(4)}"
    yield name
    sync_execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


async def test_tables_are_created_in_the_schema_and_reused(schema: str) -> None:
    async with (
        PostgresStore(DSN, schema=schema) as store,
        runtree.create_scope(store=store) as scope,
        scope.create_context(id="job") as ctx,
    ):
        await ctx.run(lambda: {"x": 1}, key="k", name="s")
    tables = {
        str(r[0])
        for r in sync_execute(
            f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}'"
        )
    }
    assert {"meta", "journal", "leases", "procs", "sessions", "commands"} <= tables
    assert sync_execute(f'SELECT value FROM "{schema}".journal') == [('{"x":1}',)]
    async with PostgresStore(DSN, schema=schema) as store:
        assert (await store.journal_load("job"))["k"]["value"] == {"x": 1}


async def test_a_schema_of_another_application_is_refused(schema: str) -> None:
    sync_execute(f'CREATE SCHEMA "{schema}"')
    sync_execute(f'CREATE TABLE "{schema}".orders (id int)')
    store = PostgresStore(DSN, schema=schema)
    with pytest.raises(StoreError, match=r"holds tables of another application \(orders\)"):
        await store.open()
    await store.aclose()
    assert sync_execute(
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}'"
    ) == [("orders",)]


async def test_a_reader_creates_nothing(schema: str) -> None:
    # create=False (what the web view opens stores with): no schema, no tables.
    store = PostgresStore(DSN, schema=schema, create=False)
    with pytest.raises(StoreError, match="holds no runtree store yet"):
        await store.open()
    await store.aclose()
    assert (
        sync_execute(f"SELECT 1 FROM information_schema.schemata WHERE schema_name = '{schema}'")
        == []
    )
    async with PostgresStore(DSN, schema=schema) as made:  # a writer makes it
        await made.open()
    async with PostgresStore(DSN, schema=schema, create=False) as reader:
        assert await reader.journal_load("nothing") == {}


async def test_processes_opening_a_new_schema_together_do_not_race(schema: str) -> None:
    stores = [PostgresStore(DSN, schema=schema) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        sessions = await asyncio.gather(*(Sessions(s).get_or_create("p") for s in stores))
        assert len({s.session_id for s in sessions}) == 1
    finally:
        for s in stores:
            await s.aclose()


async def test_concurrent_create_keeps_one_active_session(schema: str) -> None:
    stores = [PostgresStore(DSN, schema=schema) for _ in range(4)]
    try:
        await stores[0].open()
        made = await asyncio.gather(*(Sessions(s).create("p") for s in stores))
        active = sync_execute(
            f"SELECT session_id FROM \"{schema}\".sessions WHERE project_name = 'p' AND active = 1"
        )
        assert len(active) == 1
        assert active[0][0] in {s.session_id for s in made}
    finally:
        for s in stores:
            await s.aclose()


async def test_a_bad_dsn_is_a_store_error_without_the_password() -> None:
    store = PostgresStore("postgresql://runtree:s3cret@127.0.0.1:1/nothing", connect_timeout=2)
    with pytest.raises(StoreError) as info:
        await store.open()
    text = str(info.value)
    assert "Cannot connect to PostgreSQL" in text
    assert "s3cret" not in text
    await store.aclose()


async def test_url_options(schema: str) -> None:
    store = from_url(f"{DSN}?schema={schema}&lease=7")
    assert isinstance(store, PostgresStore)
    assert (store.schema, store.lease) == (schema, 7.0)
    async with store:
        again = from_url(store.url)
        assert isinstance(again, PostgresStore) and again.schema == schema
        await again.aclose()


def test_a_bad_schema_name_is_refused() -> None:
    with pytest.raises(StoreError, match=r"schema must be a plain identifier"):
        PostgresStore(DSN, schema='x"; DROP TABLE y; --')


class TestPool:
    """``pool_size`` bounds the connections a store opens; operations beyond wait."""

    async def test_a_burst_of_roots_opens_at_most_pool_size_connections(self, schema: str) -> None:
        async with PostgresStore(DSN, schema=schema, pool_size=2) as store:
            connect = store._connect
            opened = 0
            most = 0

            async def counted() -> object:
                nonlocal opened, most
                opened += 1
                conn = await connect()
                most = max(most, len(store._busy) + len(store._idle) + 1)
                return conn

            store._connect = counted  # type: ignore[method-assign,assignment]

            async def root(r: int) -> None:
                async with scope.create_context(id=f"burst-{r}") as ctx:
                    for i in range(5):
                        await ctx.run(lambda i=i: i, key=f"k{i}", name="s")

            async with runtree.create_scope(store=store) as scope:
                await asyncio.gather(*(root(r) for r in range(16)))
            assert most <= 2
            assert opened <= 2  # no connection opened and closed per operation
            for r in range(16):
                assert len(await store.journal_load(f"burst-{r}")) == 5

    async def test_a_waiter_cancelled_passes_its_turn_on(self, schema: str) -> None:
        async with PostgresStore(DSN, schema=schema, pool_size=1) as store:
            held = await store._take()
            first = asyncio.ensure_future(store.journal_load("a"))
            second = asyncio.ensure_future(store.journal_load("b"))
            await asyncio.sleep(0.01)
            assert len(store._waiters) == 2  # both wait for the one connection
            store._give(held)  # wakes `first` ...
            first.cancel()  # ... which is cancelled before it runs: `second` goes on
            with pytest.raises(asyncio.CancelledError):
                await first
            assert await asyncio.wait_for(second, 5) == {}

    async def test_a_waiter_cancelled_before_its_turn_leaves_the_queue(self, schema: str) -> None:
        async with PostgresStore(DSN, schema=schema, pool_size=1) as store:
            held = await store._take()
            waiting = asyncio.ensure_future(store.journal_load("a"))
            await asyncio.sleep(0.01)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert not store._waiters
            store._give(held)
            assert await asyncio.wait_for(store.journal_load("a"), 5) == {}

    async def test_closing_the_store_waits_its_turn_and_then_refuses(self, schema: str) -> None:
        store = PostgresStore(DSN, schema=schema, pool_size=1)
        await store.open()
        held = await store._take()
        waiting = asyncio.ensure_future(store.journal_load("a"))
        await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(store.aclose())  # its release queues behind
        await asyncio.sleep(0.01)
        store._give(held)
        assert await asyncio.wait_for(waiting, 5) == {}
        await asyncio.wait_for(closing, 5)
        assert not store._idle and not store._busy
        with pytest.raises(StoreError, match="closed"):
            await store.journal_load("a")

    @pytest.mark.parametrize("size", [0, -1, 1.5, "4"])
    def test_a_bad_pool_size_is_refused(self, size: object) -> None:
        with pytest.raises(StoreError, match="pool_size"):
            PostgresStore(DSN, pool_size=size)  # type: ignore[arg-type]


async def idle(store: PostgresStore) -> list[Any]:
    """The pool's idle connections once none is in use (the run tree's writes, which
    run in a task of their own, may hold the only one for a moment)."""
    for _ in range(500):
        if store._idle:
            return list(store._idle)
        await asyncio.sleep(0.01)
    raise AssertionError("the store's connection never came back to the pool")


class TestHotStatements:
    """The journal's per-step statements go through psycopg's libpq binding instead of a
    cursor (one prepared statement per connection, text parameters). They must write
    exactly what a cursor writes and fail the way a cursor fails."""

    RECORDS = [
        (
            "t",
            "k1",
            "step",
            1,
            '{"s":"é ☃ \\u0000 \\ud800","f":1e-300}',
            None,
            None,
            "o",
            0.1,
            None,
        ),
        ("t", "k2", "step", 0, None, "ValueError", "bad é", "o", 1733140000.123456, "d" * 64),
        ("t", "k3", "ünï", 1, "-0.0", None, None, "o", 1e300, None),
    ]

    async def test_a_record_is_stored_as_a_cursor_stores_it(self, schema: str) -> None:
        import psycopg

        async with PostgresStore(DSN, schema=schema) as store:
            insert = store._q["j_insert"]
            for params in self.RECORDS:
                assert await store._insert_record(params) is None  # the hot statement
            rows = sync_execute(f'SELECT * FROM "{schema}".journal ORDER BY key')
            sync_execute(f'DELETE FROM "{schema}".journal')
            async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
                for params in self.RECORDS:
                    await conn.execute(insert, params)  # type: ignore[arg-type]
            assert sync_execute(f'SELECT * FROM "{schema}".journal ORDER BY key') == rows
            assert len(rows) == 3
            # A batch (group commit: one statement for the records that queued) stores
            # the same rows, floats and escapes included.
            sync_execute(f'DELETE FROM "{schema}".journal')
            stood_all = await store._write1(store._op_records, list(self.RECORDS))
            assert stood_all == [None, None, None]
            assert sync_execute(f'SELECT * FROM "{schema}".journal ORDER BY key') == rows
            # A key recorded already: the record that stands comes back.
            again = (*self.RECORDS[0][:3], 0, None, "E", "m", "o", 2.0, None)
            stood = await store._insert_record(again)
            assert stood is not None and stood["ok"] is True
            # The same in a batch: the rows inserted read None, the one recorded already
            # its record, which stands unchanged.
            fresh = [(*again[:1], f"new{n}", *again[2:]) for n in range(2)]
            stood_all = await store._write1(store._op_records, [fresh[0], again, fresh[1]])
            assert stood_all[0] is None and stood_all[2] is None
            assert stood_all[1] == stood
            assert len(sync_execute(f'SELECT * FROM "{schema}".journal')) == 5

    async def test_the_statement_is_prepared_on_its_first_use_on_a_connection(
        self, schema: str
    ) -> None:
        async with (
            PostgresStore(DSN, schema=schema, pool_size=1) as store,
            runtree.create_scope(store=store) as scope,
            scope.create_context(id="job") as ctx,
        ):
            for i in range(3):
                assert await ctx.run(lambda i=i: i, key=f"k{i}", name="step") == i
            [conn] = await idle(store)
            first = conn.pgconn.backend_pid
            names = [s.name.decode() for s in store._hot.values()]
            prepared = f"SELECT name FROM pg_prepared_statements WHERE name = '{names[0]}'"
            assert [r[0] for r in await (await conn.execute(prepared)).fetchall()] == names[:1]
            # The server ends the store's connection: the next steps use a new one,
            # which prepares the statement again.
            assert sync_execute(f"SELECT pg_terminate_backend({first})") == [(True,)]
            for i in range(3, 6):
                assert await ctx.run(lambda i=i: i, key=f"k{i}", name="step") == i
            [conn] = await idle(store)
            assert conn.pgconn.backend_pid != first
            assert [r[0] for r in await (await conn.execute(prepared)).fetchall()] == names[:1]
        keys = sync_execute(f'SELECT key FROM "{schema}".journal ORDER BY key')
        assert keys == [(f"k{i}",) for i in range(6)]

    async def test_a_nul_in_a_parameter_is_refused_as_a_cursor_refuses_it(
        self, schema: str
    ) -> None:
        # libpq would cut a text parameter at the NUL; the cursor's way refuses it.
        async with PostgresStore(DSN, schema=schema) as store:
            params = ("t", "k", "a\x00b", 1, "1", None, None, "o", 0.5, None)
            with pytest.raises(StoreError, match="NUL"):
                await store._insert_record(params)
            assert sync_execute(f'SELECT key FROM "{schema}".journal') == []
