"""Run-tree benchmarks (DESIGN §4, §7), standalone: ``python bench/bench_runs.py``
(``--pg DSN`` or ``RUNTREE_BENCH_PG_DSN`` adds PostgreSQL; ``--only exec,concurrency,
reads`` picks parts).

- exec: ``await root.exec(trivial)`` in a recorded tree on SQLite against the same exec
  unrecorded (same store, same flow, boundary roots with ``id=``), two ways: the time
  inside the root ("in the loop": what an exec costs while the tree runs; node rows are
  buffered) and the time through the root's close ("with the writes": every node row
  written). For reference, the same exec under a do-nothing ``wrap_exec`` extension (the
  exec path any exec extension takes) and one OpenTelemetry SDK ``start_span().end()``.
  Batches alternate (unrecorded, no-op extension, recorded, ...); floors and medians.
- concurrency: journaled steps (``await root.exec(step, i, key=...)``, recording on)
  from 1, 4, 16 and 64 concurrent roots, as steps per second against a raw
  insert + commit per step (``sqlite3``, WAL, ``synchronous=NORMAL``; psycopg autocommit,
  with a blocking connection and, for reference, an ``AsyncConnection``; and psycopg's
  default transaction mode, ``execute`` then ``commit()``, the floor DESIGN §4 names).
- reads: ``runs.list(limit=50)`` over 100,000 runs; ``runs.get`` of a 10,000-node tree.

The collector, as in bench/harness.py: what the imports built is frozen out of its sight
at the start (``gc.freeze()``), and each timed sample starts after a ``gc.collect()``; it
stays on during the samples.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import runtree
from runtree.runs import Runs
from runtree.stores import PostgresStore, SqliteStore, Store


@runtree.flow
async def trivial(ctx: runtree.ExecutionContext) -> None:
    return None


@runtree.flow
async def many(ctx: runtree.ExecutionContext) -> None:
    n = ctx.input
    assert isinstance(n, int)
    for _ in range(n):
        await ctx.exec(trivial)


@runtree.flow
async def step(ctx: runtree.ExecutionContext) -> dict[str, int]:
    n = ctx.input
    assert isinstance(n, int)
    return {"n": n}


class NoOp(runtree.Extension):
    async def wrap_exec(self, next: Any, op: runtree.ExecOp) -> object:
        return await next()


async def per_exec(
    store: SqliteStore, record: str, ext: bool, n: int, i: int
) -> tuple[float, float]:
    """(in the loop, with the writes): seconds per exec."""
    extensions = [NoOp()] if ext else []
    async with runtree.create_scope(
        store=store,
        record=record,  # type: ignore[arg-type]
        extensions=extensions,
    ) as scope:
        t0 = time.perf_counter()
        async with scope.create_context(id=f"bench-{record}-{ext}-{i}") as root:
            for _ in range(n):
                await root.exec(trivial)
            t1 = time.perf_counter()
        t2 = time.perf_counter()
    return (t1 - t0) / n, (t2 - t0) / n


def otel_span() -> float | None:
    try:
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return None
    tracer = TracerProvider().get_tracer("bench")
    samples = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(2000):
            tracer.start_span("x").end()
        samples.append((time.perf_counter() - t0) / 2000)
    return min(samples)


def _fig(samples: list[float], base: list[float]) -> str:
    lo, mid = min(samples), statistics.median(samples)
    return (
        f"floor {lo * 1e6:6.2f} us ({lo / min(base):.2f}x)   "
        f"median {mid * 1e6:6.2f} us ({mid / statistics.median(base):.2f}x)"
    )


async def bench_exec(folder: Path) -> None:
    async with SqliteStore(folder / "exec.db") as store:
        res: dict[str, list[tuple[float, float]]] = {"plain": [], "noop": [], "recorded": []}
        for i in range(11):
            res["plain"].append(await per_exec(store, "none", False, 2000, i))
            res["noop"].append(await per_exec(store, "none", True, 2000, i))
            res["recorded"].append(await per_exec(store, "durable", False, 2000, i))
    for j, what in ((0, "in the loop"), (1, "with the writes")):
        base = [s[j] for s in res["plain"]]
        print(f"exec ({what}), per exec; ratio to unrecorded:")
        print(f"  unrecorded            {_fig(base, base)}")
        print(f"  no-op wrap_exec ext   {_fig([s[j] for s in res['noop']], base)}")
        print(f"  recorded              {_fig([s[j] for s in res['recorded']], base)}   budget 3x")
    span = otel_span()
    if span is not None:
        rec = min(s[1] for s in res["recorded"])
        print(f"otel start+end span     {span * 1e6:6.2f} us (recorded exec {rec / span:.2f}x)")


# -- concurrency -----------------------------------------------------------------------

RAW_DDL = (
    "CREATE TABLE IF NOT EXISTS raw_journal (tree_id TEXT, key TEXT, name TEXT, ok INTEGER, "
    "value TEXT, owner TEXT, recorded_at REAL, PRIMARY KEY (tree_id, key))"
)
RAW_SQL = "INSERT INTO raw_journal VALUES ({p}, {p}, 'step', 1, {p}, 'me', {p})"


def settle() -> None:
    """Write back the dirty pages earlier sections left before a timed one starts, so the
    kernel does not write them back during it (a write to a page being written back
    waits). Measured once: a one-root run right after the raw loop took 42 to 48 us a
    step, 28 to 30 after a sync. And start each sample with the garbage of the earlier
    ones collected, as bench/harness.py does before each batch (the collector stays on
    while a sample runs: what a step leaves is collected in its time)."""
    gc.collect()
    os.sync()


def raw_sqlite(path: Path, n: int) -> float:
    """Seconds per raw INSERT + COMMIT."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(RAW_DDL)
    sql = RAW_SQL.format(p="?")
    tag = secrets.token_hex(4)
    settle()
    t0 = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN")
        conn.execute(sql, (tag, f"k{i}", f'{{"n": {i}}}', time.time()))
        conn.execute("COMMIT")
    took = (time.perf_counter() - t0) / n
    conn.close()
    return took


