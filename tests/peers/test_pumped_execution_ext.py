"""Translated from pumped-fn index.test.ts (@892bfab2) "Flow.Execution", "Extension",
"Realistic Scenario"; 535ceb5c flow-extensions / extensions tests; lite scope.test.ts
"context lifecycle extensions" and "ctx.exec() with flow" wrapExec tests."""

import asyncio

import pytest

import runtree as rt

pytestmark = pytest.mark.asyncio


# Flow.Execution: provides execution id / flowName / thenable
async def test_execution_id_name_thenable():
    async with rt.create_scope() as scope:
        ex = scope.exec(rt.flow(lambda ctx: "done", name="testFlow"))
        assert isinstance(ex.id, str) and ex.id
        assert ex.flow_name == "testFlow"
        assert ex.status == "pending"
        assert await ex == "done"
        assert ex.status == "completed"


# Flow.Execution: tracks status transitions
async def test_status_transitions():
    async def slow(ctx):
        await asyncio.sleep(0.02)
        return "done"

    async with rt.create_scope() as scope:
        ex = scope.exec(rt.flow(slow))
        statuses = []
        ex.on_status_change(lambda s, e: statuses.append(s))
        await ex
        await asyncio.sleep(0.01)
        assert statuses == ["running", "completed"]
        assert ex.status_callback_errors == []


# status becomes failed on error
async def test_status_failed():
    def fail(ctx):
        raise RuntimeError("fail")

    async with rt.create_scope() as scope:
        ex = scope.exec(rt.flow(fail))
        statuses = []
        ex.on_status_change(lambda s, e: statuses.append(s))
        with pytest.raises(RuntimeError):
            await ex
        assert "failed" in statuses and ex.status == "failed"


# abort controller can cancel execution
async def test_execution_cancel():
    started = asyncio.Event()

    async def never(ctx):
        started.set()
        await asyncio.sleep(10)

    async with rt.create_scope() as scope:
        ex = scope.exec(rt.flow(never))
        statuses = []
        ex.on_status_change(lambda s, e: statuses.append(s))
        await started.wait()
        ex.cancel()
        with pytest.raises(rt.Cancelled):
            await ex
        assert "cancelled" in statuses and ex.status == "cancelled"
        assert ex.context.details.status == "cancelled"


# onStatusChange: errors in callbacks collected, never break; unsubscribe works; async cb
async def test_status_callback_errors_and_unsubscribe():
    async with rt.create_scope() as scope:
        ex = scope.exec(rt.flow(lambda ctx: 1))
        seen = []

        def bad(s, e):
            raise RuntimeError("cb boom")

        async def good(s, e):
            seen.append(s)

        ex.on_status_change(bad)
        ex.on_status_change(good)
        off = ex.on_status_change(lambda s, e: seen.append("unsub-" + s))
        off()
        assert await ex == 1
        await asyncio.sleep(0.01)
        assert "completed" in seen
        assert not any(str(s).startswith("unsub") for s in seen)
        assert len(ex.status_callback_errors) >= 1


# details=True on scope.exec
async def test_scope_exec_details():
    def fail(ctx):
        raise ValueError("x")

    async with rt.create_scope() as scope:
        d = await scope.exec(rt.flow(fail), details=True)
        assert d.ok is False and isinstance(d.error, ValueError)
        d2 = await scope.exec(rt.flow(lambda ctx: 5), details=True)
        assert d2.ok and d2.value == 5


# core.behavior: concurrent scope.exec keep separate tags
async def test_concurrent_scope_exec_tags():
    idt = rt.tag("execution.id")
    seen = []

    async def f(ctx):
        seen.append(ctx.get(idt))
        await asyncio.sleep(0.01)
        return ctx.input * 2

    fl = rt.flow(f)
    async with rt.create_scope() as scope:
        res = await asyncio.gather(*(scope.exec(fl, i, tags=[idt(f"id{i}")]) for i in (1, 2, 3)))
        assert res == [2, 4, 6]
        assert sorted(seen) == ["id1", "id2", "id3"]


# Extension lifecycle: init / dispose
async def test_ext_init_dispose():
    calls = []

    class E(rt.Extension):
        def init(self, scope):
            calls.append("init")

        def dispose(self, scope):
            calls.append("dispose")

    scope = rt.create_scope(extensions=[E()])
    await asyncio.sleep(0)
    assert calls == ["init"]
    await scope.dispose()
    assert calls == ["init", "dispose"]


