"""Translated from pumped-fn packages/next/tests/index.test.ts (@892bfab2) "Flow" / "Tag",
edb8ab2b execution-context.behavior / core.behavior / flow/*.test.ts, 535ceb5c flow-extensions
"Tags & metadata"/"Scope lifecycle", lite scope.test.ts "ctx.exec() with flow", "flow parse"."""

import asyncio

import pytest

import runtree as rt

pytestmark = pytest.mark.asyncio


# flow(): handler only / with name / deps
async def test_flow_basic_execute():
    double = rt.flow(lambda ctx: ctx.input * 2)
    assert await rt.execute(double, 5) == 10

    greet = rt.flow(lambda ctx: f"Hello, {ctx.input}!", name="greet")
    assert greet.name == "greet"
    assert await rt.execute(greet, "World") == "Hello, World!"

    config = rt.atom(lambda ctx: {"greeting": "Hi"})
    g2 = rt.flow(lambda ctx, cfg: f"{cfg['greeting']}, {ctx.input}", deps={"cfg": config})
    assert await rt.execute(g2, "Alice") == "Hi, Alice"

    a = rt.atom(lambda ctx: 2)
    b = rt.atom(lambda ctx: 3)
    mul = rt.flow(lambda ctx, a, b: a * b, deps={"a": a, "b": b})
    assert await rt.execute(mul, None) == 6


# flow.execute(): disposes transient scope after execution
async def test_execute_disposes_transient_scope():
    calls = []

    def r(ctx):
        ctx.cleanup(lambda: calls.append(1))
        return "resource"

    res = rt.atom(r)
    use = rt.flow(lambda ctx, r: r, deps={"r": res})
    assert await rt.execute(use, None) == "resource"
    assert calls == [1]


# flow.execute(): keeps scope alive when provided
async def test_execute_keeps_provided_scope():
    calls = []

    def r(ctx):
        ctx.cleanup(lambda: calls.append(1))
        return "resource"

    res = rt.atom(r)
    use = rt.flow(lambda ctx, r: r, deps={"r": res})
    scope = rt.create_scope()
    await rt.execute(use, None, scope=scope)
    assert calls == []
    await scope.dispose()
    assert calls == [1]


# flow.execute(): returns execution details / captures error in details
async def test_execute_details():
    d = await rt.execute(rt.flow(lambda ctx: 42), None, details=True)
    assert d.ok is True and d.value == 42 and d.context is not None

    def fail(ctx):
        raise ValueError("fail")

    d2 = await rt.execute(rt.flow(fail), None, details=True)
    assert d2.ok is False and isinstance(d2.error, ValueError)


# edb8ab2b flow/execute.test.ts: disposes transient scopes when requesting details
async def test_execute_details_disposes():
    calls = []

    def r(ctx):
        ctx.cleanup(lambda: calls.append(1))
        return {"value": 2}

    res = rt.atom(r)
    sample = rt.flow(lambda ctx, dep: dep["value"] + ctx.input, deps={"dep": res})
    d = await rt.execute(sample, 1, details=True)
    assert d.ok and d.value == 3
    assert calls == [1]


# scopeTags / executionTags options
async def test_execute_scope_and_execution_tags():
    env = rt.tag("env")
    req = rt.tag("reqId")
    assert (
        await rt.execute(rt.flow(lambda ctx: ctx.get(env)), None, scope_tags=[env("production")])
        == "production"
    )
    assert (
        await rt.execute(rt.flow(lambda ctx: ctx.get(req)), None, execution_tags=[req("req-123")])
        == "req-123"
    )


# 535ceb5c: executionTags isolated between executions
async def test_execution_tags_isolated():
    t1 = rt.tag("tag1")
    t2 = rt.tag("tag2")
    f = rt.flow(lambda ctx: ctx.find(t1))
    async with rt.create_scope() as scope:
        assert await rt.execute(f, None, scope=scope, execution_tags=[t1("value1")]) == "value1"
        assert await rt.execute(f, None, scope=scope, execution_tags=[t2("value2")]) is None


