"""Where `runtree run` says a failure started: the deepest failed or cancelled context,
but not one that a cancellation of an ancestor only passed through."""

from __future__ import annotations

import asyncio

import pytest

import runtree as rt
from runtree.cli._tree import TreeRecorder, failing_context


async def test_a_cancelled_root_is_where_its_cancellation_started() -> None:
    started = asyncio.Event()

    @rt.flow
    async def step(ctx: rt.ExecutionContext) -> None:
        started.set()
        await asyncio.sleep(10)

    @rt.flow
    async def job(ctx: rt.ExecutionContext) -> None:
        await ctx.exec(step)

    recorder = TreeRecorder()
    async with rt.create_scope(extensions=[recorder]) as scope:
        execution = scope.exec(job)
        await started.wait()
        execution.context.cancel("stop it")  # what runs.cancel does to a live run
        with pytest.raises(rt.Cancelled, match="stop it"):
            await execution
    found = failing_context(recorder)
    assert found is execution.context
    assert isinstance(found.details.error, rt.Cancelled)


async def test_a_failed_step_is_where_its_failure_started() -> None:
    @rt.flow
    async def step(ctx: rt.ExecutionContext) -> None:
        raise ValueError("bad row")

    @rt.flow
    async def job(ctx: rt.ExecutionContext) -> None:
        await ctx.exec(step)

    recorder = TreeRecorder()
    async with rt.create_scope(extensions=[recorder]) as scope:
        with pytest.raises(ValueError, match="bad row"):
            await scope.exec(job)
    found = failing_context(recorder)
    assert found is not None and found.name == "step"
