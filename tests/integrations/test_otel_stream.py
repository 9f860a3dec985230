"""runtree.otel and streams: one span per stream, parented from the runtree tree, current
at every resumption of the generator, with an event per item when asked (real SDK)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

import runtree as rt

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from runtree.otel import STREAM_ITEM_EVENT, TracingExtension


class Traced:
    def __init__(self, *, stream_events: bool) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.ext = TracingExtension(self.provider, stream_events=stream_events)
        self.user = self.provider.get_tracer("user-code")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def one(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]

    def parent(self, span: ReadableSpan) -> str | None:
        if span.parent is None:
            return None
        by_id = {s.context.span_id: s for s in self.spans()}
        return by_id[span.parent.span_id].name


@pytest.fixture(params=[True, False], ids=["events", "no-events"])
def traced(request: pytest.FixtureRequest) -> Iterator[Traced]:
    t = Traced(stream_events=request.param)
    yield t
    assert t.ext._spans == {}
    t.provider.shutdown()


def make_flows(t: Traced) -> tuple[rt.Flow[int, AsyncIterator[str]], rt.Flow[None, list[str]]]:
    @rt.flow
    async def step(ctx: rt.ExecutionContext) -> str:
        return f"s{ctx.input}"

    @rt.flow
    async def tokens(ctx: rt.ExecutionContext) -> AsyncIterator[str]:
        for i in range(3):
            with t.user.start_as_current_span(f"user {i}"):
                pass
            yield await ctx.exec(step, i)
            await asyncio.sleep(0)

    @rt.flow
    async def agent(ctx: rt.ExecutionContext) -> list[str]:
        out = []
        async for token in ctx.exec_stream(tokens, 3):
            out.append(token)
            # the consumer's own spans hang under its span, not under the stream's
            with t.user.start_as_current_span("consumer"):
                pass
        return out

    return tokens, agent


async def test_the_span_tree_of_a_stream(traced: Traced) -> None:
    _, agent = make_flows(traced)
    async with rt.create_scope(extensions=[traced.ext]) as scope:
        assert await scope.exec(agent) == ["s0", "s1", "s2"]
    stream = traced.one("tokens")
    assert traced.parent(stream) == "agent"
    assert stream.attributes is not None
    assert stream.attributes["runtree.kind"] == "stream"
    assert "runtree.status" not in stream.attributes  # completed
    assert stream.attributes["runtree.stream.items"] == 3
    steps = [s for s in traced.spans() if s.name == "step"]
    assert len(steps) == 3
    assert {traced.parent(s) for s in steps} == {"tokens"}
    for i in range(3):
        assert traced.parent(traced.one(f"user {i}")) == "tokens"
    consumer = [s for s in traced.spans() if s.name == "consumer"]
    assert {traced.parent(s) for s in consumer} == {"agent"}
    events = [e.name for e in stream.events]
    if traced.ext.stream_events:
        assert events == [STREAM_ITEM_EVENT] * 3
        assert [dict(e.attributes or {}) for e in stream.events] == [
            {"runtree.index": i} for i in range(3)
        ]
    else:
        assert events == []
    # the stream span covers the items: it ends after the last step span
    assert stream.end_time is not None
    assert max(s.end_time or 0 for s in steps) <= stream.end_time


async def test_a_stream_iterated_from_another_task_keeps_its_parent(traced: Traced) -> None:
    tokens, _ = make_flows(traced)
    async with rt.create_scope(extensions=[traced.ext]) as scope, scope.create_context() as ctx:
        with traced.user.start_as_current_span("request"):
            stream = ctx.exec_stream(tokens, 3)
            it = stream.__aiter__()
            first = await it.__anext__()
        rest = await asyncio.create_task(_drain(it))
        assert [first, *rest] == ["s0", "s1", "s2"]
        # no current span leaked into this task by the stream
        assert not trace.get_current_span().get_span_context().is_valid
    span = traced.one("tokens")
    assert traced.parent(span) == "request"  # no traced runtree ancestor: the OTel context
    assert {traced.parent(s) for s in traced.spans() if s.name == "step"} == {"tokens"}


async def _drain(it: AsyncIterator[str]) -> list[str]:
    return [x async for x in it]


async def test_early_stop_and_failure_end_the_span(traced: Traced) -> None:
    @rt.flow
    async def boom(ctx: rt.ExecutionContext) -> AsyncIterator[int]:
        yield 1
        raise ValueError("bad token")

    tokens, _ = make_flows(traced)
    async with rt.create_scope(extensions=[traced.ext]) as scope, scope.create_context() as ctx:
        async with ctx.exec_stream(tokens, 3) as stream:
            async for _ in stream:
                break
        with pytest.raises(ValueError, match=r"^bad token$"):
            await _drain_ints(ctx.exec_stream(boom))
    stopped = traced.one("tokens")
    assert stopped.attributes is not None
    assert stopped.attributes["runtree.status"] == "cancelled"
    assert stopped.attributes["runtree.stream.items"] == 1
    failed = traced.one("boom")
    assert failed.attributes is not None
    assert failed.attributes["runtree.status"] == "failed"
    assert failed.status.status_code is StatusCode.ERROR


async def _drain_ints(stream: rt.FlowStream[int]) -> list[int]:
    return [x async for x in stream]
