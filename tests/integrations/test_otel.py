"""runtree.otel: spans from the real OpenTelemetry SDK (a fresh provider per test, never
the global one), and the code in docs/otel.md runs as written."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import runtree as rt

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

from runtree.otel import TracingExtension

ROOT = Path(__file__).resolve().parent.parent.parent


class Traced:
    """A provider with an in-memory exporter, the extension, and span lookups."""

    def __init__(self, *, record_input: bool = False) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.ext = TracingExtension(self.provider, record_input=record_input)
        self.user = self.provider.get_tracer("user-code")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {self.names()}"
        return found[0]

    def names(self) -> list[str]:
        return sorted(s.name for s in self.spans())

    def parent(self, span: ReadableSpan) -> str | None:
        """The name of ``span``'s parent (``None`` for a root span)."""
        if span.parent is None:
            return None
        by_id = {s.context.span_id: s for s in self.spans()}
        return by_id[span.parent.span_id].name

    def tree(self) -> set[tuple[str, str | None]]:
        return {(s.name, self.parent(s)) for s in self.spans()}


@pytest.fixture
def traced() -> Iterator[Traced]:
    t = Traced()
    yield t
    # Nothing leaks: every span the extension tracked is gone once the work is done.
    assert t.ext._spans == {}
    t.provider.shutdown()


def attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


@rt.flow
async def leaf(ctx: rt.ExecutionContext) -> int:
    return 1


