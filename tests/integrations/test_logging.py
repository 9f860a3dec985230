"""runtree.logging with stdlib logging and the real structlog."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

import runtree as rt
from runtree.logging import ContextFilter, LoggingExtension, StructlogProcessor, structlog_processor

tenant: rt.Tag[str] = rt.tag("tenant")
app_log = logging.getLogger("test.app")


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def by_message(self, message: str) -> logging.LogRecord:
        (found,) = [r for r in self.records if r.getMessage() == message]
        return found


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler = Captured()
    handler.addFilter(ContextFilter(tags=[tenant]))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


class TestContextFilter:
    async def test_ids_in_flows_resources_callbacks_and_parallel_tasks(
        self, captured: Captured
    ) -> None:
        @rt.resource
        async def conn(ctx: rt.ResolveContext) -> AsyncIterator[str]:
            app_log.info("resource opens")
            yield "conn"
            app_log.info("resource closes")

        @rt.flow(deps={"conn": conn})
        async def branch(ctx: rt.ExecutionContext, conn: str) -> str:
            await asyncio.sleep(0)
            app_log.info("in %s", ctx.input)
            return ctx.id

        @rt.flow
        async def job(ctx: rt.ExecutionContext) -> list[str]:
            app_log.info("job runs")
            ctx.on_close(lambda: app_log.info("job closes"))
            return await ctx.parallel(ctx.exec(branch, "a"), ctx.exec(branch, "b"))

        async with rt.create_scope() as scope:
            execution = scope.exec(job, tags=[tenant("acme")])
            branch_ids = await execution
        root_id = execution.context.root.id
        job_id = execution.context.id
        app_log.info("outside")

        running = captured.by_message("job runs")
        assert (running.runtree_context_id, running.runtree_root_id) == (job_id, root_id)  # type: ignore[attr-defined]
        assert running.runtree_flow == "job"  # type: ignore[attr-defined]
        assert running.tenant == "acme"  # type: ignore[attr-defined]
        for name, branch_id in zip("ab", branch_ids, strict=True):
            record = captured.by_message(f"in {name}")
            assert record.runtree_context_id == branch_id  # type: ignore[attr-defined]
            assert record.runtree_root_id == root_id  # type: ignore[attr-defined]
            assert record.runtree_flow == "branch"  # type: ignore[attr-defined]
        for message in ("resource opens", "resource closes", "job closes"):
            record = captured.by_message(message)
            assert record.runtree_root_id == root_id, message  # type: ignore[attr-defined]
            assert record.tenant == "acme", message  # type: ignore[attr-defined]
        outside = captured.by_message("outside")
        assert outside.runtree_context_id is None  # type: ignore[attr-defined]
        assert outside.tenant is None  # type: ignore[attr-defined]

    def test_tag_names_that_would_clobber_a_record_are_refused(self) -> None:
        name = rt.tag("name")
        with pytest.raises(ValueError, match=r"^tags=: 'name' is already a LogRecord attribute"):
            ContextFilter(tags=[name])
        assert ContextFilter(tags={"tag_name": name}).tags == (("tag_name", name),)

    def test_format_strings_can_use_the_ids(self) -> None:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
        ContextFilter().filter(record)
        text = logging.Formatter("%(runtree_context_id)s %(runtree_flow)s %(message)s").format(
            record
        )
        assert text == "None None hello"


class TestLoggingExtension:
    async def test_start_end_duration_and_failures(self, captured: Captured) -> None:
        @rt.flow
        async def ok(ctx: rt.ExecutionContext) -> int:
            return 1

        @rt.flow
        async def bad(ctx: rt.ExecutionContext) -> int:
            raise ValueError("nope")

        @rt.flow
        async def slow(ctx: rt.ExecutionContext) -> None:
            await asyncio.Event().wait()

        async with rt.create_scope(extensions=[LoggingExtension()]) as scope:
            ctx = scope.create_context(name="req")
            assert await ctx.exec(ok) == 1
            with pytest.raises(ValueError, match=r"^nope$"):
                await ctx.exec(bad)
            with pytest.raises(rt.ExecTimeoutError):
                await ctx.exec(slow, timeout=0.01)
            await ctx.close()

        ext = [r for r in captured.records if r.name == "runtree.exec"]
        started = [r for r in ext if r.getMessage().endswith("started")]
        assert [r.levelno for r in started] == [logging.DEBUG] * 3
        ended = [r for r in ext if r not in started]
        assert [(r.runtree_flow, r.runtree_status, r.levelno) for r in ended] == [  # type: ignore[attr-defined]
            ("ok", "completed", logging.INFO),
            ("bad", "failed", logging.WARNING),
            ("slow", "failed", logging.WARNING),
        ]
        assert all(r.runtree_duration_ms >= 0 for r in ended)  # type: ignore[attr-defined]
        assert ended[1].getMessage().startswith("subflow bad failed after ")
        assert ended[1].getMessage().endswith("ms: ValueError: nope")
        assert "ExecTimeoutError" in ended[2].getMessage()
        # The extension's records name the exec's own context, not the caller's.
        assert ended[0].runtree_context_id != ctx.id  # type: ignore[attr-defined]
        assert ended[0].runtree_root_id == ctx.id  # type: ignore[attr-defined]

    async def test_its_lines_carry_the_execs_tags_through_the_filter(
        self, captured: Captured
    ) -> None:
        """A ContextFilter with tags gives the extension's own lines (which carry their
        exec's ids) the exec's tags too, exec-call tags included: a format string that
        names a tag works for every line."""

        @rt.flow
        async def work(ctx: rt.ExecutionContext) -> int:
            return 1

        @rt.flow
        async def bad(ctx: rt.ExecutionContext) -> int:
            raise ValueError("boom")

        scope = rt.create_scope(extensions=[LoggingExtension()], tags=[tenant("scope-wide")])
        async with scope, scope.create_context() as root:
            await root.exec(work)
            await root.exec(work, tags=[tenant("per-exec")])
            with pytest.raises(ValueError, match="boom"):
                await root.exec(bad)
        lines = [r for r in captured.records if r.name == "runtree.exec"]
        assert len(lines) == 6
        fmt = logging.Formatter("%(message)s [%(tenant)s]")
        shown = [fmt.format(r).split(" [")[1] for r in lines]
        assert shown == ["scope-wide]"] * 2 + ["per-exec]"] * 2 + ["scope-wide]"] * 2
        assert {r.runtree_flow for r in lines} == {"work", "bad"}  # type: ignore[attr-defined]

    async def test_cancelled_is_info(self, captured: Captured) -> None:
        started = asyncio.Event()

        @rt.flow
        async def waits(ctx: rt.ExecutionContext) -> None:
            started.set()
            await asyncio.Event().wait()

        async with rt.create_scope(extensions=[LoggingExtension("custom")]) as scope:
            execution = scope.exec(waits)
            await started.wait()
            execution.cancel()
            with pytest.raises(rt.Cancelled):
                await execution
        (end,) = [r for r in captured.records if r.name == "custom" and r.levelno > logging.DEBUG]
        assert end.levelno == logging.INFO
        assert end.runtree_status == "cancelled"  # type: ignore[attr-defined]

    async def test_a_stream_ends_when_its_context_closes(self, captured: Captured) -> None:
        # next() only opens a stream: its end line comes when it ends, with its status.
        @rt.flow
        async def numbers(ctx: rt.ExecutionContext[str]) -> AsyncIterator[int]:
            yield 1
            await asyncio.sleep(0.02)
            if ctx.input == "fail":
                raise ValueError("stream broke")
            yield 2

        scope = rt.create_scope(extensions=[LoggingExtension()])
        async with scope, scope.create_context() as ctx:
            assert [i async for i in ctx.exec_stream(numbers, "ok")] == [1, 2]
            with pytest.raises(ValueError, match="stream broke"):
                async for _ in ctx.exec_stream(numbers, "fail"):
                    pass
            async with ctx.exec_stream(numbers, "ok") as stream:
                async for _ in stream:
                    break
        ended = [
            r for r in captured.records if r.name == "runtree.exec" and r.levelno > logging.DEBUG
        ]
        assert [(r.runtree_status, r.levelno) for r in ended] == [  # type: ignore[attr-defined]
            ("completed", logging.INFO),
            ("failed", logging.WARNING),
            ("cancelled", logging.INFO),
        ]
        assert ended[0].runtree_duration_ms >= 15  # type: ignore[attr-defined]
        assert ended[1].getMessage().endswith("ms: ValueError: stream broke")


class TestStructlog:
    async def test_processor_adds_the_ids(self) -> None:
        structlog = pytest.importorskip("structlog")
        from structlog.testing import LogCapture

        capture = LogCapture()
        structlog.configure(
            processors=[structlog_processor, StructlogProcessor(tags=[tenant]), capture]
        )
        try:
            log = structlog.get_logger()

            @rt.flow
            async def work(ctx: rt.ExecutionContext) -> str:
                log.info("working")
                return ctx.id

            async with rt.create_scope() as scope:
                ctx_id = await scope.exec(work, tags=[tenant("acme")])
            log.info("idle")
        finally:
            structlog.reset_defaults()
        working, idle = capture.entries
        assert working["runtree_context_id"] == ctx_id
        assert working["runtree_flow"] == "work"
        assert working["tenant"] == "acme"
        assert idle["runtree_context_id"] is None
