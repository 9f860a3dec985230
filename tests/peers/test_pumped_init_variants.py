"""Variants of pumped-fn lite 'allows extensions to resolve atoms during init' and index.test.ts
'init runs on scope creation' / 'useExtension adds extension dynamically'."""

import asyncio

import pytest

import runtree as rt

pytestmark = pytest.mark.asyncio


async def test_async_init_exec_flow():
    got = {}

    class E(rt.Extension):
        async def init(self, scope):
            got["v"] = await scope.exec(rt.flow(lambda c: "from-init"))

    async with rt.create_scope(extensions=[E()]) as scope:
        assert await asyncio.wait_for(scope.resolve(rt.atom(lambda c: 1)), 2) == 1
    assert got["v"] == "from-init"


async def test_async_init_runs_for_use_extension():
    calls = []

    class E(rt.Extension):
        async def init(self, scope):
            calls.append("init")

        async def wrap_resolve(self, next, op):
            calls.append("wrap")
            return await next()

    async with rt.create_scope() as scope:
        await scope.resolve(rt.atom(lambda c: 0))
        scope.use_extension(E())
        await scope.resolve(rt.atom(lambda c: 1))
    assert calls == ["init", "wrap"]


async def test_async_init_then_dispose_without_use():
    calls = []

    class E(rt.Extension):
        async def init(self, scope):
            calls.append("init")

        def dispose(self, scope):
            calls.append("dispose")

    scope = rt.create_scope(extensions=[E()])
    await scope.dispose()
    print("calls:", calls)