class TestTree:
    async def test_nested_execs_run_and_parallel_nest_by_the_context_tree(
        self, traced: Traced
    ) -> None:
        @rt.flow
        async def middle(ctx: rt.ExecutionContext) -> int:
            return await ctx.exec(leaf, name="deep")

        @rt.flow
        async def branch(ctx: rt.ExecutionContext) -> int:
            await asyncio.sleep(0.01)  # both branches are open at once, in two tasks
            return await ctx.exec(leaf, name=f"{ctx.name}-leaf")

        @rt.flow
        async def top(ctx: rt.ExecutionContext) -> list[object]:
            a = await ctx.exec(middle)
            b = await ctx.run(lambda: 2)
            c = await ctx.parallel(ctx.exec(branch, name="b1"), ctx.exec(branch, name="b2"))
            return [a, b, c]

        async with rt.create_scope(extensions=[traced.ext]) as scope:
            assert await scope.exec(top) == [1, 2, [1, 1]]

        assert traced.tree() == {
            ("top", None),
            ("middle", "top"),
            ("deep", "middle"),
            ("<lambda>", "top"),
            ("parallel top", "top"),
            # branch spans are children of the parallel's caller, whatever task they ran in
            ("b1", "top"),
            ("b2", "top"),
            ("b1-leaf", "b1"),
            ("b2-leaf", "b2"),
        }
        assert len({s.context.trace_id for s in traced.spans()}) == 1
        kinds = {s.name: attrs(s)["runtree.kind"] for s in traced.spans()}
        assert kinds == {
            "top": "execute",
            "middle": "subflow",
            "deep": "subflow",
            "<lambda>": "fn",
            "parallel top": "parallel",
            "b1": "subflow",
            "b2": "subflow",
            "b1-leaf": "subflow",
            "b2-leaf": "subflow",
        }
        for span in traced.spans():
            assert span.status.status_code is StatusCode.UNSET
            # work that completed on its first attempt carries neither attribute
            assert "runtree.status" not in attrs(span)
            assert "runtree.attempt" not in attrs(span)
            assert "runtree.key" not in attrs(span)
            assert "runtree.input" not in attrs(span)
        # the parallel span covers the branches' time
        par, b1 = traced.one("parallel top"), traced.one("b1")
        assert par.start_time is not None and par.end_time is not None
        assert b1.start_time is not None and b1.end_time is not None
        assert par.start_time <= b1.start_time and b1.end_time <= par.end_time

    async def test_the_full_exec_path_nests_the_same(self, traced: Traced) -> None:
        """Another extension's lifecycle hooks send every exec down the full path."""
        opened: list[str] = []

        class Hooks(rt.Extension):
            def on_context_open(self, ctx: rt.ExecutionContext) -> None:
                opened.append(ctx.name)

        @rt.flow
        async def outer(ctx: rt.ExecutionContext) -> None:
            await ctx.exec(leaf)
            await ctx.run(lambda: None, name="step")

        async with rt.create_scope(extensions=[Hooks(), traced.ext]) as scope:
            await scope.exec(outer)
        assert opened == ["outer", "leaf", "step"]
        assert traced.tree() == {("outer", None), ("leaf", "outer"), ("step", "outer")}

    async def test_ids_match_the_contexts(self, traced: Traced) -> None:
        seen: dict[str, tuple[str, str]] = {}

        @rt.flow
        async def note(ctx: rt.ExecutionContext) -> None:
            seen[ctx.name] = (ctx.id, ctx.root.id)

        @rt.flow
        async def outer(ctx: rt.ExecutionContext) -> None:
            seen[ctx.name] = (ctx.id, ctx.root.id)
            await ctx.exec(note, name="inner")

        async with rt.create_scope(extensions=[traced.ext]) as scope:
            await scope.exec(outer)
        assert seen["inner"][1] == seen["outer"][0]  # outer is the root
        for name in ("outer", "inner"):
            span = attrs(traced.one(name))
            assert (span["runtree.context_id"], span["runtree.root_id"]) == seen[name]

    async def test_a_span_of_user_code_nests_under_the_flow_and_wraps_its_execs(
        self, traced: Traced
    ) -> None:
        @rt.flow
        async def work(ctx: rt.ExecutionContext) -> None:
            with traced.user.start_as_current_span("user.query"):
                await asyncio.sleep(0)
            await ctx.exec(leaf)

        async with rt.create_scope(extensions=[traced.ext]) as scope:
            await scope.exec(work)
        assert traced.parent(traced.one("user.query")) == "work"
        assert traced.parent(traced.one("leaf")) == "work"

    async def test_the_parent_comes_from_the_tree_not_the_running_task(
        self, traced: Traced
    ) -> None:
        """A worker task created before any span runs a child of a traced context: the
        child's span still hangs under that context's span."""
        jobs: asyncio.Queue[rt.ExecutionContext] = asyncio.Queue()
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def worker() -> None:
            ctx = await jobs.get()
            done.set_result(await ctx.exec(leaf, name="from-worker"))

        task = asyncio.ensure_future(worker())  # its OTel context has no span

        @rt.flow
        async def owner(ctx: rt.ExecutionContext) -> int:
            jobs.put_nowait(ctx)
            return await done

        async with rt.create_scope(extensions=[traced.ext]) as scope:
            assert await scope.exec(owner) == 1
        await task
        assert traced.parent(traced.one("from-worker")) == "owner"

    async def test_boundary_execs_take_the_current_span_as_parent(self, traced: Traced) -> None:
        @rt.flow
        async def nested_boundary(ctx: rt.ExecutionContext) -> None:
            async with ctx.scope.create_context(parent=ctx, name="inner-boundary") as inner:
                await inner.exec(leaf, name="in-nested")

        async with rt.create_scope(extensions=[traced.ext]) as scope:
            with traced.user.start_as_current_span("request"):
                async with scope.create_context(name="req") as root:
                    await root.exec(leaf, name="a")
                    await root.run(lambda: None, name="b")
                    await root.exec(nested_boundary)
            async with scope.create_context() as other:
                await other.exec(leaf, name="untraced-parent")

        assert traced.parent(traced.one("a")) == "request"
        assert traced.parent(traced.one("b")) == "request"
        # a nested boundary has no span: its execs hang under its traced ancestor
        assert traced.parent(traced.one("in-nested")) == "nested_boundary"
        assert traced.parent(traced.one("untraced-parent")) is None

    async def test_an_exec_from_another_task_on_a_nested_boundary_hangs_under_its_ancestor(
        self, traced: Traced
    ) -> None:
        jobs: asyncio.Queue[rt.ExecutionContext] = asyncio.Queue()
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def worker() -> None:
            ctx = await jobs.get()  # its OTel context has no span
            async with ctx.scope.create_context(parent=ctx, name="nested") as nested:
                done.set_result(await nested.exec(leaf, name="from-worker"))

        task = asyncio.ensure_future(worker())

        @rt.flow
        async def owner(ctx: rt.ExecutionContext) -> int:
            jobs.put_nowait(ctx)
            return await done

        async with rt.create_scope(extensions=[traced.ext]) as scope:
            assert await scope.exec(owner) == 1
        await task
        assert traced.parent(traced.one("from-worker")) == "owner"

    async def test_a_childs_span_starts_in_the_callers_context_with_its_baggage(
        self, traced: Traced
    ) -> None:
        """Span processors (and samplers) see the caller's current context, with the
        parent's span in it: baggage the flow attached reaches its children's spans."""
        seen: dict[str, object] = {}

        class BaggageProbe(SpanProcessor):
            def on_start(self, span: Span, parent_context: Context | None = None) -> None:
                seen[span.name] = baggage.get_baggage("tenant", parent_context)

        traced.provider.add_span_processor(BaggageProbe())

        @rt.flow
        async def work(ctx: rt.ExecutionContext) -> None:
            await ctx.exec(leaf, name="plain")
            token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
            try:
                await ctx.exec(leaf, name="with-baggage")
                await ctx.parallel(ctx.exec(leaf, name="branch"))
            finally:
                otel_context.detach(token)

        async with rt.create_scope(extensions=[traced.ext]) as scope:
            await scope.exec(work)
        assert seen == {
            "work": None,
            "plain": None,
            "with-baggage": "acme",
            "parallel work": "acme",
            "branch": "acme",
        }
        for name in ("plain", "with-baggage", "branch"):
            assert traced.parent(traced.one(name)) == "work"

    async def test_tracing_added_later_traces_new_work_only(self, traced: Traced) -> None:
        async with rt.create_scope() as scope:
            root = scope.create_context()
            await root.exec(leaf, name="before")
            remove = scope.use_extension(traced.ext)
            await root.exec(leaf, name="during")
            remove()
            await root.exec(leaf, name="after")
            await root.close()
        assert traced.names() == ["during"]