# useExtension adds extension dynamically; returns cleanup function
async def test_use_extension():
    n = 0

    class E(rt.Extension):
        async def wrap_resolve(self, next, op):
            nonlocal n
            n += 1
            return await next()

    a = rt.atom(lambda ctx: 1)
    b = rt.atom(lambda ctx: 2)
    async with rt.create_scope() as scope:
        remove = scope.use_extension(E())
        await scope.resolve(a)
        remove()
        await scope.resolve(b)
        assert n == 1


# wrap hook: wraps resolve operations / can modify return value / not on cache hit
async def test_wrap_resolve():
    ops = []

    class E(rt.Extension):
        async def wrap_resolve(self, next, op):
            ops.append("before")
            r = await next()
            ops.append("after")
            return r * 2

    a = rt.atom(lambda ctx: 21)
    async with rt.create_scope(extensions=[E()]) as scope:
        assert await scope.resolve(a) == 42
        assert await scope.resolve(a) == 42
        assert ops == ["before", "after"]


# extensions wrap in order (first wraps outermost)
async def test_ext_order():
    order = []

    def mk(name):
        class E(rt.Extension):
            async def wrap_exec(self, next, op):
                order.append(f"{name}-before")
                r = await next()
                order.append(f"{name}-after")
                return r

        return E()

    def h(ctx):
        order.append("handler")
        return 1

    await rt.execute(rt.flow(h), None, extensions=[mk("ext1"), mk("ext2")])
    assert order == ["ext1-before", "ext2-before", "handler", "ext2-after", "ext1-after"]


# 535ceb5c: every exec variant triggers wrap and carries key/target metadata
async def test_op_metadata():
    ops = []

    class T(rt.Extension):
        async def wrap_exec(self, next, op):
            ops.append((op.kind, op.target, op.key, op.input, op.context))
            return await next()

    child = rt.flow(lambda ctx: ctx.input * 2, name="child")
    ten = lambda: 10  # noqa: E731

    async def parent_f(ctx):
        await ctx.exec(child, 5, key="journaled")
        await ctx.exec(child, 5)
        await ctx.run(ten, key="fnJournaled")
        await ctx.run(ten)
        await ctx.parallel(ctx.exec(child, 1), ctx.exec(child, 2))
        return "done"

    parent = rt.flow(parent_f, name="parent")
    async with rt.create_scope(extensions=[T()]) as scope:
        assert await scope.exec(parent) == "done"
    kinds = [(k, key) for k, _, key, _, _ in ops]
    assert ("subflow", "journaled") in kinds
    assert ("subflow", None) in kinds
    assert ("fn", "fnJournaled") in kinds
    assert ("fn", None) in kinds
    assert ("execute", None) in kinds
    assert sum(1 for k, *_ in ops if k == "parallel") == 1
    for k, target, key, inp, ctx in ops:
        if k == "subflow":
            assert (
                target is child and ctx.parent is not None and ctx.parent.details.name == "parent"
            )
        if k == "fn":
            assert target is ten
        if k == "execute":
            assert target is parent and ctx.parent is None
        if k == "parallel":
            assert ctx.details.name == "parent"
    assert any(k == "subflow" and inp == 5 for k, _, _, inp, _ in ops)


# extensions.test.ts: error op -> error propagates through wrap_exec
async def test_wrap_exec_sees_errors():
    errors = []

    class T(rt.Extension):
        async def wrap_exec(self, next, op):
            try:
                return await next()
            except Exception as e:
                errors.append((op.kind, op.key, e))
                raise

    def boom():
        raise RuntimeError("Intentional failure")

    async def f(ctx):
        await ctx.run(boom, key="fail-op")

    with pytest.raises(RuntimeError, match="Intentional failure"):
        await rt.execute(rt.flow(f), 1, extensions=[T()])
    assert errors[0][0] == "fn" and errors[0][1] == "fail-op"


# Realistic: blocks unauthorized requests via extension (extension error reaches caller as itself)
async def test_auth_extension_blocks():
    role = rt.tag("role")

    class Forbidden(Exception):
        pass

    class Auth(rt.Extension):
        async def wrap_exec(self, next, op):
            r = op.context.find(role)
            if r and r not in ("admin",):
                raise Forbidden(f"Forbidden: role {r}")
            return await next()

    calls = []
    op = rt.flow(lambda ctx: calls.append(1))
    async with rt.create_scope(extensions=[Auth()], tags=[role("guest")]) as scope:
        ex = scope.exec(op)
        with pytest.raises(Forbidden):
            await ex
        assert calls == []
        assert ex.context.details.status == "failed"


