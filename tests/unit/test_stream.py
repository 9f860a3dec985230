"""Streaming flows: ``ctx.exec_stream`` (DESIGN §8)."""

from __future__ import annotations

import asyncio
import contextvars
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

import runtree as rt
from runtree.errors import (
    Cancelled,
    ContextClosedError,
    ExecTimeoutError,
    ParseError,
    SerializationWarning,
)

tenant = rt.tag("tenant", default="none")


@rt.flow
async def count(ctx: rt.ExecutionContext) -> AsyncIterator[int]:
    n = ctx.input if isinstance(ctx.input, int) else 3
    for i in range(n):
        yield i


def watched() -> tuple[rt.Flow[int, AsyncIterator[int]], dict[str, int], asyncio.Event]:
    """A flow that counts its generator's finally and its on_close calls."""
    seen = {"finally": 0, "on_close": 0, "started": 0}
    closed = asyncio.Event()

    async def numbers(ctx: rt.ExecutionContext) -> AsyncIterator[int]:
        seen["started"] += 1

        def done() -> None:
            seen["on_close"] += 1
            closed.set()

        ctx.on_close(done)
        try:
            for i in range(100):
                await asyncio.sleep(0)
                yield i
        finally:
            seen["finally"] += 1

    return rt.flow(numbers, parse=int), seen, closed


class TestItems:
    async def test_items_in_order_in_a_child_that_completes(self) -> None:
        async with rt.create_scope() as scope, scope.create_context() as ctx:
            stream = ctx.exec_stream(count, 4)
            assert stream.context.parent is ctx
            assert stream.context.details.status == "running"
            assert [i async for i in stream] == [0, 1, 2, 3]
            assert stream.context.details.status == "completed"
            assert stream.context.details.metadata["stream_items"] == 4

    async def test_exec_of_a_streaming_flow_collects_a_list(self) -> None:
        async with rt.create_scope() as scope, scope.create_context() as ctx:
            assert await ctx.exec(count, 3) == [0, 1, 2]
            assert await ctx.exec(count, 2, timeout=5, retry=1, key="k") == [0, 1]
            assert await scope.exec(count, 2) == [0, 1]

    async def test_exec_collects_under_an_extension_too(self) -> None:
        class Pass(rt.Extension):
            async def wrap_exec(
                self, next: Callable[[], Awaitable[object]], op: rt.ExecOp
            ) -> object:
                return await next()

        async with rt.create_scope(extensions=[Pass()]) as scope, scope.create_context() as ctx:
            assert await ctx.exec(count, 3) == [0, 1, 2]
            assert [i async for i in ctx.exec_stream(count, 2)] == [0, 1]

    async def test_deps_parse_tags_and_handles(self) -> None:
        base = rt.atom(lambda ctx: 10, name="base")

        @rt.flow(deps={"base": base, "who": rt.tags.required(tenant)}, parse=int)
        async def offsets(ctx: rt.ExecutionContext, base: int, who: str) -> AsyncIterator[str]:
            for i in range(ctx.input):
                yield f"{who}:{base + i}"

        @rt.flow(deps={"offsets": offsets})
        async def caller(
            ctx: rt.ExecutionContext, offsets: rt.FlowHandle[int, AsyncIterator[str]]
        ) -> list[str]:
            return [item async for item in offsets.stream("2", tags=[tenant("acme")])]

        async with rt.create_scope() as scope, scope.create_context() as ctx:
            assert await ctx.exec(caller) == ["acme:10", "acme:11"]
            with pytest.raises(ParseError):
                async for _ in ctx.exec_stream(offsets, "x", tags=[tenant("a")]):
                    pass

    async def test_a_flow_that_does_not_stream_is_refused(self) -> None:
        @rt.flow
        async def plain(ctx: rt.ExecutionContext) -> int:
            return 1

        async with rt.create_scope() as scope, scope.create_context() as ctx:
            with pytest.raises(TypeError, match=r"^ctx.exec_stream\(\): flow 'plain' does not"):
                ctx.exec_stream(plain)  # type: ignore[call-overload]

    async def test_a_sync_generator_factory_is_still_refused(self) -> None:
        def gen(ctx: rt.ExecutionContext) -> object:
            yield 1

        with pytest.raises(TypeError, match="is a generator"):
            rt.flow(gen)

    async def test_a_stream_is_iterated_once(self) -> None:
        async with rt.create_scope() as scope, scope.create_context() as ctx:
            stream = ctx.exec_stream(count, 1)
            assert [i async for i in stream] == [0]
            with pytest.raises(RuntimeError, match="iterated once"):
                stream.__aiter__()


