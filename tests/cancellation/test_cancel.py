"""Structured cancellation: ctx.cancel(), close(), and the caller's own task."""

from __future__ import annotations

import asyncio

import pytest

import runtree as rt
from runtree import Cancelled


class TestCancel:
    async def test_cancel_one_child_while_a_sibling_finishes(self) -> None:
        started = asyncio.Event()
        finish_sibling = asyncio.Event()
        children: dict[str, rt.ExecutionContext] = {}
        log: list[str] = []

        @rt.flow
        async def waiter(ctx: rt.ExecutionContext) -> str:
            children[ctx.input] = ctx  # type: ignore[index]
            ctx.on_close(lambda: log.append(f"{ctx.input} closed {ctx.details.status}"))
            if ctx.input == "victim":
                started.set()
                await asyncio.Event().wait()
            await finish_sibling.wait()
            return "sibling done"

        async with rt.create_scope() as scope, scope.create_context() as root:
            victim = asyncio.ensure_future(root.exec(waiter, "victim"))
            sibling = asyncio.ensure_future(root.exec(waiter, "sibling"))
            await started.wait()
            children["victim"].cancel("user pressed stop")
            with pytest.raises(Cancelled) as info:
                await victim
            assert info.value.reason == "user pressed stop"
            assert children["victim"].cancelled
            finish_sibling.set()
            assert await sibling == "sibling done"
            assert not root.cancelled and not root.closed
            assert (
                await root.exec(rt.flow(lambda c: "still usable", name="after")) == "still usable"
            )
        assert log == ["victim closed cancelled", "sibling closed completed"]

    async def test_cancelled_caller_task_is_not_cancelled(self) -> None:
        holder: list[rt.ExecutionContext] = []

        @rt.flow
        async def slow(ctx: rt.ExecutionContext) -> None:
            holder.append(ctx)
            await asyncio.sleep(30)

        @rt.flow
        async def parent(ctx: rt.ExecutionContext) -> str:
            try:
                await ctx.exec(slow)
            except Cancelled:
                pass
            await asyncio.sleep(0)  # the task itself is not cancelled
            return "parent went on"

        async with rt.create_scope() as scope:
            execution = scope.exec(parent)
            while not holder:
                await asyncio.sleep(0)
            holder[0].cancel()
            assert await execution == "parent went on"
            assert execution.status == "completed"

    async def test_cancel_reaches_descendants_but_not_the_parent(self) -> None:
        deep: list[rt.ExecutionContext] = []
        reached = asyncio.Event()

        @rt.flow
        async def leaf(ctx: rt.ExecutionContext) -> None:
            deep.append(ctx)
            reached.set()
            await asyncio.sleep(30)

        @rt.flow
        async def middle(ctx: rt.ExecutionContext) -> None:
            deep.append(ctx)
            await ctx.exec(leaf)

        async with rt.create_scope() as scope, scope.create_context() as root:
            task = asyncio.ensure_future(root.exec(middle))
            await reached.wait()
            deep[0].cancel()
            with pytest.raises(Cancelled):
                await task
            assert deep[1].cancelled and deep[1].details.status == "cancelled"
            assert deep[0].details.status == "cancelled"
            assert not root.cancelled

    async def test_cancel_from_inside_is_delivered_at_the_next_await(self) -> None:
        after: list[str] = []

        @rt.flow
        async def quitter(ctx: rt.ExecutionContext) -> None:
            ctx.cancel("done here")
            assert ctx.cancelled
            with pytest.raises(Cancelled):
                ctx.raise_if_cancelled()
            await asyncio.sleep(1)
            after.append("not reached")

        async with rt.create_scope() as scope, scope.create_context() as root:
            with pytest.raises(Cancelled, match=r"cancelled: done here$"):
                await root.exec(quitter)
            assert after == []
            assert await root.exec(rt.flow(lambda c: 1, name="next")) == 1

    async def test_edge_triggered_body_may_catch_and_keep_awaiting(self) -> None:
        holder: list[rt.ExecutionContext] = []
        go = asyncio.Event()

        @rt.flow
        async def stubborn(ctx: rt.ExecutionContext) -> str:
            holder.append(ctx)
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                await asyncio.sleep(0)  # may keep awaiting
                assert ctx.cancelled
                return "finished anyway"
            return "not cancelled"

        async with rt.create_scope() as scope, scope.create_context() as root:
            task = asyncio.ensure_future(root.exec(stubborn))
            while not holder:
                await asyncio.sleep(0)
            await asyncio.sleep(0)
            holder[0].cancel()
            go.set()
            assert await task == "finished anyway"
            await asyncio.sleep(0)
            assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    async def test_outer_task_cancellation_propagates_unchanged(self) -> None:
        entered = asyncio.Event()
        statuses: list[str] = []

        @rt.flow
        async def inner(ctx: rt.ExecutionContext) -> None:
            ctx.on_close(lambda: statuses.append(ctx.details.status))
            entered.set()
            await asyncio.sleep(30)

        @rt.flow
        async def outer(ctx: rt.ExecutionContext) -> None:
            ctx.on_close(lambda: statuses.append(ctx.details.status))
            await ctx.exec(inner)

        async with rt.create_scope() as scope, scope.create_context() as root:
            task = asyncio.ensure_future(root.exec(outer))
            await entered.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert statuses == ["cancelled", "cancelled"]

    async def test_exec_on_a_cancelled_boundary_is_refused(self) -> None:
        async with rt.create_scope() as scope:
            root = scope.create_context()
            root.cancel("shutting down")
            with pytest.raises(Cancelled, match=r"shutting down$"):
                await root.exec(rt.flow(lambda c: 1, name="f"))
            nested = scope.create_context(parent=scope.create_context())
            nested.parent.cancel()  # type: ignore[union-attr]
            assert nested.cancelled


