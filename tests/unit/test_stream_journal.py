"""Keyed streams claim their key when they start, like any keyed step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import runtree as rt


def counting_stream() -> tuple[rt.Flow[object, AsyncIterator[int]], list[int], asyncio.Event]:
    runs: list[int] = []
    gate = asyncio.Event()

    @rt.flow
    async def numbers(ctx: rt.ExecutionContext[int]) -> AsyncIterator[int]:
        runs.append(ctx.input)
        for i in range(ctx.input):
            await gate.wait()
            yield i

    return numbers, runs, gate


async def collect(stream: rt.FlowStream[int]) -> list[int]:
    return [item async for item in stream]


async def test_concurrent_streams_with_one_key_run_once() -> None:
    numbers, runs, gate = counting_stream()
    async with rt.create_scope() as scope, scope.create_context() as root:
        first = asyncio.create_task(collect(root.exec_stream(numbers, 3, key="n")))
        second = asyncio.create_task(collect(root.exec_stream(numbers, 3, key="n")))
        while not runs:
            await asyncio.sleep(0)
        gate.set()
        assert await first == [0, 1, 2]
        assert await second == [0, 1, 2]
    assert runs == [3]


async def test_a_stream_stopped_early_frees_its_key() -> None:
    numbers, runs, gate = counting_stream()
    gate.set()
    async with rt.create_scope() as scope, scope.create_context() as root:
        async with root.exec_stream(numbers, 3, key="n") as stream:
            async for item in stream:
                assert item == 0
                break
        assert await collect(root.exec_stream(numbers, 3, key="n")) == [0, 1, 2]
        assert await collect(root.exec_stream(numbers, 3, key="n")) == [0, 1, 2]
    assert runs == [3, 3]


async def test_replay_with_another_input_warns() -> None:
    numbers, runs, gate = counting_stream()
    gate.set()
    async with rt.create_scope() as scope, scope.create_context() as root:
        assert await collect(root.exec_stream(numbers, 2, key="n")) == [0, 1]
        with pytest.warns(rt.JournalInputWarning, match="'n'"):
            items = await collect(root.exec_stream(numbers, 5, key="n"))
        assert items == [0, 1]
    assert runs == [2]


async def test_a_stream_timeout_bounds_the_wait_for_a_held_key() -> None:
    numbers, runs, gate = counting_stream()
    async with rt.create_scope() as scope, scope.create_context() as root:
        first = asyncio.create_task(collect(root.exec_stream(numbers, 1, key="n")))
        while not runs:
            await asyncio.sleep(0)
        with pytest.raises(rt.ExecTimeoutError):
            await collect(root.exec_stream(numbers, 1, key="n", timeout=0.05))
        gate.set()
        assert await first == [0]
    assert runs == [1]


async def test_a_stream_that_waits_for_its_own_key_in_its_task_raises() -> None:
    # Only the consumer's task advances a stream: waiting there for its key never ends.
    @rt.flow
    async def items(ctx: rt.ExecutionContext) -> AsyncIterator[int]:
        yield 1

    async def body() -> list[str]:
        seen: list[str] = []
        async with rt.create_scope() as scope, scope.create_context() as ctx:
            async for _ in ctx.exec_stream(items, key="k"):
                with pytest.raises(rt.JournalReentryError, match="'k'"):
                    await ctx.exec(items, key="k")
                seen.append("loop body")
            first = ctx.exec_stream(items, key="j")
            second = ctx.exec_stream(items, key="j")
            async with first, second:
                assert await first.__aiter__().__anext__() == 1
                with pytest.raises(rt.JournalReentryError, match="'j'"):
                    await second.__aiter__().__anext__()
                seen.append("interleaved")
            # Another task may wait for the key: it gets the recorded items.
            async for _ in ctx.exec_stream(items, key="m"):
                other = asyncio.ensure_future(ctx.exec(items, key="m"))
            assert await other == [1]
        return seen

    assert await asyncio.wait_for(body(), 10) == ["loop body", "interleaved"]
