"""Execution control tried from outside: a body that converts its cancellation, deep
chains with retries, executions closed before they start, values the store cannot hold,
and which roots are durable. Each test failed before its fix."""

from __future__ import annotations

import asyncio
import sys
import time
import warnings
from pathlib import Path
from typing import Any

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


@rt.flow
async def holds(ctx: rt.ExecutionContext[float]) -> str:
    await asyncio.sleep(ctx.input)
    return "held"


class TestAWaitForAHeldKeyIsReachable:
    """An exec waiting for a key another exec holds has no child context yet; its
    caller's cancel and close must reach it all the same (DESIGN §2, §6)."""

    @pytest.mark.parametrize("how", ["cancel", "close"])
    async def test_cancel_or_close_of_the_waiting_boundary(self, how: str) -> None:
        async with rt.create_scope() as scope, scope.create_context(name="root") as root:
            holder_b = scope.create_context(parent=root, name="holder")
            waiter_b = scope.create_context(parent=root, name="waiter")
            holder = asyncio.ensure_future(holder_b.exec(holds, 0.5, key="k"))
            await asyncio.sleep(0.01)
            waiter = asyncio.ensure_future(waiter_b.exec(holds, 0.0, key="k"))
            await asyncio.sleep(0.01)
            if how == "cancel":
                waiter_b.cancel("stop waiting")
                with pytest.raises(rt.Cancelled, match="stop waiting"):
                    await asyncio.wait_for(waiter, 0.3)
            else:
                await asyncio.wait_for(waiter_b.close(), 0.3)  # joins the wait
                assert waiter.done()
                with pytest.raises(rt.Cancelled):
                    await waiter
            assert await holder == "held"
            await holder_b.close()
            await waiter_b.close()

    async def test_a_flow_that_returns_joins_its_background_wait(self) -> None:
        background: list[asyncio.Future[object]] = []

        @rt.flow
        async def parent(ctx: rt.ExecutionContext) -> str:
            background.append(asyncio.ensure_future(ctx.exec(holds, 0.0, key="k")))
            await asyncio.sleep(0.02)  # the background exec waits for "k" now
            return "done"

        async with rt.create_scope() as scope, scope.create_context(name="root") as root:
            holder = asyncio.ensure_future(root.exec(holds, 0.5, key="k"))
            await asyncio.sleep(0.01)
            assert await root.exec(parent) == "done"
            assert background[0].done()  # cancelled and joined before parent completed
            with pytest.raises(rt.Cancelled):
                await background[0]
            assert await holder == "held"

    async def test_across_processes_on_a_durable_store(self, tmp_path: Path) -> None:
        # Two stores on one file: two owners of the tree, as two processes are.
        async with (
            SqliteStore(tmp_path / "w.db") as a,
            SqliteStore(tmp_path / "w.db") as b,
            rt.create_scope(store=a) as sa,
            rt.create_scope(store=b) as sb,
            sa.create_context(id="tree") as first,
        ):
            holder = asyncio.ensure_future(first.exec(holds, 0.6, key="k"))
            await asyncio.sleep(0.05)
            second = sb.create_context(id="tree")
            waiter = asyncio.ensure_future(second.exec(holds, 0.0, key="k"))
            await asyncio.sleep(0.05)
            second.cancel("stop")
            with pytest.raises(rt.Cancelled, match="stop"):
                await asyncio.wait_for(waiter, 0.4)
            await second.close()
            assert await holder == "held"


async def test_an_extension_that_answers_a_scope_exec_closes_its_root() -> None:
    events: list[str] = []

    class Memo(rt.Extension):
        async def wrap_exec(self, next, op):  # type: ignore[no-untyped-def]
            return "memo"

        def on_context_open(self, ctx: rt.ExecutionContext) -> None:
            events.append("open")

        def on_context_close(self, ctx: rt.ExecutionContext) -> None:
            events.append("close")

    @rt.flow
    async def f(ctx: rt.ExecutionContext) -> str:
        return "ran"

    scope = rt.create_scope(extensions=[Memo()])
    execution = scope.exec(f)
    assert await execution == "memo"
    assert execution.context.closed and execution.context.details.status == "completed"
    await asyncio.wait_for(scope.dispose(), 5)
    assert events == ["open", "close"]
    assert await asyncio.wait_for(rt.execute(f, None, extensions=[Memo()]), 5) == "memo"


