"""Flows the web view tests record (real flows, real stores)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import runtree

tenant = runtree.tag("tenant", serializable=True)
HOSTILE = "<script>alert(1)</script>"


@runtree.flow
async def pause(ctx: runtree.ExecutionContext) -> float:
    """Sleeps ``input`` seconds: durations the waterfall must show to scale."""
    assert isinstance(ctx.input, int | float)
    await asyncio.sleep(ctx.input)
    return ctx.input


@runtree.flow
async def timed(ctx: runtree.ExecutionContext) -> str:
    await ctx.exec(pause, 0.05, key="short")
    await ctx.exec(pause, 0.15, key="medium")
    await ctx.exec(pause, 0.3, key="long")
    return "done"


@runtree.flow
async def explode(ctx: runtree.ExecutionContext) -> None:
    raise ValueError(f"disk full {ctx.input}")


@runtree.flow
async def stage(ctx: runtree.ExecutionContext) -> None:
    ctx.details.metadata["rows"] = 3
    await ctx.run(lambda: 1, name="prepare")
    await ctx.exec(explode, "<b>on /dev/sda</b>", key="write")


@runtree.flow
async def fine(ctx: runtree.ExecutionContext) -> int:
    await ctx.run(lambda: 2, name="inner-a")
    await ctx.run(lambda: 3, name="inner-b")
    return 5


@runtree.flow
async def failing(ctx: runtree.ExecutionContext) -> None:
    await ctx.exec(fine, None, tags=[tenant("acme")])
    await ctx.exec(stage, {"n": 1})


@runtree.flow
async def hostile(ctx: runtree.ExecutionContext) -> int:
    return await ctx.run(lambda: 1, name=HOSTILE)


@runtree.flow
async def branch(ctx: runtree.ExecutionContext) -> int:
    assert isinstance(ctx.input, int)
    for j in range(ctx.input):
        await ctx.run(lambda: j, name=f"leaf {j}")
    return ctx.input


@runtree.flow
async def wide(ctx: runtree.ExecutionContext) -> int:
    """``input`` nodes: the root, 99 branches, and the rest as leaves under them."""
    assert isinstance(ctx.input, int)
    leaves = ctx.input - 100
    total = 0
    for i in range(99):
        share = leaves // 99 + (1 if i < leaves % 99 else 0)
        total += await ctx.exec(branch, share, name=f"branch {i}")
    return total


def gated(reached: threading.Event, gate: threading.Event) -> runtree.Flow[Any, str]:
    """A flow that runs ``first``, tells ``reached``, waits for ``gate``, runs ``second``."""

    @runtree.flow(name="live")
    async def live(ctx: runtree.ExecutionContext) -> str:
        await ctx.run(lambda: 1, name="first")
        reached.set()
        await asyncio.to_thread(gate.wait)
        await ctx.run(lambda: 2, name="second")
        return "ok"

    return live


@runtree.flow
async def fetch(ctx: runtree.ExecutionContext) -> list[str]:
    await asyncio.sleep(0.12)
    return ["a.md", "b.md", "c.md"]


@runtree.flow
async def embed(ctx: runtree.ExecutionContext) -> int:
    assert isinstance(ctx.input, str)
    await asyncio.sleep({"a.md": 0.08, "b.md": 0.1}.get(ctx.input, 0.06))
    return len(ctx.input)


@runtree.flow
async def save(ctx: runtree.ExecutionContext) -> None:
    await asyncio.sleep(0.03)
    raise ValueError("index 'docs' is read-only")


@runtree.flow
async def ingest(ctx: runtree.ExecutionContext) -> None:
    """The run the documentation shows: keyed steps, a parallel fan-out, a failure."""
    files = await ctx.exec(fetch, ctx.input, key="fetch")
    await ctx.run(lambda: sorted(files), name="parse")
    await ctx.parallel(*(ctx.exec(embed, f, key=f"embed:{f}") for f in files))
    await ctx.exec(save, None, key="save", tags=[tenant("acme")])