class TestFailures:
    async def test_a_failing_flow_records_the_error_on_every_span_it_crosses(
        self, traced: Traced
    ) -> None:
        @rt.flow
        async def boom(ctx: rt.ExecutionContext) -> None:
            raise ValueError("bad row 7")

        @rt.flow
        async def caller(ctx: rt.ExecutionContext) -> None:
            await ctx.exec(boom)

        async with rt.create_scope(extensions=[traced.ext]) as scope:
            with pytest.raises(ValueError, match="bad row 7"):
                await scope.exec(caller)

        for name in ("boom", "caller"):
            span = traced.one(name)
            assert span.status.status_code is StatusCode.ERROR
            assert span.status.description == "ValueError: bad row 7"
            assert attrs(span)["runtree.status"] == "failed"
            [event] = span.events
            assert event.name == "exception"
            assert event.attributes is not None
            assert event.attributes["exception.type"] == "ValueError"
            assert event.attributes["exception.message"] == "bad row 7"

    async def test_timeout_is_an_error_with_a_description(self, traced: Traced) -> None:
        @rt.flow
        async def slow(ctx: rt.ExecutionContext) -> None:
            await asyncio.sleep(10)

        async with (
            rt.create_scope(extensions=[traced.ext]) as scope,
            scope.create_context() as root,
        ):
            with pytest.raises(rt.ExecTimeoutError):
                await root.exec(slow, timeout=0.02)
        span = traced.one("slow")
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "timed out after 0.02s"
        assert attrs(span)["runtree.status"] == "failed"
        assert [e.name for e in span.events] == ["exception"]

    async def test_cancellation_is_an_error_with_the_reason(self, traced: Traced) -> None:
        running: list[rt.ExecutionContext] = []
        started = asyncio.Event()

        @rt.flow
        async def slow(ctx: rt.ExecutionContext) -> None:
            started.set()
            await asyncio.sleep(10)

        @rt.flow
        async def outer(ctx: rt.ExecutionContext) -> None:
            running.append(ctx)
            await ctx.exec(slow)

        async with (
            rt.create_scope(extensions=[traced.ext]) as scope,
            scope.create_context() as root,
        ):
            task = asyncio.ensure_future(root.exec(outer))
            await started.wait()
            running[0].cancel("user pressed stop")
            with pytest.raises(rt.Cancelled):
                await task

        span = traced.one("outer")  # the cancelled context itself
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "cancelled: user pressed stop"
        assert attrs(span)["runtree.status"] == "cancelled"
        inner = traced.one("slow")  # a descendant: the CancelledError went through it
        assert inner.status.status_code is StatusCode.ERROR
        assert inner.status.description == "cancelled"
        assert attrs(inner)["runtree.status"] == "cancelled"
        assert inner.events == ()  # a CancelledError is not recorded as an exception

    async def test_the_callers_task_cancelled_ends_every_span(self, traced: Traced) -> None:
        started = asyncio.Event()

        @rt.flow
        async def slow(ctx: rt.ExecutionContext) -> None:
            started.set()
            await asyncio.sleep(10)

        async with rt.create_scope(extensions=[traced.ext]) as scope:
            execution = scope.exec(slow)
            await started.wait()
            execution.cancel("shutting down")
            with pytest.raises(rt.Cancelled):
                await execution
            async with scope.create_context() as root:
                task = asyncio.ensure_future(root.exec(slow, name="slow-2"))
                await asyncio.sleep(0.01)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        first, second = traced.one("slow"), traced.one("slow-2")
        assert attrs(first)["runtree.kind"] == "execute"
        assert first.status.description == "cancelled: shutting down"
        assert second.status.status_code is StatusCode.ERROR
        assert attrs(second)["runtree.status"] == "cancelled"

    async def test_a_failing_branch_cancels_its_sibling_and_both_spans_end(
        self, traced: Traced
    ) -> None:
        @rt.flow
        async def bad(ctx: rt.ExecutionContext) -> None:
            await asyncio.sleep(0.01)
            raise KeyError("missing")

        @rt.flow
        async def slow(ctx: rt.ExecutionContext) -> None:
            await asyncio.sleep(10)

        @rt.flow
        async def fan(ctx: rt.ExecutionContext) -> None:
            await ctx.parallel(ctx.exec(bad), ctx.exec(slow))

        async with rt.create_scope(extensions=[traced.ext]) as scope:
            with pytest.raises(KeyError):
                await scope.exec(fan)
        assert traced.parent(traced.one("bad")) == "fan"
        assert traced.parent(traced.one("slow")) == "fan"
        assert attrs(traced.one("bad"))["runtree.status"] == "failed"
        assert attrs(traced.one("slow"))["runtree.status"] == "cancelled"
        par = traced.one("parallel fan")
        assert par.status.status_code is StatusCode.ERROR
        assert attrs(par)["runtree.status"] == "failed"
        assert traced.one("fan").status.status_code is StatusCode.ERROR