# extensions option (wrap around execution)
async def test_execute_extensions_option():
    calls = []

    class E(rt.Extension):
        async def wrap_exec(self, next, op):
            calls.append("before")
            r = await next()
            calls.append("after")
            return r

    await rt.execute(rt.flow(lambda ctx: "done"), None, extensions=[E()])
    assert calls == ["before", "after"]


# 535ceb5c "Scope lifecycle": auto-created scope disposed on success/failure, provided not disposed
async def test_execute_auto_scope_disposed_on_failure():
    disposed = []

    class E(rt.Extension):
        def dispose(self, scope):
            disposed.append(1)

    await rt.execute(rt.flow(lambda ctx: 1), None, extensions=[E()])
    assert disposed == [1]

    def fail(ctx):
        raise RuntimeError("fail")

    with pytest.raises(RuntimeError):
        await rt.execute(rt.flow(fail), None, extensions=[E()])
    assert disposed == [1, 1]

    scope = rt.create_scope(extensions=[E()])
    await rt.execute(rt.flow(lambda ctx: 1), None, scope=scope)
    assert disposed == [1, 1]
    await scope.dispose()
    assert disposed == [1, 1, 1]


async def test_execute_scope_with_scope_options_typeerror():
    scope = rt.create_scope()
    with pytest.raises(TypeError):
        await rt.execute(rt.flow(lambda ctx: 1), None, scope=scope, scope_tags=[rt.tag("x")(1)])
    await scope.dispose()


# ctx.exec(): executes nested flow / function directly / function with params
async def test_ctx_exec_nested_and_fn():
    inner = rt.flow(lambda ctx: ctx.input * 2)

    async def outer_f(ctx):
        return await ctx.exec(inner, ctx.input) + 1

    assert await rt.execute(rt.flow(outer_f), 5) == 11

    async def p(ctx):
        a = await ctx.run(lambda: 42)
        b = await ctx.run(lambda x, y: x + y, 2, 3)
        return a, b

    assert await rt.execute(rt.flow(p), None) == (42, 5)


# ctx.exec(): journals keyed executions
async def test_journal_keyed():
    n = 0

    def inner_f(ctx):
        nonlocal n
        n += 1
        return ctx.input * 2

    inner = rt.flow(inner_f)

    async def outer_f(ctx):
        r1 = await ctx.exec(inner, ctx.input, key="double")
        r2 = await ctx.exec(inner, ctx.input, key="double")
        return r1 + r2

    assert await rt.execute(rt.flow(outer_f), 5) == 20
    assert n == 1


# edb8ab2b flow-exec.test.ts: replays journaled fn executions
async def test_journal_fn_replay():
    n = 0

    async def fn():
        nonlocal n
        n += 1
        return "done"

    async def runner(ctx):
        a = await ctx.run(fn, key="fn")
        b = await ctx.run(fn, key="fn")
        return f"{a}-{b}"

    assert await rt.execute(rt.flow(runner), None) == "done-done"
    assert n == 1


# core.behavior: journaled error replays without re-running (errorCalls == 1)
async def test_journal_error_replay():
    n = 0

    def boom():
        nonlocal n
        n += 1
        raise RuntimeError("test")

    async def ef(ctx):
        errs = []
        for _ in range(2):
            try:
                await ctx.run(boom, key="fail")
            except RuntimeError as e:
                errs.append(e)
        return errs

    errs = await rt.execute(rt.flow(ef), None)
    assert n == 1
    assert len(errs) == 2 and errs[0] is errs[1]


