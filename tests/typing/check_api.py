"""Static checks of the public types (run by mypy in `make test`, never executed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, assert_type

import runtree as rt
from runtree.runs import RunInfo, RunNode, Runs, RunTree

tenant: rt.Tag[str] = rt.tag("tenant")
retries = rt.tag("retries", parse=int)
region = rt.tag("region", default="eu")
assert_type(retries, rt.ParsedTag[int])
assert_type(retries("5"), rt.Tagged[int])  # parse takes the raw value
assert_type(region, rt.Tag[str])
assert_type(tenant("acme"), rt.Tagged[str])
assert_type(rt.tags.required(tenant), rt.TagDep[str])
assert_type(rt.tags.optional(tenant), rt.TagDep[str | None])
assert_type(rt.tags.all(tenant), rt.TagDep[list[str]])


@rt.atom
def config(ctx: rt.ResolveContext) -> dict[str, int]:
    return {"a": 1}


@rt.atom
async def pool(ctx: rt.ResolveContext) -> float:
    return 1.0


@rt.atom(deps={"config": config})
def gen_atom(ctx: rt.ResolveContext, config: dict[str, int]) -> Iterator[bytes]:
    yield b"x"


@rt.atom
async def agen_atom(ctx: rt.ResolveContext) -> AsyncIterator[str]:
    yield "x"


assert_type(config, rt.Atom[dict[str, int]])
assert_type(pool, rt.Atom[float])
assert_type(gen_atom, rt.Atom[bytes])
assert_type(agen_atom, rt.Atom[str])


@rt.resource(ownership="current")
async def tx(ctx: rt.ResolveContext) -> AsyncIterator[list[str]]:
    yield []


assert_type(tx, rt.Resource[list[str]])


@rt.flow
async def greet(ctx: rt.ExecutionContext) -> str:
    return "hi"


@rt.flow(parse=int)
async def double(ctx: rt.ExecutionContext) -> int:
    return 2


def sync_body(ctx: rt.ExecutionContext) -> bytes:
    return b""


sync_flow = rt.flow(sync_body, parse=str)
assert_type(greet, rt.Flow[Any, str])
assert_type(double, rt.Flow[int, int])
assert_type(sync_flow, rt.Flow[str, bytes])


async def uses(scope: rt.Scope, ctx: rt.ExecutionContext) -> None:
    assert_type(await scope.resolve(config), dict[str, int])
    assert_type(await ctx.resolve(tx), list[str])
    assert_type(await ctx.exec(greet), str)
    assert_type(await ctx.exec(double, 2, key="k", timeout=1.0, retry=2), int)
    assert_type(ctx.get(tenant), str)
    assert_type(ctx.find(tenant), str | None)
    assert_type(await ctx.run(len, "abc"), int)

    async def fetch(x: int) -> bytes:
        return b""

    assert_type(await ctx.run(fetch, 1), bytes)
    assert_type(await ctx.parallel(ctx.exec(greet)), list[str])
    assert_type(await ctx.parallel(ctx.exec(greet), ctx.exec(double, 1)), list[object])
    settled = await ctx.parallel_settled(ctx.exec(greet))
    assert_type(settled, list[rt.Settled[str]])
    execution = scope.exec(double, 1)
    assert_type(execution, rt.Execution[int])
    assert_type(await execution, int)
    detailed = scope.exec(double, 1, details=True)
    assert_type(detailed, rt.Execution[rt.ExecutionDetails[int]])
    assert_type((await detailed).value, int | None)
    assert_type(await rt.execute(greet, None, scope=scope), str)
    details = await rt.execute(greet, None, details=True)
    assert_type(details, rt.ExecutionDetails[str])
    assert_type(rt.current_context(), rt.ExecutionContext | None)
    # execute(scope=...) with scope options is rejected by the overloads:
    await rt.execute(greet, None, scope=scope, extensions=[])  # type: ignore[call-overload]
    # options are checked too
    await ctx.exec(greet, key=1)  # type: ignore[call-overload]


async def uses_sessions() -> None:
    from runtree.sessions import CommandExecution, Session, Sessions, current_session
    from runtree.stores import SqliteStore, Store, from_url

    store = from_url("memory://")
    assert_type(store, Store)
    async with SqliteStore(".runtree/runtree.db") as sqlite_store:
        sessions = Sessions(sqlite_store)
        session = await sessions.get_or_create("project", "python")
        assert_type(session, Session)
        assert_type(await sessions.list(), list[Session])
        assert_type(await session.exec(double, 1, command="build"), int)
        assert_type(await session.get_previous_command(), CommandExecution | None)
        assert_type(current_session(), Session | None)


# -- what users write ------------------------------------------------------------------


@rt.flow(parse=int)
async def triple(ctx: rt.ExecutionContext[int]) -> int:
    assert_type(ctx.input, int)  # the parsed input, typed by the annotation
    return ctx.input * 3


def untyped_input(ctx: rt.ExecutionContext) -> None:
    assert_type(ctx.input, object)  # a bare context: annotate it to type the input


async def run_any(scope: rt.Scope, flow: rt.Flow[Any, object]) -> object:
    return await scope.exec(flow)


async def sinks(scope: rt.Scope, ctx: rt.ExecutionContext) -> None:
    # Flow is covariant in its output: a Flow[..., str] goes where Flow[..., object] is asked.
    await run_any(scope, greet)
    y: object = await ctx.exec(greet)
    print(await scope.exec(greet), y)
    flows: list[rt.Flow[Any, object]] = [greet, double, triple]
    assert flows
    # raw input for a parsed flow is whatever parse accepts
    assert_type(await ctx.exec(triple, "7"), int)
    ctx.set(retries, "3")  # a parsed tag takes the raw value
    ctx.set(tenant, "acme")
    ctx.set(tenant, 1)  # type: ignore[misc]
    tenant(1)  # type: ignore[arg-type]
    greet(ctx)  # type: ignore[operator]  # flows are exec'd, not called


def store_typed() -> None:
    from runtree.stores import InMemoryStore

    rt.create_scope(store=InMemoryStore())
    rt.create_scope(store="sqlite:///x.db")  # type: ignore[arg-type]  # a Store, not a URL


async def check_runs(runs: Runs) -> None:
    assert_type(await runs.list(status="failed"), list[RunInfo])
    assert_type(await runs.list(status=["failed", "cancelled"]), list[RunInfo])
    assert_type(await runs.prune(older_than=60, status={"failed", "cancelled"}), int)
    await runs.list(status="done")  # type: ignore[arg-type]
    tree = await runs.get("r")
    assert_type(tree, RunTree)
    assert_type(list(tree.walk()), list[RunNode])
    assert_type(list(tree.walk_with_depth()), list[tuple[RunNode, int]])
    assert_type(tree.children(tree.nodes[0]), list[RunNode])


# Factories whose annotations hold Any keep their value types (an ``Any`` in a
# signature made the overloads ambiguous, and mypy answered ``Any``).
@rt.flow
async def any_ctx(ctx: rt.ExecutionContext[Any]) -> str:
    return "hi"


@rt.atom
async def settings(ctx: rt.ResolveContext) -> dict[str, Any]:
    return {"debug": True}


@rt.flow(deps={"greet": greet})
async def any_dict(ctx: rt.ExecutionContext, greet: rt.FlowHandle[Any, str]) -> dict[str, Any]:
    return {"said": await greet()}


assert_type(any_ctx, rt.Flow[Any, str])
assert_type(settings, rt.Atom[dict[str, Any]])
assert_type(any_dict, rt.Flow[Any, dict[str, Any]])


class Item:
    """A class as ``parse=`` (a pydantic model is one): the flow's input type."""

    def __init__(self, **fields: object) -> None:
        self.fields = fields


@rt.flow(parse=Item)
async def make(ctx: rt.ExecutionContext[Item]) -> int:
    return len(ctx.input.fields)


assert_type(make, rt.Flow[Item, int])
assert_type(rt.flow(sync_body, parse=Item), rt.Flow[Item, bytes])


async def uses_any_and_options(scope: rt.Scope, want: bool) -> None:
    assert_type(await scope.exec(any_ctx), str)
    assert_type(await scope.resolve(settings), dict[str, Any])
    # details= as a plain bool: the value or the details
    got = await rt.execute(greet, details=want)
    assert_type(got, str | rt.ExecutionDetails[str])
    assert_type(await rt.execute(greet, scope=scope, details=want), str | rt.ExecutionDetails[str])
    # The lazily loaded submodules are attributes for the type checker too.
    store = rt.stores.InMemoryStore()
    assert_type(rt.sessions.Sessions(store), rt.sessions.Sessions)
