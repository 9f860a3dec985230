"""PostgresStore under faults, on real servers: a waiter whose holder lets go mid-claim,
backends terminated mid-run, a server stopped and restarted, a frozen backend. No step is
half-recorded or recorded twice, nothing hangs past the configured bound, and a run either
completes after recovery or fails with a StoreError naming the operation.

The shared server comes from ``RUNTREE_TEST_PG_DSN``; stop/restart tests start a private
throwaway server (initdb + pg_ctl, as the postgres user when root), like ``.ci/postgres.sh``.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

import runtree
from runtree.errors import StoreError
from runtree.stores import PostgresStore
from runtree.stores._sql import Tx

DSN = os.environ.get("RUNTREE_TEST_PG_DSN", "")
T = TypeVar("T")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not DSN, reason="RUNTREE_TEST_PG_DSN is not set"),
]


def sync_execute(dsn: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []


def with_app_name(dsn: str, name: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={name}"


def terminate(dsn: str, app: str) -> int:
    rows = sync_execute(
        dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        (app,),
    )
    return len(rows)


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"rt_fault_{secrets.token_hex(4)}"
    yield name
    sync_execute(DSN, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


class Hooked:
    """A Tx that runs ``before(sql)`` ahead of each statement (fault injection)."""

    def __init__(self, tx: Tx, before: Callable[[str], None]) -> None:
        self.tx, self.before = tx, before

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        self.before(sql)
        return await self.tx.execute(sql, params)

    async def one(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        self.before(sql)
        return await self.tx.one(sql, params)

    async def all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        self.before(sql)
        return await self.tx.all(sql, params)


class HookedStore(PostgresStore):
    before: Callable[[str], None] = staticmethod(lambda sql: None)

    async def _execute(
        self, fn: Callable[[Tx], Awaitable[T]], write: bool, tx: bool, what: object = None
    ) -> T:
        return await super()._execute(lambda t: fn(Hooked(t, self.before)), write, tx, what)


async def test_a_waiter_whose_holder_lets_go_mid_claim_takes_the_tree(schema: str) -> None:
    """The holder releases between the waiter's INSERT … ON CONFLICT DO NOTHING and its
    SELECT … FOR UPDATE: the row is gone. The waiter claims again; it never crashes."""
    async with (
        PostgresStore(DSN, schema=schema) as holder,
        HookedStore(DSN, schema=schema) as waiter,
    ):
        assert await holder.journal_acquire("tree", "k", "owner-a") is None
        released: list[str] = []

        def release_between(sql: str) -> None:
            if sql == waiter._q["l_holder"] and not released:
                released.append(sql)  # another connection: the holder lets go now
                sync_execute(DSN, f'DELETE FROM "{schema}".leases WHERE tree_id = %s', ("tree",))

        waiter.before = release_between
        assert await asyncio.wait_for(waiter.journal_acquire("tree", "k", "owner-b"), 10) is None
        assert released
        owner = sync_execute(
            DSN, f'SELECT owner FROM "{schema}".leases WHERE tree_id = %s', ("tree",)
        )
        assert owner == [("owner-b",)]
        holder._held.clear()


async def run_steps(
    store: PostgresStore, n: int, ran: dict[str, int], fault: Callable[[int], Awaitable[None]]
) -> list[int]:
    out: list[int] = []
    async with runtree.create_scope(store=store) as scope, scope.create_context(id="job") as ctx:
        for i in range(n):

            async def step(i: int = i) -> int:
                ran[f"k{i}"] = ran.get(f"k{i}", 0) + 1
                await fault(i)
                return i

            out.append(await ctx.run(step, key=f"k{i}", name="step"))
    return out


def journal_rows(dsn: str, schema: str) -> list[tuple[Any, ...]]:
    return sync_execute(dsn, f'SELECT key, value FROM "{schema}".journal ORDER BY recorded_at')


@pytest.mark.parametrize("pool_size", [1, 8])  # 1: a lost connection frees its slot
async def test_terminated_backends_mid_run_lose_nothing_and_record_nothing_twice(
    schema: str, pool_size: int
) -> None:
    app = f"rt_fault_{secrets.token_hex(3)}"

    async def fault(i: int) -> None:
        if i in (5, 17, 18):  # the pooled connections die between steps
            assert terminate(DSN, app) >= 1

    ran: dict[str, int] = {}
    store = PostgresStore(with_app_name(DSN, app), schema=schema, pool_size=pool_size)
    async with store:
        assert await run_steps(store, 30, ran, fault) == list(range(30))
    assert ran == {f"k{i}": 1 for i in range(30)}
    rows = journal_rows(DSN, schema)
    assert sorted(int(v) for _, v in rows) == list(range(30))


@pytest.mark.parametrize("pool_size", [1, 8])
async def test_a_backend_terminated_under_a_record_is_retried_once_safely(
    schema: str, pool_size: int
) -> None:
    app = f"rt_fault_{secrets.token_hex(3)}"
    kills: list[str] = []
    store = HookedStore(with_app_name(DSN, app), schema=schema, pool_size=pool_size)

    def kill_under_record(sql: str) -> None:
        if sql == store._q["j_insert"] and len(kills) < 2:
            kills.append(sql)
            terminate(DSN, app)  # the INSERT is sent on a connection the server just closed

    ran: dict[str, int] = {}

    async def arm(i: int) -> None:
        if i == 3:
            store.before = kill_under_record

    async with store:
        assert await run_steps(store, 6, ran, arm) == list(range(6))
    assert len(kills) == 2
    assert ran == {f"k{i}": 1 for i in range(6)}
    assert sorted(k for k, _ in journal_rows(DSN, schema)) == [f"k{i}" for i in range(6)]


async def test_a_frozen_backend_is_a_store_error_within_the_timeout(schema: str) -> None:
    app = f"rt_fault_{secrets.token_hex(3)}"
    store = PostgresStore(with_app_name(DSN, app), schema=schema, timeout=1.0)
    async with store:
        await store.journal_acquire("tree", "k0", "owner")  # connected and migrated
        pids = [
            int(r[0])
            for r in sync_execute(
                DSN, "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)
            )
        ]
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StoreError) as info:
                await store.journal_record(
                    "tree", "k0", "owner", {"name": "s", "ok": True, "value": 1}
                )
            took = time.monotonic() - started
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        assert took < 3.0
        text = str(info.value)
        assert "no answer within 1s while recording a journal entry" in text
        # After the freeze: a new connection, and the record goes in once.
        stored = await store.journal_record(
            "tree", "k0", "owner", {"name": "s", "ok": True, "value": 1}
        )
        assert stored["value"] == 1
        store._held.clear()


# -- a private server, stopped and restarted -------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class PrivateServer:
    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="runtree-pgfault-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.run: list[str] = []
        if os.getuid() == 0:
            os.chown(self.dir, *_ids("postgres"))
            self.run = ["runuser", "-u", "postgres", "--"]
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._sh(
            [
                str(self.bin / "initdb"),
                "-D",
                f"{self.dir}/data",
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ]
        )

    def _sh(self, argv: list[str]) -> None:
        subprocess.run(self.run + argv, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off"
        self._sh(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                f"{self.dir}/data",
                "-l",
                f"{self.dir}/log",
                "-w",
                "-t",
                "60",
                "-o",
                opts,
                "start",
            ]
        )

    def stop(self) -> None:
        self._sh([str(self.bin / "pg_ctl"), "-D", f"{self.dir}/data", "-m", "fast", "-w", "stop"])

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


@pytest.fixture(scope="module")
def private_server() -> Iterator[PrivateServer]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) for a private server")
    server = PrivateServer(bin_dir)
    server.start()
    try:
        yield server
    finally:
        server.remove()


async def test_a_server_restart_mid_run_is_survived(private_server: PrivateServer) -> None:
    schema = f"rt_restart_{secrets.token_hex(3)}"
    loop = asyncio.get_running_loop()

    async def fault(i: int) -> None:
        if i == 4:
            await loop.run_in_executor(None, private_server.stop)
            # Back in 2 s; meanwhile the store keeps trying (reconnect=15 s by default).
            loop.call_later(2.0, lambda: loop.run_in_executor(None, private_server.start))

    ran: dict[str, int] = {}
    async with PostgresStore(private_server.dsn, schema=schema, connect_timeout=2) as store:
        started = time.monotonic()
        assert await run_steps(store, 10, ran, fault) == list(range(10))
        assert time.monotonic() - started < 20
    assert ran == {f"k{i}": 1 for i in range(10)}
    assert sorted(int(v) for _, v in journal_rows(private_server.dsn, schema)) == list(range(10))


async def test_a_server_down_past_the_reconnect_bound_is_a_clear_error(
    private_server: PrivateServer,
) -> None:
    schema = f"rt_down_{secrets.token_hex(3)}"
    # pool_size=1: the failed connection attempts must give their slot back, or the
    # record after the server is back would wait forever.
    async with PostgresStore(
        private_server.dsn, schema=schema, connect_timeout=1, reconnect=1.5, pool_size=1
    ) as store:
        await store.journal_acquire("tree", "k", "owner")
        await asyncio.get_running_loop().run_in_executor(None, private_server.stop)
        try:
            started = time.monotonic()
            with pytest.raises(StoreError) as info:
                await store.journal_record(
                    "tree", "k", "owner", {"name": "s", "ok": True, "value": 1}
                )
            assert time.monotonic() - started < 6
        finally:
            await asyncio.get_running_loop().run_in_executor(None, private_server.start)
        assert "Cannot connect to PostgreSQL" in str(info.value)
        assert "tried for 1.5s" in str(info.value)
        count = f'SELECT count(*) FROM "{schema}".journal'
        assert sync_execute(private_server.dsn, count) == [(0,)]  # nothing half-recorded
        stored = await asyncio.wait_for(
            store.journal_record("tree", "k", "owner", {"name": "s", "ok": True, "value": 1}),
            10,
        )
        assert stored["value"] == 1
        store._held.clear()
    assert sync_execute(private_server.dsn, count) == [(1,)]
