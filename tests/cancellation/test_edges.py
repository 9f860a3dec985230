"""Edge cases of cancellation: nested targets in one task, closing from inside, an
execution whose awaiting task is cancelled, a shared first resolve that is cancelled."""

from __future__ import annotations

import asyncio

import pytest

import runtree as rt
from runtree import Cancelled


async def test_cancelling_an_inner_and_an_outer_context_at_once() -> None:
    holder: dict[str, rt.ExecutionContext] = {}
    reached = asyncio.Event()

    @rt.flow
    async def inner(ctx: rt.ExecutionContext) -> None:
        holder["inner"] = ctx
        reached.set()
        await asyncio.sleep(30)

    @rt.flow
    async def outer(ctx: rt.ExecutionContext) -> str:
        holder["outer"] = ctx
        await ctx.exec(inner)
        return "not reached"

    async with rt.create_scope() as scope, scope.create_context() as root:
        task = asyncio.ensure_future(root.exec(outer))
        await reached.wait()
        holder["inner"].cancel("inner")
        holder["outer"].cancel("outer")
        with pytest.raises(Cancelled) as info:
            await task
        assert info.value.reason == "outer"
        assert holder["inner"].details.status == "cancelled"
        assert holder["outer"].details.status == "cancelled"
        # nothing is left pending on this task or the root
        await asyncio.sleep(0)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        assert await root.exec(rt.flow(lambda c: "fine", name="after")) == "fine"


async def test_a_boundary_cannot_close_while_its_child_runs_in_the_closing_task() -> None:
    async with rt.create_scope() as scope:
        root = scope.create_context()

        @rt.flow
        async def closes_its_root(ctx: rt.ExecutionContext) -> None:
            await root.close()

        with pytest.raises(RuntimeError, match=r"cannot close while its child"):
            await root.exec(closes_its_root)
        await root.close()
        assert root.closed


async def test_an_execution_is_cancelled_with_the_task_awaiting_it() -> None:
    started = asyncio.Event()
    statuses: list[str] = []

    @rt.flow
    async def slow(ctx: rt.ExecutionContext) -> None:
        started.set()
        await asyncio.sleep(30)

    async with rt.create_scope() as scope:
        execution = scope.exec(slow)
        execution.on_status_change(lambda status, _: statuses.append(status))

        async def waiter() -> None:
            await execution

        task = asyncio.ensure_future(waiter())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(asyncio.CancelledError):
            await execution
        assert execution.status == "cancelled"
        assert execution.context.details.status == "cancelled"
        assert statuses == ["running", "cancelled"]


async def test_a_cancelled_shared_first_resolve_lets_the_waiter_run_the_factory() -> None:
    calls = 0
    first_started = asyncio.Event()

    @rt.atom
    async def slow_atom(ctx: rt.ResolveContext) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            first_started.set()
            await asyncio.sleep(30)
        return calls

    async with rt.create_scope() as scope:
        first = asyncio.ensure_future(scope.resolve(slow_atom))
        await first_started.wait()
        second = asyncio.ensure_future(scope.resolve(slow_atom))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await second == 2
        assert await scope.resolve(slow_atom) == 2
