"""parallel (fail fast) and parallel_settled."""

from __future__ import annotations

import asyncio

import pytest

import runtree as rt
from runtree import Settled


@rt.flow
async def sleepy(ctx: rt.ExecutionContext) -> object:
    await asyncio.sleep(ctx.input)  # type: ignore[arg-type]
    return ctx.input


class TestParallel:
    async def test_results_in_argument_order(self) -> None:
        async with rt.create_scope() as scope, scope.create_context() as root:
            got = await root.parallel(
                root.exec(sleepy, 0.02), root.exec(sleepy, 0.0), root.run(lambda: "fn")
            )
        assert got == [0.02, 0.0, "fn"]

    async def test_first_failure_cancels_and_waits_for_the_others(self) -> None:
        log: list[str] = []

        @rt.flow
        async def slow(ctx: rt.ExecutionContext) -> None:
            ctx.on_close(lambda: log.append(f"slow closed {ctx.details.status}"))
            await asyncio.sleep(30)

        @rt.flow
        async def broken(ctx: rt.ExecutionContext) -> None:
            await asyncio.sleep(0)
            raise ValueError("broken")

        @rt.flow
        async def parent(ctx: rt.ExecutionContext) -> None:
            try:
                await ctx.parallel(ctx.exec(slow), ctx.exec(slow), ctx.exec(broken))
            finally:
                log.append("parallel returned")

        async with rt.create_scope() as scope:
            with pytest.raises(ValueError, match=r"^broken$"):
                await scope.exec(parent)
        assert log == ["slow closed cancelled", "slow closed cancelled", "parallel returned"]

    async def test_parallel_settled_never_raises_for_members(self) -> None:
        @rt.flow
        async def fails(ctx: rt.ExecutionContext) -> None:
            raise KeyError("x")

        async with rt.create_scope() as scope, scope.create_context() as root:
            settled = await root.parallel_settled(root.exec(sleepy, 0), root.exec(fails))
        assert isinstance(settled[0], Settled)
        assert settled[0].ok and settled[0].value == 0 and settled[0].error is None
        assert not settled[1].ok and isinstance(settled[1].error, KeyError)

    async def test_cancelling_the_parent_cancels_the_branches(self) -> None:
        log: list[str] = []
        both = asyncio.Barrier(3)

        @rt.flow
        async def branch(ctx: rt.ExecutionContext) -> None:
            ctx.on_close(lambda: log.append(f"branch {ctx.details.status}"))
            await both.wait()
            await asyncio.sleep(30)

        holder: list[rt.ExecutionContext] = []

        @rt.flow
        async def parent(ctx: rt.ExecutionContext) -> None:
            holder.append(ctx)
            await ctx.parallel(ctx.exec(branch), ctx.exec(branch))

        async with rt.create_scope() as scope, scope.create_context() as root:
            task = asyncio.ensure_future(root.exec(parent))
            await both.wait()
            holder[0].cancel()
            with pytest.raises(rt.Cancelled):
                await task
        assert log == ["branch cancelled", "branch cancelled"]

    async def test_parallel_on_a_closed_context_closes_the_coroutines(self) -> None:
        async with rt.create_scope() as scope:
            root = scope.create_context()
            await root.close()
            coro = root.exec(sleepy, 0)
            with pytest.raises(rt.ContextClosedError):
                await root.parallel(coro)
