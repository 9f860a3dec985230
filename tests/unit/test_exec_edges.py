"""Execution control tried from outside: a body that converts its cancellation, deep
chains with retries, executions closed before they start, values the store cannot hold,
and which roots are durable. Each test failed before its fix."""

from __future__ import annotations

import asyncio
import sys
import time
import warnings
from pathlib import Path

import pytest

import runtree as rt
from runtree.runs import Runs
from runtree.stores import SqliteStore


@rt.flow
async def converts(ctx: rt.ExecutionContext) -> None:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        raise ValueError("converted") from None


@rt.flow
async def slow(ctx: rt.ExecutionContext) -> str:
    await asyncio.sleep(5)
    return "finished"


class TestAConvertedCancellationIsTakenBack:
    async def test_a_later_timeout_still_fires(self) -> None:
        async with rt.create_scope() as scope, scope.create_context() as root:
            with pytest.raises(ValueError, match="converted"):
                await root.exec(converts, timeout=0.02)
            task = asyncio.current_task()
            assert task is not None and task.cancelling() == 0
            started = time.monotonic()
            with pytest.raises(rt.ExecTimeoutError):
                await root.exec(slow, timeout=0.05)
            assert time.monotonic() - started < 2

    async def test_a_later_cancel_in_the_same_task_is_still_delivered(self) -> None:
        async with rt.create_scope() as scope, scope.create_context() as root:

            async def driver() -> object:
                with pytest.raises(ValueError, match="converted"):
                    await root.exec(converts, name="first")
                return await root.exec(slow, name="second")

            task = asyncio.ensure_future(driver())
            for reason in ("one", "two"):
                await asyncio.sleep(0.02)
                child = root._running
                assert isinstance(child, rt.ExecutionContext)
                child.cancel(reason)
            with pytest.raises(rt.Cancelled, match="two"):
                await asyncio.wait_for(task, 2)


async def test_a_deep_chain_with_retries_raises_nesting_error_at_once() -> None:
    calls = [0]

    @rt.flow
    async def rec(ctx: rt.ExecutionContext[int]) -> int:
        calls[0] += 1
        n = ctx.input
        return 0 if n == 0 else 1 + await ctx.exec(rec, n - 1, retry=1)

    async with rt.create_scope() as scope, scope.create_context() as root:
        with pytest.raises(rt.NestingError):
            await asyncio.wait_for(root.exec(rec, sys.getrecursionlimit()), 10)
    assert calls[0] < sys.getrecursionlimit()  # each level ran once: no retry of it


class TestAnExecutionClosedBeforeItStarts:
    async def test_by_dispose(self) -> None:
        @rt.flow
        async def f(ctx: rt.ExecutionContext) -> str:
            return "ran"

        scope = rt.create_scope()
        execution = scope.exec(f)
        await scope.dispose()
        with pytest.raises(rt.Cancelled):
            await execution
        assert execution.status == "cancelled"
        assert execution.context.details.status == "cancelled"
        assert isinstance(execution.context.details.error, rt.Cancelled)

    async def test_by_closing_its_context(self) -> None:
        @rt.flow
        async def f(ctx: rt.ExecutionContext) -> str:
            return "ran"

        async with rt.create_scope() as scope:
            execution = scope.exec(f, details=True)
            await execution.context.close()
            details = await execution
            assert not details.ok and isinstance(details.error, rt.Cancelled)
            assert execution.context.details.status == "cancelled"


class TestAValueTheStoreCannotHold:
    async def test_replays_within_the_tree_and_runs_once_concurrently(self, tmp_path: Path) -> None:
        runs = [0]

        async def make_set() -> set[int]:
            runs[0] += 1
            await asyncio.sleep(0.01)
            return {1, 2, 3}

        async with SqliteStore(tmp_path / "j.db") as store:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rt.SerializationWarning)
                async with rt.create_scope(store=store) as scope:
                    async with scope.create_context(id="job") as root:
                        a = await root.run(make_set, key="s")
                        assert await root.run(make_set, key="s") is a
                        assert runs == [1]
                        await asyncio.gather(
                            root.run(make_set, key="c"), root.run(make_set, key="c")
                        )
                        assert runs == [2]
                    # Nothing was stored: a new tree with that id runs it again.
                    async with scope.create_context(id="job") as again:
                        await again.run(make_set, key="s")
                        assert runs == [3]


class TestOnlyGivenIdsAreDurable:
    async def test_reading_a_generated_id_makes_no_run_and_no_journal(self, tmp_path: Path) -> None:
        @rt.flow
        async def keyed(ctx: rt.ExecutionContext) -> int:
            assert ctx.root.id  # read: the id is made now
            return await ctx.run(lambda: 1, key="k")

        async with SqliteStore(tmp_path / "d.db") as store:
            async with rt.create_scope(store=store) as scope:
                execution = scope.exec(keyed)
                assert execution.id
                assert await execution == 1
                async with scope.create_context() as b:
                    assert b.id
                    await b.run(lambda: 2, key="k")
                async with scope.create_context(id="given") as g:
                    await g.run(lambda: 3, key="k")
            assert [r.root_id for r in await Runs(store).list()] == ["given"]
            assert await store.journal_load(execution.id) == {}
            assert set(await store.journal_load("given")) == {"k"}
