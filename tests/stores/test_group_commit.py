"""Group commit: journal records of concurrent steps share commits on SQLite and
PostgreSQL. Every step still waits for its own record; every record survives a reopen;
a row the database refuses fails only its own step; a step cancelled while its record
waits for the shared commit is recorded all the same (it ran)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import runtree
from runtree._journal import StepRecord
from runtree.errors import StoreError
from runtree.runs import Runs
from runtree.stores import PostgresStore, SqliteStore, Store

StoreFactory = Callable[..., Store]

ROOTS = 16
STEPS = 6


@runtree.flow
async def step(ctx: runtree.ExecutionContext) -> dict[str, int]:
    ran: Counter[str] = ctx.get(RAN)
    ran[ctx.name] += 1
    assert isinstance(ctx.input, int)
    return {"i": ctx.input}


RAN: runtree.Tag[Counter[str]] = runtree.tag("ran")


async def run_roots(store: Store, ran: Counter[str]) -> dict[str, object]:
    scope = runtree.create_scope(store=store, tags=[RAN(ran)])
    results: dict[str, object] = {}

    async def one(r: int) -> None:
        async with scope.create_context(id=f"gc-{r}") as root:
            for i in range(STEPS):
                results[f"{r}/{i}"] = await root.exec(step, r * 100 + i, key=f"s{i}")

    try:
        await asyncio.gather(*(one(r) for r in range(ROOTS)))
    finally:
        await scope.dispose()
    return results


async def warm(store: Store) -> None:
    """Open the store's database now (connection, schema)."""
    assert isinstance(store, (SqliteStore, PostgresStore))
    await store.journal_load("warm-up")


def record(k: int) -> StepRecord:
    return {"name": "s", "ok": True, "value": k}


def start_records(
    store: SqliteStore | PostgresStore, prefix: str, n: int
) -> list[asyncio.Future[Any]]:
    """``n`` journal records at once, each under key ``k`` of tree ``f"{prefix}{i}"``
    with value ``i``, as tasks (they start on the next loop turn)."""
    return [
        asyncio.ensure_future(store.journal_record(f"{prefix}{i}", "k", "me", record(i)))
        for i in range(n)
    ]


async def assert_recorded(store: SqliteStore | PostgresStore, prefix: str, n: int) -> None:
    for i in range(n):
        assert (await store.journal_load(f"{prefix}{i}"))["k"]["value"] == i


def count_commits(store: Store) -> list[int]:
    """SQLite: commits that wrote journal rows on the store's loop connection (seen by
    its trace callback): an autocommitted INSERT, or a transaction holding some."""
    assert isinstance(store, SqliteStore)
    conn = store._conn
    assert conn is not None
    commits = [0]
    state = {"tx": False, "journal": False}

    def trace(sql: str) -> None:
        head = sql.strip().upper()
        if head.startswith("BEGIN"):
            state["tx"], state["journal"] = True, False
        elif head.startswith("INSERT INTO RUNTREE_JOURNAL"):
            if state["tx"]:
                state["journal"] = True
            else:
                commits[0] += 1
        elif head in ("COMMIT", "ROLLBACK"):
            commits[0] += head == "COMMIT" and state["journal"]
            state["tx"] = False

    conn.set_trace_callback(trace)
    return commits


async def transactions_of_journal(store: Store) -> tuple[int, int]:
    """PostgreSQL: (journal rows, distinct transactions that wrote them)."""
    assert isinstance(store, PostgresStore)
    import psycopg

    async with await psycopg.AsyncConnection.connect(store._dsn, autocommit=True) as conn:
        cur = await conn.execute(
            f'SELECT count(*), count(DISTINCT xmin::text) FROM "{store.schema}".journal '
            "WHERE tree_id LIKE 'gc-%%'"
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def test_concurrent_steps_share_commits_and_every_record_survives(
    open_durable: StoreFactory,
) -> None:
    ran: Counter[str] = Counter()
    async with open_durable() as store:
        if isinstance(store, SqliteStore):
            await warm(store)  # the loop connection exists now
            commits = count_commits(store)
        results = await run_roots(store, ran)
        if isinstance(store, SqliteStore):
            # One commit per step would be ROOTS * STEPS; shared commits are far fewer.
            assert 0 < commits[0] <= ROOTS * STEPS // 2
        else:
            rows, transactions = await transactions_of_journal(store)
            assert rows == ROOTS * STEPS
            assert transactions < rows  # some rows were committed together
    assert results == {f"{r}/{i}": {"i": r * 100 + i} for r in range(ROOTS) for i in range(STEPS)}
    assert ran == Counter({"step": ROOTS * STEPS})

    # A new process (a new store instance) replays every step: all records were committed.
    async with open_durable() as store:
        again = await run_roots(store, ran)
    assert again == results
    assert ran == Counter({"step": ROOTS * STEPS})


def refuse_key(store: Store, key: str) -> None:
    """Make the database itself refuse journal rows with ``key`` (a trigger)."""
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON runtree_journal "
                f"WHEN NEW.key = '{key}' BEGIN SELECT RAISE(ABORT, 'refused by policy'); END"
            )
        return
    assert isinstance(store, PostgresStore)
    import psycopg

    with psycopg.connect(store._dsn, autocommit=True) as conn:
        s = store.schema
        conn.execute(
            f'CREATE FUNCTION "{s}".refuse() RETURNS trigger AS $$ BEGIN '
            f"IF NEW.key = '{key}' THEN RAISE EXCEPTION 'refused by policy'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        conn.execute(
            f'CREATE TRIGGER refuse BEFORE INSERT ON "{s}".journal '
            f'FOR EACH ROW EXECUTE FUNCTION "{s}".refuse()'
        )