# ctx.exec(): respects timeout
async def test_timeout():
    async def slow_f(ctx):
        await asyncio.sleep(0.1)
        return "done"

    slow = rt.flow(slow_f, name="slow")

    async def parent(ctx):
        return await ctx.exec(slow, None, timeout=0.01)

    with pytest.raises(rt.ExecTimeoutError):
        await rt.execute(rt.flow(parent), None)

    async def parent_fn(ctx):
        async def s():
            await asyncio.sleep(0.1)
            return "done"

        return await ctx.run(s, timeout=0.01)

    with pytest.raises(TimeoutError):
        await rt.execute(rt.flow(parent_fn), None)


# core.behavior: scope.exec timed-out nested exec rejects; Execution status failed
async def test_scope_exec_nested_timeout():
    async def child_f(ctx):
        await asyncio.sleep(0.2)
        return "done"

    child = rt.flow(child_f)

    async def t(ctx):
        return await ctx.exec(child, None, timeout=0.05)

    async with rt.create_scope() as scope:
        ex = scope.exec(rt.flow(t))
        with pytest.raises(rt.ExecTimeoutError):
            await ex
        assert ex.status == "failed"


# ctx.exec(): resetJournal allows re-execution
async def test_reset_journal():
    n = 0

    def inner_f(ctx):
        nonlocal n
        n += 1
        return ctx.input * 2

    inner = rt.flow(inner_f)

    async def outer_f(ctx):
        await ctx.exec(inner, ctx.input, key="calc")
        await ctx.reset_journal("calc")
        await ctx.exec(inner, ctx.input, key="calc")
        return n

    assert await rt.execute(rt.flow(outer_f), 5) == 2


# execution-context.behavior: resets journal entries when pattern matches key (glob here)
async def test_reset_journal_pattern():
    n = 0

    def runner_f(ctx):
        nonlocal n
        n += 1
        return n

    runner = rt.flow(runner_f)
    async with rt.create_scope() as scope:
        ctx = scope.create_context(name="journal")
        assert await ctx.exec(runner, key="metrics") == 1
        assert await ctx.exec(runner, key="metrics") == 1
        await ctx.reset_journal("met*")
        assert await ctx.exec(runner, key="metrics") == 2
        await ctx.reset_journal("nomatch*")
        assert await ctx.exec(runner, key="metrics") == 2
        await ctx.reset_journal()
        assert await ctx.exec(runner, key="metrics") == 3
        await ctx.close()


# journal: same key anywhere in the tree (nested child) replays
async def test_journal_tree_wide():
    n = 0

    def step_f(ctx):
        nonlocal n
        n += 1
        return "v"

    step = rt.flow(step_f)

    async def inner_f(ctx):
        return await ctx.exec(step, key="k")

    inner = rt.flow(inner_f)

    async def outer_f(ctx):
        a = await ctx.exec(step, key="k")
        b = await ctx.exec(inner)
        return a, b

    assert await rt.execute(rt.flow(outer_f), None) == ("v", "v")
    assert n == 1


# ctx.parallel(): executes promises in parallel
async def test_parallel():
    inner = rt.flow(lambda ctx: ctx.input * 2)

    async def p(ctx):
        return await ctx.parallel(
            ctx.exec(inner, ctx.input),
            ctx.exec(inner, ctx.input + 1),
            ctx.exec(inner, ctx.input + 2),
        )

    assert await rt.execute(rt.flow(p), 1) == [2, 4, 6]


# ctx.parallel(): fails fast on error
async def test_parallel_fails_fast():
    success = rt.flow(lambda ctx: ctx.input)

    def fail(ctx):
        raise ValueError("fail")

    failing = rt.flow(fail)

    async def p(ctx):
        return await ctx.parallel(ctx.exec(success, 1), ctx.exec(failing))

    with pytest.raises(ValueError, match="fail"):
        await rt.execute(rt.flow(p), None)


# parallel cancels the others and waits for their on_close
async def test_parallel_cancels_siblings_and_waits():
    closed = []

    async def slow_f(ctx):
        ctx.on_close(lambda: closed.append(ctx.details.status))
        await asyncio.sleep(5)

    async def fail_f(ctx):
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    slow, failing = rt.flow(slow_f), rt.flow(fail_f)

    async def p(ctx):
        try:
            await ctx.parallel(ctx.exec(slow), ctx.exec(failing))
        except ValueError:
            return list(closed)

    assert await asyncio.wait_for(rt.execute(rt.flow(p), None), 2) == ["cancelled"]