# Realistic: tracks nested flow executions with tag inheritance (audit sees request tag)
async def test_audit_nested():
    req = rt.tag("requestId")
    logs = []

    class Audit(rt.Extension):
        async def wrap_exec(self, next, op):
            logs.append(("start", op.context.find(req)))
            r = await next()
            logs.append(("end", op.context.find(req)))
            return r

    orders = rt.flow(lambda ctx: [1, 2])

    async def uwo(ctx):
        return await ctx.exec(orders, ctx.input)

    async with rt.create_scope(extensions=[Audit()]) as scope:
        r = await rt.execute(rt.flow(uwo), "1", scope=scope, execution_tags=[req("req-nested")])
        assert r == [1, 2]
    assert logs.count(("start", "req-nested")) == 2


# Realistic: metrics ext that resolves inside wrap_exec and async init
async def test_metrics_extension_init_resolve():
    metrics = {"n": 0}
    ctl = rt.atom(lambda ctx: metrics)

    class M(rt.Extension):
        async def init(self, scope):
            await scope.resolve(ctl)

        async def wrap_exec(self, next, op):
            r = await next()
            (await op.context.scope.resolve(ctl))["n"] += 1
            return r

    async with rt.create_scope(extensions=[M()]) as scope:

        async def run_all():
            for _ in range(3):
                await rt.execute(rt.flow(lambda ctx: "ok"), None, scope=scope)

        await asyncio.wait_for(run_all(), 2)
    assert metrics["n"] == 3


# lite: lets wrapExec short-circuit flow before deps and factory
async def test_wrap_exec_short_circuit():
    calls = {"dep": 0, "factory": 0}

    def dep_f(ctx):
        calls["dep"] += 1
        return 1

    dep = rt.atom(dep_f)

    def target_f(ctx, dep):
        calls["factory"] += 1
        return "ran"

    target = rt.flow(target_f, deps={"dep": dep}, name="short-circuit-target")

    class Memo(rt.Extension):
        async def wrap_exec(self, next, op):
            return "memo"

    async with rt.create_scope(extensions=[Memo()]) as scope:
        ctx = scope.create_context()
        ch = {}

        class Spy(rt.Extension):
            def on_context_close(self, c):
                ch.setdefault("st", []).append((c.details.name, c.details.status))

        scope.use_extension(Spy())
        assert await ctx.exec(target) == "memo"
        assert calls["factory"] == 0
        await ctx.close()
        assert ("short-circuit-target", "completed") in ch["st"]
    # informational only: deps resolved before wrap_exec?
    print("dep calls under short-circuit:", calls["dep"])


# lite: wraps dependency errors inside wrapExec
async def test_dep_error_inside_wrap_exec():
    observed = []

    def dep_f(ctx):
        raise RuntimeError("dep failed")

    dep = rt.atom(dep_f)
    target = rt.flow(lambda ctx, dep: "x", deps={"dep": dep}, name="failing-dep-target")

    class Obs(rt.Extension):
        async def wrap_exec(self, next, op):
            try:
                return await next()
            except Exception as e:
                observed.append(e)
                raise

    async with rt.create_scope(extensions=[Obs()]) as scope:
        ctx = scope.create_context()
        with pytest.raises(rt.ResolveError):
            await ctx.exec(target)
        await ctx.close()
    print("wrap_exec observed dep error:", bool(observed))


# lite: notifies creation and close of scope-created contexts with seeded tags
async def test_lifecycle_boundary_hooks():
    marker = rt.tag("lifecycle-marker")
    events = []

    class Obs(rt.Extension):
        def on_context_open(self, ctx):
            events.append(f"open:{ctx.find(marker)}")

        def on_context_close(self, ctx):
            events.append(f"close:{ctx.find(marker)}:{ctx.details.status}")

    async with rt.create_scope(extensions=[Obs()]) as scope:
        ctx = scope.create_context(tags=[marker("root")])
        await ctx.close()
        assert events == ["open:root", "close:root:completed"]


# lite: notifies per-exec child contexts and nests hooks (open before descendants, close after)
async def test_lifecycle_nesting():
    events = []

    def obs(name):
        class Outer(rt.Extension):
            def on_context_open(self, ctx):
                events.append(f"{name}:open:{ctx.details.name or 'root'}")

            def on_context_close(self, ctx):
                events.append(f"{name}:close:{ctx.details.name or 'root'}")

        return Outer()

    child = rt.flow(lambda ctx: "done", name="child")
    scope = rt.create_scope(extensions=[obs("a"), obs("b")])
    async with scope, scope.create_context(name="root") as root:
        assert await root.exec(child) == "done"
    # DESIGN only fixes open-before-descendants / close-after-descendants
    ia = events.index("a:open:root")
    ic = events.index("a:open:child")
    cc = events.index("a:close:child")
    cr = events.index("a:close:root")
    assert ia < ic < cc < cr
    assert events.count("a:open:child") == 1 and events.count("b:close:child") == 1
    print(events)