def slow_journal_inserts(store: PostgresStore, seconds: float) -> None:
    """Make each statement inserting journal rows take ``seconds`` on the server."""
    import psycopg

    with psycopg.connect(store._dsn, autocommit=True) as conn:
        s = store.schema
        conn.execute(
            f'CREATE FUNCTION "{s}".slow() RETURNS trigger AS $$ BEGIN '
            f"PERFORM pg_sleep({seconds}); RETURN NULL; END $$ LANGUAGE plpgsql"
        )
        conn.execute(
            f'CREATE TRIGGER slow AFTER INSERT ON "{s}".journal '
            f'FOR EACH STATEMENT EXECUTE FUNCTION "{s}".slow()'
        )


async def test_a_row_the_database_refuses_fails_only_its_own_step(
    open_durable: StoreFactory,
) -> None:
    async with open_durable() as store:
        await warm(store)  # schema created
        refuse_key(store, "s3")
        scope = runtree.create_scope(store=store, tags=[RAN(Counter())])
        outcomes: dict[tuple[int, int], object] = {}

        async def one(r: int) -> None:
            async with scope.create_context(id=f"gc-{r}") as root:
                for i in range(STEPS):
                    try:
                        outcomes[r, i] = await root.exec(step, i, key=f"s{i}")
                    except StoreError as exc:
                        outcomes[r, i] = exc

        try:
            await asyncio.gather(*(one(r) for r in range(ROOTS)))
        finally:
            await scope.dispose()
    for (_, i), outcome in outcomes.items():
        if i == 3:
            assert isinstance(outcome, StoreError)
            assert "refused by policy" in str(outcome)
        else:
            assert outcome == {"i": i}
    assert len(outcomes) == ROOTS * STEPS


async def test_a_step_cancelled_while_its_record_waits_is_recorded(
    open_durable: StoreFactory,
) -> None:
    ran: Counter[str] = Counter()
    started = asyncio.Event()

    @runtree.flow(name="step")
    async def cancelled_at_return(ctx: runtree.ExecutionContext) -> int:
        ran["step"] += 1
        task = asyncio.current_task()
        assert task is not None
        # The cancellation lands while the record waits for its commit (the batch of
        # this loop turn, or the write in flight).
        asyncio.get_running_loop().call_soon(task.cancel)
        started.set()
        return 7

    @runtree.flow(name="other")
    async def other(ctx: runtree.ExecutionContext) -> int:
        await started.wait()
        return 8

    async with open_durable() as store:
        scope = runtree.create_scope(store=store)
        a = scope.create_context(id="gc-cancel-a")
        b = scope.create_context(id="gc-cancel-b")
        ta = asyncio.ensure_future(a.exec(cancelled_at_return, key="k"))
        tb = asyncio.ensure_future(b.exec(other, key="k"))
        results: list[Any] = list(await asyncio.gather(ta, tb, return_exceptions=True))
        assert isinstance(results[0], asyncio.CancelledError)
        assert results[1] == 8
        await a.close()
        await b.close()
        await scope.dispose()

    async with open_durable() as store:
        scope = runtree.create_scope(store=store)
        async with scope.create_context(id="gc-cancel-a") as a:
            assert await a.exec(cancelled_at_return, key="k") == 7  # replayed, not run
        await scope.dispose()
    assert ran["step"] == 1


@pytest.mark.parametrize("n", [1, 2])
async def test_records_waiting_at_close_are_committed(tmp_path: Any, n: int) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    await warm(store)
    loop = asyncio.get_running_loop()
    loop.call_soon(lambda: None)  # another callback is ready: the record joins a batch
    pending = start_records(store, "t", n)
    await asyncio.sleep(0)
    await store.aclose()
    assert [await p for p in pending] == [record(k) for k in range(n)]
    async with SqliteStore(path) as again:
        await assert_recorded(again, "t", n)


