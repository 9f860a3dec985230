"""Translated from lite scope.test.ts "Coverage: edge cases" / "Triage regression tests" /
"resource presets", context-tags.test.ts, index.test.ts Tag section."""

import asyncio

import pytest

import runtree as rt

pytestmark = pytest.mark.asyncio


# Coverage: tag deps in flow context with defaults (required -> default, optional -> default)
async def test_tag_dep_defaults():
    req = rt.tag("ctxReqDef", default=42)
    opt = rt.tag("ctxOptDef", default=7)
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        assert await ctx.exec(rt.flow(lambda c, v: v, deps={"v": rt.tags.required(req)})) == 42
        assert await ctx.exec(rt.flow(lambda c, v: v, deps={"v": rt.tags.optional(opt)})) == 7
        await ctx.close()


# Coverage: resource cache — same resource twice in one flow's deps resolves once
async def test_resource_dep_twice_once():
    n = 0

    def r_f(ctx):
        nonlocal n
        n += 1
        return n

    r = rt.resource(r_f)
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        assert await ctx.exec(rt.flow(lambda c, a, b: [a, b], deps={"a": r, "b": r})) == [1, 1]
        assert n == 1
        await ctx.close()


# Coverage: tags.all on atom with scope value; context-tags: ignores defaults
async def test_tags_all_scope_and_no_default():
    t = rt.tag("atomAll", default="dflt")
    a = rt.atom(lambda c, vals: vals, deps={"vals": rt.tags.all(t)})
    async with rt.create_scope(tags=[t("scope-val")]) as s:
        assert await s.resolve(a) == ["scope-val"]
    async with rt.create_scope() as s:
        assert await s.resolve(rt.atom(lambda c, vals: vals, deps={"vals": rt.tags.all(t)})) == []
    async with rt.create_scope(tags=[t("s")]) as s:
        ctx = s.create_context(tags=[t("ctx")])
        f = rt.flow(lambda c, vals: vals, deps={"vals": rt.tags.all(t)})
        assert await ctx.exec(f, tags=[t("exec")]) == ["exec", "ctx", "s"]
        await ctx.close()


# Triage Fix 2: two scopes resolving same resource concurrently — no false circular
async def test_two_scopes_same_resource_concurrently():
    n = 0

    async def r_f(ctx):
        nonlocal n
        n += 1
        await asyncio.sleep(0.01)
        return "shared-value"

    r = rt.resource(r_f)
    f = rt.flow(lambda c, res: res, deps={"res": r})
    s1, s2 = rt.create_scope(), rt.create_scope()
    c1, c2 = s1.create_context(), s2.create_context()
    assert await asyncio.gather(c1.exec(f), c2.exec(f)) == ["shared-value", "shared-value"]
    assert n == 2
    await c1.close()
    await c2.close()
    await s1.dispose()
    await s2.dispose()


# Triage Fix 7: resource returning undefined (None) — nested exec finds it, resolved once
async def test_resource_returning_none_cached():
    n = 0

    def r_f(ctx):
        nonlocal n
        n += 1
        return None

    r = rt.resource(r_f, name="undef-resource")
    inner = rt.flow(lambda c, val: {"found": True, "value": val}, deps={"val": r})

    async def outer_f(ctx, val):
        return await ctx.exec(inner)

    outer = rt.flow(outer_f, deps={"val": r})
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        assert await ctx.exec(outer) == {"found": True, "value": None}
        assert n == 1
        await ctx.close()


# atom returning None is cached (lite: resolves undefined)
async def test_atom_returning_none_cached():
    n = 0

    def a_f(ctx):
        nonlocal n
        n += 1
        return None

    a = rt.atom(a_f)
    async with rt.create_scope() as s:
        assert await s.resolve(a) is None
        assert await s.resolve(a) is None
        assert n == 1


# concurrent siblings asking for the same boundary resource: one factory run
async def test_boundary_resource_concurrent_siblings():
    n = 0

    async def r_f(ctx):
        nonlocal n
        n += 1
        await asyncio.sleep(0.01)
        return n

    r = rt.resource(r_f)
    f = rt.flow(lambda c, v: v, deps={"v": r})

    async def p(ctx):
        return await ctx.parallel(ctx.exec(f), ctx.exec(f), ctx.exec(f))

    async with rt.create_scope() as scope:
        assert await scope.exec(rt.flow(p)) == [1, 1, 1]
        assert n == 1