# ctx.parallelSettled(): collects all results including failures
async def test_parallel_settled():
    success = rt.flow(lambda ctx: ctx.input * 2)

    def fail(ctx):
        raise ValueError("fail")

    failing = rt.flow(fail)

    async def p(ctx):
        return await ctx.parallel_settled(
            ctx.exec(success, 5), ctx.exec(failing), ctx.exec(success, 3)
        )

    res = await rt.execute(rt.flow(p), None)
    assert [s.ok for s in res] == [True, False, True]
    assert res[0].value == 10 and res[2].value == 6
    assert isinstance(res[1].error, ValueError)


# parallel with plain awaitables (Promised.create(Promise.resolve(1)))
async def test_parallel_plain_awaitables():
    async def one():
        return 1

    async def bad():
        raise ValueError("x")

    async def p(ctx):
        a = await ctx.parallel(one(), one())
        b = await ctx.parallel_settled(one(), bad(), one())
        return a, [s.ok for s in b]

    assert await rt.execute(rt.flow(p), None) == ([1, 1], [True, False, True])


# schema validation: validates input with custom validator (parse)
async def test_parse_input():
    def positive(v):
        if not isinstance(v, (int, float)) or v <= 0:
            raise ValueError("Must be positive")
        return v

    calls = []

    def body(ctx):
        calls.append(1)
        return ctx.input * 2

    f = rt.flow(body, parse=positive, name="positive")
    with pytest.raises(rt.ParseError) as ei:
        await rt.execute(f, -5)
    assert "positive" in str(ei.value)
    assert calls == []
    assert await rt.execute(f, 5) == 10


# lite flow parse: parse runs before factory, coerces
async def test_parse_order_and_coercion():
    order = []

    def parse(raw):
        order.append("parse")
        if not isinstance(raw, str):
            raise TypeError("Must be string")
        return raw.upper()

    def body(ctx):
        order.append("factory")
        return ctx.input

    f = rt.flow(body, parse=parse, name="stringFlow")
    async with rt.create_scope() as scope, scope.create_context() as ctx:
        assert await ctx.exec(f, "hello") == "HELLO"
        assert order == ["parse", "factory"]
        with pytest.raises(rt.ParseError) as ei:
            await ctx.exec(f, 123)
        assert "stringFlow" in str(ei.value)


# parse with a key: validation still applies (core.behavior "for opts of [{key},{}]")
async def test_parse_with_key():
    def num(v):
        if not isinstance(v, int):
            raise ValueError("Expected number")
        return v

    child = rt.flow(lambda ctx: ctx.input * 2, parse=num, name="child")

    async def parent(ctx):
        return await ctx.exec(child, "invalid", key="step")

    with pytest.raises(rt.ParseError):
        await rt.execute(rt.flow(parent), None)


# Tag in execution context: get / find / set / inheritance / override
async def test_ctx_tags():
    env = rt.tag("env")
    assert (
        await rt.execute(rt.flow(lambda ctx: ctx.get(env)), None, execution_tags=[env("test")])
        == "test"
    )
    assert await rt.execute(rt.flow(lambda ctx: ctx.find(env) or "default"), None) == "default"

    count = rt.tag("count", default=0)

    def inc(ctx):
        ctx.set(count, ctx.get(count) + 1)
        return ctx.get(count)

    assert await rt.execute(rt.flow(inc), None) == 1

    inner = rt.flow(lambda ctx: ctx.get(env))

    async def outer(ctx):
        return await ctx.exec(inner)

    assert await rt.execute(rt.flow(outer), None, execution_tags=[env("parent")]) == "parent"

    async def outer2(ctx):
        return await ctx.exec(inner, tags=[env("child")])

    assert await rt.execute(rt.flow(outer2), None, execution_tags=[env("parent")]) == "child"


