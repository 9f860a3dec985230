"""Translated from pumped-fn index.test.ts (@892bfab2) "ExecutionContext lifecycle",
lite scope.test.ts "ctx.onClose()", "closed context", "close settlement", and lite
structured-lifetime.test.ts."""

import asyncio

import pytest

import runtree as rt

pytestmark = pytest.mark.asyncio


# index: starts in active state; close -> closed
async def test_active_then_closed():
    async with rt.create_scope() as scope:
        ctx = scope.create_context(name="test")
        assert ctx.closed is False
        await ctx.close()
        assert ctx.closed is True


# index: close is idempotent
async def test_close_idempotent():
    async with rt.create_scope() as scope:
        ctx = scope.create_context(name="test")
        n = []
        ctx.on_close(lambda: n.append(1))
        await asyncio.gather(ctx.close(), ctx.close())
        await ctx.close()
        assert n == [1]


# index: exec after close throws ExecutionContextClosedError (message names the context)
async def test_exec_after_close():
    async with rt.create_scope() as scope:
        ctx = scope.create_context(name="my-ctx")
        await ctx.close()
        with pytest.raises(rt.ContextClosedError) as ei:
            await ctx.exec(rt.flow(lambda c: "done"))
        assert "my-ctx" in str(ei.value) and "is closed" in str(ei.value)
        with pytest.raises(rt.ContextClosedError):
            await ctx.run(lambda: 1)
        # data, parent, details stay readable
        ctx.data
        ctx.parent
        ctx.details.name


# index: throws while closing (exec after close() started, in flight work)
async def test_exec_while_closing():
    started = asyncio.Event()

    async def slow_f(ctx):
        started.set()
        try:
            await asyncio.sleep(5)
        except BaseException:
            await asyncio.sleep(0.05)  # keep closing in progress
            raise

    async with rt.create_scope() as scope:
        ctx = scope.create_context(name="test")
        t = asyncio.ensure_future(ctx.exec(rt.flow(slow_f)))
        await started.wait()
        closing = asyncio.ensure_future(ctx.close())
        await asyncio.sleep(0.01)
        assert not closing.done()
        ran = []
        with pytest.raises((rt.ContextClosedError, rt.Cancelled)):
            await ctx.exec(rt.flow(lambda c: ran.append(1)))
        assert ran == []
        await closing
        with pytest.raises(rt.Cancelled):
            await t


# index: context details name / started_at / completed_at
async def test_details():
    async with rt.create_scope() as scope:
        ctx = scope.create_context(name="my-context")
        assert ctx.details.name == "my-context"
        assert ctx.details.started_at > 0
        assert ctx.details.completed_at is None
        await ctx.close()
        assert ctx.details.completed_at is not None
        assert ctx.details.status == "completed"


# index: close cascades to child contexts (running child is cancelled+joined, closes)
async def test_close_cascades_running_child():
    child_ctx = {}
    started = asyncio.Event()

    async def nested(ctx):
        child_ctx["c"] = ctx
        started.set()
        await asyncio.sleep(5)
        return "done"

    async with rt.create_scope() as scope:
        ctx = scope.create_context(name="parent")
        t = asyncio.ensure_future(ctx.exec(rt.flow(nested)))
        await started.wait()
        await ctx.close()
        c = child_ctx["c"]
        assert c.closed and c.details.status == "cancelled"
        with pytest.raises(rt.Cancelled):
            await t


# scope.exec auto-closes context
async def test_scope_exec_autocloses():
    closed = []

    class E(rt.Extension):
        def on_context_close(self, ctx):
            closed.append(ctx.id)

    async with rt.create_scope(extensions=[E()]) as scope:
        ex = scope.exec(rt.flow(lambda c: "done"))
        await ex
        assert len(closed) == 1 and ex.context.closed


