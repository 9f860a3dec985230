"""Property: streams stopped early or failing at random points, in random ways, nested or
not. Every cleanup (the generator's finally, on_close, the resource) runs exactly once,
every stream's context ends closed with the status its ending implies, its parent closes,
and no task is left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runtree as rt

STOPS = ("none", "break", "break_async_with", "aclose", "body_error", "cancel_parent")


@dataclass
class Plan:
    items: int
    fail_at: int | None  # the generator raises before yielding this index
    stop: str
    stop_at: int
    nested: bool  # the consumer is a flow body, or the boundary itself


plans = st.builds(
    Plan,
    st.integers(min_value=0, max_value=6),
    st.one_of(st.none(), st.integers(min_value=0, max_value=6)),
    st.sampled_from(STOPS),
    st.integers(min_value=0, max_value=6),
    st.booleans(),
)


class Boom(Exception):
    pass


class BodyError(Exception):
    pass


@dataclass
class Counts:
    finally_: int = 0
    on_close: int = 0
    resource: int = 0
    delivered: list[int] = field(default_factory=list)


def expected(plan: Plan) -> tuple[list[int], str]:
    """The items the consumer sees and the child's final status."""
    produced = plan.items if plan.fail_at is None else min(plan.items, plan.fail_at)
    stopping = plan.stop != "none" and plan.stop_at < produced
    if stopping:
        return list(range(plan.stop_at + 1)), "cancelled"
    if plan.fail_at is not None and plan.fail_at < plan.items:
        return list(range(produced)), "failed"
    return list(range(produced)), "completed"


async def run_plan(plan: Plan) -> None:
    counts = Counts()
    closed = asyncio.Event()

    @rt.resource(ownership="current")
    async def res(ctx: rt.ResolveContext) -> AsyncIterator[str]:
        try:
            yield "r"
        finally:
            counts.resource += 1

    @rt.flow(deps={"res": res})
    async def gen(ctx: rt.ExecutionContext, res: str) -> AsyncIterator[int]:
        def done() -> None:
            counts.on_close += 1
            closed.set()

        ctx.on_close(done)
        try:
            for i in range(plan.items):
                if plan.fail_at == i:
                    raise Boom
                await asyncio.sleep(0)
                yield i
        finally:
            counts.finally_ += 1

    streams: list[rt.FlowStream[int]] = []

    async def consume(ctx: rt.ExecutionContext) -> None:
        stream = ctx.exec_stream(gen)
        streams.append(stream)
        if plan.stop == "break_async_with":
            async with stream:
                async for i in stream:
                    counts.delivered.append(i)
                    if i == plan.stop_at:
                        break
            return
        if plan.stop == "aclose":
            it = stream.__aiter__()
            while True:
                try:
                    i = await it.__anext__()
                except StopAsyncIteration:
                    return
                counts.delivered.append(i)
                if i == plan.stop_at:
                    await stream.aclose()
                    return
        async for i in stream:
            counts.delivered.append(i)
            if i == plan.stop_at:
                if plan.stop == "break":
                    break
                if plan.stop == "body_error":
                    raise BodyError
                if plan.stop == "cancel_parent":
                    ctx.cancel("stop")

    @rt.flow
    async def consumer(ctx: rt.ExecutionContext) -> None:
        await consume(ctx)

    items, status = expected(plan)
    async with rt.create_scope() as scope:
        boundary = scope.create_context()
        try:
            if plan.nested:
                await boundary.exec(consumer)
            else:
                await consume(boundary)
        except (Boom, BodyError, rt.Cancelled):
            pass
        if plan.stop == "break" and status == "cancelled":
            await asyncio.wait_for(closed.wait(), 5)  # the dropped loop's cleanup
        await boundary.close()

    assert counts.delivered == items
    (stream,) = streams
    child = stream.context
    assert child.closed
    assert child.details.completed_at is not None
    assert child.details.status == status, (plan, child.details.error)
    if status == "completed":
        assert child.details.metadata["stream_items"] == len(items)
    assert counts.finally_ == 1
    assert counts.on_close == 1
    assert counts.resource == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans)
def test_every_cleanup_runs_once_whatever_the_ending(plan: Plan) -> None:
    async def main() -> None:
        await run_plan(plan)
        await asyncio.sleep(0)
        me = asyncio.current_task()
        assert [t for t in asyncio.all_tasks() if t is not me and not t.done()] == []

    asyncio.run(main(), debug=True)
