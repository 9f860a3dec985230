"""Edge cases derived from pumped-fn lite scope.test.ts "context lifecycle extensions"
(rollback/dispose joins), index.test.ts Flow.Execution (abort), core.behavior timeouts, and
DESIGN §6 ordering/journal/timeout promises these tests exercise."""

import asyncio

import pytest

import runtree as rt

pytestmark = pytest.mark.asyncio


# lite: joins async rollback disposal into the parent close before exec rejection settles
async def test_async_close_hook_awaited_before_exec_raises():
    events = []

    class Slow(rt.Extension):
        async def on_context_close(self, ctx):
            label = "child" if ctx.parent else "root"
            events.append(f"close:{label}:start")
            await asyncio.sleep(0.005)
            events.append(f"close:{label}:end")

    class Boom(Exception):
        pass

    class Failing(rt.Extension):
        def on_context_open(self, ctx):
            if ctx.parent:
                raise Boom("child init failed")

    child = rt.flow(lambda c: "x", name="child")

    async def root_f(ctx):
        return await ctx.exec(child)

    async with rt.create_scope(extensions=[Slow(), Failing()]) as scope:
        with pytest.raises(Boom):
            await scope.exec(rt.flow(root_f))
        assert events == [
            "close:child:start",
            "close:child:end",
            "close:root:start",
            "close:root:end",
        ]


# lite: joins root rollback disposal into scope disposal before extension dispose
async def test_dispose_waits_close_hooks_before_ext_dispose():
    events = []

    class Slow(rt.Extension):
        async def on_context_close(self, ctx):
            events.append("context:start")
            await asyncio.sleep(0.005)
            events.append("context:end")

        def dispose(self, scope):
            events.append("scope")

    scope = rt.create_scope(extensions=[Slow()])
    ctx = scope.create_context()
    await ctx.run(lambda: 1)
    events.clear()
    await scope.dispose()
    assert events == ["context:start", "context:end", "scope"]
    assert ctx.closed


# lite: settles a re-entrant scope disposal started from inside a hook
async def test_reentrant_dispose_from_open_hook():
    holder = {}

    class Sabotage(rt.Extension):
        def on_context_open(self, ctx):
            holder["d"] = asyncio.ensure_future(ctx.scope.dispose())
            raise RuntimeError("init failed")

    scope = rt.create_scope(extensions=[Sabotage()])
    ctx = scope.create_context()
    with pytest.raises(RuntimeError, match="init failed"):
        await ctx.exec(rt.flow(lambda c: 1))
    await asyncio.wait_for(holder["d"], 2)
    assert scope.disposed and ctx.closed


# Execution: cancel before it starts (pending -> cancelled)
async def test_execution_cancel_while_pending():
    ran = []
    async with rt.create_scope() as scope:
        ex = scope.exec(rt.flow(lambda c: ran.append(1)))
        statuses = []
        ex.on_status_change(lambda s, e: statuses.append(s))
        assert ex.status == "pending"
        ex.cancel()
        with pytest.raises(rt.Cancelled):
            await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(_await(ex))), 2)
        assert ex.status == "cancelled"
        assert ran == []
        assert statuses[-1] == "cancelled"


async def _await(ex):
    return await ex


# scope.exec returns at once with status pending, flow starts on a later loop turn
async def test_scope_exec_pending_then_runs():
    ran = []
    async with rt.create_scope() as scope:
        ex = scope.exec(rt.flow(lambda c: ran.append(1) or "v"))
        assert ex.status == "pending" and ran == []
        assert await ex == "v"


# Execution details=True with cancellation does not raise
async def test_execution_details_cancelled():
    started = asyncio.Event()

    async def never(ctx):
        started.set()
        await asyncio.sleep(10)

    async with rt.create_scope() as scope:
        ex = scope.exec(rt.flow(never), details=True)
        await started.wait()
        ex.cancel("stop")
        d = await ex
        assert d.ok is False and isinstance(d.error, rt.Cancelled)
        assert ex.status == "cancelled"


# scope.exec(timeout=) -> ExecTimeoutError, Execution failed
async def test_scope_exec_timeout():
    async def slow(ctx):
        await asyncio.sleep(1)

    async with rt.create_scope() as scope:
        ex = scope.exec(rt.flow(slow, name="slow"), timeout=0.02)
        with pytest.raises(rt.ExecTimeoutError):
            await ex
        assert ex.status == "failed"
        assert ex.context.details.status == "failed"


# Journal: two concurrent execs with the same key run once; second awaits first
async def test_journal_concurrent_same_key():
    n = 0

    async def step_f(ctx):
        nonlocal n
        n += 1
        await asyncio.sleep(0.02)
        return n

    step = rt.flow(step_f, name="step")

    async def p(ctx):
        return await ctx.parallel(ctx.exec(step, key="k"), ctx.exec(step, key="k"))

    async with rt.create_scope() as scope:
        assert await scope.exec(rt.flow(p)) == [1, 1]
        assert n == 1


# timeout= bounds the wait for a key another exec holds
async def test_timeout_bounds_key_wait():
    release = asyncio.Event()

    async def step_f(ctx):
        await release.wait()
        return "v"

    step = rt.flow(step_f, name="step")
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        first = asyncio.ensure_future(ctx.exec(step, key="k"))
        await asyncio.sleep(0.01)
        with pytest.raises(rt.ExecTimeoutError):
            await ctx.exec(step, key="k", timeout=0.02)
        release.set()
        assert await first == "v"
        assert await ctx.exec(step, key="k") == "v"
        await ctx.close()


