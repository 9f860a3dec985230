"""A keyed exec has two lanes: ``key=`` alone takes the keyed lane (claim, attempt and
record in one frame), ``key=`` with any other option the full path (``exec_full`` →
``Journal.run`` → ``_attempt``). The journal's rules are the same on both: every test
here runs on each lane, with no store, on a SQLite file and with run trees recorded."""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import runtree as rt
from runtree import ExecOp
from runtree.errors import (
    JournalInputWarning,
    JournalMismatchError,
    JournalReentryError,
    NestingError,
    StepFailedError,
    StoreError,
)
from runtree.stores import SqliteStore

LANES = {
    "lane": lambda key: {"key": key},
    "full": lambda key: {"key": key, "retry": 0},
}


@pytest.fixture(params=list(LANES))
def lane(request: pytest.FixtureRequest) -> Callable[[str], dict[str, Any]]:
    return LANES[request.param]  # type: ignore[return-value]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SqliteStore | None:
    if request.param == "memory":
        return None
    return SqliteStore(tmp_path / "lanes.db")


@contextlib.asynccontextmanager
async def tree(scope: rt.Scope, store: SqliteStore | None) -> AsyncIterator[rt.ExecutionContext]:
    """A root whose journal is in ``store`` (with an id, and held: a first keyed step
    claims the tree, so the steps of the test take the lane, not its fallback), or in
    memory (no id, and no warning)."""
    async with scope.create_context(id=None if store is None else "tree") as root:
        if store is not None:
            await root.exec(_warm, None, key="warm")
        yield root


@rt.flow
async def _warm(ctx: rt.ExecutionContext) -> None:
    return None


class Ops(rt.Extension):
    def __init__(self) -> None:
        self.seen: list[tuple[str, object, int, object, str]] = []

    async def wrap_exec(self, next: Callable[[], Awaitable[object]], op: ExecOp) -> object:
        if op.kind == "subflow" and op.key != "warm":
            parent = op.context.parent
            assert parent is not None
            self.seen.append((op.kind, op.key, op.attempt, op.input, parent.name))
        return await next()


def counting() -> tuple[list[object], rt.Flow[Any, Any]]:
    runs: list[object] = []

    @rt.flow
    async def step(ctx: rt.ExecutionContext) -> object:
        runs.append(ctx.input)
        await asyncio.sleep(0)
        if ctx.input == "fail":
            raise ValueError("step failed")
        return {"n": ctx.input}

    return runs, step


async def test_a_key_runs_once_and_replays(
    lane: Callable[[str], dict[str, Any]], store: SqliteStore | None
) -> None:
    runs, step = counting()
    async with rt.create_scope(store=store) as scope, tree(scope, store) as root:
        assert await root.exec(step, 1, **lane("k")) == {"n": 1}
        assert await root.exec(step, 1, **lane("k")) == {"n": 1}
        assert root.details.metadata["journal_replays"] == ["k"]
        assert "k" in root.journal_keys()
    assert runs == [1]


async def test_a_failure_is_recorded_and_replayed(
    lane: Callable[[str], dict[str, Any]], store: SqliteStore | None
) -> None:
    runs, step = counting()
    async with rt.create_scope(store=store) as scope, tree(scope, store) as root:
        with pytest.raises(ValueError, match="step failed") as first:
            await root.exec(step, "fail", **lane("k"))
        with pytest.raises(ValueError) as again:
            await root.exec(step, "fail", **lane("k"))
        assert again.value is first.value
    assert runs == ["fail"]
    if store is None:
        return
    # A later process: the recorded failure replays as StepFailedError.
    later = SqliteStore(store.path)
    async with rt.create_scope(store=later) as scope, tree(scope, later) as root:
        with pytest.raises(StepFailedError, match="step failed"):
            await root.exec(step, "fail", **lane("k"))
    assert runs == ["fail"]


async def test_a_cancelled_step_is_not_journaled(
    lane: Callable[[str], dict[str, Any]], store: SqliteStore | None
) -> None:
    started = asyncio.Event()
    runs: list[int] = []

    @rt.flow
    async def slow(ctx: rt.ExecutionContext) -> int:
        runs.append(1)
        if len(runs) == 1:
            started.set()
            await asyncio.sleep(10)
        return len(runs)

    async with rt.create_scope(store=store) as scope, tree(scope, store) as root:
        task = asyncio.ensure_future(root.exec(slow, None, **lane("k")))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await root.exec(slow, None, **lane("k")) == 2
        assert await root.exec(slow, None, **lane("k")) == 2
    assert runs == [1, 1]


async def test_concurrent_execs_of_one_key_run_it_once(
    lane: Callable[[str], dict[str, Any]], store: SqliteStore | None
) -> None:
    runs, step = counting()
    async with rt.create_scope(store=store) as scope, tree(scope, store) as root:
        got = await asyncio.gather(*(root.exec(step, 7, **lane("k")) for _ in range(3)))
    assert got == [{"n": 7}] * 3
    assert runs == [7]


async def test_reentry_mismatch_and_changed_input_are_named(
    lane: Callable[[str], dict[str, Any]], store: SqliteStore | None
) -> None:
    runs, step = counting()

    @rt.flow
    async def outer(ctx: rt.ExecutionContext) -> object:
        return await ctx.exec(outer, None, **lane("loop"))

    @rt.flow(name="other")
    async def other(ctx: rt.ExecutionContext) -> int:
        return 0

    async with rt.create_scope(store=store) as scope, tree(scope, store) as root:
        with pytest.raises(JournalReentryError):
            await root.exec(outer, None, **lane("loop"))
        await root.exec(step, 1, **lane("k"))
        with pytest.raises(JournalMismatchError):
            await root.exec(other, 1, **lane("k"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert await root.exec(step, 2, **lane("k")) == {"n": 1}
        assert any(issubclass(w.category, JournalInputWarning) for w in caught)
    assert runs == [1]


async def test_a_bad_key_is_refused_before_the_step_runs(
    lane: Callable[[str], dict[str, Any]], store: SqliteStore | None
) -> None:
    runs, step = counting()
    async with rt.create_scope(store=store) as scope, tree(scope, store) as root:
        with pytest.raises(TypeError, match="journal key for 'step'"):
            await root.exec(step, 1, **lane(""))
        if store is not None:
            with pytest.raises(StoreError, match="NUL"):
                await root.exec(step, 1, **lane("bad\x00key"))
            with pytest.raises(StoreError, match="bytes long"):
                await root.exec(step, 1, **lane("k" * 2000))
    assert runs == []


async def test_extensions_see_the_same_op(
    lane: Callable[[str], dict[str, Any]], store: SqliteStore | None
) -> None:
    ops = Ops()
    runs, step = counting()
    scope = rt.create_scope(store=store, extensions=[ops])
    async with scope, tree(scope, store) as root:
        await root.exec(step, 3, **lane("k"))
        await root.exec(step, 3, **lane("k"))  # a replay runs no wrapper
    assert ops.seen == [("subflow", "k", 1, 3, root.name)]
    assert runs == [3]


async def test_nesting_too_deep_is_a_nesting_error(
    lane: Callable[[str], dict[str, Any]], store: SqliteStore | None
) -> None:
    @rt.flow
    async def deeper(ctx: rt.ExecutionContext[int]) -> int:
        return await ctx.exec(deeper, ctx.input + 1, **lane(f"d{ctx.input}"))

    async with rt.create_scope(store=store) as scope, tree(scope, store) as root:
        with pytest.raises(NestingError):
            await root.exec(deeper, 0, **lane("d"))