class TestCurrentContext:
    async def test_the_child_is_current_at_every_resumption(self) -> None:
        @rt.flow
        async def where(ctx: rt.ExecutionContext) -> AsyncIterator[bool]:
            for _ in range(3):
                yield rt.current_context() is ctx
                await asyncio.sleep(0)
                yield rt.current_context() is ctx and ctx.get(tenant) == "t1"

        async with rt.create_scope() as scope, scope.create_context() as ctx:
            stream = ctx.exec_stream(where, tags=[tenant("t1")])
            async for ok in stream:
                assert ok
                assert rt.current_context() is None  # the consumer's own view is untouched

    async def test_interleaved_streams_and_iteration_from_other_tasks(self) -> None:
        @rt.flow
        async def me(ctx: rt.ExecutionContext) -> AsyncIterator[tuple[str, bool]]:
            for _ in range(4):
                inner = await ctx.run(lambda: rt.current_context())
                assert inner is not None
                yield ctx.name, rt.current_context() is ctx and inner.parent is ctx
                await asyncio.sleep(0)

        async with rt.create_scope() as scope, scope.create_context() as ctx:
            a = ctx.exec_stream(me, name="a").__aiter__()
            b = ctx.exec_stream(me, name="b").__aiter__()
            seen = []
            for _ in range(2):
                seen.append(await a.__anext__())
                seen.append(await b.__anext__())
            # the next steps from fresh tasks each
            seen.append(await asyncio.create_task(_next(a)))
            seen.append(await asyncio.create_task(_next(b)))
            assert seen == [("a", True), ("b", True)] * 3
            await a.aclose()  # type: ignore[attr-defined]
            await b.aclose()  # type: ignore[attr-defined]


async def consume(
    stream: rt.FlowStream[int],
    got: list[int],
    body: Callable[[int], object] | None = None,
) -> None:
    """Iterate ``stream`` into ``got``, running ``body`` (sync or async) on each item."""
    async for i in stream:
        got.append(i)
        if body is not None:
            res = body(i)
            if asyncio.iscoroutine(res):
                await res


async def _next(it: AsyncIterator[tuple[str, bool]]) -> tuple[str, bool]:
    return await it.__anext__()


