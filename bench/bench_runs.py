"""Run-tree benchmarks (DESIGN §4, §7), standalone: ``python bench/bench_runs.py``.

- an exec in a recorded tree on SQLite vs the same exec unrecorded (same store, same
  flow, roots with ``id=``; the recorded figure includes writing the node rows), and one
  OpenTelemetry SDK ``start_span().end()`` measured in the same run (when installed);
- ``runs.list(limit=50)`` over 100,000 runs; ``runs.get`` of a 10,000-node tree.

Batches alternate (unrecorded, recorded, ...) and the median per-exec time is reported.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import runtree
from runtree.runs import Runs
from runtree.stores import SqliteStore


@runtree.flow
async def trivial(ctx: runtree.ExecutionContext) -> None:
    return None


@runtree.flow
async def many(ctx: runtree.ExecutionContext) -> None:
    n = ctx.input
    assert isinstance(n, int)
    for _ in range(n):
        await ctx.exec(trivial)


async def per_exec(store: SqliteStore, record: str, n: int, rounds: int) -> list[float]:
    out = []
    async with runtree.create_scope(store=store, record=record) as scope:  # type: ignore[arg-type]
        for i in range(rounds):
            async with scope.create_context(id=f"bench-{record}-{i}") as root:
                t0 = time.perf_counter()
                for _ in range(n):
                    await root.exec(trivial)
                out.append((time.perf_counter() - t0) / n)
    return out


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
    return statistics.median(samples)


async def main() -> None:
    folder = Path(tempfile.mkdtemp())
    async with SqliteStore(folder / "bench.db") as store:
        plain: list[float] = []
        recorded: list[float] = []
        for _ in range(7):
            plain += await per_exec(store, "none", 2000, 1)
            recorded += await per_exec(store, "durable", 2000, 1)
        p, r = statistics.median(plain), statistics.median(recorded)
        span = otel_span()
        print(f"exec unrecorded      {p * 1e6:8.2f} us")
        print(f"exec recorded        {r * 1e6:8.2f} us   ({r / p:.2f}x unrecorded; budget 3x)")
        if span is not None:
            print(f"otel start+end span  {span * 1e6:8.2f} us   (recorded exec {r / span:.2f}x)")

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


if __name__ == "__main__":
    print(f"CPython {sys.version.split()[0]}")
    asyncio.run(main())
