"""Timing machinery shared by the benchmark modules (see ``run.py`` for the method).

A *timer* is an ``async def`` compiled from a statement, the way :mod:`timeit` does it:
the statement is repeated ``unroll`` times inside a ``for`` loop so that the loop's own
cost (≈ 1 ns per op at ``unroll=10``) disappears next to a bare ``await f()``
(60-100 ns here). Everything the statement uses arrives as a parameter, hence as a fast
local.

A :class:`Pair` is a subject and the floor it is divided by. :func:`measure_pairs` runs
every pair once per round, round-robin, so that slow changes of the machine (a
neighbour's load, frequency) reach every benchmark alike. Within a round the batches run
floor, subject, floor, subject, …, floor: each subject batch is divided by the mean of
the two floor batches around it, which cancels any drift slower than a batch. The
reported ratio is the median of all those samples.
"""

from __future__ import annotations

import gc
import statistics
import textwrap
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

__all__ = [
    "Env",
    "Group",
    "Pair",
    "PairStats",
    "Result",
    "Settings",
    "Timed",
    "Timer",
    "compile_timer",
    "cross_ratio",
    "measure_pairs",
    "pair_result",
    "Runner",
    "run_inline",
    "run_timed",
    "run_with_gc",
]

Env: TypeAlias = dict[str, object]
#: ``timer(n, **env)`` runs the statement ``n * unroll`` times; returns elapsed ns.
Timer: TypeAlias = Callable[..., Awaitable[int]]
#: Runs ``timer(n, **env)`` somewhere (inline, or inside a flow body); returns elapsed ns.
Runner: TypeAlias = Callable[[Timer, int, Env], Awaitable[int]]
Status: TypeAlias = Literal["PASS", "FAIL", "info", "SKIP", "ERROR"]

_TEMPLATE = """
async def _timed(_n{params}):
    _loop = _range(_n)
    _t0 = _now()
    for _ in _loop:
{body}
    return _now() - _t0
"""


@dataclass(frozen=True)
class Settings:
    """How hard to measure: rounds, batches per round and the length of one batch."""

    rounds: int
    reps: int
    target_ns: int
    quick: bool


def compile_timer(body: str, names: Sequence[str], unroll: int = 10) -> Timer:
    """Compile ``body`` (one or more statements) into an unrolled async timing loop.

    Args:
        body: Python statements run once per op; may ``await``.
        names: Every name ``body`` uses that comes from the environment.
        unroll: Copies of ``body`` per loop turn.
    """
    stmt = textwrap.dedent(body).strip("\n")
    block = textwrap.indent("\n".join([stmt] * unroll), " " * 8)
    params = "".join(f", {name}" for name in names)
    source = _TEMPLATE.format(params=params, body=block)
    namespace: dict[str, object] = {"_range": range, "_now": time.perf_counter_ns}
    exec(compile(source, f"<timer {stmt.splitlines()[0]!r}>", "exec"), namespace)
    timer = namespace["_timed"]
    assert callable(timer)
    return timer


async def run_inline(timer: Timer, n: int, env: Env) -> int:
    """The default runner: call the timer right here, in the bench's own task."""
    return await timer(n, **env)


async def run_with_gc(timer: Timer, n: int, env: Env) -> int:
    """A runner that turns the collector back on inside the batch: what an application
    pays, cyclic garbage included."""
    gc.enable()
    try:
        return await timer(n, **env)
    finally:
        gc.disable()


async def run_timed(runner: Runner, timer: Timer, n: int, env: Env) -> int:
    """One timed batch with the collector run before and kept off during it."""
    gc.collect()
    gc.disable()
    try:
        return await runner(timer, n, env)
    finally:
        gc.enable()


@dataclass
class Timed:
    """One side of a pair: a statement, its environment and where it runs."""

    label: str
    body: str
    env: Callable[[int], Awaitable[Env]]  # ops in the batch -> locals for the statement
    unroll: int = 10
    runner: Runner = run_inline
    scale: float = 1.0  # batch length relative to Settings.target_ns
    timer: Timer | None = None
    n: int = 0  # loop turns per batch, set by calibration

    def compiled(self, names: Sequence[str]) -> Timer:
        if self.timer is None:
            self.timer = compile_timer(self.body, names, self.unroll)
        return self.timer

    async def batch(self) -> float:
        """One timed batch; returns ns per op."""
        env = await self.env(self.n * self.unroll)
        timer = self.compiled(sorted(env))
        elapsed = await run_timed(self.runner, timer, self.n, env)
        return elapsed / (self.n * self.unroll)

    async def calibrate(self, target_ns: int) -> None:
        """Pick ``n`` so that one batch takes about ``target_ns * scale``; doubles as
        warm-up."""
        target_ns = round(target_ns * self.scale)
        self.n = 1
        while True:
            per_op = await self.batch()
            spent = per_op * self.n * self.unroll
            if spent >= target_ns / 8 or self.n >= 1 << 20:
                break
            self.n *= 4
        self.n = max(1, round(target_ns / (per_op * self.unroll)))
        await self.batch()  # warm at the final size


@dataclass
class PairStats:
    """Samples of one pair: each subject batch (ns per op) with the mean of the two floor
    batches around it, grouped by round."""

    rounds: list[list[tuple[float, float]]] = field(default_factory=list)

    @property
    def samples(self) -> list[tuple[float, float]]:
        return [sample for rnd in self.rounds for sample in rnd]

    @property
    def ratios(self) -> list[float]:
        """Subject / floor of every sample."""
        return [s / f for s, f in self.samples]

    def round_medians(self, throughput: bool = False) -> list[float]:
        """The median ratio of each round (floor / subject with ``throughput``)."""
        out = []
        for rnd in self.rounds:
            ratios = [f / s if throughput else s / f for s, f in rnd]
            out.append(statistics.median(ratios))
        return out

    @property
    def subject(self) -> float:
        return statistics.median(s for s, _ in self.samples)

    @property
    def floor(self) -> float:
        return statistics.median(f for _, f in self.samples)