async def test_records_in_flight_and_queued_at_close_are_all_committed(
    open_durable: StoreFactory,
) -> None:
    # More records at once than a store writes at once (PostgreSQL: two writers, the
    # rest queued for the next batch, each statement slowed down by the server so
    # that the queue is still there when the store closes): closing waits for all.
    store = open_durable()
    await warm(store)
    if isinstance(store, PostgresStore):
        slow_journal_inserts(store, 0.05)
    pending = start_records(store, "t", 12)
    await asyncio.sleep(0)  # every record is on its way or queued
    await store.aclose()
    assert [await p for p in pending] == [record(k) for k in range(12)]
    async with open_durable() as again:
        await assert_recorded(again, "t", 12)


async def test_a_record_whose_step_is_cancelled_while_it_is_queued_is_written(
    open_durable: StoreFactory,
) -> None:
    # The last of six records waits in the queue (PostgreSQL: behind two writers;
    # SQLite: in this loop turn's batch) when its step is cancelled: the step gets the
    # cancellation, the others their records, and the row is written all the same.
    async with open_durable() as store:
        await warm(store)
        tasks = start_records(store, "q", 6)
        await asyncio.sleep(0)  # each record is on its way or queued
        tasks[-1].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[-1], asyncio.CancelledError)
        assert results[:-1] == [record(k) for k in range(5)]
    async with open_durable() as again:
        await assert_recorded(again, "q", 6)


# A process running 16 roots of keyed steps; after each exec returns it writes
# "done <root> <key>" to its log (line-buffered). It is killed at a random moment.
CRASH_JOB = r"""
import asyncio, os, sys
import runtree
from runtree.stores import from_url

url, log = sys.argv[1:3]

async def main():
    out = open(log, "a", buffering=1)
    store = from_url(url)
    scope = runtree.create_scope(store=store)

    @runtree.flow
    async def step(ctx):
        return ctx.input

    async def one(r):
        async with scope.create_context(id=f"crash-{r}") as root:
            for i in range(10_000):
                await root.exec(step, i, key=f"s{i}")
                out.write(f"done crash-{r} s{i}\n")

    await asyncio.gather(*(one(r) for r in range(16)))

asyncio.run(main())
"""


def store_url(store: Store) -> str:
    assert isinstance(store, (SqliteStore, PostgresStore))
    return store.url  # the test server needs no password


@pytest.mark.parametrize("delay", [0.4, 0.9])
async def test_a_kill_loses_no_record_a_step_returned_with(
    open_durable: StoreFactory, tmp_path: Any, delay: float
) -> None:
    """Every exec that returned had its record committed: after a SIGKILL at a random
    moment of 16 concurrent roots (batched commits), each "done" line has its record."""
    import os
    import signal
    import subprocess
    import sys

    async with open_durable() as store:
        await warm(store)  # the schema exists
        url = store_url(store)
    log = tmp_path / "done.log"
    proc = subprocess.Popen([sys.executable, "-c", CRASH_JOB, url, str(log)])
    try:
        # Wait until steps are being recorded, then a little longer, then kill.
        for _ in range(600):
            await asyncio.sleep(0.05)
            if log.exists() and log.stat().st_size > 2000:
                break
        await asyncio.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done: dict[str, set[str]] = {}
    for line in log.read_text().splitlines():
        _, root, key = line.split()
        done.setdefault(root, set()).add(key)
    assert sum(len(keys) for keys in done.values()) > 16
    async with open_durable() as store:
        for root, keys in done.items():
            assert isinstance(store, (SqliteStore, PostgresStore))
            recorded = await store.journal_load(root)
            assert keys <= set(recorded), f"{root}: returned but not recorded"
            for key in keys:
                assert recorded[key]["value"] == int(key[1:])


async def test_a_batch_that_meets_another_writers_lock_waits_for_it(tmp_path: Any) -> None:
    """A batch that finds the database locked by another process's connection waits for
    the lock on the store's thread (the loop goes on), then commits every record."""
    path = tmp_path / "locked.db"
    async with SqliteStore(path) as store:
        await warm(store)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the write lock, as another process holds it
        scope = runtree.create_scope(store=store, tags=[RAN(Counter())])
        roots = [scope.create_context(id=f"lk-{r}") for r in range(4)]
        # Claim the trees first (their claims must not be what waits here).
        other.execute("COMMIT")
        for r, root in enumerate(roots):
            assert await root.exec(step, r, key="claim") == {"i": r}
        other.execute("BEGIN IMMEDIATE")
        running = asyncio.gather(*(root.exec(step, r, key="k") for r, root in enumerate(roots)))
        ticks = 0
        while ticks < 20:  # the loop is not blocked while the batch waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert not running.done()
        other.execute("COMMIT")
        other.close()
        assert await running == [{"i": r} for r in range(4)]
        for root in roots:
            await root.close()
        await scope.dispose()
    async with SqliteStore(path) as store:
        for r in range(4):
            assert (await store.journal_load(f"lk-{r}"))["k"]["value"] == {"i": r}


