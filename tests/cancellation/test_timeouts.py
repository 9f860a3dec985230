"""Timeouts per attempt and retries in fresh child contexts."""

from __future__ import annotations

import asyncio

import pytest

import runtree as rt
from runtree import Cancelled, ExecTimeoutError


class TestTimeout:
    async def test_timeout_raises_exec_timeout_error_after_cleanup(self) -> None:
        log: list[str] = []

        @rt.flow
        async def slow(ctx: rt.ExecutionContext) -> None:
            ctx.on_close(lambda: log.append(f"closed {ctx.details.status}"))
            try:
                await asyncio.sleep(30)
            finally:
                log.append("unwound")

        async with rt.create_scope() as scope, scope.create_context() as root:
            with pytest.raises(ExecTimeoutError) as info:
                await root.exec(slow, timeout=0.01)
            assert isinstance(info.value, TimeoutError)
            assert info.value.name == "slow"
            assert info.value.timeout == 0.01
            assert "'slow' timed out after 0.01s" in str(info.value)
            assert log == ["unwound", "closed failed"]
            assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
            assert await root.exec(rt.flow(lambda c: "ok", name="next")) == "ok"

    async def test_fast_work_under_a_timeout_is_untouched(self) -> None:
        @rt.flow
        async def quick(ctx: rt.ExecutionContext) -> str:
            await asyncio.sleep(0)
            return "fast"

        async with rt.create_scope() as scope, scope.create_context() as root:
            assert await root.exec(quick, timeout=5) == "fast"
            await asyncio.sleep(0)
            assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    async def test_invalid_timeout_and_retry_are_rejected(self) -> None:
        f = rt.flow(lambda c: 1, name="f")
        async with rt.create_scope() as scope, scope.create_context() as root:
            with pytest.raises(ValueError, match=r"timeout= must be a positive number"):
                await root.exec(f, timeout=0)
            with pytest.raises(ValueError, match=r"retry= must be a non-negative int"):
                await root.exec(f, retry=-1)
            with pytest.raises(TypeError, match=r"unexpected keyword argument"):
                await root.exec(f, retires=2)  # type: ignore[call-arg]

    async def test_bad_retry_pacing_is_refused_before_the_step_runs(self) -> None:
        ran: list[int] = []

        def step() -> None:
            ran.append(1)
            raise ValueError("the step's own error")

        bad: list[tuple[dict[str, object], str]] = [
            ({"retry_delay": -1}, r"^retry_delay= must be a number >= 0 \(got -1\) for 'step'$"),
            ({"retry_delay": "1"}, r"^retry_delay= must be a number >= 0"),
            ({"retry_backoff": 0}, r"^retry_backoff= must be a number > 0"),
            ({"retry_jitter": float("nan")}, r"^retry_jitter= must be a number >= 0"),
        ]
        async with rt.create_scope() as scope, scope.create_context() as root:
            for options, message in bad:
                with pytest.raises(ValueError, match=message):
                    await root.run(step, retry=2, **options)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=r"^retry_on= must be an exception class"):
                await root.run(step, retry=2, retry_on="ValueError")  # type: ignore[arg-type]
            assert ran == []  # refused before anything ran
            with pytest.raises(ValueError, match="the step's own error"):
                await root.run(step, retry=1, retry_delay=0, retry_on=(ValueError,))
            assert ran == [1, 1]

    async def test_timed_out_execution_ends_failed(self) -> None:
        @rt.flow
        async def slow(ctx: rt.ExecutionContext) -> None:
            await asyncio.sleep(30)

        async with rt.create_scope() as scope:
            execution = scope.exec(slow, timeout=0.01)
            with pytest.raises(ExecTimeoutError):
                await execution
            assert execution.status == "failed"


