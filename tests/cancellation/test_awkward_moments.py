"""Regressions found by review: cleanups and cancellation at awkward moments (an
on_close callback, an open hook, a wrap_exec before next, a status callback, a retry
pause, a close that is itself interrupted)."""

from __future__ import annotations

import asyncio

import pytest

import runtree as rt


# A. cancellation delivered during an on_close callback skips the remaining cleanups
@pytest.mark.timeout(10)
async def test_a_cancellation_landing_in_on_close_still_runs_every_cleanup():
    log = []

    @rt.resource(ownership="current")
    def tx(ctx):
        yield "tx"
        log.append("tx cleanup")

    @rt.flow(deps={"tx": tx})
    async def inner(ctx, tx):
        ctx.on_close(lambda: log.append("first-registered"))

        async def slow():
            await asyncio.sleep(1)
            log.append("slow done")

        ctx.on_close(slow)
        return 1

    @rt.flow
    async def outer(ctx):
        return await ctx.exec(inner)

    async with rt.create_scope() as scope, scope.create_context() as root:
        with pytest.raises(rt.ExecTimeoutError):
            await root.exec(outer, timeout=0.05)
    # the other cleanups of `inner` must still run even though a cleanup was interrupted
    assert "first-registered" in log
    assert "tx cleanup" in log


# B. a boundary resource whose first resolver is cancelled: the waiter gets a stray CancelledError
@pytest.mark.timeout(10)
async def test_a_cancelled_resource_producer_lets_the_waiter_produce_it():
    started = asyncio.Event()
    calls = 0

    @rt.resource
    async def conn(ctx):
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await asyncio.sleep(5)
        return f"conn{calls}"

    @rt.flow(deps={"conn": conn})
    async def use(ctx, conn):
        return conn

    children = []

    @rt.flow
    async def first(ctx):
        children.append(ctx)
        return await ctx.resolve(conn)

    async def outcome(aw):
        try:
            return await aw
        except BaseException as exc:
            return exc

    async with rt.create_scope() as scope, scope.create_context() as root:
        t1 = asyncio.create_task(outcome(root.exec(first)))
        await asyncio.wait_for(started.wait(), 5)
        t2 = asyncio.create_task(outcome(root.exec(use)))
        await asyncio.sleep(0.01)  # t2 now waits on the shared resolution
        children[0].cancel("stop first")
        r1 = await asyncio.wait_for(t1, 5)
        r2 = await asyncio.wait_for(t2, 5)
        assert isinstance(r1, rt.Cancelled), repr(r1)
        # nothing cancelled t2 or its context: it should resolve the resource itself
        assert r2 == "conn2", repr(r2)


# C. Execution.cancel() while an async status callback runs: CancelledError escapes,
#    the root context is never closed and dispose() hangs.
@pytest.mark.timeout(10)
async def test_cancel_during_an_async_status_callback_closes_the_execution():
    in_cb = asyncio.Event()

    @rt.flow
    async def work(ctx):
        return 1

    scope = rt.create_scope()
    execution = scope.exec(work)

    async def cb(status, ex):
        if status == "running":
            in_cb.set()
            await asyncio.sleep(1)

    execution.on_status_change(cb)
    await asyncio.wait_for(in_cb.wait(), 5)
    execution.cancel("stop")
    try:
        await execution
    except BaseException as exc:
        err = exc
    else:
        err = None
    status, closed = execution.status, execution.context.closed
    try:
        await asyncio.wait_for(scope.dispose(), 2)
        hung = False
    except TimeoutError:
        hung = True
    print((type(err).__name__, status, closed, hung))
    assert (type(err).__name__, status, closed, hung) == ("Cancelled", "cancelled", True, False)


# D. cancellation during an async on_context_open hook: caller gets CancelledError, not Cancelled
@pytest.mark.timeout(10)
async def test_cancel_during_an_open_hook_reaches_the_caller_as_cancelled():
    opened = asyncio.Event()
    seen = []

    class Ext(rt.Extension):
        async def on_context_open(self, ctx):
            if ctx.name == "child":
                seen.append(ctx)
                opened.set()
                await asyncio.sleep(1)

    @rt.flow
    async def child(ctx):
        return 1

    async with rt.create_scope(extensions=[Ext()]) as scope, scope.create_context() as root:
        task = asyncio.create_task(root.exec(child))
        await asyncio.wait_for(opened.wait(), 5)
        seen[0].cancel("stop")
        try:
            await task
        except BaseException as exc:
            err = exc
        assert isinstance(err, rt.Cancelled), repr(err)