# Realistic: handles resource cleanup on context close (atom cleanup on dispose)
async def test_atom_cleanup_after_ctx_close():
    calls = []

    def r(ctx):
        ctx.cleanup(lambda: calls.append("resource"))
        return {"data": "important"}

    res = rt.atom(r)

    async def use(ctx, r):
        await asyncio.sleep(0.02)
        return r["data"]

    scope = rt.create_scope()
    ctx = scope.create_context(name="cleanup-test")
    t = asyncio.ensure_future(ctx.exec(rt.flow(use, deps={"r": res})))
    await asyncio.sleep(0.005)
    await ctx.close()
    await asyncio.gather(t, return_exceptions=True)
    await scope.dispose()
    assert calls == ["resource"]


# lite ctx.onClose: runs cleanup on close in LIFO order; unregister
async def test_on_close_lifo_and_unregister():
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        order = []
        ctx.on_close(lambda: order.append(1))
        ctx.on_close(lambda: order.append(2))
        off = ctx.on_close(lambda: order.append("x"))
        ctx.on_close(lambda: order.append(3))
        off()
        await ctx.close()
        assert order == [3, 2, 1]


# on_close of a child runs when its exec completes; after descendants'
async def test_on_close_child_and_descendants_first():
    order = []

    async def inner_f(ctx):
        ctx.on_close(lambda: order.append("inner"))

    inner = rt.flow(inner_f)

    async def outer_f(ctx):
        ctx.on_close(lambda: order.append("outer"))
        await ctx.exec(inner)
        order.append("after-inner")

    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        ctx.on_close(lambda: order.append("root"))
        await ctx.exec(rt.flow(outer_f))
        assert order == ["inner", "after-inner", "outer"]
        await ctx.close()
        assert order[-1] == "root"


# on_close sees final status and error
async def test_on_close_sees_final_status():
    seen = []

    async def f(ctx):
        ctx.on_close(lambda: seen.append((ctx.details.status, ctx.details.error)))
        raise ValueError("bad")

    async with rt.create_scope() as scope, scope.create_context() as ctx:
        with pytest.raises(ValueError):
            await ctx.exec(rt.flow(f))
    assert seen[0][0] == "failed" and isinstance(seen[0][1], ValueError)


# close settlement: ok-close rejects when a settlement callback throws; then idempotent
async def test_close_callback_failure_exception_group():
    async with rt.create_scope() as scope:
        ctx = scope.create_context()

        def bad():
            raise RuntimeError("commit failed")

        ctx.on_close(bad)
        with pytest.raises(ExceptionGroup) as ei:
            await ctx.close()
        assert any(str(e) == "commit failed" for e in ei.value.exceptions)
        await ctx.close()  # idempotent, no raise


# close settlement: aggregates multiple settlement failures; every callback runs
async def test_close_aggregates():
    ran = []
    async with rt.create_scope() as scope:
        ctx = scope.create_context()

        def first():
            ran.append("first")
            raise RuntimeError("first")

        def second():
            ran.append("second")
            raise RuntimeError("second")

        ctx.on_close(first)
        ctx.on_close(second)
        with pytest.raises(ExceptionGroup) as ei:
            await ctx.close()
        assert sorted(str(e) for e in ei.value.exceptions) == ["first", "second"]
        assert ran == ["second", "first"]


# close settlement: exec rejects when the child ok-close settlement fails
async def test_exec_raises_child_close_failure():
    def settling_f(ctx):
        def c():
            raise RuntimeError("settlement failed")

        ctx.cleanup(c)
        return "value"

    settling = rt.resource(settling_f, ownership="current")
    run = rt.flow(lambda ctx, s: s, deps={"s": settling})
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        with pytest.raises(ExceptionGroup) as ei:
            await ctx.exec(run)
        assert "settlement failed" in repr(ei.value.exceptions)
        await ctx.close()


# close settlement: failed close never masks the primary error
async def test_failed_body_not_masked_by_cleanup():
    async def f(ctx):
        def bad():
            raise RuntimeError("secondary")

        ctx.on_close(bad)
        raise ValueError("primary")

    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        with pytest.raises(ValueError, match="primary"):
            await ctx.exec(rt.flow(f))
        await ctx.close()