class TestRetry:
    async def test_timeout_then_retry_in_fresh_children(self) -> None:
        ids: list[str] = []

        @rt.flow
        async def sometimes_slow(ctx: rt.ExecutionContext) -> str:
            ids.append(ctx.id)
            if len(ids) == 1:
                await asyncio.sleep(30)
            return f"attempt {len(ids)}"

        async with rt.create_scope() as scope, scope.create_context() as root:
            assert await root.exec(sometimes_slow, timeout=0.01, retry=1) == "attempt 2"
        assert len(ids) == 2 and ids[0] != ids[1]

    async def test_retries_stop_after_n_further_attempts(self) -> None:
        attempts = 0

        @rt.flow
        async def always_fails(ctx: rt.ExecutionContext) -> None:
            nonlocal attempts
            attempts += 1
            raise ConnectionError(f"try {attempts}")

        async with rt.create_scope() as scope, scope.create_context() as root:
            with pytest.raises(ConnectionError, match=r"^try 3$"):
                await root.exec(always_fails, retry=2)
        assert attempts == 3

    async def test_retry_on_filters_and_delay_backs_off(self) -> None:
        attempts = 0
        loop = asyncio.get_running_loop()
        times: list[float] = []

        def fn() -> str:
            nonlocal attempts
            attempts += 1
            times.append(loop.time())
            if attempts < 3:
                raise OSError("transient")
            return "ok"

        def fatal() -> None:
            raise KeyError("fatal")

        async with rt.create_scope() as scope, scope.create_context() as root:
            got = await root.run(fn, retry=5, retry_delay=0.01, retry_backoff=2.0, retry_on=OSError)
            assert got == "ok"
            assert times[1] - times[0] >= 0.009
            assert times[2] - times[1] >= 0.019
            with pytest.raises(KeyError):
                await root.run(fatal, retry=3, retry_on=OSError)

    async def test_cancellation_is_never_retried(self) -> None:
        attempts = 0
        holder: list[rt.ExecutionContext] = []

        @rt.flow
        async def victim(ctx: rt.ExecutionContext) -> None:
            nonlocal attempts
            attempts += 1
            holder.append(ctx)
            await asyncio.sleep(30)

        async with rt.create_scope() as scope, scope.create_context() as root:
            task = asyncio.ensure_future(root.exec(victim, retry=3))
            while not holder:
                await asyncio.sleep(0)
            holder[0].cancel()
            with pytest.raises(Cancelled):
                await task
        assert attempts == 1


class TestNestedTimeouts:
    async def test_outer_timeout_unwinds_inner_work_and_names_the_outer_step(self) -> None:
        statuses: dict[str, str] = {}

        @rt.flow
        async def inner(ctx: rt.ExecutionContext) -> None:
            ctx.on_close(lambda: statuses.update(inner=ctx.details.status))
            await asyncio.sleep(30)

        @rt.flow
        async def outer(ctx: rt.ExecutionContext) -> None:
            ctx.on_close(lambda: statuses.update(outer=ctx.details.status))
            await ctx.exec(inner)

        async with rt.create_scope() as scope, scope.create_context() as root:
            with pytest.raises(ExecTimeoutError) as info:
                await root.exec(outer, timeout=0.02)
        assert info.value.name == "outer"
        assert statuses == {"inner": "cancelled", "outer": "failed"}

    async def test_inner_timeout_is_caught_by_the_outer_flow(self) -> None:
        @rt.flow
        async def slow(ctx: rt.ExecutionContext) -> str:
            await asyncio.sleep(30)
            return "never"

        @rt.flow
        async def outer(ctx: rt.ExecutionContext) -> str:
            try:
                return await ctx.exec(slow, timeout=0.01)
            except ExecTimeoutError:
                await asyncio.sleep(0)
                return "fallback"

        async with rt.create_scope() as scope, scope.create_context() as root:
            assert await root.exec(outer, timeout=5) == "fallback"
            await asyncio.sleep(0)
            assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    async def test_timeout_in_a_parallel_branch_fails_fast(self) -> None:
        log: list[str] = []

        @rt.flow
        async def branch(ctx: rt.ExecutionContext) -> None:
            ctx.on_close(lambda: log.append(f"{ctx.input} {ctx.details.status}"))
            await asyncio.sleep(30)

        @rt.flow
        async def parent(ctx: rt.ExecutionContext) -> None:
            await ctx.parallel(ctx.exec(branch, "a", timeout=0.01), ctx.exec(branch, "b"))

        async with rt.create_scope() as scope:
            with pytest.raises(ExecTimeoutError):
                await scope.exec(parent)
        assert sorted(log) == ["a failed", "b cancelled"]


class TestMixedCancellation:
    async def test_an_outer_cancel_wins_over_a_context_cancel(self) -> None:
        holder: list[rt.ExecutionContext] = []

        @rt.flow
        async def child(ctx: rt.ExecutionContext) -> None:
            holder.append(ctx)
            await asyncio.sleep(30)

        async with rt.create_scope() as scope, scope.create_context() as root:
            task = asyncio.ensure_future(root.exec(child))
            while not holder:
                await asyncio.sleep(0)
            holder[0].cancel()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert holder[0].details.status == "cancelled"

    async def test_cancelling_an_execution_stops_its_parallel_branches(self) -> None:
        log: list[str] = []
        ready = asyncio.Barrier(3)

        @rt.flow
        async def branch(ctx: rt.ExecutionContext) -> None:
            ctx.on_close(lambda: log.append(ctx.details.status))
            await ready.wait()
            await asyncio.sleep(30)

        @rt.flow
        async def job(ctx: rt.ExecutionContext) -> None:
            await ctx.parallel(ctx.exec(branch), ctx.exec(branch))

        async with rt.create_scope() as scope:
            execution = scope.exec(job)
            await ready.wait()
            execution.cancel()
            with pytest.raises(Cancelled):
                await execution
        assert log == ["cancelled", "cancelled"]
        assert execution.status == "cancelled"
