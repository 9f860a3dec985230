"""Flows for run-tree tests (imported by the tests and by their subprocesses).

``RUNTREE_TEST_LOG`` names a file where each step body appends a line when it runs;
``RUNTREE_TEST_CRASH`` names a step before whose body the process dies (``os._exit``);
``RUNTREE_TEST_FAIL`` names a step that raises.
"""

from __future__ import annotations

import asyncio
import os

import runtree


def _note(line: str) -> None:
    path = os.environ.get("RUNTREE_TEST_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@runtree.flow
async def step(ctx: runtree.ExecutionContext) -> str:
    name = str(ctx.input)
    if os.environ.get("RUNTREE_TEST_CRASH") == name:
        os._exit(17)
    _note(f"ran {name}")
    if os.environ.get("RUNTREE_TEST_FAIL") == name:
        raise RuntimeError(f"step {name} failed")
    return name.upper()


@runtree.flow
async def job(ctx: runtree.ExecutionContext) -> list[str]:
    out: list[str] = []
    for name in ctx.input or ("s1", "s2", "s3"):  # type: ignore[attr-defined]
        out.append(await ctx.exec(step, name, key=name))
    return out


# An asyncio.Event that ``forever`` sets once it runs (in-process tests wait on it).
started: runtree.Tag[asyncio.Event | None] = runtree.tag("started", default=None)


@runtree.flow
async def forever(ctx: runtree.ExecutionContext) -> None:
    _note("started")
    event = ctx.get(started)
    if isinstance(event, asyncio.Event):
        event.set()
    await asyncio.Event().wait()