# "current" ownership: siblings get fresh ones, descendants share
async def test_current_ownership_siblings_fresh():
    n = 0
    closed = []

    def r_f(ctx):
        nonlocal n
        n += 1
        k = n
        ctx.cleanup(lambda: closed.append(k))
        return k

    r = rt.resource(r_f, ownership="current")
    leaf = rt.flow(lambda c, v: v, deps={"v": r})

    async def mid_f(ctx, v):
        return (v, await ctx.exec(leaf))

    mid = rt.flow(mid_f, deps={"v": r})

    async def top_f(ctx):
        return [await ctx.exec(mid), await ctx.exec(mid)]

    async with rt.create_scope() as scope:
        assert await scope.exec(rt.flow(top_f)) == [(1, 1), (2, 2)]
        assert closed == [1, 2]


# resource presets: direct values and replacement resources
async def test_resource_presets():
    target = rt.resource(lambda c: "real", name="target-resource")
    repl = rt.resource(lambda c: "replacement", name="replacement-resource")
    read = rt.flow(lambda c, value: value, deps={"value": target})
    async with rt.create_scope(presets=[rt.preset(target, "direct")]) as s:
        ctx = s.create_context()
        assert await ctx.exec(read) == "direct"
        await ctx.close()
    async with rt.create_scope(presets=[rt.preset(target, repl)]) as s:
        ctx = s.create_context()
        assert await ctx.exec(read) == "replacement"
        await ctx.close()


# resource presets: replacement resource with cleanup runs on owner close; wrap_resolve sees it once
async def test_resource_preset_cleanup_and_wrap_resolve_once():
    closed = []
    seen = []

    def repl_f(ctx):
        ctx.cleanup(lambda: closed.append("target"))
        return "preset"

    target = rt.resource(lambda c: "real", name="target-resource")
    repl = rt.resource(repl_f, name="repl")
    read = rt.flow(lambda c, value: value, deps={"value": target})

    class E(rt.Extension):
        async def wrap_resolve(self, next, op):
            seen.append(op.atom.name)
            return await next()

    async with rt.create_scope(presets=[rt.preset(target, repl)], extensions=[E()]) as s:
        ctx = s.create_context()
        assert await ctx.exec(read) == "preset"
        assert await ctx.exec(read) == "preset"
        assert len(seen) == 1
        await ctx.close()
        assert closed == ["target"]


# index Tag: validates value with schema (parse on bind -> ParseError); parse on ctx.set
async def test_tag_parse():
    def positive(v):
        if not isinstance(v, int) or v < 0:
            raise ValueError("must be >= 0")
        return v

    t = rt.tag("count", parse=positive)
    assert t(3).value == 3 if hasattr(t(3), "value") else True
    with pytest.raises(rt.ParseError) as ei:
        t(-1)
    assert "count" in str(ei.value)
    async with rt.create_scope() as s:
        ctx = s.create_context()
        with pytest.raises(rt.ParseError):
            ctx.set(t, -5)
        await ctx.close()


# serializable tags: strict JSON checked when bound or set
async def test_serializable_tag():
    t = rt.tag("payload", serializable=True)
    t({"a": [1, 2, None]})
    with pytest.raises(rt.SerializationError):
        t({"a": object()})
    with pytest.raises(rt.SerializationError):
        t(float("nan"))
    async with rt.create_scope() as s:
        ctx = s.create_context()
        with pytest.raises(rt.SerializationError):
            ctx.set(t, {1, 2})
        await ctx.close()


# context-tags: keeps local reads separate (set on child not visible to parent)
async def test_child_set_not_visible_to_parent():
    t = rt.tag("t")

    async def f(ctx):
        ctx.set(t, "child")
        return ctx.get(t)

    async with rt.create_scope() as s:
        ctx = s.create_context(tags=[t("root")])
        assert await ctx.exec(rt.flow(f)) == "child"
        assert ctx.get(t) == "root"
        await ctx.close()


# ctx.set in child wins over the exec-call tags (DESIGN §6 Tags)
async def test_child_set_wins_over_exec_tags():
    t = rt.tag("t")

    def f(ctx):
        ctx.set(t, "set")
        return ctx.get(t)

    async with rt.create_scope() as s:
        ctx = s.create_context()
        assert await ctx.exec(rt.flow(f), tags=[t("exec")]) == "set"
        await ctx.close()