class TestEarlyStop:
    async def test_break_closes_the_child_while_the_stream_is_still_held(self) -> None:
        numbers, seen, closed = watched()
        async with rt.create_scope() as scope, scope.create_context() as ctx:
            stream = ctx.exec_stream(numbers, 0)
            async for i in stream:
                if i == 2:
                    break
            assert stream.context.cancelled  # at once
            await asyncio.wait_for(closed.wait(), 5)  # the cleanup, on the loop's next turn
            assert stream.context.details.status == "cancelled"
            assert isinstance(stream.context.details.error, Cancelled)
            assert seen == {"finally": 1, "on_close": 1, "started": 1}
            await stream.aclose()  # nothing more to do
            assert seen["finally"] == 1

    async def test_async_with_closes_before_the_next_line(self) -> None:
        numbers, seen, _ = watched()
        async with rt.create_scope() as scope, scope.create_context() as ctx:
            async with ctx.exec_stream(numbers, 0) as stream:
                async for i in stream:
                    if i == 1:
                        break
            assert stream.context.details.status == "cancelled"
            assert seen == {"finally": 1, "on_close": 1, "started": 1}

    async def test_aclose_mid_stream_and_an_error_in_the_loop_body(self) -> None:
        numbers, seen, _ = watched()
        async with rt.create_scope() as scope, scope.create_context() as ctx:
            stream = ctx.exec_stream(numbers, 0)
            it = stream.__aiter__()
            assert await it.__anext__() == 0
            await stream.aclose()
            assert stream.context.details.status == "cancelled"
            assert seen["finally"] == 1
            with pytest.raises(StopAsyncIteration):
                await it.__anext__()

            async with ctx.exec_stream(numbers, 0) as stream2:

                def fail_at_3(i: int) -> None:
                    if i == 3:
                        _ = 1 / 0

                with pytest.raises(ZeroDivisionError):
                    await consume(stream2, [], fail_at_3)
            assert stream2.context.details.status == "cancelled"
            assert seen == {"finally": 2, "on_close": 2, "started": 2}

    async def test_resources_see_cancelled_at_yield(self) -> None:
        outcome: list[str] = []

        @rt.resource(ownership="current")
        async def tx(ctx: rt.ResolveContext) -> AsyncIterator[str]:
            try:
                yield "tx"
            except Cancelled:
                outcome.append("rollback")
                raise
            else:
                outcome.append("commit")

        @rt.flow(deps={"tx": tx})
        async def rows(ctx: rt.ExecutionContext, tx: str) -> AsyncIterator[str]:
            for i in range(10):
                yield f"{tx}{i}"

        async with rt.create_scope() as scope, scope.create_context() as ctx:
            async with ctx.exec_stream(rows) as stream:
                async for _ in stream:
                    break
            assert outcome == ["rollback"]
            assert [r async for r in ctx.exec_stream(rows)][:1] == ["tx0"]
            assert outcome == ["rollback", "commit"]

    async def test_a_stream_never_iterated_closes_with_its_parent(self) -> None:
        numbers, seen, _ = watched()
        async with rt.create_scope() as scope:
            ctx = scope.create_context()
            stream = ctx.exec_stream(numbers, 0)
            await ctx.close()
            assert stream.context.details.status == "cancelled"
            assert seen["started"] == 0

    async def test_the_parent_closing_stops_a_held_stream(self) -> None:
        numbers, seen, _ = watched()

        @rt.flow
        async def parent(ctx: rt.ExecutionContext) -> rt.FlowStream[int]:
            stream = ctx.exec_stream(numbers, 0)
            it = stream.__aiter__()
            await it.__anext__()
            ctx.data["it"] = it  # keep the pump alive: only the parent's close stops it
            return stream

        async with rt.create_scope() as scope, scope.create_context() as ctx:
            stream = await ctx.exec(parent)
            assert stream.context.details.status == "cancelled"
            assert seen == {"finally": 1, "on_close": 1, "started": 1}


