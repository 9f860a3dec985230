"""Translated from pumped-fn packages/next/tests/index.test.ts (@892bfab2) "Scope & Executor"
and packages/lite/tests/scope.test.ts (HEAD) "Scope" sections."""

import asyncio

import pytest

import runtree as rt

pytestmark = pytest.mark.asyncio


# index.test.ts: provide() creates executor with sync factory / async factory
async def test_sync_and_async_factory():
    counter = rt.atom(lambda ctx: 0)

    async def cfg(ctx):
        return {"port": 3000}

    config = rt.atom(cfg)
    scope = rt.create_scope()
    assert await scope.resolve(counter) == 0
    assert await scope.resolve(config) == {"port": 3000}
    await scope.dispose()


# index.test.ts: passes controller to factory for cleanup
async def test_cleanup_on_dispose():
    calls = []

    def f(ctx):
        ctx.cleanup(lambda: calls.append(1))
        return {"handle": "db-conn"}

    scope = rt.create_scope()
    await scope.resolve(rt.atom(f))
    await scope.dispose()
    assert calls == [1]


# index.test.ts: supports controller.release for early cleanup (via scope.release)
async def test_release_early_cleanup():
    calls = []

    def f(ctx):
        ctx.cleanup(lambda: calls.append(1))
        return "resource"

    a = rt.atom(f)
    scope = rt.create_scope()
    await scope.resolve(a)
    assert calls == []
    await scope.release(a)
    assert calls == [1]
    await scope.dispose()
    assert calls == [1]


# index.test.ts: supports controller.reload for refresh (release then resolve re-runs)
async def test_release_then_resolve_reruns():
    n = 0

    def f(ctx):
        nonlocal n
        n += 1
        return n

    a = rt.atom(f)
    async with rt.create_scope() as scope:
        assert await scope.resolve(a) == 1
        await scope.release(a)
        assert await scope.resolve(a) == 2


# derive(): single / object deps / order
async def test_derive_deps_and_order():
    order = []

    def first(ctx):
        order.append("first")
        return 1

    a = rt.atom(first)

    def second(ctx, a):
        order.append("second")
        return a + 1

    b = rt.atom(second, deps={"a": a})
    host = rt.atom(lambda ctx: "localhost")
    port = rt.atom(lambda ctx: 8080)
    url = rt.atom(lambda ctx, host, port: f"{host}:{port}", deps={"host": host, "port": port})
    async with rt.create_scope() as scope:
        assert await scope.resolve(b) == 2
        assert order == ["first", "second"]
        assert await scope.resolve(url) == "localhost:8080"


# derive(): passes controller for cleanup registration
async def test_derived_cleanup():
    calls = []
    base = rt.atom(lambda ctx: 10)

    def d(ctx, base):
        ctx.cleanup(lambda: calls.append(1))
        return base * 2

    derived = rt.atom(d, deps={"base": base})
    scope = rt.create_scope()
    assert await scope.resolve(derived) == 20
    await scope.dispose()
    assert calls == [1]


# preset(): value / another executor / propagates to derived / multiple presets
async def test_presets():
    counter = rt.atom(lambda ctx: 0)
    original = rt.atom(lambda ctx: "original")
    replacement = rt.atom(lambda ctx: "replaced")
    base = rt.atom(lambda ctx: 10)
    derived = rt.atom(lambda ctx, base: base * 2, deps={"base": base})
    a = rt.atom(lambda ctx: 1)
    b = rt.atom(lambda ctx: 2)
    async with rt.create_scope(
        presets=[
            rt.preset(counter, 100),
            rt.preset(original, replacement),
            rt.preset(base, 5),
            rt.preset(a, 10),
            rt.preset(b, 20),
        ]
    ) as scope:
        assert await scope.resolve(counter) == 100
        assert await scope.resolve(original) == "replaced"
        assert await scope.resolve(derived) == 10
        assert await scope.resolve(a) == 10
        assert await scope.resolve(b) == 20


# lite scope.test.ts: uses presets through cold synchronous dependency paths (target never runs)
async def test_preset_target_never_runs():
    calls = 0

    def src(ctx):
        nonlocal calls
        calls += 1
        return "real"

    source = rt.atom(src)
    direct = rt.atom(lambda ctx, source: source, deps={"source": source})
    middle = rt.atom(lambda ctx, source: f"middle:{source}", deps={"source": source})
    transitive = rt.atom(lambda ctx, middle: f"outer:{middle}", deps={"middle": middle})
    async with rt.create_scope(presets=[rt.preset(source, "fake")]) as s:
        assert await s.resolve(direct) == "fake"
    async with rt.create_scope(presets=[rt.preset(source, "fake")]) as s:
        assert await s.resolve(transitive) == "outer:middle:fake"
    repl = rt.atom(lambda ctx: "replacement")
    async with rt.create_scope(presets=[rt.preset(source, repl)]) as s:
        assert await s.resolve(direct) == "replacement"
    assert calls == 0


