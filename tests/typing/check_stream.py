"""Static checks of the streaming-flow types (run by mypy, never executed)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, assert_type

import runtree as rt
from runtree.sessions import Sessions

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


@rt.flow
async def stream_gen(ctx: rt.ExecutionContext) -> AsyncGenerator[int, None]:
    yield 1


@rt.flow(deps={"tokens": stream_tokens})
async def calls_stream_handle(
    ctx: rt.ExecutionContext, tokens: rt.FlowHandle[Any, AsyncIterator[str]]
) -> None:
    assert_type(await tokens(), list[str])  # awaited: the items, as ctx.exec gives them


async def awaited_streams(ctx: rt.ExecutionContext, scope: rt.Scope, want: bool) -> None:
    """Every way to await a streaming flow gives the list of its items (DESIGN §8)."""
    # annotated as an AsyncGenerator: a streaming flow all the same
    assert_type(stream_gen, rt.Flow[Any, AsyncIterator[int]])
    assert_type(await ctx.exec(stream_gen), list[int])
    assert_type(ctx.exec_stream(stream_gen), rt.FlowStream[int])
    assert_type(await scope.exec(stream_tokens), list[str])
    assert_type(await scope.exec(stream_numbers, 1), list[int])
    assert_type(await scope.exec(stream_gen), list[int])
    details = await scope.exec(stream_tokens, details=True)
    assert_type(details, rt.ExecutionDetails[list[str]])
    assert_type(await rt.execute(stream_tokens), list[str])
    assert_type(await rt.execute(stream_tokens, scope=scope), list[str])
    assert_type(await rt.execute(stream_gen, details=True), rt.ExecutionDetails[list[int]])
    got = await rt.execute(stream_gen, details=want)
    assert_type(got, list[int] | rt.ExecutionDetails[list[int]])
    assert_type(await scope.exec(greet), str)  # plain flows keep their type
    session = await Sessions(rt.stores.InMemoryStore()).create("p")
    assert_type(await session.exec(stream_tokens, None, command="c"), list[str])
    assert_type(await session.exec(greet, None, command="c"), str)