# E. cancellation while a wrap_exec extension awaits before next(): CancelledError escapes and
#    the task is left marked as cancelling.
@pytest.mark.timeout(10)
async def test_cancel_inside_wrap_exec_before_next_is_converted_and_consumed():
    entered = asyncio.Event()
    ops = []

    class Ext(rt.Extension):
        async def wrap_exec(self, next, op):
            if op.kind == "subflow":
                ops.append(op)
                entered.set()
                await asyncio.sleep(1)
            return await next()

    @rt.flow
    async def child(ctx):
        return 1

    async with rt.create_scope(extensions=[Ext()]) as scope, scope.create_context() as root:

        async def caller():
            try:
                await root.exec(child)
            except BaseException as exc:
                return exc, asyncio.current_task().cancelling()
            return None, asyncio.current_task().cancelling()

        task = asyncio.create_task(caller())
        await asyncio.wait_for(entered.wait(), 5)
        ops[0].context.cancel("stop")
        err, cancelling = await asyncio.wait_for(task, 5)
        assert isinstance(err, rt.Cancelled), repr(err)
        assert cancelling == 0


# F. closing a boundary while a child (in another task) runs its async on_close callbacks:
#    _join_running cancels the already-finished child, interrupting its cleanup and leaking a
#    CancelledError into the child's caller.
@pytest.mark.timeout(10)
async def test_closing_a_boundary_never_cancels_a_child_that_already_returned():
    log = []
    in_cleanup = asyncio.Event()
    release = asyncio.Event()

    @rt.flow
    async def child(ctx):
        ctx.on_close(lambda: log.append("first-registered"))

        async def slow():
            in_cleanup.set()
            await release.wait()
            log.append("slow done")

        ctx.on_close(slow)
        return "value"

    async def outcome(aw):
        try:
            return await aw
        except BaseException as exc:
            return exc

    async with rt.create_scope() as scope:
        root = scope.create_context()
        task = asyncio.create_task(outcome(root.exec(child)))
        await asyncio.wait_for(in_cleanup.wait(), 5)
        closer = asyncio.create_task(root.close())
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.wait_for(closer, 5)
        result = await asyncio.wait_for(task, 5)
    # the child had already returned: its result stands and all its cleanups ran
    assert (result, log) == ("value", ["slow done", "first-registered"]), (result, log)


# G. a keyed step that (directly or indirectly) execs the same key in the same tree deadlocks
@pytest.mark.timeout(10)
async def test_a_step_that_reuses_its_own_key_inside_fails_instead_of_hanging():
    @rt.flow
    async def inner(ctx):
        return 1

    @rt.flow
    async def outer(ctx):
        return await ctx.exec(inner, key="step")

    async with rt.create_scope() as scope, scope.create_context() as root:
        with pytest.raises(rt.JournalReentryError) as info:
            await asyncio.wait_for(root.exec(outer, key="step"), 2)
        assert info.value.key == "step"
        assert "enclosing step 'outer'" in str(info.value)
        # the failure is the outer step's recorded outcome; a sibling key still runs
        assert await root.exec(inner, key="other") == 1


# H. cancelling a boundary during a retry pause does not stop the retry loop promptly
@pytest.mark.timeout(10)
async def test_cancelling_a_boundary_interrupts_a_retry_pause():
    failed = asyncio.Event()

    def flaky():
        failed.set()
        raise ConnectionError("down")

    async with rt.create_scope() as scope:
        root = scope.create_context()
        task = asyncio.create_task(root.run(flaky, retry=3, retry_delay=3))
        await asyncio.wait_for(failed.wait(), 5)
        await asyncio.sleep(0.01)
        root.cancel("stop")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(rt.Cancelled):
            await asyncio.wait_for(task, 5)
        elapsed = loop.time() - t0
        await root.close()
    assert elapsed < 0.5, f"cancel took {elapsed:.2f}s to reach the caller"