# scope lifecycle: caches resolved values
async def test_caches():
    n = 0

    def f(ctx):
        nonlocal n
        n += 1
        return 42

    a = rt.atom(f)
    async with rt.create_scope() as scope:
        for _ in range(3):
            assert await scope.resolve(a) == 42
    assert n == 1


# scope lifecycle: runs cleanups in LIFO order
async def test_cleanup_reverse_resolution_order():
    order = []

    def first(ctx):
        ctx.cleanup(lambda: order.append("first"))
        return 1

    a = rt.atom(first)

    def second(ctx, a):
        ctx.cleanup(lambda: order.append("second"))
        return a + 1

    b = rt.atom(second, deps={"a": a})
    scope = rt.create_scope()
    await scope.resolve(b)
    await scope.dispose()
    assert order == ["second", "first"]


# lite: runs cleanups on release in LIFO order
async def test_multi_cleanup_lifo_on_release():
    order = []

    def f(ctx):
        ctx.cleanup(lambda: order.append(1))
        ctx.cleanup(lambda: order.append(2))
        ctx.cleanup(lambda: order.append(3))
        return 42

    a = rt.atom(f)
    async with rt.create_scope() as scope:
        await scope.resolve(a)
        await scope.release(a)
        assert order == [3, 2, 1]


# scope lifecycle: throws on operations after dispose
async def test_after_dispose():
    a = rt.atom(lambda ctx: 0)
    fl = rt.flow(lambda ctx: 1)
    scope = rt.create_scope()
    await scope.resolve(a)
    await scope.dispose()
    with pytest.raises(rt.ScopeDisposedError):
        await scope.resolve(a)
    with pytest.raises(rt.ScopeDisposedError):
        scope.create_context()
    with pytest.raises(rt.ScopeDisposedError):
        await scope.exec(fl)


# error handling: factory errors wrapped (ResolveError with __cause__), errors through deps
async def test_factory_error_wrapped():
    boom = RuntimeError("factory failed")

    def failing(ctx):
        raise boom

    f = rt.atom(failing, name="failing")
    d = rt.atom(lambda ctx, f: f, deps={"f": f}, name="derived")
    async with rt.create_scope() as scope:
        with pytest.raises(rt.ResolveError) as ei:
            await scope.resolve(f)
        assert ei.value.__cause__ is boom
        with pytest.raises(rt.ResolveError) as ei2:
            await scope.resolve(d)
        # original as __cause__ somewhere down the chain
        c = ei2.value
        seen = []
        while c is not None:
            seen.append(c)
            c = c.__cause__
        assert boom in seen
        assert "failing" in str(ei2.value)


# lite: runs failing cold dependencies once; failing factory is not cached (retry next resolve)
async def test_failing_dep_runs_once_and_not_cached():
    calls = 0
    cleanups = 0

    def direct(ctx):
        nonlocal calls
        calls += 1

        def c():
            nonlocal cleanups
            cleanups += 1

        ctx.cleanup(c)
        raise RuntimeError("direct failed")

    d = rt.atom(direct)
    parent = rt.atom(lambda ctx, d: d, deps={"d": d})
    scope = rt.create_scope()
    with pytest.raises(rt.ResolveError):
        await scope.resolve(parent)
    assert calls == 1
    with pytest.raises(rt.ResolveError):
        await scope.resolve(parent)
    assert calls == 2
    await scope.dispose()
    assert cleanups == 2


# lite: handles concurrent resolution of same atom
async def test_concurrent_resolution():
    n = 0

    async def slow(ctx):
        nonlocal n
        n += 1
        await asyncio.sleep(0.02)
        return n

    a = rt.atom(slow)
    async with rt.create_scope() as scope:
        x, y = await asyncio.gather(scope.resolve(a), scope.resolve(a))
        assert (x, y, n) == (1, 1, 1)


# lite: waits for dependency release before resolving it again
async def test_release_then_concurrent_resolve_dependent():
    events = []

    def source_f(ctx):
        events.append("acquire")
        ctx.cleanup(lambda: events.append("cleanup"))
        return len(events)

    source = rt.atom(source_f)
    dependent = rt.atom(lambda ctx, source: source, deps={"source": source})
    async with rt.create_scope() as scope:
        await scope.resolve(source)
        rel = asyncio.ensure_future(scope.release(source))
        res = asyncio.ensure_future(scope.resolve(dependent))
        await rel
        await res
        assert events == ["acquire", "cleanup", "acquire"]