class TestAttributes:
    async def test_each_retry_attempt_is_its_own_span(self, traced: Traced) -> None:
        calls = 0

        def flaky() -> str:
            nonlocal calls
            calls += 1
            if calls < 3:
                raise ConnectionError(f"try {calls}")
            return "connected"

        @rt.flow
        async def connect(ctx: rt.ExecutionContext) -> str:
            return await ctx.run(flaky, retry=3, key="connect:db", retry_on=ConnectionError)

        async with rt.create_scope(extensions=[traced.ext]) as scope:
            assert await scope.exec(connect) == "connected"

        attempts = sorted(traced.named("flaky"), key=lambda s: s.start_time or 0)
        assert [attrs(s).get("runtree.attempt") for s in attempts] == [None, 2, 3]
        assert [attrs(s).get("runtree.status") for s in attempts] == ["failed", "failed", None]
        assert [s.status.status_code for s in attempts] == [
            StatusCode.ERROR,
            StatusCode.ERROR,
            StatusCode.UNSET,
        ]
        assert [s.status.description for s in attempts[:2]] == [
            "ConnectionError: try 1",
            "ConnectionError: try 2",
        ]
        for span in attempts:
            assert attrs(span)["runtree.kind"] == "fn"
            assert attrs(span)["runtree.key"] == "connect:db"
            assert traced.parent(span) == "connect"
        # a fresh context per attempt
        assert len({attrs(s)["runtree.context_id"] for s in attempts}) == 3

    async def test_journal_replays_are_events_on_the_callers_span(self, traced: Traced) -> None:
        @rt.flow
        async def charge(ctx: rt.ExecutionContext) -> None:
            await ctx.exec(leaf, key="charge:1")
            await ctx.exec(leaf, key="charge:1")  # replayed: no span of its own
            await ctx.exec(leaf, key="charge:1")

        async with rt.create_scope(extensions=[traced.ext]) as scope:
            await scope.exec(charge)
        assert len(traced.named("leaf")) == 1
        span = traced.one("charge")
        assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
            ("runtree.journal_replay", {"runtree.key": "charge:1"}),
            ("runtree.journal_replay", {"runtree.key": "charge:1"}),
        ]

    async def test_record_input(self) -> None:
        traced = Traced(record_input=True)

        @rt.flow
        async def echo(ctx: rt.ExecutionContext) -> object:
            return ctx.input

        async with (
            rt.create_scope(extensions=[traced.ext]) as scope,
            scope.create_context() as root,
        ):
            await root.exec(echo, "plain", name="text")
            await root.exec(echo, 42, name="number")
            await root.exec(echo, {"order": 7}, name="mapping")
            await root.exec(echo, "x" * 5000, name="long")
            await root.exec(echo, ["y" * 5000], name="long-repr")
            await root.exec(echo, name="none")
        assert attrs(traced.one("text"))["runtree.input"] == "plain"
        assert attrs(traced.one("number"))["runtree.input"] == 42
        assert attrs(traced.one("mapping"))["runtree.input"] == "{'order': 7}"
        assert attrs(traced.one("long"))["runtree.input"] == "x" * 5000  # a str stays whole
        long_repr = attrs(traced.one("long-repr"))["runtree.input"]
        assert isinstance(long_repr, str) and len(long_repr) == 1024
        assert long_repr.endswith("…")
        assert "runtree.input" not in attrs(traced.one("none"))
        assert traced.ext._spans == {}