# lite structured: runs one owned boundary or keeps a managed boundary open side by side
async def test_boundary_resource_ownership():
    tenant = rt.tag("tenant")
    events = []

    def lease_f(ctx, tenant):
        ctx.cleanup(lambda: events.append(f"close:{tenant}"))
        return tenant

    lease = rt.resource(lease_f, deps={"tenant": rt.tags.required(tenant)})
    read = rt.flow(lambda ctx, lease: lease, deps={"lease": lease})
    async with rt.create_scope() as scope:
        assert await scope.exec(read, tags=[tenant("one-shot")]) == "one-shot"
        assert events == ["close:one-shot"]
        ctx = scope.create_context(tags=[tenant("managed")])
        assert await ctx.exec(read) == "managed"
        assert await ctx.exec(read) == "managed"
        assert events == ["close:one-shot"]
        await ctx.close()
        assert events == ["close:one-shot", "close:managed"]


# lite structured: owns default resources at the nearest execution boundary
async def test_resource_shared_across_nested():
    events = []

    def backend_f(ctx):
        events.append("resolve")
        ctx.cleanup(lambda: events.append("cleanup"))
        return "ready"

    backend = rt.resource(backend_f)
    inner = rt.flow(lambda ctx, b: b, deps={"b": backend})

    async def middle_f(ctx):
        return await ctx.exec(inner)

    middle = rt.flow(middle_f)

    async def outer_f(ctx):
        return [await ctx.exec(middle), await ctx.exec(middle)]

    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        assert await ctx.exec(rt.flow(outer_f)) == ["ready", "ready"]
        assert events == ["resolve"]
        await ctx.close()
        assert events == ["resolve", "cleanup"]


# lite structured: passes inferred resource cleanup dependencies (current ownership
# cleaned at exec end)
async def test_current_resource_cleaned_at_exec_end():
    events = []

    def backend_f(ctx):
        ctx.cleanup(lambda: events.append("released"))
        return "ready"

    backend = rt.resource(backend_f, ownership="current")
    run = rt.flow(lambda ctx, b: b, deps={"b": backend})
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        assert await ctx.exec(run) == "ready"
        assert events == ["released"]
        await ctx.close()


# lite structured: closes scope.run failures with the failed result (resource sees error)
async def test_resource_sees_failure():
    seen = []

    async def lease_f(ctx):
        try:
            yield "lease"
        except Exception as e:
            seen.append(("rollback", str(e)))
            raise
        else:
            seen.append(("commit",))

    lease = rt.resource(lease_f)

    def fail(ctx, lease):
        raise RuntimeError("failed")

    async with rt.create_scope() as scope:
        with pytest.raises(RuntimeError, match="failed"):
            await scope.exec(rt.flow(fail, deps={"lease": lease}))
        assert seen == [("rollback", "failed")]


# lite structured: aborts nested descendants before joining and cleans parent resources last
async def test_close_aborts_nested_then_parent_resource():
    events = []
    started = asyncio.Event()

    def parent_f(ctx):
        ctx.cleanup(lambda: events.append("parent-resource-cleanup"))
        return "parent"

    parent = rt.resource(parent_f)

    async def inner_f(ctx):
        ctx.on_close(lambda: events.append(f"inner:{ctx.details.status}"))
        started.set()
        await asyncio.sleep(10)

    inner = rt.flow(inner_f)

    async def middle_f(ctx):
        ctx.on_close(lambda: events.append(f"middle:{ctx.details.status}"))
        return await ctx.exec(inner)

    middle = rt.flow(middle_f)

    async def outer_f(ctx):
        ctx.on_close(lambda: events.append(f"outer:{ctx.details.status}"))
        return await ctx.exec(middle)

    outer = rt.flow(outer_f)
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        await ctx.resolve(parent)
        pending = asyncio.ensure_future(ctx.exec(outer))
        await started.wait()
        await ctx.close()
        with pytest.raises(rt.Cancelled):
            await pending
        assert events == [
            "inner:cancelled",
            "middle:cancelled",
            "outer:cancelled",
            "parent-resource-cleanup",
        ]