class TestClose:
    async def test_close_while_a_child_sleeps(self) -> None:
        log: list[str] = []
        sleeping = asyncio.Event()

        @rt.flow
        async def child(ctx: rt.ExecutionContext) -> None:
            ctx.on_close(lambda: log.append("child-closed"))
            try:
                sleeping.set()
                await asyncio.sleep(30)
            finally:
                log.append("child-unwound")

        async with rt.create_scope() as scope:
            root = scope.create_context()
            root.on_close(lambda: log.append("root-closed"))
            task = asyncio.ensure_future(root.exec(child))
            await sleeping.wait()
            await root.close()
            assert log == ["child-unwound", "child-closed", "root-closed"]
            with pytest.raises(Cancelled):
                await task

    async def test_closing_a_running_child_from_outside_cancels_and_joins_it(self) -> None:
        holder: list[rt.ExecutionContext] = []
        log: list[str] = []

        @rt.flow
        async def child(ctx: rt.ExecutionContext) -> None:
            holder.append(ctx)
            ctx.on_close(lambda: log.append("closed"))
            await asyncio.sleep(30)

        async with rt.create_scope() as scope, scope.create_context() as root:
            task = asyncio.ensure_future(root.exec(child))
            while not holder:
                await asyncio.sleep(0)
            await holder[0].close()
            assert log == ["closed"]
            assert holder[0].closed
            with pytest.raises(Cancelled):
                await task

    async def test_dispose_cancels_running_executions(self) -> None:
        started = asyncio.Event()

        @rt.flow
        async def forever(ctx: rt.ExecutionContext) -> None:
            started.set()
            await asyncio.sleep(30)

        scope = rt.create_scope()
        execution = scope.exec(forever)
        await started.wait()
        await scope.dispose()
        assert execution.status == "cancelled"
        with pytest.raises(Cancelled):
            await execution


async def test_close_joins_every_running_child_of_a_boundary() -> None:
    log: list[str] = []
    started = asyncio.Barrier(4)

    @rt.flow
    async def child(ctx: rt.ExecutionContext) -> None:
        ctx.on_close(lambda: log.append(f"{ctx.input} {ctx.details.status}"))
        await started.wait()
        await asyncio.sleep(30)

    @rt.flow
    async def quick(ctx: rt.ExecutionContext) -> str:
        return "done"

    async with rt.create_scope() as scope:
        root = scope.create_context()
        assert await root.exec(quick) == "done"  # one child at a time, then none
        tasks = [asyncio.ensure_future(root.exec(child, i)) for i in range(3)]
        await started.wait()
        assert await root.exec(quick) == "done"  # a fourth, while three run
        await root.close()
        assert sorted(log) == ["0 cancelled", "1 cancelled", "2 cancelled"]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, Cancelled) for r in results)


async def test_a_cancelled_boundary_rolls_its_resources_back() -> None:
    log: list[str] = []

    @rt.resource
    def tx(ctx: rt.ResolveContext):  # type: ignore[no-untyped-def]
        try:
            yield "tx"
        except Exception as exc:
            log.append(f"rollback: {type(exc).__name__}")
            raise
        else:
            log.append("commit")

    @rt.flow(deps={"tx": tx})
    async def uses(ctx: rt.ExecutionContext, tx: str) -> str:
        return tx

    async with rt.create_scope() as scope:
        done = scope.create_context()
        await done.exec(uses)
        await done.close()
        aborted = scope.create_context()
        await aborted.exec(uses)
        aborted.cancel("client went away")
        await aborted.close()
        assert aborted.details.status == "cancelled"
        assert isinstance(aborted.details.error, Cancelled)
    assert log == ["commit", "rollback: Cancelled"]


async def test_a_cancelled_boundary_still_reports_cleanup_failures() -> None:
    async with rt.create_scope() as scope:
        root = scope.create_context()
        root.on_close(lambda: 1 / 0)
        root.cancel()
        with pytest.raises(ExceptionGroup) as info:
            await root.close()
        assert isinstance(info.value.exceptions[0], ZeroDivisionError)
