"""Growth of session commands (DESIGN §4 "growth"): a command's cost must not grow with the
history already stored.

Subject, at 100, 1,000 and 10,000 stored commands of one session:

- ``start_command`` + ``complete_command`` (one command), per command;
- ``Sessions.get(session_id)`` (loading the session: its newest page of history).

Stores: SQLite (a temporary file, default settings) and PostgreSQL when a DSN is given
(``--pg DSN`` or ``RUNTREE_TEST_PG_DSN``; a fresh schema, dropped afterwards).
Budget: the cost at 10,000 ≤ 1.5x the cost at 100. One store holds three sessions (100,
1,000 and 10,000 commands); each round measures all three in turn, and each figure is the
median of the rounds (a first warm-up round is dropped). On PostgreSQL the commands table
is analyzed after filling, as autovacuum does after that many inserts.

    python bench/bench_sessions.py [--pg DSN] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from runtree.sessions import Session, Sessions
from runtree.stores import PostgresStore, SqliteStore, Store

SIZES = (100, 1_000, 10_000)
BUDGET = 1.5
ROUNDS = 7
COMMANDS_PER_ROUND = 40
GETS_PER_ROUND = 10


async def grow(session: Session, to: int) -> None:
    for i in range(to):
        await session.start_command("fill", {"i": i})
        await session.complete_command("fill", "success", {"i": i})
        if i % 1000 == 999:
            session.command_history.clear()  # keep the in-memory snapshot small


async def command_cost(session: Session) -> float:
    t0 = time.perf_counter()
    for i in range(COMMANDS_PER_ROUND):
        await session.start_command("measured", {"i": i})
        await session.complete_command("measured", "success", {"i": i})
    session.command_history.clear()
    return (time.perf_counter() - t0) / COMMANDS_PER_ROUND


async def get_cost(sessions: Sessions, session_id: str) -> float:
    t0 = time.perf_counter()
    for _ in range(GETS_PER_ROUND):
        await sessions.get(session_id)
    return (time.perf_counter() - t0) / GETS_PER_ROUND


async def measure(store: Store, analyze: Callable[[], None] | None) -> dict[str, dict[int, float]]:
    """One session per size in one store; rounds alternate between the sizes."""
    sessions = Sessions(store)
    by_size: dict[int, Session] = {}
    for size in SIZES:
        by_size[size] = await sessions.create(f"bench-{size}")
        await grow(by_size[size], size)
    if analyze is not None:
        analyze()  # what autovacuum does after that many inserts: planner statistics
    samples: dict[str, dict[int, list[float]]] = {"command": {}, "get": {}}
    for round_ in range(ROUNDS + 1):
        for size, session in by_size.items():
            command = await command_cost(session)
            get = await get_cost(sessions, session.session_id)
            if round_:  # the first round warms caches up
                samples["command"].setdefault(size, []).append(command)
                samples["get"].setdefault(size, []).append(get)
    return {w: {n: statistics.median(v) for n, v in row.items()} for w, row in samples.items()}


def table(name: str, figures: dict[str, dict[int, float]]) -> list[str]:
    lines = []
    for what, label in (("command", "start + complete"), ("get", "Sessions.get")):
        row = figures[what]
        ratio = row[SIZES[-1]] / row[SIZES[0]]
        cells = " | ".join(f"{row[s] * 1e3:.3f} ms" for s in SIZES)
        verdict = "ok" if ratio <= BUDGET else "OVER"
        lines.append(f"| {name} | {label} | {cells} | {ratio:.2f}x | {verdict} |")
    return lines


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default=os.environ.get("RUNTREE_TEST_PG_DSN"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict[str, dict[int, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with SqliteStore(Path(tmp) / "bench.db") as store:
            results["SQLite"] = await measure(store, None)
    if args.pg:
        import psycopg

        schema = f"rt_bench_{secrets.token_hex(4)}"

        def analyze() -> None:
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'ANALYZE "{schema}".commands')  # type: ignore[arg-type]

        try:
            async with PostgresStore(args.pg, schema=schema) as store:
                results["PostgreSQL"] = await measure(store, analyze)
        finally:
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        head = " | ".join(f"{s:,} commands" for s in SIZES)
        print(f"| store | operation | {head} | 10,000 / 100 | budget ≤ {BUDGET}x |")
        print("|---|---|" + "---|" * len(SIZES) + "---|---|")
        for name, figures in results.items():
            print("\n".join(table(name, figures)))
    over = [
        n for n, f in results.items() for w in f.values() if w[SIZES[-1]] / w[SIZES[0]] > BUDGET
    ]
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