# Retry: fresh child per attempt; timeout is a failure retried; journal final outcome
async def test_retry_timeout_and_journal():
    attempts = []

    async def flaky(ctx):
        attempts.append(ctx)
        if len(attempts) < 3:
            await asyncio.sleep(1)
        return "ok"

    f = rt.flow(flaky, name="flaky")
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        assert await ctx.exec(f, key="k", timeout=0.02, retry=3) == "ok"
        assert len(attempts) == 3 and len({id(a) for a in attempts}) == 3
        assert await ctx.exec(f, key="k") == "ok"
        assert len(attempts) == 3
        await ctx.close()


# Retry never after cancellation
async def test_no_retry_after_cancel():
    attempts = []
    started = asyncio.Event()

    async def f(ctx):
        attempts.append(ctx)
        started.set()
        await asyncio.sleep(10)

    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        t = asyncio.ensure_future(ctx.exec(rt.flow(f), retry=3))
        await started.wait()
        attempts[-1].cancel()
        with pytest.raises(rt.Cancelled):
            await t
        assert len(attempts) == 1
        await ctx.close()


# Cancellations and timeouts are never journaled
async def test_timeout_not_journaled():
    n = 0

    async def f(ctx):
        nonlocal n
        n += 1
        if n == 1:
            await asyncio.sleep(1)
        return n

    fl = rt.flow(f, name="f")
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        with pytest.raises(rt.ExecTimeoutError):
            await ctx.exec(fl, key="k", timeout=0.02)
        assert await ctx.exec(fl, key="k") == 2
        await ctx.close()


# A cancelled boundary refuses new execs with Cancelled, closes cancelled
async def test_cancelled_boundary():
    async with rt.create_scope() as scope:
        b = scope.create_context()
        b.cancel("stop")
        assert b.cancelled
        with pytest.raises(rt.Cancelled):
            await b.exec(rt.flow(lambda c: 1))
        with pytest.raises(rt.Cancelled):
            b.raise_if_cancelled()
        await b.close()
        assert b.details.status == "cancelled"


# parallel: calling task cancelled -> every member cancelled and awaited
async def test_parallel_outer_cancel():
    closed = []
    started = asyncio.Event()

    async def slow(ctx):
        ctx.on_close(lambda: closed.append(ctx.details.status))
        started.set()
        await asyncio.sleep(10)

    s = rt.flow(slow)

    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        t = asyncio.ensure_future(ctx.parallel(ctx.exec(s), ctx.exec(s)))
        await started.wait()
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert closed == ["cancelled", "cancelled"]
        await ctx.close()


# exec on a context closed from another task while parallel members pending
async def test_parallel_settled_with_cancelled_member():
    holder = []

    async def slow(ctx):
        holder.append(ctx)
        await asyncio.sleep(10)

    async def quick(ctx):
        await asyncio.sleep(0.01)
        holder[0].cancel("x")
        return "q"

    async def p(ctx):
        return await ctx.parallel_settled(ctx.exec(rt.flow(slow)), ctx.exec(rt.flow(quick)))

    async with rt.create_scope() as scope:
        res = await asyncio.wait_for(scope.exec(rt.flow(p)), 2)
        assert res[0].ok is False and isinstance(res[0].error, rt.Cancelled)
        assert res[1].ok and res[1].value == "q"


# A flow returning while execs it started in other tasks still run: those are cancelled+joined
async def test_orphan_tasks_cancelled_before_complete():
    closed = []

    async def child_f(ctx):
        ctx.on_close(lambda: closed.append(ctx.details.status))
        await asyncio.sleep(10)

    child = rt.flow(child_f)

    async def parent_f(ctx):
        ctx.data["t"] = asyncio.ensure_future(ctx.exec(child))
        await asyncio.sleep(0.01)
        return "done"

    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        assert await ctx.exec(rt.flow(parent_f)) == "done"
        assert closed == ["cancelled"]
        await ctx.close()


# Journal: key replay returns same object; different flow name raises JournalMismatchError
async def test_journal_mismatch():
    a = rt.flow(lambda c: {"v": 1}, name="a")
    b = rt.flow(lambda c: {"v": 2}, name="b")
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        x = await ctx.exec(a, key="k")
        assert await ctx.exec(a, key="k") is x
        with pytest.raises(rt.JournalMismatchError):
            await ctx.exec(b, key="k")
        await ctx.close()


# Journal input change: replays and warns JournalInputWarning
async def test_journal_input_warning():
    a = rt.flow(lambda c: c.input, name="a")
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        assert await ctx.exec(a, 1, key="k") == 1
        with pytest.warns(rt.JournalInputWarning):
            assert await ctx.exec(a, 2, key="k") == 1
        await ctx.close()


# reset_journal returns count
async def test_reset_journal_count():
    a = rt.flow(lambda c: 1, name="a")
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        await ctx.exec(a, key="x:1")
        await ctx.exec(a, key="x:2")
        await ctx.exec(a, key="y:1")
        assert await ctx.reset_journal("x:*") == 2
        assert await ctx.reset_journal() == 1
        await ctx.close()