# lite: passes failure outcomes to disposeContext without requiring initContext
async def test_close_hook_only_and_failed_status():
    outcomes = []

    class Outer(rt.Extension):
        def on_context_close(self, ctx):
            outcomes.append((ctx.details.status, ctx.details.error))

    def fail(ctx):
        raise RuntimeError("exec failed")

    async with rt.create_scope(extensions=[Outer()]) as scope:
        ctx = scope.create_context()
        with pytest.raises(RuntimeError):
            await ctx.exec(rt.flow(fail))
        assert len(outcomes) == 1
        assert outcomes[0][0] == "failed" and str(outcomes[0][1]) == "exec failed"
        await ctx.close()
        assert outcomes[1] == ("completed", None)


# lite: fires disposeContext exactly once across repeated close calls
async def test_close_hook_once():
    n = 0

    class Outer(rt.Extension):
        def on_context_close(self, ctx):
            nonlocal n
            n += 1

    async with rt.create_scope(extensions=[Outer()]) as scope:
        ctx = scope.create_context()
        await asyncio.gather(ctx.close(), ctx.close())
        await ctx.close()
        assert n == 1


# lite: notifies inline function child contexts
async def test_lifecycle_fn_child():
    events = []

    class Outer(rt.Extension):
        def on_context_open(self, ctx):
            events.append(f"open:{ctx.details.name or 'root'}")

        def on_context_close(self, ctx):
            events.append(f"close:{ctx.details.name or 'root'}")

    async with rt.create_scope(extensions=[Outer()]) as scope:
        ctx = scope.create_context(name="root")
        assert await ctx.run(lambda v: v * 2, 2, name="inline-step") == 4
        await ctx.close()
        assert events == ["open:root", "open:inline-step", "close:inline-step", "close:root"]


# lite: closes exec child contexts when initContext throws mid-chain
async def test_open_hook_raises_for_child():
    events = []

    class Obs(rt.Extension):
        def on_context_open(self, ctx):
            events.append(f"open:{'child' if ctx.parent else 'root'}")

        def on_context_close(self, ctx):
            events.append(f"close:{'child' if ctx.parent else 'root'}")

    class Boom(Exception):
        pass

    class Failing(rt.Extension):
        def on_context_open(self, ctx):
            if ctx.parent:
                raise Boom("child init failed")

    ran = []
    child = rt.flow(lambda ctx: ran.append(1), name="child")
    async with rt.create_scope(extensions=[Obs(), Failing()]) as scope:
        ctx = scope.create_context()
        with pytest.raises(Boom):
            await ctx.exec(child)
        await ctx.close()
    assert ran == []
    assert events == ["open:root", "open:child", "close:child", "close:root"]


# lite: closes the context when initContext throws on a root (scope.exec)
async def test_open_hook_raises_for_root_exec():
    events = []

    class Boom(Exception):
        pass

    class Obs(rt.Extension):
        def on_context_open(self, ctx):
            events.append("open")

        def on_context_close(self, ctx):
            events.append(f"close:{ctx.details.status}")

    class Failing(rt.Extension):
        def on_context_open(self, ctx):
            raise Boom("root init failed")

    async with rt.create_scope(extensions=[Obs(), Failing()]) as scope:
        ex = scope.exec(rt.flow(lambda ctx: 1))
        with pytest.raises(Boom):
            await ex
        assert ex.status == "failed"
    assert events == ["open", "close:failed"]


# lite: runs disposeContext (close hook) relative to boundary resource teardown - informational
async def test_close_hook_vs_resource_cleanup_order():
    events = []

    def tracked_f(ctx):
        ctx.cleanup(lambda: events.append("resource"))
        return "ready"

    tracked = rt.resource(tracked_f)

    class Outer(rt.Extension):
        def on_context_close(self, ctx):
            events.append("hook")

    async with rt.create_scope(extensions=[Outer()]) as scope:
        ctx = scope.create_context()
        assert await ctx.resolve(tracked) == "ready"
        ctx.on_close(lambda: events.append("user"))
        await ctx.close()
    print("order:", events)
    assert set(events) == {"resource", "hook", "user"}