@dataclass
class Pair:
    """A subject and the floor it is divided by, measured interleaved.

    ``budget`` is the largest allowed subject/floor ratio; with ``throughput=True`` it is
    the smallest allowed floor/subject ratio (the subject's throughput relative to the
    floor's). ``note`` builds the remark column once every pair is measured.
    """

    key: str
    title: str
    subject: Timed
    floor: Timed
    budget: float | None = None
    throughput: bool = False
    note: Callable[[dict[str, Pair]], str] | None = None
    stats: PairStats = field(default_factory=PairStats)
    error: BaseException | None = None


@dataclass
class Result:
    """One row of the report."""

    key: str
    title: str
    status: Status
    value: float | None = None  # the figure the budget applies to
    unit: str = "x"  # "x" (ratio), "x thr" (throughput ratio), "B", "levels"
    budget: str = ""
    ns: float | None = None  # subject ns per op
    floor_ns: float | None = None
    floor: str = ""  # what the ratio divides by
    spread: tuple[float, float] | None = None  # min and max of the per-round figure
    note: str = ""
    samples: list[list[tuple[float, float]]] | None = None  # (subject, floor) ns, by round


@dataclass
class Group:
    """What one benchmark module contributes: pairs to time, rows measured directly
    and a cleanup to run at the end."""

    name: str
    pairs: list[Pair] = field(default_factory=list)
    rows: list[Result] = field(default_factory=list)
    cleanups: list[Callable[[], Awaitable[object]]] = field(default_factory=list)

    async def close(self) -> None:
        for fn in reversed(self.cleanups):
            await fn()


async def measure_pairs(
    pairs: Sequence[Pair], settings: Settings, progress: Callable[[str], None]
) -> None:
    """Calibrate every pair, then run ``settings.rounds`` interleaved rounds.

    A pair whose statement raises keeps the error in ``pair.error`` and drops out; the
    others go on.
    """
    # Everything built so far is long-lived: move it out of the collector's sight so
    # that the gc.collect() before each batch only walks what the benchmarks allocate.
    gc.collect()
    gc.freeze()
    try:
        await _measure(list(pairs), settings, progress)
    finally:
        gc.unfreeze()


async def _measure(live: list[Pair], settings: Settings, progress: Callable[[str], None]) -> None:
    for pair in live[:]:
        try:
            await pair.floor.calibrate(settings.target_ns)
            await pair.subject.calibrate(settings.target_ns)
        except Exception as exc:
            pair.error = exc
            live.remove(pair)
    for r in range(settings.rounds):
        progress(f"round {r + 1}/{settings.rounds}")
        for pair in live[:]:
            try:
                # F S F S F ... F: each subject batch is divided by the mean of the floor
                # batches on either side, which cancels a drift slower than a batch.
                before = await pair.floor.batch()
                samples: list[tuple[float, float]] = []
                for _ in range(settings.reps):
                    subject = await pair.subject.batch()
                    after = await pair.floor.batch()
                    samples.append((subject, (before + after) / 2))
                    before = after
            except Exception as exc:
                pair.error = exc
                live.remove(pair)
                continue
            pair.stats.rounds.append(samples)


def pair_result(pair: Pair, pairs: dict[str, Pair]) -> Result:
    """The report row of a measured pair."""
    budget_text = ""
    if pair.budget is not None:
        budget_text = f">= {pair.budget:g}x thr" if pair.throughput else f"<= {pair.budget:g}x"
    if pair.error is not None:
        return Result(
            pair.key,
            pair.title,
            "ERROR",
            budget=budget_text,
            floor=pair.floor.label,
            note=f"{type(pair.error).__name__}: {pair.error}",
        )
    stats = pair.stats
    ratios = stats.ratios
    value = (
        statistics.median(1 / r for r in ratios) if pair.throughput else statistics.median(ratios)
    )
    per_round = stats.round_medians(pair.throughput)
    status: Status = "info"
    if pair.budget is not None:
        ok = value >= pair.budget if pair.throughput else value <= pair.budget
        status = "PASS" if ok else "FAIL"
    return Result(
        pair.key,
        pair.title,
        status,
        value=value,
        unit="x thr" if pair.throughput else "x",
        budget=budget_text,
        ns=stats.subject,
        floor_ns=stats.floor,
        floor=pair.floor.label,
        spread=(min(per_round), max(per_round)),
        note=pair.note(pairs) if pair.note is not None else "",
        samples=stats.rounds,
    )


def cross_ratio(pairs: dict[str, Pair], a: str, b: str) -> float | None:
    """Subject time of pair ``a`` over that of pair ``b``: the median of the per-round
    ratios, both measured in the same round (``None`` when either is missing)."""
    pa, pb = pairs.get(a), pairs.get(b)
    if pa is None or pb is None:
        return None
    xs = [statistics.median(s for s, _ in rnd) for rnd in pa.stats.rounds]
    ys = [statistics.median(s for s, _ in rnd) for rnd in pb.stats.rounds]
    if not xs or len(xs) != len(ys):
        return None
    return statistics.median(x / y for x, y in zip(xs, ys, strict=True))
