"""scope.exec's Execution handle and the one-call execute()."""

from __future__ import annotations

import asyncio
import gc

import pytest

import runtree as rt
from runtree import Cancelled, ExecutionDetails


@rt.flow
async def greet(ctx: rt.ExecutionContext) -> str:
    await asyncio.sleep(0)
    return f"hello {ctx.input}"


@rt.flow
async def broken(ctx: rt.ExecutionContext) -> None:
    raise RuntimeError("broken flow")


class TestExecution:
    async def test_returns_pending_then_runs_as_a_task(self) -> None:
        async with rt.create_scope() as scope:
            execution = scope.exec(greet, "ann")
            assert execution.status == "pending"
            assert execution.flow_name == "greet"
            assert execution.id == execution.context.id
            assert await execution == "hello ann"
            assert execution.status == "completed"
            assert execution.context.closed
            assert execution.context.input == "ann"

    async def test_status_sequence_with_sync_and_async_callbacks(self) -> None:
        seen: list[tuple[str, str]] = []

        def sync_cb(status: str, ex: rt.Execution[object]) -> None:
            seen.append(("sync", status))

        async def async_cb(status: str, ex: rt.Execution[object]) -> None:
            await asyncio.sleep(0)
            seen.append(("async", status))

        def bad_cb(status: str, ex: rt.Execution[object]) -> None:
            raise ValueError(f"callback broke on {status}")

        async with rt.create_scope() as scope:
            execution = scope.exec(greet, "x")
            execution.on_status_change(sync_cb)
            execution.on_status_change(async_cb)
            execution.on_status_change(bad_cb)
            await execution
            failing = scope.exec(broken)
            unsubscribe = failing.on_status_change(sync_cb)
            with pytest.raises(RuntimeError):
                await failing
            unsubscribe()
        assert seen == [
            ("sync", "running"),
            ("async", "running"),
            ("sync", "completed"),
            ("async", "completed"),
            ("sync", "running"),
            ("sync", "failed"),
        ]
        assert [str(e) for e in execution.status_callback_errors] == [
            "callback broke on running",
            "callback broke on completed",
        ]

    async def test_details_never_raise(self) -> None:
        async with rt.create_scope() as scope:
            ok = await scope.exec(greet, "d", details=True)
            bad = await scope.exec(broken, details=True)
        assert isinstance(ok, ExecutionDetails)
        assert ok.ok and ok.value == "hello d" and ok.error is None
        assert ok.context.details.status == "completed"
        assert not bad.ok and isinstance(bad.error, RuntimeError)
        assert bad.context.details.status == "failed"

    async def test_cancel_a_running_execution(self) -> None:
        started = asyncio.Event()

        @rt.flow
        async def forever(ctx: rt.ExecutionContext) -> None:
            started.set()
            await asyncio.sleep(30)

        async with rt.create_scope() as scope:
            execution = scope.exec(forever)
            await started.wait()
            execution.cancel()
            with pytest.raises(Cancelled):
                await execution
            assert execution.status == "cancelled"
            pending = scope.exec(forever)
            pending.cancel()  # before it starts
            result = await asyncio.gather(pending, return_exceptions=True)
            assert isinstance(result[0], Cancelled)
            assert pending.status == "cancelled"

    async def test_execution_tags_and_root_id(self) -> None:
        who = rt.tag("who")

        @rt.flow
        async def whoami(ctx: rt.ExecutionContext) -> object:
            return ctx.get(who), ctx.root.id

        async with rt.create_scope() as scope:
            with pytest.warns(UserWarning, match="without a store"):
                execution = scope.exec(whoami, tags=[who("me")], id="job-7")
            assert await execution == ("me", "job-7")

    async def test_exec_rejects_non_flows(self) -> None:
        async with rt.create_scope() as scope:
            with pytest.raises(TypeError, match=r"use ctx.run\(\) for plain callables"):
                scope.exec(print)  # type: ignore[call-overload]


class TestExecute:
    async def test_without_scope_creates_and_disposes_one(self) -> None:
        log: list[str] = []
        tenant = rt.tag("tenant")

        @rt.atom
        def resource_atom(ctx: rt.ResolveContext) -> object:
            ctx.cleanup(lambda: log.append("disposed"))
            return ctx.get(tenant)

        @rt.flow(deps={"t": resource_atom})
        async def uses(ctx: rt.ExecutionContext, t: object) -> object:
            return t

        assert await rt.execute(uses, scope_tags=[tenant("acme")]) == "acme"
        assert log == ["disposed"]

    async def test_disposes_its_scope_on_failure_too(self) -> None:
        log: list[str] = []
        a = rt.atom(lambda ctx: ctx.cleanup(lambda: log.append("disposed")), name="a")

        @rt.flow(deps={"a": a})
        async def fails(ctx: rt.ExecutionContext, a: object) -> None:
            raise KeyError("bad")

        with pytest.raises(KeyError):
            await rt.execute(fails)
        assert log == ["disposed"]
        details = await rt.execute(fails, details=True)
        assert not details.ok and log == ["disposed", "disposed"]

    async def test_with_scope_delegates_and_rejects_scope_options(self) -> None:
        calls: list[str] = []

        class Tracer(rt.Extension):
            async def wrap_exec(self, next, op):  # type: ignore[no-untyped-def]
                calls.append(op.kind)
                return await next()

        async with rt.create_scope(extensions=[Tracer()]) as scope:
            assert await rt.execute(greet, "s", scope=scope) == "hello s"
            with pytest.raises(TypeError, match=r"cannot take extensions, scope_tags"):
                await rt.execute(  # type: ignore[call-overload]
                    greet, scope=scope, extensions=[Tracer()], scope_tags=[rt.tag("x")(1)]
                )
        assert calls == ["execute"]


async def test_an_execution_pending_when_its_scope_is_disposed_never_runs() -> None:
    ran: list[bool] = []

    @rt.flow
    async def job(ctx: rt.ExecutionContext) -> None:
        ran.append(True)

    scope = rt.create_scope()
    execution = scope.exec(job)
    heard: list[str] = []
    execution.on_status_change(lambda status, e: heard.append(status))
    await scope.dispose()
    # cancelled as soon as its root is closed (pending -> cancelled, never running)
    assert (execution.status, execution.context.details.status) == ("cancelled", "cancelled")
    with pytest.raises(Cancelled, match=r"closed it before it started$"):
        await execution
    assert execution.status == "cancelled"
    assert heard == ["cancelled"]
    assert ran == []


async def test_a_cancelled_execution_nobody_awaits_is_not_reported_a_failed_one_is() -> None:
    """Like asyncio's tasks: a cancelled one is not "Task exception was never retrieved"
    (its scope closed before it started, or it was cancelled), a failed one still is."""
    reported: list[BaseException | None] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context.get("exception")))
    try:

        @rt.flow
        async def job(ctx: rt.ExecutionContext) -> None:
            await asyncio.sleep(10)

        scope = rt.create_scope()
        unstarted = scope.exec(job)
        started = scope.exec(job)
        await asyncio.sleep(0.01)
        started.cancel()
        failed = scope.exec(broken)
        await asyncio.sleep(0.01)
        await scope.dispose()
        assert (unstarted.status, started.status, failed.status) == (
            "cancelled",
            "cancelled",
            "failed",
        )
        del unstarted, started, failed
        gc.collect()
        assert [type(e) for e in reported] == [RuntimeError]
    finally:
        loop.set_exception_handler(None)