# lite structured: waits for uncooperative work before cleaning parent resources
async def test_close_waits_for_uncooperative_child():
    events = []
    started = asyncio.Event()
    release = asyncio.Event()

    def parent_f(ctx):
        ctx.cleanup(lambda: events.append("parent-resource-cleanup"))
        return "parent"

    parent = rt.resource(parent_f)

    async def run_f(ctx):
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("child-aborted")
        await release.wait()
        events.append("child-finished")
        return "late"

    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        await ctx.resolve(parent)
        pending = asyncio.ensure_future(ctx.exec(rt.flow(run_f)))
        await started.wait()
        closing = asyncio.ensure_future(ctx.close())
        await asyncio.sleep(0.02)
        assert not closing.done()
        assert events == ["child-aborted"]
        release.set()
        await asyncio.gather(pending, closing, return_exceptions=True)
        assert events == ["child-aborted", "child-finished", "parent-resource-cleanup"]


# lite structured: waits for direct resource resolution before cleanup
async def test_close_during_resource_resolution():
    events = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def backend_f(ctx):
        started.set()
        await release.wait()
        ctx.cleanup(lambda: events.append("cleanup"))
        return "ready"

    backend = rt.resource(backend_f, name="backend")
    async with rt.create_scope() as scope:
        ctx = scope.create_context(name="b")
        resolving = asyncio.ensure_future(ctx.resolve(backend))
        await started.wait()
        closing = asyncio.ensure_future(ctx.close())
        await asyncio.sleep(0.02)
        release.set()
        r = await asyncio.gather(resolving, closing, return_exceptions=True)
        await asyncio.sleep(0.02)
        print("resolve result:", r, "events:", events)
        # whichever way the race goes, a resource that was built must be cleaned up
        if r[0] == "ready":
            assert events == ["cleanup"]


# lite structured: isolates targeted caller cancellation (sibling boundary unaffected)
async def test_targeted_cancel_isolated():
    started_a = asyncio.Event()
    started_b = asyncio.Event()
    release_b = asyncio.Event()
    ctxs = {}
    closes = []

    async def run_f(ctx):
        ctxs[ctx.input] = ctx
        ctx.on_close(lambda: closes.append((ctx.input, ctx.details.status)))
        if ctx.input == "a":
            started_a.set()
            await asyncio.sleep(10)
        else:
            started_b.set()
            await release_b.wait()
        return ctx.input

    run = rt.flow(run_f)
    async with rt.create_scope() as scope:
        a = scope.create_context()
        b = scope.create_context()
        pa = asyncio.ensure_future(a.exec(run, "a"))
        pb = asyncio.ensure_future(b.exec(run, "b"))
        await asyncio.gather(started_a.wait(), started_b.wait())
        ctxs["a"].cancel("caller stopped")
        with pytest.raises(rt.Cancelled) as ei:
            await pa
        assert ei.value.reason == "caller stopped"
        assert closes == [("a", "cancelled")]
        assert not a.cancelled and not b.cancelled
        release_b.set()
        assert await pb == "b"
        assert await a.exec(rt.flow(lambda c: "still usable")) == "still usable"
        await asyncio.gather(a.close(), b.close())


# lite structured: classifies cancellation without replacing unrelated errors
async def test_cancel_then_body_raises_unrelated():
    started = asyncio.Event()
    err = RuntimeError("database failed")
    holder = {}

    async def f(ctx):
        holder["c"] = ctx
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise err

    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        p = asyncio.ensure_future(ctx.exec(rt.flow(f)))
        await started.wait()
        holder["c"].cancel()
        with pytest.raises(RuntimeError) as ei:
            await p
        assert ei.value is err
        assert holder["c"].details.status == "failed"
        await ctx.close()