class TestFailures:
    async def test_a_failing_generator_fails_the_child_and_reaches_the_loop(self) -> None:
        @rt.flow
        async def boom(ctx: rt.ExecutionContext) -> AsyncIterator[int]:
            yield 1
            raise KeyError("nope")

        async with rt.create_scope() as scope, scope.create_context() as ctx:
            stream = ctx.exec_stream(boom)
            got = []
            with pytest.raises(KeyError):
                await consume(stream, got)
            assert got == [1]
            assert stream.context.details.status == "failed"
            assert isinstance(stream.context.details.error, KeyError)

    async def test_a_closed_parent_refuses(self) -> None:
        async with rt.create_scope() as scope:
            ctx = scope.create_context()
            await ctx.close()
            with pytest.raises(ContextClosedError):
                ctx.exec_stream(count)
            ctx2 = scope.create_context()
            stream = ctx2.exec_stream(count)
            await ctx2.close()
            with pytest.raises(Cancelled):  # closed with its parent before it started
                await stream.__aiter__().__anext__()

    async def test_retry_is_refused_with_a_reason(self) -> None:
        async with rt.create_scope() as scope, scope.create_context() as ctx:
            with pytest.raises(TypeError, match="items already delivered cannot be taken back"):
                ctx.exec_stream(count, retry=2)  # type: ignore[call-overload]
            with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
                ctx.exec_stream(count, bogus=1)  # type: ignore[call-overload]

    async def test_cancel_of_an_ancestor_stops_at_the_next_item(self) -> None:
        numbers, seen, _ = watched()
        async with rt.create_scope() as scope, scope.create_context() as ctx:
            stream = ctx.exec_stream(numbers, 0)
            got = []
            with pytest.raises(Cancelled):
                await consume(stream, got, lambda i: ctx.cancel("enough") if i == 2 else None)
            assert got == [0, 1, 2]
            assert stream.context.details.status == "cancelled"
            assert seen["finally"] == 1

    async def test_cancel_while_the_generator_waits(self) -> None:
        waiting = asyncio.Event()

        @rt.flow
        async def slow(ctx: rt.ExecutionContext) -> AsyncIterator[int]:
            yield 0
            waiting.set()
            await asyncio.Event().wait()
            yield 1

        async with rt.create_scope() as scope, scope.create_context() as ctx:
            stream = ctx.exec_stream(slow)

            async def consume() -> list[int]:
                return [i async for i in stream]

            task = asyncio.create_task(consume())
            await waiting.wait()
            ctx.cancel("stop")
            with pytest.raises(Cancelled):
                await task
            assert stream.context.details.status == "cancelled"
            assert not task.cancelled()

    async def test_timeout_bounds_the_whole_stream(self) -> None:
        @rt.flow
        async def slow(ctx: rt.ExecutionContext) -> AsyncIterator[int]:
            for i in range(1000):
                await asyncio.sleep(0.01)
                yield i

        async with rt.create_scope() as scope, scope.create_context() as ctx:
            stream = ctx.exec_stream(slow, timeout=0.05)
            got = []
            with pytest.raises(ExecTimeoutError):
                await consume(stream, got)
            assert 0 < len(got) < 10
            assert stream.context.details.status == "failed"
            # and between items: the consumer is slow, not the generator
            stream = ctx.exec_stream(count, 5, timeout=0.01)

            async def slow_consumer(_: int) -> None:
                await asyncio.sleep(0.02)

            with pytest.raises(ExecTimeoutError):
                await consume(stream, [], slow_consumer)


class TestCancellationBetweenItems:
    """Between items the stream walks its ancestors only when some context was cancelled
    since the last item; these pin down what that check must still catch."""

    async def test_a_grandparent_cancelled_from_the_loop_body_in_the_same_task(self) -> None:
        numbers, seen, _ = watched()
        got: list[int] = []

        @rt.flow
        async def outer(ctx: rt.ExecutionContext) -> None:
            # The stream's parent runs in this task: the boundary's cancel reaches it as a
            # flag only, never through the stream's own context.
            await consume(
                ctx.exec_stream(numbers, 0), got, lambda i: b.cancel("enough") if i == 1 else None
            )

        async with rt.create_scope() as scope, scope.create_context() as b:
            with pytest.raises(Cancelled):
                await b.exec(outer)
            assert got == [0, 1]
            assert seen == {"finally": 1, "on_close": 1, "started": 1}

    async def test_the_child_cancelled_between_items(self) -> None:
        numbers, seen, _ = watched()
        async with rt.create_scope() as scope, scope.create_context() as ctx:
            stream = ctx.exec_stream(numbers, 0)
            got: list[int] = []
            with pytest.raises(Cancelled):
                await consume(stream, got, lambda i: stream.context.cancel() if i == 3 else None)
            assert got == [0, 1, 2, 3]
            assert stream.context.details.status == "cancelled"
            assert not ctx.cancelled
            assert seen["finally"] == seen["on_close"] == 1

    async def test_a_cancel_elsewhere_does_not_stop_the_stream(self) -> None:
        async with rt.create_scope() as scope, scope.create_context() as ctx:
            other = scope.create_context()
            sibling = ctx.exec_stream(count, 2)

            async def cancel_others(i: int) -> None:
                if i == 1:
                    other.cancel("unrelated")
                    await sibling.aclose()  # cancels the sibling stream's context

            got: list[int] = []
            stream = ctx.exec_stream(count, 5)
            await consume(stream, got, cancel_others)
            assert got == [0, 1, 2, 3, 4]
            assert stream.context.details.status == "completed"
            assert sibling.context.details.status == "cancelled"
            await other.close()

    async def test_a_cancel_between_items_from_another_task(self) -> None:
        numbers, seen, _ = watched()
        async with rt.create_scope() as scope, scope.create_context() as ctx:
            stream = ctx.exec_stream(numbers, 0)
            it = stream.__aiter__()
            assert await it.__anext__() == 0

            async def cancel() -> None:
                ctx.cancel("from another task")

            await asyncio.create_task(cancel())
            with pytest.raises(Cancelled):
                await it.__anext__()
            assert stream.context.details.status == "cancelled"
            assert seen["finally"] == 1


