"""lite scope.test.ts: 'exposes exec and flow tags to wrapExec before deps resolve' (exec
tags only; flow-level tags are not in DESIGN) and 'notifies creation ... with seeded tags'
for exec children."""

import pytest

import runtree as rt

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(5)]


async def test_wrap_exec_sees_exec_tags_before_deps():
    marker = rt.tag("exec-boundary-marker")
    dep_calls = []
    dep = rt.atom(lambda c: dep_calls.append(1) or 1)
    target = rt.flow(lambda c, dep: "ran", deps={"dep": dep}, name="tagged-boundary-target")
    seen_open = []

    class Reader(rt.Extension):
        async def wrap_exec(self, next, op):
            return op.context.find(marker)

        def on_context_open(self, ctx):
            seen_open.append(ctx.find(marker))

    async with rt.create_scope(extensions=[Reader()]) as scope:
        ctx = scope.create_context(tags=[marker("ctx")])
        assert await ctx.exec(target, tags=[marker("exec")]) == "exec"
        assert await ctx.exec(target) == "ctx"
        assert dep_calls == []
        await ctx.close()
        ex = scope.exec(target, tags=[marker("root-exec")])
        assert await ex == "root-exec"
    assert seen_open[:3] == ["ctx", "exec", "ctx"]
