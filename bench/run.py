"""runtree benchmark suite: the budgets of DESIGN "Budgets", measured as ratios.

Run with ``make bench`` (``.venv/bin/python bench/run.py``); ``--quick`` for a smoke run
of a few seconds, ``--json PATH`` to also write the results (with every sample),
``--only KEY,KEY`` to time a few benchmarks.

Method. Absolute times on this shared 2-core machine drift by tens of percent, within a
run and between runs (a bare ``await f()`` takes 60 ns when the host is quiet and 90-100
ns when it is busy), so every figure is a ratio to a floor measured in the same process,
next to it in time:

- Each statement is compiled into an async loop that repeats it ``unroll`` times per turn
  (like :mod:`timeit`), so the loop's own cost is negligible; the floor is the same loop
  around ``await f()``, ``f`` an ``async def`` returning a constant, bound to a local.
- Each side is first calibrated (which warms it up) so that one batch lasts about 20 ms
  (4 ms with ``--quick``).
- Every batch starts with ``gc.collect()`` and runs with the collector disabled; times
  come from ``time.perf_counter_ns``.
- Rounds (7; 3 with ``--quick``) go round-robin over all benchmarks. Within a round a
  benchmark runs floor, subject, floor, … (3 subject batches; 2 with ``--quick``); each
  subject batch is divided by the mean of the floor batches on either side. The figure is
  the median of these samples; "spread" is the range of the per-round medians; ns/op is
  the median subject batch.
- Memory is the traced-bytes delta of ``tracemalloc`` over many kept children; nesting
  depth is found by nesting until something stops it.

The suite reports and never gates: it exits 0 whatever the verdicts, after a
"budgets: N pass, M fail" line.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import sqlite3
import statistics
import sys
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core
import bench_peers
import bench_sqlite
import bench_structure
from harness import Group, Pair, Result, Settings, measure_pairs, pair_result

import runtree

MODULES = (bench_structure, bench_core, bench_peers, bench_sqlite)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="runtree benchmark suite (reports, never gates)")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (~10 s)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results as JSON")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 7; quick 3)")
    parser.add_argument(
        "--only",
        metavar="KEYS",
        help="comma-separated benchmark keys to time (e.g. exec_root,resolve_warm)",
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        return Settings(rounds=args.rounds or 3, reps=2, target_ns=4_000_000, quick=True)
    return Settings(rounds=args.rounds or 7, reps=3, target_ns=20_000_000, quick=False)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str]:
    return {
        "date": datetime.date.today().isoformat(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu": f"{_cpu_model()} x {os.cpu_count()} logical CPUs",
        "runtree": getattr(runtree, "__version__", "?"),
        "dishka": _version("dishka"),
        "sqlite": sqlite3.sqlite_version,
        "recursion limit": str(sys.getrecursionlimit()),
    }


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def _figure(r: Result) -> str:
    if r.value is None:
        return "-"
    if r.unit == "B":
        return f"{r.value:,.0f} B"
    if r.unit == "levels":
        return f"{r.value:,.0f} levels"
    suffix = " thr" if r.unit == "x thr" else ""
    return f"{r.value:.2f}x{suffix}"


def _ns(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render(results: list[Result], info: dict[str, str], settings: Settings) -> str:
    head = ("benchmark", "ns/op", "floor", "floor ns", "figure", "spread", "budget", "result")
    rows: list[tuple[str, ...]] = []
    for r in results:
        spread = "-" if r.spread is None else f"{r.spread[0]:.2f}-{r.spread[1]:.2f}"
        rows.append(
            (
                r.title,
                _ns(r.ns),
                r.floor or "-",
                _ns(r.floor_ns),
                _figure(r),
                spread,
                r.budget or "-",
                r.status,
            )
        )
    widths = [max(len(row[i]) for row in (head, *rows)) for i in range(len(head))]
    right = {1, 3, 4, 5}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [f"{k}: {v}" for k, v in info.items()]
    out.append(
        f"method: {settings.rounds} interleaved rounds x {settings.reps} subject batches of "
        f"~{settings.target_ns / 1e6:g} ms; figure = median of subject/floor samples"
    )
    floors = [r.floor_ns for r in results if r.floor == "bare await" and r.floor_ns]
    if floors:
        out.append(
            f"bare await floor: median {statistics.median(floors):.0f} ns over the run "
            "(≈ 60 ns when this host is quiet, ≈ 90 ns when it is busy)"
        )
    out += ["", line(head), line(tuple("-" * w for w in widths))]
    out += [line(row) for row in rows]
    notes = [(r.title, r.note) for r in results if r.note]
    if notes:
        out += ["", "notes:"]
        out += [f"  {title}: {note}" for title, note in notes]
    return "\n".join(out)


async def run(settings: Settings, only: set[str] | None) -> tuple[list[Result], float]:
    started = time.perf_counter()
    groups: list[Group] = []
    rows: list[Result] = []
    for module in MODULES:
        name = module.__name__
        _progress(f"setting up {name}")
        try:
            groups.append(await module.build(settings))
        except Exception as exc:
            rows.append(Result(name, name, "ERROR", note=f"{type(exc).__name__}: {exc}"))
    if only is not None:
        for g in groups:
            g.pairs = [p for p in g.pairs if p.key in only]
            g.rows = [r for r in g.rows if r.key in only]
    pairs: list[Pair] = [p for g in groups for p in g.pairs]
    await measure_pairs(pairs, settings, _progress)
    by_key = {p.key: p for p in pairs}
    for g in groups:
        rows += g.rows
        rows += [pair_result(p, by_key) for p in g.pairs]
        try:
            await g.close()
        except Exception as exc:
            rows.append(Result(g.name, f"{g.name} cleanup", "ERROR", note=repr(exc)))
    order = {key: i for i, key in enumerate(ORDER)}
    rows.sort(key=lambda r: order.get(r.key, len(order)))
    return rows, time.perf_counter() - started


# Report order: the budgets first, in DESIGN's order, then the informational rows.
ORDER = (
    "exec_root",
    "exec_in_flow",
    "resolve_warm",
    "create_exec_close",
    "idle_child",
    "depth_1000",
    "nesting",
    "sqlite_step",
    "exec_defaults",
    "create_exec_close_gc",
    "exec_ext",
    "exec_key",
    "exec_key_replay",
    "idle_child_full",
    "nesting_ext",
    "dishka_request",
    "dishka_app_get",
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    info = machine_info()
    only = None if args.only is None else {k.strip() for k in args.only.split(",")}
    results, elapsed = asyncio.run(run(settings, only))
    print(render(results, info, settings))
    passed = sum(r.status == "PASS" for r in results)
    failed = sum(r.status == "FAIL" for r in results)
    other = [f"{r.status}: {r.title}" for r in results if r.status in ("SKIP", "ERROR")]
    print(f"\nbudgets: {passed} pass, {failed} fail" + (f" ({'; '.join(other)})" if other else ""))
    print(f"run took {elapsed:.1f} s")
    if args.json is not None:
        payload = {
            "machine": info,
            "settings": asdict(settings),
            "elapsed_s": round(elapsed, 2),
            "summary": {"pass": passed, "fail": failed},
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
