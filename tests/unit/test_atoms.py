"""Atoms: resolved once per scope, cached, cleaned up in reverse order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

import runtree as rt
from runtree import DependencyCycleError, ResolveError, ScopeDisposedError


class TestDefinition:
    def test_all_factory_kinds_and_decorator_forms(self) -> None:
        def sync(ctx: rt.ResolveContext) -> int:
            return 1

        async def coro(ctx: rt.ResolveContext) -> int:
            return 2

        a = rt.atom(sync)
        b = rt.atom(coro, name="two")

        @rt.atom
        def c(ctx: rt.ResolveContext) -> int:
            return 3

        @rt.atom(deps={"a": a})
        def d(ctx: rt.ResolveContext, a: int) -> int:
            return a + 3

        assert a.name.endswith("sync")
        assert b.name == "two"
        assert (a.kind, b.kind, c.kind, d.kind) == ("sync", "async", "sync", "sync")

    def test_deps_are_checked_against_the_signature_at_definition(self) -> None:
        base = rt.atom(lambda ctx: 1, name="base")

        def needs_db(ctx: rt.ResolveContext, db: int) -> int:
            return db

        with pytest.raises(TypeError, match=r"parameter 'db' has no dependency"):
            rt.atom(needs_db)
        with pytest.raises(TypeError, match=r"dependency 'cache' has no parameter"):
            rt.atom(needs_db, deps={"db": base, "cache": base})
        with pytest.raises(TypeError, match=r"first positional"):
            rt.atom(lambda: 1)

    def test_atoms_cannot_depend_on_flows_or_resources(self) -> None:
        f = rt.flow(lambda ctx: 1, name="f")
        r = rt.resource(lambda ctx: 1, name="r")
        with pytest.raises(TypeError, match=r"cannot depend on a flow"):
            rt.atom(lambda ctx, f: 1, deps={"f": f})
        with pytest.raises(TypeError, match=r"cannot depend on a resource"):
            rt.atom(lambda ctx, r: 1, deps={"r": r})

    def test_deps_must_be_runtree_definitions(self) -> None:
        with pytest.raises(TypeError, match=r"must be an atom, flow, resource or tag"):
            rt.atom(lambda ctx, x: 1, deps={"x": 42})


class TestResolve:
    async def test_resolves_once_and_caches(self) -> None:
        calls = 0

        @rt.atom
        async def counter(ctx: rt.ResolveContext) -> int:
            nonlocal calls
            calls += 1
            return calls

        async with rt.create_scope() as scope:
            assert await scope.resolve(counter) == 1
            assert await scope.resolve(counter) == 1
        assert calls == 1
        async with rt.create_scope() as other:
            assert await other.resolve(counter) == 2

    async def test_concurrent_first_resolves_share_one_factory_run(self) -> None:
        started = asyncio.Event()
        release = asyncio.Event()
        calls = 0

        @rt.atom
        async def slow(ctx: rt.ResolveContext) -> str:
            nonlocal calls
            calls += 1
            started.set()
            await release.wait()
            return "value"

        async with rt.create_scope() as scope:
            first = asyncio.ensure_future(scope.resolve(slow))
            await started.wait()
            second = asyncio.ensure_future(scope.resolve(slow))
            await asyncio.sleep(0)
            release.set()
            assert await asyncio.gather(first, second) == ["value", "value"]
        assert calls == 1

    async def test_failing_factory_is_not_cached_and_raises_resolve_error(self) -> None:
        attempts = 0

        @rt.atom(name="db")
        def flaky(ctx: rt.ResolveContext) -> str:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise ConnectionError("refused")
            return "connected"

        @rt.atom(deps={"db": flaky}, name="repo")
        def repo(ctx: rt.ResolveContext, db: str) -> str:
            return f"repo({db})"

        async with rt.create_scope() as scope:
            with pytest.raises(ResolveError) as info:
                await scope.resolve(repo)
            err = info.value
            assert err.atom == "db"
            assert err.path == ("repo", "db")
            assert isinstance(err.__cause__, ConnectionError)
            assert "repo -> db" in str(err)
            assert await scope.resolve(repo) == "repo(connected)"
        assert attempts == 2

    async def test_cycle_through_presets_is_named(self) -> None:
        a = rt.atom(lambda ctx: "a", name="a")
        b = rt.atom(lambda ctx, a: a + "b", deps={"a": a}, name="b")
        with pytest.raises(DependencyCycleError) as info:
            rt.create_scope(presets=[rt.preset(a, b)])
        assert info.value.cycle == ("a", "b", "a")
        assert "a -> b -> a" in str(info.value)

    async def test_resolve_rejects_non_atoms(self) -> None:
        r = rt.resource(lambda ctx: 1, name="tx")
        async with rt.create_scope() as scope:
            with pytest.raises(TypeError, match=r"needs an execution context"):
                await scope.resolve(r)  # type: ignore[arg-type]


class TestCleanup:
    async def test_dispose_runs_cleanups_in_reverse_resolution_order(self) -> None:
        log: list[str] = []

        @rt.atom
        def config(ctx: rt.ResolveContext) -> Iterator[str]:
            log.append("config up")
            yield "cfg"
            log.append("config down")

        @rt.atom(deps={"config": config})
        async def pool(ctx: rt.ResolveContext, config: str) -> AsyncIterator[str]:
            log.append("pool up")
            yield "pool"
            log.append("pool down")

        @rt.atom(deps={"pool": pool})
        def service(ctx: rt.ResolveContext, pool: str) -> str:
            ctx.cleanup(lambda: log.append("service down"))
            return "svc"

        scope = rt.create_scope()
        assert await scope.resolve(service) == "svc"
        await scope.dispose()
        assert log == [
            "config up",
            "pool up",
            "service down",
            "pool down",
            "config down",
        ]

    async def test_every_cleanup_runs_and_failures_are_grouped(self) -> None:
        log: list[str] = []

        def boom(name: str) -> None:
            log.append(name)
            raise RuntimeError(name)

        one = rt.atom(lambda ctx: ctx.cleanup(lambda: boom("one")), name="one")
        two = rt.atom(lambda ctx: ctx.cleanup(lambda: log.append("two")), name="two")
        three = rt.atom(lambda ctx: ctx.cleanup(lambda: boom("three")), name="three")
        scope = rt.create_scope()
        for a in (one, two, three):
            await scope.resolve(a)
        with pytest.raises(ExceptionGroup) as info:
            await scope.dispose()
        assert log == ["three", "two", "one"]
        assert [str(e) for e in info.value.exceptions] == ["three", "one"]

    async def test_single_cleanup_failure_is_still_a_group(self) -> None:
        bad = rt.atom(lambda ctx: ctx.cleanup(lambda: 1 / 0), name="bad")
        scope = rt.create_scope()
        await scope.resolve(bad)
        with pytest.raises(ExceptionGroup) as info:
            await scope.dispose()
        assert len(info.value.exceptions) == 1

    async def test_every_call_after_dispose_raises(self) -> None:
        a = rt.atom(lambda ctx: 1, name="a")
        f = rt.flow(lambda ctx: 1, name="f")
        scope = rt.create_scope()
        await scope.resolve(a)
        await scope.dispose()
        await scope.dispose()  # idempotent
        with pytest.raises(ScopeDisposedError, match=r"resolve atom 'a'"):
            await scope.resolve(a)
        with pytest.raises(ScopeDisposedError):
            scope.create_context()
        with pytest.raises(ScopeDisposedError):
            scope.exec(f)

    async def test_dispose_closes_open_contexts_before_atom_cleanups(self) -> None:
        log: list[str] = []

        @rt.atom
        def db(ctx: rt.ResolveContext) -> Iterator[str]:
            yield "db"
            log.append("db closed")

        scope = rt.create_scope()
        await scope.resolve(db)
        ctx = scope.create_context()
        ctx.on_close(lambda: log.append("context closed"))
        await scope.dispose()
        assert log == ["context closed", "db closed"]
        assert ctx.closed


class TestRelease:
    async def test_release_runs_dependents_first_and_the_next_resolve_reruns(self) -> None:
        log: list[str] = []
        runs = 0

        @rt.atom
        def conn(ctx: rt.ResolveContext) -> Iterator[int]:
            nonlocal runs
            runs += 1
            yield runs
            log.append(f"conn {runs} closed")

        @rt.atom(deps={"conn": conn})
        def repo(ctx: rt.ResolveContext, conn: int) -> Iterator[str]:
            yield f"repo on {conn}"
            log.append("repo closed")

        independent = rt.atom(lambda ctx: ctx.cleanup(lambda: log.append("other")), name="x")

        async with rt.create_scope() as scope:
            await scope.resolve(independent)
            assert await scope.resolve(repo) == "repo on 1"
            await scope.release(conn)
            assert log == ["repo closed", "conn 1 closed"]
            assert await scope.resolve(repo) == "repo on 2"
        assert log[-1] == "other"