# lite release() cleanup: waits for a pending generation and drains cleanup
async def test_release_during_pending_resolution():
    started = asyncio.Event()
    finish = asyncio.Event()
    cleaned = []
    calls = 0

    async def subject_f(ctx):
        nonlocal calls
        calls += 1
        gen = calls
        if gen == 1:
            started.set()
            await finish.wait()
        ctx.cleanup(lambda: cleaned.append(gen))
        return gen

    subject = rt.atom(subject_f)
    scope = rt.create_scope()
    first = asyncio.ensure_future(scope.resolve(subject))
    await started.wait()
    release = asyncio.ensure_future(scope.release(subject))
    await asyncio.sleep(0)
    replacement = asyncio.ensure_future(scope.resolve(subject))
    await asyncio.sleep(0)
    finish.set()
    # whatever first returns, the cleanups of generation 1 must run once released, and the
    # value the replacement resolve returns must be a live one
    await asyncio.gather(first, release, return_exceptions=True)
    val = await replacement
    await scope.dispose()
    assert sorted(cleaned) == sorted(set(cleaned))  # no double cleanup
    assert 1 in cleaned  # gen 1 cleaned (released or disposed)
    assert val in (1, 2)
    # every generation that was created got cleaned exactly once
    assert sorted(cleaned) == list(range(1, calls + 1))


# tag deps: required from scope, throws missing, optional as None
async def test_tag_deps_on_atoms():
    tenant = rt.tag("tenantId")
    req = rt.atom(lambda ctx, t: t, deps={"t": rt.tags.required(tenant)})
    opt = rt.atom(lambda ctx, t: t, deps={"t": rt.tags.optional(tenant)})
    async with rt.create_scope(tags=[tenant("tenant-123")]) as s1:
        assert await s1.resolve(req) == "tenant-123"
    async with rt.create_scope() as s2:
        with pytest.raises(rt.MissingTagError):
            await s2.resolve(rt.atom(lambda ctx, t: t, deps={"t": rt.tags.required(tenant)}))
        assert await s2.resolve(opt) is None


# lite ctx.resolve(): resolves atoms through the owning scope and ignores context tags
async def test_ctx_resolve_atom_uses_scope_tags():
    request = rt.tag("ctx-resolve-request")
    tagged = rt.atom(lambda ctx, r: r, deps={"r": rt.tags.required(request)})
    async with rt.create_scope(tags=[request("scope-value")]) as scope:
        ctx = scope.create_context(tags=[request("context-value")])
        assert await ctx.resolve(tagged) == "scope-value"
        await ctx.close()
    async with rt.create_scope() as scope2:
        ctx2 = scope2.create_context(tags=[request("context-value")])
        with pytest.raises(rt.MissingTagError):
            await ctx2.resolve(rt.atom(lambda ctx, r: r, deps={"r": rt.tags.required(request)}))
        await ctx2.close()


# lite: rejects ctx.resolve() on closed contexts before resolving atoms or resources
async def test_ctx_resolve_on_closed():
    calls = {"atom": 0, "res": 0}

    def af(ctx):
        calls["atom"] += 1
        return "atom"

    def rf(ctx):
        calls["res"] += 1
        return "resource"

    rt.atom(af)
    r = rt.resource(rf)
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        await ctx.close()
        # DESIGN is silent on atoms via a closed ctx (scope-owned); only the resource is checked
        with pytest.raises(rt.ContextClosedError):
            await ctx.resolve(r)
    assert calls["res"] == 0


# dispose() behavior: throws after dispose (create_context too)
async def test_dispose_then_create_context_raises():
    a = rt.atom(lambda ctx: 42)
    scope = rt.create_scope()
    await scope.resolve(a)
    await scope.dispose()
    with pytest.raises(rt.ScopeDisposedError):
        await scope.resolve(a)
    with pytest.raises(rt.ScopeDisposedError):
        scope.create_context()


# extension init resolves atoms during init (lite: allows extensions to resolve atoms during init)
async def test_async_init_can_resolve():
    config = rt.atom(lambda ctx: "config")
    got = {}

    class E(rt.Extension):
        async def init(self, scope):
            got["v"] = await scope.resolve(config)

    async with rt.create_scope(extensions=[E()]) as scope:
        assert await asyncio.wait_for(scope.resolve(config), 2) == "config"
        assert got["v"] == "config"