class TestResolve:
    async def test_one_span_per_actual_resolution(self, traced: Traced) -> None:
        @rt.atom
        def settings(ctx: rt.ResolveContext) -> str:
            return "memory"

        @rt.atom(deps={"settings": settings})
        async def pool(ctx: rt.ResolveContext, settings: str) -> AsyncIterator[str]:
            yield f"pool({settings})"

        @rt.resource
        def tx(ctx: rt.ResolveContext) -> list[str]:
            return []

        @rt.flow(deps={"pool": pool, "tx": tx})
        async def query(ctx: rt.ExecutionContext, pool: str, tx: list[str]) -> str:
            return pool

        async with rt.create_scope(extensions=[traced.ext]) as scope:
            assert await scope.exec(query) == "pool(memory)"
            assert await scope.exec(query) == "pool(memory)"  # atoms cached, tx per boundary
            await scope.resolve(pool)  # a cache hit
        assert len(traced.named("resolve settings")) == 1
        assert len(traced.named("resolve pool")) == 1
        assert len(traced.named("resolve tx")) == 2
        queries = traced.named("query")
        # resolved for the first query: under its span. A resolve span covers the factory;
        # the atom's own dependencies are resolved just before it, as its siblings.
        first = min(queries, key=lambda s: s.start_time or 0)
        for name in ("resolve pool", "resolve settings"):
            span = traced.one(name)
            assert span.parent is not None and span.parent.span_id == first.context.span_id
        settings_span, pool_span = traced.one("resolve settings"), traced.one("resolve pool")
        assert settings_span.end_time is not None and pool_span.start_time is not None
        assert settings_span.end_time <= pool_span.start_time
        resolve_tx = traced.named("resolve tx")
        assert {traced.parent(s) for s in resolve_tx} == {"query"}
        assert {s.parent.span_id for s in resolve_tx if s.parent} == {
            q.context.span_id for q in queries
        }
        pool_attrs = attrs(traced.one("resolve pool"))
        assert pool_attrs == {"runtree.kind": "resolve", "runtree.target": "atom"}
        tx_attrs = attrs(resolve_tx[0])
        assert tx_attrs["runtree.target"] == "resource"
        assert tx_attrs["runtree.ownership"] == "boundary"
        assert tx_attrs["runtree.root_id"] == attrs(queries[0])["runtree.root_id"]

    async def test_a_failing_factory_marks_its_span(self, traced: Traced) -> None:
        @rt.atom
        def broken(ctx: rt.ResolveContext) -> str:
            raise OSError("no route to host")

        async with rt.create_scope(extensions=[traced.ext]) as scope:
            with pytest.raises(rt.ResolveError):
                await scope.resolve(broken)
        span = traced.one("resolve broken")
        assert span.parent is None
        assert span.status.status_code is StatusCode.ERROR
        assert [e.name for e in span.events] == ["exception"]