# tag as dependency in flow / derive
async def test_tag_deps():
    env = rt.tag("env")
    get_env = rt.flow(lambda ctx, env: env, deps={"env": env})
    async with rt.create_scope(tags=[env("production")]) as scope:
        assert await rt.execute(get_env, None, scope=scope) == "production"
    logger = rt.atom(lambda ctx, env: f"Logger for {env}", deps={"env": env})
    async with rt.create_scope(tags=[env("dev")]) as scope:
        assert await scope.resolve(logger) == "Logger for dev"


# lite ctx.exec: resolves tag deps from merged sources / exec tags override context tags
async def test_tag_merge_sources():
    request = rt.tag("requestId")
    tenant = rt.tag("tenantId")
    f = rt.flow(
        lambda ctx, r, t: {"reqId": r, "tenant": t},
        deps={"r": rt.tags.required(request), "t": rt.tags.required(tenant)},
    )
    g = rt.flow(lambda ctx, r: r, deps={"r": rt.tags.required(request)})
    async with rt.create_scope(tags=[tenant("tenant-1")]) as scope:
        ctx = scope.create_context(tags=[request("req-123")])
        assert await ctx.exec(f) == {"reqId": "req-123", "tenant": "tenant-1"}
        assert await ctx.exec(g, tags=[request("exec-id")]) == "exec-id"
        await ctx.close()


# edb8ab2b: execution tags override scope tags; get throws when missing
async def test_context_tags_vs_scope_tags():
    env = rt.tag("env")
    missing = rt.tag("missing")
    other = rt.tag("scope")
    async with rt.create_scope(tags=[env("production"), other("from-scope")]) as scope:
        ctx = scope.create_context(tags=[env("development")])
        assert ctx.get(env) == "development"
        assert ctx.get(other) == "from-scope"
        with pytest.raises(rt.MissingTagError):
            ctx.get(missing)
        await ctx.close()


# edb8ab2b: tag default + scope value
async def test_tag_default_and_scope():
    flag = rt.tag("flag", default=True)
    async with rt.create_scope(tags=[flag(False)]) as scope:
        ctx = scope.create_context()
        assert ctx.get(flag) is False
        await ctx.close()
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        assert ctx.get(flag) is True
        await ctx.close()


# edb8ab2b: should not re-apply scope tags to child contexts
async def test_no_reapply_scope_tags():
    value = rt.tag("value")
    inner = rt.flow(lambda ctx, v: v, deps={"v": value})

    async def nested(ctx):
        return await ctx.exec(inner, tags=[value("child")])

    async with rt.create_scope(tags=[value("scope")]) as scope:
        parent = scope.create_context(tags=[value("parent")])
        assert await parent.exec(rt.flow(nested)) == "child"
        assert await parent.exec(inner) == "parent"
        await parent.close()


# edb8ab2b: should clean up contextResolvedValue on resolution error (ctx usable after failure)
async def test_ctx_usable_after_failure():
    t = rt.tag("t")

    def failing(ctx, v):
        raise RuntimeError("Resolution failed")

    async with rt.create_scope() as scope:
        ctx = scope.create_context(tags=[t("value")])
        with pytest.raises(RuntimeError):
            await ctx.exec(rt.flow(failing, deps={"v": t}))
        assert await ctx.exec(rt.flow(lambda ctx, v: v, deps={"v": t})) == "value"
        await ctx.close()


# core.behavior "execution context lifecycle": ctx.set on parent; child set doesn't leak up
async def test_set_inheritance():
    req = rt.tag("requestId")
    name = rt.tag("name")
    async with rt.create_scope() as scope:
        ctx = scope.create_context(name="parent")
        ctx.set(req, "req-123")
        assert await ctx.exec(rt.flow(lambda c: c.get(req))) == "req-123"
        ctx.set(name, "parent-name")

        def inh(c):
            c.set(name, "child-name")
            return c.get(name)

        assert await ctx.exec(rt.flow(inh)) == "child-name"
        assert ctx.get(name) == "parent-name"
        await ctx.close()


