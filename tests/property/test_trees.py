"""Property: random trees of nested execs mixing success, failure, timeout, cancel and
parallel. Every on_close runs exactly once, descendants before ancestors, no context stays
open, no task leaks, and cancelling the outer task always surfaces as CancelledError."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runtree as rt

ACTIONS = ("ok", "fail", "timeout", "cancel_self", "sleep")


@dataclass
class Node:
    action: str
    children: list[Node] = field(default_factory=list)
    parallel: bool = False


nodes = st.recursive(
    st.builds(Node, st.sampled_from(ACTIONS)),
    lambda kids: st.builds(
        Node, st.sampled_from(ACTIONS), st.lists(kids, max_size=3), st.booleans()
    ),
    max_leaves=12,
)


@dataclass
class Record:
    closes: dict[int, int] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    parents: dict[int, int | None] = field(default_factory=dict)
    contexts: list[rt.ExecutionContext] = field(default_factory=list)


def make_flow(record: Record) -> rt.Flow[object, object]:
    @rt.flow(name="node")
    async def run_node(ctx: rt.ExecutionContext) -> object:
        node, parent_id = ctx.input  # type: ignore[misc]
        me = len(record.parents)
        record.parents[me] = parent_id
        record.contexts.append(ctx)

        def closed() -> None:
            record.closes[me] = record.closes.get(me, 0) + 1
            record.order.append(me)

        ctx.on_close(closed)
        if node.parallel and node.children:
            await ctx.parallel_settled(*(ctx.exec(run_node, (c, me)) for c in node.children))
        else:
            for child in node.children:
                try:
                    await ctx.exec(run_node, (child, me))
                except Exception:
                    pass
        if node.action == "fail":
            raise ValueError("node failed")
        if node.action == "timeout":
            await ctx.exec(rt.flow(lambda c: asyncio.sleep(1), name="slow"), timeout=0.001)
        if node.action == "cancel_self":
            ctx.cancel("self")
            await asyncio.sleep(0)
        if node.action == "sleep":
            await asyncio.sleep(0)
        return me

    return run_node


def check(record: Record) -> None:
    assert all(n == 1 for n in record.closes.values()), record.closes
    assert set(record.closes) == set(record.parents)
    position = {node: i for i, node in enumerate(record.order)}
    for child, parent in record.parents.items():
        if parent is not None:
            assert position[child] < position[parent], "descendant closed after ancestor"
    assert all(c.closed for c in record.contexts)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=nodes)
def test_every_cleanup_runs_once_descendants_first(tree: Node) -> None:
    async def main() -> None:
        record = Record()
        flow = make_flow(record)
        async with rt.create_scope() as scope, scope.create_context() as root:
            try:
                await root.exec(flow, (tree, None))
            except Exception:
                pass
        check(record)
        await asyncio.sleep(0)
        me = asyncio.current_task()
        assert [t for t in asyncio.all_tasks() if t is not me] == []
        assert me is not None and me.cancelling() == 0

    asyncio.run(main())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=nodes, ticks=st.integers(min_value=0, max_value=6))
def test_outer_cancellation_always_surfaces_as_cancelled_error(tree: Node, ticks: int) -> None:
    async def main() -> None:
        record = Record()
        flow = make_flow(record)
        forever = Node("sleep", [tree, Node("ok")], parallel=False)

        async with rt.create_scope() as scope, scope.create_context() as root:

            @rt.flow
            async def outer(ctx: rt.ExecutionContext) -> None:
                try:
                    await ctx.exec(flow, (forever, None))
                except Exception:
                    pass
                await asyncio.sleep(30)

            task = asyncio.ensure_future(root.exec(outer))
            for _ in range(ticks):
                await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            else:  # pragma: no cover - the property under test
                raise AssertionError("outer cancellation was swallowed")
        check(record)
        await asyncio.sleep(0)
        me = asyncio.current_task()
        assert [t for t in asyncio.all_tasks() if t is not me] == []

    asyncio.run(main())