async def test_a_batch_that_fails_otherwise_fails_its_steps_and_hangs_none(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any error of a batch's write (not only SQLite's) reaches every step waiting in it."""
    async with SqliteStore(tmp_path / "f.db") as store:
        await warm(store)

        async def broken(tx: Any, rows: Any) -> Any:
            raise ValueError("a stored record could not be read back")

        monkeypatch.setattr(store, "_op_records", broken)
        record: Any = {"name": "s", "ok": True, "value": 1}
        calls = [store.journal_record(f"t{k}", "k", "me", record) for k in range(3)]
        outcomes = await asyncio.wait_for(
            asyncio.gather(*calls, return_exceptions=True), timeout=10
        )
    assert [type(o) for o in outcomes] == [ValueError] * 3


# -- other writes of one loop turn (claims, run rows, releases) share a commit too ------


def count_transactions(store: SqliteStore) -> list[int]:
    """Commits of explicit transactions on the store's loop connection."""
    conn = store._conn
    assert conn is not None
    commits = [0]

    def trace(sql: str) -> None:
        commits[0] += sql.strip().upper() == "COMMIT"

    conn.set_trace_callback(trace)
    return commits


async def put_meta(tx: Any, name: str, fail: bool = False) -> str:
    await tx.execute("INSERT INTO runtree_meta (name, value) VALUES (?, 'x')", (name,))
    if fail:
        raise LookupError(f"{name} refused after its insert")
    return name


async def meta_names(path: Any) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM runtree_meta")}


async def test_concurrent_roots_share_the_commits_of_their_claims_and_run_rows(
    tmp_path: Any,
) -> None:
    async with SqliteStore(tmp_path / "w.db") as store:
        await warm(store)
        commits = count_transactions(store)
        ran: Counter[str] = Counter()
        scope = runtree.create_scope(store=store, tags=[RAN(ran)])

        async def one(r: int) -> None:
            async with scope.create_context(id=f"w-{r}") as root:
                await root.exec(step, r, key="only")

        await asyncio.gather(*(one(r) for r in range(ROOTS)))
        await scope.dispose()
        # Each root writes a claim, a run row, a record, its final state and a release:
        # 5 * ROOTS transactions one by one; concurrent roots share them.
        assert 0 < commits[0] <= ROOTS
        runs = await Runs(store).list(limit=100)
    assert sorted(run.root_id for run in runs) == sorted(f"w-{r}" for r in range(ROOTS))
    assert {run.status for run in runs} == {"completed"}
    assert ran == Counter({"step": ROOTS})


async def test_a_write_that_fails_in_a_shared_transaction_fails_alone(tmp_path: Any) -> None:
    """Its statements are rolled back; the writes queued with it commit."""
    path = tmp_path / "f.db"
    async with SqliteStore(path) as store:
        await warm(store)
        commits = count_transactions(store)
        got = await asyncio.gather(
            store._write(put_meta, "a"),
            store._write(put_meta, "bad", True),
            store._write(put_meta, "c"),
            return_exceptions=True,
        )
        assert got[0] == "a" and got[2] == "c"
        assert isinstance(got[1], LookupError)
        assert commits[0] >= 1
    assert {"a", "c"} <= await meta_names(path)
    assert "bad" not in await meta_names(path)


async def test_a_queued_write_whose_caller_is_cancelled_does_not_run(tmp_path: Any) -> None:
    path = tmp_path / "c.db"
    async with SqliteStore(path) as store:
        await warm(store)
        kept = asyncio.ensure_future(store._write(put_meta, "kept"))
        dropped = asyncio.ensure_future(store._write(put_meta, "dropped"))
        await asyncio.sleep(0)  # both queued in one loop turn, not committed yet
        dropped.cancel()
        assert await kept == "kept"
        with pytest.raises(asyncio.CancelledError):
            await dropped
    names = await meta_names(path)
    assert "kept" in names and "dropped" not in names


async def test_queued_writes_that_meet_another_writers_lock_wait_for_it(tmp_path: Any) -> None:
    path = tmp_path / "l.db"
    async with SqliteStore(path) as store:
        await warm(store)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process's write lock
        running = asyncio.gather(*(store._write(put_meta, f"m{i}") for i in range(3)))
        for _ in range(10):  # the loop goes on while they wait on the store's thread
            await asyncio.sleep(0.01)
        assert not running.done()
        other.execute("COMMIT")
        other.close()
        assert await running == ["m0", "m1", "m2"]
    assert {"m0", "m1", "m2"} <= await meta_names(path)
