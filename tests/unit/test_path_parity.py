"""One semantics on every exec path.

``ctx.exec`` has an inline plain path, a full path (any option), a path for scopes whose
only extensions wrap execs, a path for scopes with lifecycle hooks, the keyed lane
(``key=`` alone) and the journal's keyed full path. The same behaviour tests run on each,
and must agree; a second set checks that every way of making a context initialises the
same slots.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import pytest

import runtree as rt
from runtree import ExecOp
from runtree._context import ExecutionContext
from runtree.stores import InMemoryStore

_keys = itertools.count()


class PassThrough(rt.Extension):
    async def wrap_exec(self, next: Callable[[], Awaitable[object]], op: ExecOp) -> object:
        return await next()


class Hooks(rt.Extension):
    def on_context_open(self, ctx: rt.ExecutionContext) -> None:
        pass

    def on_context_close(self, ctx: rt.ExecutionContext) -> None:
        pass


class Path(Protocol):
    name: str

    def scope(self) -> rt.Scope: ...

    def exec(
        self, ctx: rt.ExecutionContext, flow: rt.Flow[Any, Any], input: object = None
    ) -> Awaitable[Any]: ...


class _Path:
    def __init__(
        self,
        name: str,
        extensions: tuple[rt.Extension, ...] = (),
        options: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.name = name
        self._extensions = extensions
        self._options = options

    def scope(self) -> rt.Scope:
        return rt.create_scope(extensions=self._extensions)

    def exec(
        self, ctx: rt.ExecutionContext, flow: rt.Flow[Any, Any], input: object = None
    ) -> Awaitable[Any]:
        return ctx.exec(flow, input, **self._options())

    def __repr__(self) -> str:
        return self.name


class _Recorded(_Path):
    """A scope with a store that records every root's run tree."""

    def scope(self) -> rt.Scope:
        return rt.create_scope(extensions=self._extensions, store=InMemoryStore(), record="all")


PATHS = [
    _Path("plain"),
    _Path("name", options=lambda: {"name": "named"}),
    _Path("timeout", options=lambda: {"timeout": 30.0}),
    _Path("wrap_exec", extensions=(PassThrough(),)),
    _Path("hooks", extensions=(Hooks(),)),
    # ``key=`` alone takes the keyed lane (one frame from exec to the body); with any
    # other option, even a default one, the full path: both must agree.
    _Path("key", options=lambda: {"key": f"k{next(_keys)}"}),
    _Path("key_full", options=lambda: {"key": f"k{next(_keys)}", "retry": 0}),
    _Path("key_wrapped", extensions=(PassThrough(),), options=lambda: {"key": f"k{next(_keys)}"}),
    _Path(
        "key_wrapped_full",
        extensions=(PassThrough(),),
        options=lambda: {"key": f"k{next(_keys)}", "retry": 0},
    ),
    _Path("key_hooks", extensions=(Hooks(),), options=lambda: {"key": f"k{next(_keys)}"}),
    # Run trees recorded: the recorder alone is called inline by the lanes; with another
    # wrapper it is a wrapper like any other.
    _Recorded("recorded"),
    _Recorded("recorded_key", options=lambda: {"key": f"k{next(_keys)}"}),
    _Recorded("recorded_key_full", options=lambda: {"key": f"k{next(_keys)}", "retry": 0}),
    _Recorded("recorded_wrapped", extensions=(PassThrough(),)),
    _Recorded(
        "recorded_key_wrapped",
        extensions=(PassThrough(),),
        options=lambda: {"key": f"k{next(_keys)}"},
    ),
]


@pytest.fixture(params=PATHS, ids=[p.name for p in PATHS])
def path(request: pytest.FixtureRequest) -> Path:
    return request.param  # type: ignore[no-any-return]


async def test_result_input_and_current_context(path: Path) -> None:
    seen: list[object] = []

    @rt.flow(parse=int)
    async def double(ctx: rt.ExecutionContext[int]) -> int:
        seen.append(rt.current_context() is ctx)
        seen.append(ctx.parent)
        return ctx.input * 2

    async with path.scope() as scope, scope.create_context() as root:
        assert await path.exec(root, double, "21") == 42
        assert rt.current_context() is None
    assert seen == [True, root]


async def test_sync_flow(path: Path) -> None:
    @rt.flow
    def plus_one(ctx: rt.ExecutionContext[int]) -> int:
        return ctx.input + 1

    async with path.scope() as scope, scope.create_context() as root:
        assert await path.exec(root, plus_one, 1) == 2


async def test_error_reaches_caller_as_itself_and_child_is_failed(path: Path) -> None:
    boom = ValueError("boom")
    children: list[rt.ExecutionContext] = []

    @rt.flow
    async def fails(ctx: rt.ExecutionContext) -> None:
        children.append(ctx)
        raise boom

    async with path.scope() as scope, scope.create_context() as root:
        with pytest.raises(ValueError) as info:
            await path.exec(root, fails)
        assert info.value is boom
        child = children[0]
        assert child.closed
        assert child.details.status == "failed"
        assert child.details.error is boom
        assert not root.closed


async def test_on_close_order_and_final_status(path: Path) -> None:
    log: list[str] = []

    @rt.flow
    async def inner(ctx: rt.ExecutionContext) -> None:
        ctx.on_close(lambda: log.append(f"inner {ctx.details.status}"))

    @rt.flow
    async def outer(ctx: rt.ExecutionContext) -> None:
        ctx.on_close(lambda: log.append("outer first"))
        ctx.on_close(lambda: log.append("outer second"))
        await ctx.exec(inner)

    async with path.scope() as scope, scope.create_context() as root:
        await path.exec(root, outer)
    assert log == ["inner completed", "outer second", "outer first"]


