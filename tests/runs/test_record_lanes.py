"""The recorder alone is called inline by the exec lanes (no wrapper frame); with another
exec extension it is one wrapper among others. The same work gives the same run tree
either way: nested flows and functions, failures, a cancelled step, timeouts and retries,
parallel members, nested boundaries, keyed steps and their replays. And the two keyed
lanes (``key=`` alone, and the full path) record the same tree."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import runtree as rt
from runtree import ExecOp
from runtree.runs import Runs
from runtree.stores import SqliteStore


class PassThrough(rt.Extension):
    async def wrap_exec(self, next: Callable[[], Awaitable[object]], op: ExecOp) -> object:
        return await next()


@rt.flow
async def leaf(ctx: rt.ExecutionContext) -> object:
    if ctx.input == "fail":
        raise ValueError("leaf failed")
    if ctx.input == "slow":
        await asyncio.sleep(10)
    return {"leaf": ctx.input}


STARTED: dict[str, asyncio.Event] = {}


@rt.flow
async def parked(ctx: rt.ExecutionContext[str]) -> None:
    STARTED[ctx.input].set()
    await asyncio.sleep(10)


region: rt.Tag[str] = rt.tag("region", serializable=True)


@rt.flow
async def noted(ctx: rt.ExecutionContext) -> str:
    ctx.details.metadata["rows"] = 3
    ctx.set(region, "eu")
    return "noted"


counter = rt.atom(lambda scope: 1, name="counter")


@rt.flow(deps={"one": counter}, parse=int)
async def parsed(ctx: rt.ExecutionContext[int], one: int) -> int:
    return ctx.input + one


@rt.flow
async def middle(ctx: rt.ExecutionContext) -> object:
    a = await ctx.exec(leaf, 1)
    b = await ctx.run(lambda: 2)
    c = await ctx.parallel(ctx.exec(leaf, 3), ctx.exec(leaf, 4))
    return [a, b, c]


async def work(scope: rt.Scope) -> None:
    async with scope.create_context(id="tree") as root:
        await root.exec(middle, None)
        await root.exec(leaf, "k", key="k1")
        await root.exec(leaf, "k", key="k1")  # replayed
        with pytest.raises(ValueError):
            await root.exec(leaf, "fail", key="k2")
        with pytest.raises(ValueError):
            await root.exec(leaf, "fail")
        await root.exec(leaf, "k3", key="k3")
        with pytest.raises(rt.ExecTimeoutError):
            await root.exec(leaf, "slow", timeout=0.01)
        with pytest.raises(ValueError):
            await root.exec(leaf, "fail", retry=1)
        started = STARTED["parked"] = asyncio.Event()
        task = asyncio.ensure_future(root.exec(parked, "parked"))
        await started.wait()  # the step runs (its node is open) before it is cancelled
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with scope.create_context(parent=root, name="inner") as inner:
            await inner.exec(leaf, 5)
        # two execs from other tasks at once (the parent tracks them as foreign children)
        await asyncio.gather(root.exec(leaf, 6), root.exec(leaf, 7))
        with pytest.raises(ValueError):  # a flow with deps and a parser: the parse fails
            await root.exec(parsed, "not a number")
        assert await root.exec(parsed, "8") == 9
        coro = root.exec(leaf, "slow")
        coro.send(None)  # the step runs up to its sleep...
        coro.close()  # ...and is never awaited to the end: its child is abandoned
        await root.exec(noted)  # metadata and a tag of its own
        await root.exec(leaf, "last")


def shape(tree: Any) -> list[tuple[object, ...]]:
    ids = {n.node_id: i for i, n in enumerate(tree.nodes)}
    return [
        (
            n.name,
            n.kind,
            n.key,
            n.attempt,
            n.status,
            n.replayed,
            n.input,
            n.output,
            None if n.error is None else (n.error.type, n.error.message),
            ids.get(n.parent_id, n.parent_id),
            n.tags,
            n.metadata,
        )
        for n in tree.nodes
    ]


async def test_the_same_tree_inline_and_as_a_wrapper(tmp_path: Path) -> None:
    shapes = []
    exts: tuple[rt.Extension, ...]
    for name, exts in (("inline", ()), ("wrapper", (PassThrough(),))):
        async with SqliteStore(tmp_path / f"{name}.db") as store:
            scope = rt.create_scope(store=store, extensions=exts)
            assert (scope._record_only is not None) == (not exts)
            async with scope:
                await work(scope)
            shapes.append(shape(await Runs(store).get("tree")))
    inline, wrapped = shapes
    assert inline == wrapped
    names = [s[0] for s in inline]
    assert names.count("leaf") == 16 and names.count("parsed") == 2 and "inner" in names
    assert ("parked", "flow", None, 1, "cancelled") in [s[:5] for s in inline]
    assert [s[10:] for s in inline if s[0] == "noted"] == [({"region": "eu"}, {"rows": 3})]
    abandoned = [s for s in inline if s[0] == "leaf" and s[4] == "cancelled"]
    assert [s[8] for s in abandoned] == [("GeneratorExit", "")]


async def test_the_same_tree_on_both_keyed_lanes(tmp_path: Path) -> None:
    """``key=`` alone (the keyed lane) and ``key=`` with ``retry=0`` (the full path)
    record equal trees but for ids and times."""
    shapes = {}
    for name, extra in (("lane", {}), ("full", {"retry": 0})):
        async with SqliteStore(tmp_path / f"{name}.db") as store:
            scope = rt.create_scope(store=store)
            async with scope, scope.create_context(id="tree") as root:
                await root.exec(leaf, 1, key="a", **extra)
                await root.exec(leaf, 1, key="a", **extra)
                with pytest.raises(ValueError):
                    await root.exec(leaf, "fail", key="b", **extra)
            shapes[name] = shape(await Runs(store).get("tree"))
    assert shapes["lane"] == shapes["full"]
    assert [s[:6] for s in shapes["lane"]] == [
        ("root", "root", None, 1, "failed", False),
        ("leaf", "flow", "a", 1, "completed", False),
        ("leaf", "flow", "a", 1, "completed", True),
        ("leaf", "flow", "b", 1, "failed", False),
    ]


async def test_the_recorder_keeps_nothing_once_the_tree_is_written(tmp_path: Path) -> None:
    """The contexts, side tables (keys, parallel parents, inputs as given) and open
    records of a finished tree are all let go: a long-lived scope does not grow."""
    async with SqliteStore(tmp_path / "keep.db") as store:
        scope = rt.create_scope(store=store)
        async with scope:
            recorder = scope._record_only
            assert recorder is not None
            await work(scope)  # parallel members, a parsed input, keys, failures
            async with scope.create_context(id="again") as root:
                await root.exec(leaf, 1, key="k")
                await root.exec(parsed, "2")
            assert recorder.runs == {} and recorder.open == []
            assert recorder._keys == {} and recorder._parents == {} and recorder._inputs == {}
            assert recorder.buffer == [] and recorder._ending == {}
