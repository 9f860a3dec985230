"""Static checks of the streaming-flow types (run by mypy, never executed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, assert_type

import runtree as rt

tenant: rt.Tag[str] = rt.tag("tenant")


@rt.flow
async def greet(ctx: rt.ExecutionContext) -> str:
    return "hi"


@rt.flow
async def stream_tokens(ctx: rt.ExecutionContext) -> AsyncIterator[str]:
    yield "t"


@rt.flow(parse=int)
async def stream_numbers(ctx: rt.ExecutionContext) -> AsyncIterator[int]:
    yield 1


@rt.flow(deps={"tokens": stream_tokens})
async def uses_stream_handle(
    ctx: rt.ExecutionContext, tokens: rt.FlowHandle[Any, AsyncIterator[str]]
) -> None:
    assert_type(tokens.stream(), rt.FlowStream[str])


async def uses_streams(ctx: rt.ExecutionContext) -> None:
    assert_type(stream_tokens, rt.Flow[Any, AsyncIterator[str]])
    assert_type(stream_numbers, rt.Flow[int, AsyncIterator[int]])
    stream = ctx.exec_stream(stream_tokens, key="k", timeout=1.0, tags=[tenant("a")])
    assert_type(stream, rt.FlowStream[str])
    assert_type(stream.context, rt.ExecutionContext)
    async for token in stream:
        assert_type(token, str)
    async with ctx.exec_stream(stream_numbers, 3) as numbers:
        async for n in numbers:
            assert_type(n, int)
    await stream.aclose()
    assert_type(await ctx.exec(stream_tokens), list[str])
    assert_type(await ctx.exec(stream_numbers, 2), list[int])
    assert_type(await ctx.exec(greet), str)  # plain flows keep their type
    ctx.exec_stream(stream_tokens, retry=2)  # type: ignore[call-arg]  # no retries
    ctx.exec_stream(greet)  # type: ignore[arg-type]  # not a streaming flow