async def test_tags_and_data_are_the_childs_own(path: Path) -> None:
    color: rt.Tag[str] = rt.tag("color")

    @rt.flow
    async def child(ctx: rt.ExecutionContext) -> str:
        seen = ctx.get(color)
        ctx.set(color, "blue")
        ctx.data["mine"] = True
        return seen

    async with path.scope() as scope, scope.create_context(tags=[color("red")]) as root:
        assert await path.exec(root, child) == "red"
        assert root.get(color) == "red"
        assert "mine" not in root.data


async def test_self_cancel_gives_cancelled_without_cancelling_the_caller(path: Path) -> None:
    @rt.flow
    async def quits(ctx: rt.ExecutionContext) -> None:
        ctx.cancel("enough")
        await asyncio.sleep(10)

    async with path.scope() as scope, scope.create_context() as root:
        with pytest.raises(rt.Cancelled):
            await path.exec(root, quits)
        await asyncio.sleep(0)  # the caller's own task goes on
        assert not root.cancelled


async def test_children_in_other_tasks_are_joined(path: Path) -> None:
    log: list[str] = []
    started = asyncio.Event()

    @rt.flow
    async def slow(ctx: rt.ExecutionContext) -> None:
        started.set()
        try:
            await asyncio.sleep(10)
        finally:
            log.append("grandchild done")

    spawned: list[asyncio.Task[object]] = []

    @rt.flow
    async def spawner(ctx: rt.ExecutionContext) -> str:
        spawned.append(asyncio.create_task(ctx.exec(slow)))
        await started.wait()
        return "returned"

    async with path.scope() as scope, scope.create_context() as root:
        assert await path.exec(root, spawner) == "returned"
        log.append("caller resumed")
        with pytest.raises(rt.Cancelled):
            await spawned[0]
    assert log == ["grandchild done", "caller resumed"]


async def test_resources_boundary_shared_current_private(path: Path) -> None:
    made: list[str] = []

    @rt.resource
    async def conn(ctx: rt.ResolveContext) -> AsyncIterator[int]:
        made.append("conn")
        yield len(made)

    @rt.resource(ownership="current")
    async def scratch(ctx: rt.ResolveContext) -> AsyncIterator[int]:
        made.append("scratch")
        yield len(made)

    @rt.flow(deps={"conn": conn, "scratch": scratch})
    async def uses(ctx: rt.ExecutionContext, conn: int, scratch: int) -> tuple[int, int]:
        return conn, scratch

    async with path.scope() as scope, scope.create_context() as root:
        first = await path.exec(root, uses)
        second = await path.exec(root, uses)
    assert first[0] == second[0]  # one connection per boundary
    assert first[1] != second[1]  # a fresh scratch per exec
    assert made.count("conn") == 1
    assert made.count("scratch") == 2


async def test_closed_context_refuses(path: Path) -> None:
    @rt.flow
    async def noop(ctx: rt.ExecutionContext) -> None:
        return None

    async with path.scope() as scope:
        root = scope.create_context(name="done")
        await root.close()
        with pytest.raises(rt.ContextClosedError, match="done"):
            await path.exec(root, noop)


# -- slot parity --------------------------------------------------------------------

# Slots a context may leave unset until first use (read through getattr defaults), and
# ``_out``, which only a recorded plain exec sets (for the run-tree recorder).
LAZY = {"_id", "_data", "_completed_at", "_out"}
BOUNDARY_ONLY = {"_loop", "_root"}


def _set_slots(ctx: ExecutionContext) -> set[str]:
    return {s for s in ExecutionContext.__slots__ if hasattr(ctx, s)} - LAZY


async def _children_by_path() -> dict[str, ExecutionContext]:
    got: dict[str, ExecutionContext] = {}

    @rt.flow
    async def capture(ctx: rt.ExecutionContext) -> None:
        got[str(ctx.input)] = ctx

    @rt.flow
    async def items(ctx: rt.ExecutionContext) -> AsyncIterator[int]:
        got["stream"] = ctx
        yield 1

    for p in PATHS:
        async with p.scope() as scope, scope.create_context() as root:
            await p.exec(root, capture, p.name)
    async with rt.create_scope() as scope, scope.create_context() as root:
        await root.run(lambda: got.setdefault("run", rt.current_context()))  # type: ignore[arg-type]
        async for _ in root.exec_stream(items):
            pass
    return got


async def _boundaries() -> dict[str, ExecutionContext]:
    got: dict[str, ExecutionContext] = {}

    @rt.flow
    async def capture(ctx: rt.ExecutionContext) -> None:
        return None

    async with rt.create_scope() as scope:
        got["create_context()"] = scope.create_context()
        got["create_context(name=)"] = scope.create_context(name="n")
        got["create_context(parent=)"] = scope.create_context(parent=got["create_context()"])
        execution = scope.exec(capture)
        got["scope.exec"] = execution.context
        await execution
    return got


async def test_every_child_construction_sets_the_same_slots() -> None:
    children = await _children_by_path()
    assert set(children) >= {p.name for p in PATHS} | {"run", "stream"}
    shapes = {name: _set_slots(ctx) for name, ctx in children.items()}
    expected = set(ExecutionContext.__slots__) - LAZY - BOUNDARY_ONLY
    assert {name: shape ^ expected for name, shape in shapes.items()} == {
        name: set() for name in shapes
    }


async def test_every_boundary_construction_sets_the_same_slots() -> None:
    boundaries = await _boundaries()
    expected = set(ExecutionContext.__slots__) - LAZY
    shapes = {name: _set_slots(ctx) ^ expected for name, ctx in boundaries.items()}
    assert shapes == {name: set() for name in boundaries}