def raw_postgres(dsn: str, schema: str, n: int, autocommit: bool = True) -> float:
    """Seconds per raw insert with a blocking connection: autocommitted (one round
    trip), or ``execute`` + ``commit()`` in psycopg's default transaction mode (the
    literal "insert + commit": BEGIN, INSERT and COMMIT round trips)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=autocommit) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(RAW_DDL)
        conn.commit()
        sql = RAW_SQL.format(p="%s")
        tag = secrets.token_hex(4)
        t0 = time.perf_counter()
        for i in range(n):
            conn.execute(sql, (tag, f"k{i}", f'{{"n": {i}}}', time.time()))
            if not autocommit:
                conn.commit()
        return (time.perf_counter() - t0) / n


async def raw_postgres_async(dsn: str, schema: str, n: int) -> float:
    """The same with psycopg's AsyncConnection: the I/O model an asyncio program uses."""
    import psycopg

    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        await conn.execute(RAW_DDL)
        sql = RAW_SQL.format(p="%s")
        tag = secrets.token_hex(4)
        t0 = time.perf_counter()
        for i in range(n):
            await conn.execute(sql, (tag, f"k{i}", f'{{"n": {i}}}', time.time()))
        return (time.perf_counter() - t0) / n
    finally:
        await conn.close()


async def journaled(
    store: Store, roots: int, per_root: int, tag: str, record: str = "durable", waves: int = 1
) -> float:
    """Seconds per journaled step, ``per_root`` steps in each of ``roots`` concurrent
    roots (each root with an ``id=``: claimed, recorded, released), ``waves`` times one
    after the other."""

    async def one(scope: runtree.Scope, w: int, r: int) -> None:
        async with scope.create_context(id=f"{tag}-{roots}-{w}-{r}") as root:
            for i in range(per_root):
                await root.exec(step, i, key=f"k{i}")

    async with runtree.create_scope(store=store, record=record) as scope:  # type: ignore[arg-type]
        settle()
        t0 = time.perf_counter()
        for w in range(waves):
            await asyncio.gather(*(one(scope, w, r) for r in range(roots)))
        return (time.perf_counter() - t0) / (per_root * roots * waves)