class TestContextVarsInTheGenerator:
    """The generator runs in the consumer's contextvars context, as any async generator
    does; only ``current_context()`` is switched to the child around each step."""

    async def test_a_var_set_across_a_yield_is_seen_by_the_consumer(self) -> None:
        var: contextvars.ContextVar[str] = contextvars.ContextVar("test_stream_var", default="-")

        @rt.flow
        async def setter(ctx: rt.ExecutionContext) -> AsyncIterator[str]:
            token = var.set("inside")
            try:
                yield var.get()
                yield var.get()
            finally:
                var.reset(token)
            yield var.get()

        async with rt.create_scope() as scope, scope.create_context() as ctx:
            seen = []
            async for item in ctx.exec_stream(setter):
                seen.append((item, var.get(), rt.current_context() is None))
            assert seen == [
                ("inside", "inside", True),
                ("inside", "inside", True),
                ("-", "-", True),
            ]
            assert var.get() == "-"

    async def test_a_var_the_consumer_sets_between_items_reaches_the_generator(self) -> None:
        var: contextvars.ContextVar[int] = contextvars.ContextVar("test_stream_var2", default=0)

        @rt.flow
        async def reader(ctx: rt.ExecutionContext) -> AsyncIterator[tuple[int, bool]]:
            for _ in range(3):
                yield var.get(), rt.current_context() is ctx

        async with rt.create_scope() as scope, scope.create_context() as ctx:
            got = []
            async for value, current in ctx.exec_stream(reader):
                got.append((value, current))
                var.set(value + 1)
            assert got == [(0, True), (1, True), (2, True)]


class TestJournal:
    async def test_items_recorded_on_completion_and_replayed_without_running(self) -> None:
        runs = []

        @rt.flow
        async def tokens(ctx: rt.ExecutionContext) -> AsyncIterator[str]:
            runs.append(1)
            for t in ("a", "b"):
                yield t

        async with rt.create_scope() as scope, scope.create_context() as ctx:
            assert [t async for t in ctx.exec_stream(tokens, key="t")] == ["a", "b"]
            again = ctx.exec_stream(tokens, key="t")
            assert [t async for t in again] == ["a", "b"]
            assert runs == [1]
            assert again.context.details.metadata["replayed"] is True
            assert ctx.details.metadata["journal_replays"] == ["t"]

    async def test_a_stream_stopped_early_records_nothing(self) -> None:
        async with rt.create_scope() as scope, scope.create_context() as ctx:
            async with ctx.exec_stream(count, 5, key="c") as stream:
                async for _ in stream:
                    break
            assert ctx.journal_keys() == []
            assert [i async for i in ctx.exec_stream(count, 2, key="c")] == [0, 1]
            assert ctx.journal_keys() == ["c"]

    async def test_durable_tree_replays_json_items_and_warns_for_others(
        self, tmp_path: Path
    ) -> None:
        from runtree.stores import SqliteStore

        runs = []

        @rt.flow
        async def tokens(ctx: rt.ExecutionContext) -> AsyncIterator[object]:
            runs.append(ctx.input)
            if ctx.input == "odd":
                yield object()
            else:
                yield {"t": 1}
                yield [2]

        path = tmp_path / "rt.db"
        for _ in range(2):
            async with (
                SqliteStore(path) as store,
                rt.create_scope(store=store) as scope,
                scope.create_context(id="root-1") as ctx,
            ):
                if True:
                    assert [t async for t in ctx.exec_stream(tokens, "ok", key="s")] == [
                        {"t": 1},
                        [2],
                    ]
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        items = [t async for t in ctx.exec_stream(tokens, "odd", key="o")]
                    assert len(items) == 1
                    assert any(issubclass(w.category, SerializationWarning) for w in caught)
        assert runs == ["ok", "odd", "odd"]  # the second process replays "s" only