def run_python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


class TestImports:
    def test_import_runtree_does_not_import_opentelemetry(self) -> None:
        done = run_python(
            "import sys, runtree, runtree.stores, runtree.sessions\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[]"

    def test_without_the_extra_the_error_says_what_to_install(self) -> None:
        done = run_python(
            "import sys\n"
            "sys.modules['opentelemetry'] = None  # as if opentelemetry-api were missing\n"
            "import runtree\n"
            "try:\n"
            "    import runtree.otel\n"
            "except ImportError as exc:\n"
            "    print(exc)\n"
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == (
            "runtree.otel needs the 'otel' extra: pip install 'runtree[otel]'"
        )


def doc_blocks() -> list[tuple[int, str]]:
    text = (ROOT / "docs" / "otel.md").read_text()
    return list(enumerate(m.group(1) for m in re.finditer(r"```python\n(.*?)```", text, re.S)))


@pytest.mark.parametrize(("index", "code"), doc_blocks())
def test_documented_example_runs(index: int, code: str, tmp_path: Path) -> None:
    done = run_python(code, cwd=tmp_path)
    assert done.returncode == 0, f"docs/otel.md block {index} failed:\n{done.stderr}"


class TestAbandoned:
    async def test_an_exec_whose_coroutine_is_closed_stops_being_the_current_span(
        self, traced: Traced
    ) -> None:
        """``coro.close()`` on an exec that is awaiting (in the same task): its span ends
        as cancelled and is no longer the current span, so later spans of that task (the
        user's, runtree's) do not nest under a finished one."""

        @rt.flow
        async def slow(ctx: rt.ExecutionContext) -> None:
            await asyncio.sleep(10)

        async with (
            rt.create_scope(extensions=[traced.ext]) as scope,
            scope.create_context(name="b") as b,
        ):
            coro = b.exec(slow)
            coro.send(None)  # runs up to its sleep
            coro.close()  # ...and is never awaited to the end
            with traced.user.start_as_current_span("after"):
                pass
            await b.exec(leaf)
        span = traced.one("slow")
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "cancelled"
        assert attrs(span)["runtree.status"] == "cancelled"
        assert traced.parent(traced.one("after")) is None
        assert traced.parent(traced.one("leaf")) is None