class TestANewcomersMistakes:
    """Wrong calls get a TypeError that names the thing and what to write, and leave
    nothing open behind them."""

    async def test_tags_that_are_not_a_list_of_bound_tags(self) -> None:
        tenant = rt.tag("tenant")

        @rt.flow
        async def f(ctx: rt.ExecutionContext) -> int:
            return 1

        async with rt.create_scope() as scope:
            ctx = scope.create_context(name="req")
            for bad in (["x"], tenant("a"), 5):
                with pytest.raises(TypeError, match=r"tags= takes"):
                    await ctx.exec(f, tags=bad)  # type: ignore[arg-type]
                with pytest.raises(TypeError, match=r"tags= takes"):
                    await ctx.run(lambda: 1, tags=bad)  # type: ignore[arg-type]
                with pytest.raises(TypeError, match=r"tags= takes"):
                    scope.exec(f, tags=bad)  # type: ignore[arg-type]
                with pytest.raises(TypeError, match=r"tags= takes"):
                    scope.create_context(parent=ctx, tags=bad)  # type: ignore[arg-type]
            await ctx.close()  # nothing was left open by the refused calls
            assert ctx.closed

    async def test_a_timeout_that_is_not_a_number(self) -> None:
        @rt.flow
        async def f(ctx: rt.ExecutionContext) -> int:
            return 1

        async with rt.create_scope() as scope, scope.create_context() as ctx:
            with pytest.raises(TypeError, match=r"timeout= takes seconds .* for 'f'"):
                await ctx.exec(f, timeout="1")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=r"timeout= takes seconds"):
                scope.exec(f, timeout="x")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match=r"positive number of seconds"):
                await ctx.exec(f, timeout=0)

    async def test_an_atom_or_resource_where_a_flow_is_expected(self) -> None:
        settings = rt.atom(lambda ctx: 1, name="settings")
        db = rt.resource(lambda ctx: 1, name="db")
        async with rt.create_scope() as scope, scope.create_context() as ctx:
            with pytest.raises(TypeError, match=r"atom 'settings' .*scope\.resolve\(settings\)"):
                await ctx.exec(settings)  # type: ignore[call-overload]
            with pytest.raises(TypeError, match=r"resource 'db' .*ctx\.resolve\(db\)"):
                await ctx.exec(db)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match=r"atom 'settings' is not called"):
            settings(None)  # type: ignore[operator]

    async def test_a_tag_name_where_a_tag_is_expected(self) -> None:
        async with rt.create_scope() as scope, scope.create_context() as ctx:
            for call in (
                lambda: ctx.get("tenant"),  # type: ignore[call-overload]
                lambda: ctx.find("tenant"),  # type: ignore[call-overload]
                lambda: ctx.set("tenant", 1),  # type: ignore[call-overload]
            ):
                with pytest.raises(TypeError, match=r"takes a tag made with runtree\.tag"):
                    call()

    def test_a_store_url_where_a_store_is_expected(self) -> None:
        with pytest.raises(TypeError, match=r"from_url"):
            rt.create_scope(store="sqlite:///x.db")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"takes a runtree store"):
            rt.create_scope(store=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["plain", "keyed", "options"])
async def test_an_exec_collected_unfinished_in_another_context_leaves_its_parent_closable(
    path: str,
) -> None:
    """An exec's coroutine abandoned mid-await and freed by the garbage collector while
    another task runs (another contextvars context): its child is abandoned all the same
    (the context variable's reset there is not ours to make), so the parent closes
    instead of waiting for it forever, and nothing is printed as an ignored error."""
    import gc

    @rt.flow
    async def slow(ctx: rt.ExecutionContext) -> None:
        await asyncio.sleep(10)

    options: dict[str, Any] = {"plain": {}, "keyed": {"key": "k"}, "options": {"timeout": 5}}[path]
    unraisable: list[object] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    gc.disable()
    try:
        async with rt.create_scope() as scope:
            root = scope.create_context(name="root")

            async def start() -> None:
                coro = root.exec(slow, **options)
                coro.send(None)  # runs up to its sleep
                cycle: list[object] = [coro]
                cycle.append(cycle)  # only the collector can free it now

            await asyncio.create_task(start())

            async def collect() -> None:
                gc.collect()

            await asyncio.create_task(collect())
            await asyncio.wait_for(root.close(), 2)
            assert root.details.status == "completed"
    finally:
        gc.enable()
        sys.unraisablehook = old_hook
    assert unraisable == []