# edge-triggered: a body that catches the cancellation may keep awaiting and return
async def test_cancel_edge_triggered():
    started = asyncio.Event()
    holder = {}

    async def f(ctx):
        holder["c"] = ctx
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)
            return "cleaned"

    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        p = asyncio.ensure_future(ctx.exec(rt.flow(f)))
        await started.wait()
        holder["c"].cancel()
        assert await p == "cleaned"
        assert holder["c"].cancelled
        await ctx.close()


# lite structured: replays a parent close through nested boundaries (idle ones too)
async def test_close_parent_closes_nested_boundaries():
    async with rt.create_scope() as scope:
        parent = scope.create_context()
        child = scope.create_context(parent=parent)
        grandchild = scope.create_context(parent=child)
        await parent.close()
        assert child.closed and grandchild.closed
        with pytest.raises(rt.ContextClosedError):
            scope.create_context(parent=parent)


# lite ctx.resolve: creates child contexts that inherit parent data and stay same-scope
async def test_nested_boundary_inherits_tags_same_scope():
    tenant = rt.tag("tenant")
    role = rt.tag("role")
    region = rt.tag("region")
    read_roles = rt.flow(lambda ctx, roles: roles, deps={"roles": rt.tags.all(role)})
    async with rt.create_scope(tags=[tenant("scope"), region("global")]) as scope:
        parent = scope.create_context(tags=[tenant("workspace"), role("parent")])
        child = scope.create_context(parent=parent, tags=[role("child")])
        assert child.parent is parent
        assert child.root is parent.root
        assert child.get(tenant) == "workspace"
        assert child.get(region) == "global"
        assert child.get(role) == "child"
        assert parent.get(role) == "parent"
        assert await child.exec(read_roles) == ["child", "parent"]
        other = rt.create_scope()
        op = other.create_context()
        with pytest.raises((ValueError, TypeError, rt.RuntreeError)):
            scope.create_context(parent=op)
        await op.close()
        await other.dispose()
        await child.close()
        await parent.close()


# parent cancel propagates to nested boundary (inherits cancellation)
async def test_nested_boundary_inherits_cancellation():
    async with rt.create_scope() as scope:
        parent = scope.create_context()
        child = scope.create_context(parent=parent)
        parent.cancel("stop")
        assert child.cancelled
        with pytest.raises(rt.Cancelled):
            await child.exec(rt.flow(lambda c: 1))
        await parent.close()


# dispose closes open contexts first, then atom cleanups
async def test_dispose_closes_contexts_first():
    order = []

    def a_f(ctx):
        ctx.cleanup(lambda: order.append("atom"))
        return 1

    a = rt.atom(a_f)
    scope = rt.create_scope()
    await scope.resolve(a)
    ctx = scope.create_context()
    ctx.on_close(lambda: order.append("ctx"))
    await scope.dispose()
    assert order == ["ctx", "atom"]
    assert ctx.closed


# dispose: every cleanup runs even if others fail; ExceptionGroup even for one
async def test_dispose_cleanup_failures_grouped():
    ran = []

    def a_f(ctx):
        ctx.cleanup(lambda: ran.append("a"))
        return 1

    def b_f(ctx):
        def bad():
            ran.append("b")
            raise RuntimeError("b failed")

        ctx.cleanup(bad)
        return 2

    a, b = rt.atom(a_f), rt.atom(b_f)
    scope = rt.create_scope()
    await scope.resolve(a)
    await scope.resolve(b)
    with pytest.raises(ExceptionGroup) as ei:
        await scope.dispose()
    assert len(ei.value.exceptions) == 1
    assert ran == ["b", "a"]


# child data never shared with parent or siblings
async def test_data_isolated():
    async def f(ctx):
        ctx.data["x"] = ctx.input
        return dict(ctx.data)

    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        assert await ctx.exec(rt.flow(f), 1) == {"x": 1}
        assert await ctx.exec(rt.flow(f), 2) == {"x": 2}
        assert ctx.data == {}
        await ctx.close()


# current_context inside run is the child
async def test_current_context_in_run():
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        c = await ctx.run(rt.current_context)
        assert c is not ctx and c.parent is ctx
        assert rt.current_context() is None
        await ctx.close()