def _waves(roots: int) -> int:
    """Waves of ``roots`` roots for a sample of at least 16 roots' steps. A sample of one
    root's 128 steps (≈ 3 ms) measured whether the store's WAL checkpoint (every 500
    commits) fell into it, and the first sample after the raw loop was slower whatever it
    measured (recorded or not: swapping their order swapped the verdict)."""
    return max(1, 16 // roots)


async def bench_concurrency(folder: Path, dsn: str | None) -> None:
    rounds = 5
    counts = (1, 4, 16, 64)
    print("journaled steps (steps/s; ratio to a raw insert+commit per step):")
    async with SqliteStore(folder / "steps.db") as store:
        rec: dict[int, list[float]] = {r: [] for r in counts}
        off: dict[int, list[float]] = {r: [] for r in counts}
        raws: list[float] = []
        for k in range(rounds):
            raws.append(raw_sqlite(folder / f"raw{k}.db", 2000))
            for roots in counts:
                waves = _waves(roots)
                rec[roots].append(await journaled(store, roots, 128, f"s{k}", waves=waves))
                off[roots].append(await journaled(store, roots, 128, f"n{k}", "none", waves))
        _report("SQLite", min(raws), rec, off)
    if dsn is None:
        print("  PostgreSQL: skipped (pass --pg DSN or set RUNTREE_BENCH_PG_DSN)")
        return
    schema = f"rt_bench_{secrets.token_hex(3)}"
    try:
        async with PostgresStore(dsn, schema=schema) as store:
            rec = {r: [] for r in counts}
            off = {r: [] for r in counts}
            raws = []
            araws: list[float] = []
            traws: list[float] = []
            for k in range(rounds):
                raws.append(raw_postgres(dsn, schema + "_raw", 500))
                araws.append(await raw_postgres_async(dsn, schema + "_raw", 500))
                traws.append(raw_postgres(dsn, schema + "_raw", 300, autocommit=False))
                for roots in counts:
                    waves = _waves(roots)
                    rec[roots].append(await journaled(store, roots, 64, f"p{k}", waves=waves))
                    off[roots].append(await journaled(store, roots, 64, f"q{k}", "none", waves))
            _report("PostgreSQL", min(raws), rec, off)
            print(
                f"  PostgreSQL raw insert+commit, async psycopg: {1 / min(araws):7.0f}/s; "
                f"one root recorded {min(araws) / min(rec[1]):.2f}x it, unrecorded "
                f"{min(araws) / min(off[1]):.2f}x"
            )
            print(
                "  PostgreSQL raw execute(INSERT) + commit() (psycopg's default transaction "
                f"mode): {1 / min(traws):7.0f}/s; one root recorded "
                f"{min(traws) / min(rec[1]):.2f}x it, unrecorded {min(traws) / min(off[1]):.2f}x"
            )
    finally:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}_raw" CASCADE')


def _report(
    name: str, raw: float, rec: dict[int, list[float]], off: dict[int, list[float]]
) -> None:
    print(f"  {name} raw insert+commit: {1 / raw:7.0f}/s")
    one = min(rec[1])
    for roots, samples in rec.items():
        best, plain = min(samples), min(off[roots])
        print(
            f"  {name} {roots:2d} root(s): recorded {1 / best:6.0f}/s = {raw / best:.2f}x raw, "
            f"{one / best:.2f}x one root; unrecorded {1 / plain:6.0f}/s = {raw / plain:.2f}x raw"
        )


# -- reads -----------------------------------------------------------------------------


async def bench_reads(folder: Path) -> None:
    async with SqliteStore(folder / "reads.db") as store:
        # 100,000 runs, written straight into the tables as the recorder writes them.
        conn = store._conn
        assert conn is not None
        now = time.time()
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO runtree_runs (root_id, tree_id, name, flow, input, input_ok, status, "
            "owner, created_at, updated_at) VALUES (?, ?, 'job', 'm:job', NULL, 1, ?, NULL, ?, ?)",
            [
                (f"r{i}", f"r{i}", "completed" if i % 10 else "failed", now + i, now + i)
                for i in range(100_000)
            ],
        )
        conn.execute("COMMIT")
        runs = Runs(store)
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            found = await runs.list(limit=50)
            times.append(time.perf_counter() - t0)
        assert len(found) == 50
        print(f"runs.list 100k runs  {statistics.median(times) * 1e3:8.2f} ms   (budget 50 ms)")
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            await runs.list(status="failed", limit=50)
            times.append(time.perf_counter() - t0)
        print(f"  with status=failed {statistics.median(times) * 1e3:8.2f} ms")

        async with runtree.create_scope(store=store) as scope:
            await scope.exec(many, 10_000, id="big")
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            tree = await runs.get("big")
            times.append(time.perf_counter() - t0)
        assert len(tree.nodes) == 10_001
        print(f"runs.get 10k nodes   {statistics.median(times) * 1e3:8.2f} ms   (budget 500 ms)")


async def main() -> None:
    # As bench/harness.py does: what the imports built is moved out of the collector's
    # sight, so that a full collection during a sample walks what the benchmark made,
    # not every object of every module loaded (the raw loops allocate nothing to walk).
    gc.collect()
    gc.freeze()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pg", default=os.environ.get("RUNTREE_BENCH_PG_DSN"))
    parser.add_argument("--only", default="exec,concurrency,reads")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    folder = Path(tempfile.mkdtemp())
    if "exec" in parts:
        await bench_exec(folder)
    if "concurrency" in parts:
        await bench_concurrency(folder, args.pg)
    if "reads" in parts:
        await bench_reads(folder)


if __name__ == "__main__":
    print(f"CPython {sys.version.split()[0]}")
    asyncio.run(main())