# I. an extension that raises before next(): the child's details say cancelled/Cancelled
@pytest.mark.timeout(10)
async def test_an_extension_error_before_next_is_the_childs_error():
    ops = []

    class Ext(rt.Extension):
        async def wrap_exec(self, next, op):
            if op.kind == "subflow":
                ops.append(op)
                raise PermissionError("denied by policy")
            return await next()

    @rt.flow
    async def child(ctx):
        return 1

    async with rt.create_scope(extensions=[Ext()]) as scope, scope.create_context() as root:
        with pytest.raises(PermissionError):
            await root.exec(child)
    d = ops[0].context.details
    assert (d.status, type(d.error).__name__) == ("failed", "PermissionError")


# J. the task calling close() is cancelled while close() joins children: on_close never runs
@pytest.mark.timeout(10)
async def test_a_close_interrupted_while_joining_can_be_completed_later():
    log = []
    running = asyncio.Event()
    release = asyncio.Event()

    @rt.flow
    async def stubborn(ctx):
        running.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await release.wait()  # edge-triggered: cleanup work after cancellation
            raise

    async with rt.create_scope() as scope:
        root = scope.create_context()
        root.on_close(lambda: log.append("root closed"))
        child_task = asyncio.create_task(root.exec(stubborn))
        await asyncio.wait_for(running.wait(), 5)
        closer = asyncio.create_task(root.close())
        await asyncio.sleep(0.01)
        closer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closer
        release.set()
        with pytest.raises(rt.Cancelled):
            await asyncio.wait_for(child_task, 5)
        await root.close()  # a second close should finish the job
    assert log == ["root closed"], log


# K. closing the boundary from inside work running on it: RuntimeError, but the boundary is
#    left "closed" with its on_close callbacks never run (a later close() is a no-op).
@pytest.mark.timeout(10)
async def test_a_refused_close_leaves_the_boundary_open():
    log = []
    async with rt.create_scope() as scope:
        root = scope.create_context()
        root.on_close(lambda: log.append("root closed"))

        async def closes_root():
            await root.close()

        with pytest.raises(RuntimeError):
            await root.run(closes_root)
        state = root.closed
        await root.close()
    assert (state, log) == (False, ["root closed"]), (state, log)


# L. tags.all / get_all ignores the creation-time snapshot that get() honours
@pytest.mark.timeout(10)
async def test_get_all_honours_the_tag_snapshot():
    t = rt.tag("t")
    started = asyncio.Event()
    go = asyncio.Event()

    @rt.flow
    async def child(ctx):
        started.set()
        await go.wait()
        return ctx.find(t), ctx.get_all(t)

    async with rt.create_scope() as scope, scope.create_context() as root:
        task = asyncio.create_task(root.exec(child))
        await asyncio.wait_for(started.wait(), 5)
        root.set(t, "late")
        go.set()
        found, all_ = await asyncio.wait_for(task, 5)
    assert (found, all_) == (None, []), (found, all_)


# M. sanity: retry after a timed-out attempt, gather-cancel of a parent


@pytest.mark.timeout(10)
async def test_a_later_cancel_in_the_same_task_still_arrives():
    entered = asyncio.Event()
    ops = []

    class Ext(rt.Extension):
        async def wrap_exec(self, next, op):
            if op.kind == "subflow" and op.target.name == "child":
                ops.append(op)
                entered.set()
                await asyncio.sleep(1)
            return await next()

    @rt.flow
    async def child(ctx):
        return 1

    slow_started = asyncio.Event()
    slow_ctx = []

    @rt.flow
    async def slow(ctx):
        slow_ctx.append(ctx)
        slow_started.set()
        await asyncio.sleep(3)
        return "finished"

    async with rt.create_scope(extensions=[Ext()]) as scope, scope.create_context() as root:

        async def caller():
            try:
                await root.exec(child)
            except BaseException:
                pass
            try:
                return await root.exec(slow)
            except rt.Cancelled as exc:
                return exc

        task = asyncio.create_task(caller())
        await asyncio.wait_for(entered.wait(), 5)
        ops[0].context.cancel("stop")
        await asyncio.wait_for(slow_started.wait(), 5)
        slow_ctx[0].cancel("stop slow")
        result = await asyncio.wait_for(task, 5)
    assert isinstance(result, rt.Cancelled), repr(result)