# core.behavior: child ctx parent, details.name == flow name; failing child has completed_at, error
async def test_child_details():
    captured = {}
    async with rt.create_scope() as scope:
        parent = scope.create_context(name="parent")
        assert parent.parent is None and parent.id and parent.details.name == "parent"
        assert parent.details.started_at > 0

        def cap(ctx):
            captured["c"] = ctx
            assert ctx.parent is parent
            assert ctx.details.name == "captureFlow"
            return ctx.input

        assert await parent.exec(rt.flow(cap, name="captureFlow"), "result") == "result"

        def failing(ctx):
            captured["f"] = ctx
            raise RuntimeError("test error")

        with pytest.raises(RuntimeError):
            await parent.exec(rt.flow(failing, name="failingFlow"))
        f = captured["f"]
        assert f.details.completed_at is not None
        assert isinstance(f.details.error, RuntimeError)
        assert f.details.status == "failed"
        assert captured["c"].details.status == "completed"
        assert not parent.cancelled
        parent.raise_if_cancelled()
        await parent.close()


# 535ceb5c flow-extensions: child context inherits scope
async def test_child_scope():
    got = {}
    async with rt.create_scope() as scope:
        child = rt.flow(lambda ctx: got.setdefault("s", ctx.scope))

        async def parent(ctx):
            return await ctx.exec(child)

        await rt.execute(rt.flow(parent), None, scope=scope)
        assert got["s"] is scope


# lite: composes flows through execution deps + flow preset seam
async def test_flow_dep_handle_with_preset():
    request = rt.tag("request-id")
    calls = []

    def write_f(ctx, rid):
        calls.append(f"real:{rid}:{ctx.input['txId']}")
        return f"{rid}:{ctx.input['txId']}"

    def repl_f(ctx, rid):
        calls.append(f"replacement:{rid}:{ctx.input['txId']}")
        return f"{rid}:{ctx.input['txId']}:replacement"

    write = rt.flow(write_f, deps={"rid": rt.tags.required(request)}, name="write-audit-entry")
    repl = rt.flow(repl_f, deps={"rid": rt.tags.required(request)}, name="replacement-audit-entry")

    async def transfer_f(ctx, write):
        r = await write({"txId": ctx.input["txId"]})
        return f"transfer:{r}"

    transfer = rt.flow(transfer_f, deps={"write": write}, name="transfer-funds")
    async with rt.create_scope(presets=[rt.preset(write, repl)]) as scope:
        ctx = scope.create_context(tags=[request("req-1")])
        assert await ctx.exec(transfer, {"txId": "tx-1"}) == "transfer:req-1:tx-1:replacement"
        assert calls == ["replacement:req-1:tx-1"]
        await ctx.close()


# lite ctx.exec inline operations: resolves exec tags (ctx.run + tags=)
async def test_run_with_tags():
    marker = rt.tag("fn-exec-marker")
    async with rt.create_scope() as scope:
        ctx = scope.create_context()
        r = await ctx.run(lambda: rt.current_context().get(marker), tags=[marker("fn")])
        assert r == "fn"
        assert await ctx.run(lambda a, b: a + b, 1, 2, name="add") == 3
        await ctx.close()


# Realistic: presets to inject test doubles
async def test_preset_test_double_in_flow():
    def real_db(ctx):
        raise RuntimeError("never")

    database = rt.atom(real_db, name="database")
    mock = rt.atom(lambda ctx: {"get": lambda k: {"id": "mock"}})
    get_user = rt.flow(lambda ctx, db: db["get"]("user:any"), deps={"db": database})
    async with rt.create_scope(presets=[rt.preset(database, mock)]) as scope:
        assert await rt.execute(get_user, None, scope=scope) == {"id": "mock"}
