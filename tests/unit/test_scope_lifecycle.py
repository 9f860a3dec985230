"""The scope's life from outside: dependency paths, async ``init``, dispose racing with
work, cleanups that fail or are cancelled, and hostile values in messages. Each test
failed before its fix."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

import runtree as rt


class Hostile(Exception):
    """An error whose ``__str__`` and ``__repr__`` raise."""

    def __str__(self) -> str:
        raise RuntimeError("str boom")

    def __repr__(self) -> str:
        raise RuntimeError("repr boom")


BIG = 10**5000  # str() of it raises ValueError (the int max str digits limit)


# -- dependency paths ---------------------------------------------------------------


class TestCyclesAreFoundByIdentity:
    async def test_resources_whose_factories_share_a_name(self) -> None:
        def make_settings() -> rt.Resource[dict[str, str]]:
            def factory(ctx: rt.ResolveContext) -> dict[str, str]:
                return {"dsn": "x"}

            return rt.resource(factory)

        def make_conn(settings: rt.Resource[dict[str, str]]) -> rt.Resource[str]:
            def factory(ctx: rt.ResolveContext, settings: dict[str, str]) -> str:
                return f"conn({settings['dsn']})"

            return rt.resource(factory, deps={"settings": settings})

        conn = make_conn(make_settings())

        @rt.flow(deps={"conn": conn})
        async def handler(ctx: rt.ExecutionContext, conn: str) -> str:
            return conn

        async with rt.create_scope() as scope:
            assert await scope.exec(handler) == "conn(x)"

    async def test_atoms_that_share_a_name_while_one_is_being_resolved(self) -> None:
        gate = asyncio.Event()

        async def slow(ctx: rt.ResolveContext) -> int:
            await gate.wait()
            return 1

        base = rt.atom(slow, name="conn")
        top = rt.atom(lambda ctx, b: b + 1, deps={"b": base}, name="conn")
        async with rt.create_scope() as scope:
            first = asyncio.create_task(scope.resolve(base))
            await asyncio.sleep(0)
            second = asyncio.create_task(scope.resolve(top))
            await asyncio.sleep(0)
            gate.set()
            assert await first == 1
            assert await second == 2

    async def test_a_factory_that_resolves_its_own_atom_again(self) -> None:
        # It would wait for itself forever: the same task produces it.
        @rt.atom
        async def a(ctx: rt.ResolveContext) -> object:
            return await ctx.scope.resolve(a)

        @rt.atom
        async def b(ctx: rt.ResolveContext) -> object:
            return await ctx.scope.resolve(c)

        @rt.atom
        async def c(ctx: rt.ResolveContext) -> object:
            return await ctx.scope.resolve(b)

        async with rt.create_scope() as scope:
            for atom, name in ((a, "a"), (b, "b")):
                with pytest.raises(rt.DependencyCycleError, match=f"{name} -> {name}"):
                    await asyncio.wait_for(scope.resolve(atom), 5)

    def test_a_real_cycle_through_presets_still_names_it(self) -> None:
        a = rt.atom(lambda ctx: 1, name="a")
        b = rt.atom(lambda ctx, x: x, deps={"x": a}, name="b")
        with pytest.raises(rt.DependencyCycleError, match="a"):
            rt.create_scope(presets=[rt.preset(a, b)])


class TestDefinitionChecks:
    def test_a_dependency_named_like_the_context_parameter(self) -> None:
        a = rt.atom(lambda ctx: 1, name="a")

        def factory(ctx: rt.ResolveContext, **deps: object) -> object:
            return deps

        with pytest.raises(TypeError, match=r"'ctx'.*context parameter"):
            rt.atom(factory, deps={"ctx": a})

        async def body(ctx: rt.ExecutionContext, **deps: object) -> object:
            return deps

        with pytest.raises(TypeError, match=r"'ctx'.*context parameter"):
            rt.flow(body, deps={"ctx": a})

    def test_an_atom_cannot_be_replaced_by_a_resource(self) -> None:
        cfg = rt.atom(lambda ctx: "real", name="cfg")
        other = rt.resource(lambda ctx: "other", name="other")
        with pytest.raises(TypeError, match=r"'cfg'.*resource"):
            rt.preset(cfg, other)

    async def test_a_resource_replaced_by_an_atom_gets_the_atoms_value(self) -> None:
        db = rt.resource(lambda ctx: "real db", name="db")
        fake = rt.atom(lambda ctx: "fake db", name="fake_db")

        @rt.flow(deps={"db": db})
        async def use(ctx: rt.ExecutionContext, db: str) -> str:
            return db

        async with rt.create_scope(presets=[rt.preset(db, fake)]) as scope:
            assert await scope.exec(use) == "fake db"

    @pytest.mark.parametrize(
        "call",
        [
            lambda: rt.create_scope(tags=[BIG]),  # type: ignore[list-item]
            lambda: rt.create_scope(presets=[BIG]),  # type: ignore[list-item]
            lambda: rt.preset(BIG, 1),  # type: ignore[arg-type]
            lambda: rt.tag(BIG),  # type: ignore[arg-type]
            lambda: rt.atom(lambda ctx, x: x, deps={"x": BIG}),
            lambda: rt.flow(lambda ctx: None, parse=BIG),  # type: ignore[arg-type]
        ],
        ids=["scope-tags", "presets", "preset", "tag", "atom-deps", "flow-parse"],
    )
    def test_a_value_that_cannot_be_printed_still_gets_its_type_error(self, call: object) -> None:
        with pytest.raises(TypeError, match="int"):
            call()  # type: ignore[operator]

    async def test_resolve_and_exec_of_what_cannot_be_printed(self) -> None:
        class BadRepr:
            def __repr__(self) -> str:
                raise RuntimeError("repr boom")

        async with rt.create_scope() as scope:
            for bad in (BIG, BadRepr()):
                with pytest.raises(TypeError, match="takes an atom"):
                    await scope.resolve(bad)  # type: ignore[call-overload]
                with pytest.raises(TypeError, match="takes a flow"):
                    scope.exec(bad)  # type: ignore[call-overload]


# -- hostile errors ------------------------------------------------------------------


class TestHostileErrors:
    @pytest.mark.parametrize("error", [Hostile(), ValueError(BIG)], ids=["str-raises", "big"])
    async def test_a_parse_that_raises_an_unprintable_error_gives_parse_error(
        self, error: Exception
    ) -> None:
        def parse(value: object) -> object:
            raise error

        t = rt.tag("t", parse=parse)
        with pytest.raises(rt.ParseError, match="'t'") as info:
            t("x")
        assert info.value.__cause__ is error

        @rt.flow(parse=parse)
        async def f(ctx: rt.ExecutionContext) -> None:
            raise AssertionError("never runs")

        async with rt.create_scope() as scope:
            with pytest.raises(rt.ParseError, match="'f'"):
                await scope.exec(f, "x")

    async def test_an_unprintable_cleanup_failure_does_not_mask_the_flows_error(self) -> None:
        @rt.flow
        async def f(ctx: rt.ExecutionContext) -> None:
            ctx.on_close(lambda: (_ for _ in ()).throw(ValueError(BIG)))
            ctx.on_close(lambda: (_ for _ in ()).throw(Hostile()))
            raise KeyError("user error")

        async with rt.create_scope() as scope:
            with pytest.raises(KeyError, match="user error") as info:
                await scope.exec(f)
        notes = getattr(info.value, "__notes__", [])
        assert len(notes) == 2
        assert all("cleanup of ExecutionContext 'f' also failed" in n for n in notes)


# -- cleanups at scope exit ----------------------------------------------------------


def _failing_cleanup_atom(log: list[object]) -> rt.Atom[str]:
    @rt.atom
    def db(ctx: rt.ResolveContext) -> Iterator[str]:
        try:
            yield "db"
        except BaseException as exc:
            log.append(exc)
            raise
        finally:
            log.append("closing")
            raise RuntimeError("close failed")

    return db


class TestTheBlocksErrorIsWhatTheCallerGets:
    async def test_async_with_scope(self, caplog: pytest.LogCaptureFixture) -> None:
        log: list[object] = []
        db = _failing_cleanup_atom(log)
        boom = KeyError("user error")

        async def block() -> None:
            async with rt.create_scope() as scope:
                await scope.resolve(db)
                raise boom

        with caplog.at_level(logging.ERROR, "runtree"), pytest.raises(KeyError) as info:
            await block()
        assert info.value is boom
        assert any("disposing the scope also failed" in n for n in info.value.__notes__)
        # The atom's generator saw the error at its yield (its owner, the scope, failed).
        assert log == [boom, "closing"]
        assert "disposing the scope failed" in caplog.text

    async def test_a_clean_exit_still_raises_the_cleanup_failures(self) -> None:
        log: list[object] = []
        db = _failing_cleanup_atom(log)
        with pytest.raises(ExceptionGroup) as info:
            async with rt.create_scope() as scope:
                await scope.resolve(db)
        assert isinstance(info.value.exceptions[0], RuntimeError)
        assert log == ["closing"]

    async def test_execute(self) -> None:
        log: list[object] = []
        db = _failing_cleanup_atom(log)

        @rt.flow(deps={"db": db})
        async def fails(ctx: rt.ExecutionContext, db: str) -> None:
            raise KeyError("user error")

        with pytest.raises(KeyError, match="user error") as info:
            await rt.execute(fails)
        assert any("disposing the scope also failed" in n for n in info.value.__notes__)

        details = await rt.execute(fails, details=True)
        assert not details.ok
        assert isinstance(details.error, KeyError)

        @rt.flow(deps={"db": db})
        async def works(ctx: rt.ExecutionContext, db: str) -> str:
            return db

        details_ok = await rt.execute(works, details=True)  # never raises
        assert details_ok.ok and details_ok.value == "db"
        with pytest.raises(ExceptionGroup):
            await rt.execute(works)


# -- dispose racing with work --------------------------------------------------------


class TestDisposeRaces:
    async def test_two_concurrent_disposes_run_each_cleanup_once(self) -> None:
        log: list[str] = []
        gate = asyncio.Event()

        @rt.atom
        def a(ctx: rt.ResolveContext) -> str:
            ctx.cleanup(lambda: log.append("a"))
            return "a"

        @rt.atom
        async def b(ctx: rt.ResolveContext) -> str:
            async def close() -> None:
                await gate.wait()
                log.append("b")

            ctx.cleanup(close)
            return "b"

        scope = rt.create_scope()
        await scope.resolve(a)
        await scope.resolve(b)
        first = asyncio.create_task(scope.dispose())
        await asyncio.sleep(0)
        second = asyncio.create_task(scope.dispose())
        await asyncio.sleep(0.01)
        assert not second.done()  # it waits for the dispose under way
        gate.set()
        await asyncio.gather(first, second)
        assert log == ["b", "a"]

    async def test_no_context_or_execution_starts_while_the_scope_closes(self) -> None:
        closing = asyncio.Event()
        release = asyncio.Event()

        @rt.flow
        async def work(ctx: rt.ExecutionContext) -> str:
            return "ran"

        scope = rt.create_scope()
        root = scope.create_context(name="old")

        async def slow_close() -> None:
            closing.set()
            await release.wait()

        root.on_close(slow_close)
        disposing = asyncio.create_task(scope.dispose())
        await closing.wait()
        with pytest.raises(rt.ScopeDisposedError):
            scope.create_context(name="late")
        with pytest.raises(rt.ScopeDisposedError):
            scope.exec(work)
        release.set()
        await disposing
        with pytest.raises(rt.ContextClosedError):  # dispose closed it
            await root.exec(work)

    async def test_resolve_during_the_atom_cleanups_is_refused(self) -> None:
        seen: list[object] = []
        scope = rt.create_scope()

        @rt.atom
        def conn(ctx: rt.ResolveContext) -> Iterator[dict[str, bool]]:
            value = {"open": True}
            yield value
            value["open"] = False

        @rt.atom
        async def watcher(ctx: rt.ResolveContext) -> str:
            async def look() -> None:
                try:
                    seen.append(await scope.resolve(conn))
                except rt.ScopeDisposedError as exc:
                    seen.append(type(exc))

            ctx.cleanup(look)  # runs after conn's cleanup (resolved before it)
            return "w"

        await scope.resolve(watcher)
        await scope.resolve(conn)
        await scope.dispose()
        assert seen == [rt.ScopeDisposedError]

    async def test_a_cleanup_ending_in_cancelled_error_does_not_stop_the_others(self) -> None:
        log: list[str] = []

        @rt.atom
        def first(ctx: rt.ResolveContext) -> str:
            ctx.cleanup(lambda: log.append("first"))
            return "first"

        @rt.atom
        async def worker(ctx: rt.ResolveContext) -> str:
            task = asyncio.create_task(asyncio.sleep(10))

            async def stop() -> None:
                task.cancel()
                await task  # raises CancelledError out of the cleanup

            ctx.cleanup(stop)
            return "worker"

        scope = rt.create_scope()
        await scope.resolve(first)
        await scope.resolve(worker)
        with pytest.raises(asyncio.CancelledError):
            await scope.dispose()
        assert log == ["first"]  # ran after the cancelled one
        assert scope.disposed

    async def test_recover_on_a_disposed_scope(self) -> None:
        scope = rt.create_scope()
        await scope.dispose()
        with pytest.raises(rt.ScopeDisposedError):
            await scope.recover([])


# -- async init ----------------------------------------------------------------------


class SlowInit(rt.Extension):
    def __init__(self, fail_first: bool = False) -> None:
        self.ready = False
        self.calls = 0
        self.fail_first = fail_first

    async def init(self, scope: rt.Scope) -> None:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.fail_first and self.calls == 1:
            raise OSError("exporter unreachable")
        self.ready = True


class TestAsyncInitRunsFirst:
    async def test_concurrent_first_resolves_wait_for_it(self) -> None:
        ext = SlowInit()
        a = rt.atom(lambda ctx: ext.ready, name="a")
        b = rt.atom(lambda ctx: ext.ready, name="b")
        async with rt.create_scope(extensions=[ext]) as scope:
            assert await asyncio.gather(scope.resolve(a), scope.resolve(b)) == [True, True]
        assert ext.calls == 1

    async def test_concurrent_first_execs_wait_for_it(self) -> None:
        ext = SlowInit()

        @rt.flow
        async def f(ctx: rt.ExecutionContext) -> bool:
            return ext.ready

        async with rt.create_scope(extensions=[ext]) as scope:
            assert await asyncio.gather(scope.exec(f), scope.exec(f)) == [True, True]

    async def test_a_resource_resolved_from_a_context(self) -> None:
        ext = SlowInit()
        r = rt.resource(lambda ctx: ext.ready, name="r")
        async with rt.create_scope(extensions=[ext]) as scope, scope.create_context() as c:
            assert await c.resolve(r) is True

    async def test_a_failing_init_reaches_every_waiter_and_runs_again_next_time(self) -> None:
        ext = SlowInit(fail_first=True)
        a = rt.atom(lambda ctx: ext.ready, name="a")
        async with rt.create_scope(extensions=[ext]) as scope:
            got = await asyncio.gather(scope.resolve(a), scope.resolve(a), return_exceptions=True)
            assert [type(g) for g in got] == [OSError, OSError]
            assert await scope.resolve(a) is True
        assert ext.calls == 2

    async def test_an_init_may_resolve_and_exec_itself(self) -> None:
        config = rt.atom(lambda ctx: {"level": 3}, name="config")

        @rt.flow
        async def probe(ctx: rt.ExecutionContext) -> str:
            return "probed"

        class Uses(rt.Extension):
            async def init(self, scope: rt.Scope) -> None:
                self.config = await scope.resolve(config)
                self.probed = await scope.exec(probe)

        ext = Uses()
        async with rt.create_scope(extensions=[ext]) as scope:
            assert await asyncio.wait_for(scope.resolve(config), 5) == {"level": 3}
        assert ext.config == {"level": 3} and ext.probed == "probed"


# -- what a factory opened before it failed --------------------------------------------


class TestWhatWasOpenedIsClosed:
    async def test_a_wrapper_that_fails_after_the_factory_returned(self) -> None:
        log: list[str] = []

        class Refuses(rt.Extension):
            async def wrap_resolve(self, next, op):  # type: ignore[no-untyped-def]
                await next()
                raise RuntimeError("exporter down")

        @rt.atom
        async def pool(ctx: rt.ResolveContext) -> AsyncIterator[str]:
            log.append("open pool")
            try:
                yield "pool"
            finally:
                log.append("close pool")

        @rt.resource
        def tx(ctx: rt.ResolveContext) -> str:
            ctx.cleanup(lambda: log.append("close tx"))
            return "tx"

        async with rt.create_scope(extensions=[Refuses()]) as scope:
            with pytest.raises(RuntimeError, match="exporter down"):
                await scope.resolve(pool)
            assert log == ["open pool", "close pool"]
            async with scope.create_context() as c:
                with pytest.raises(RuntimeError, match="exporter down"):
                    await c.resolve(tx)
        assert log == ["open pool", "close pool", "close tx"]

    async def test_a_factory_that_raises_after_registering_a_cleanup(self) -> None:
        log: list[str] = []

        @rt.atom
        def sock(ctx: rt.ResolveContext) -> str:
            log.append("open")
            ctx.cleanup(lambda: log.append("close"))
            raise OSError("handshake failed")

        async with rt.create_scope() as scope:
            with pytest.raises(rt.ResolveError):
                await scope.resolve(sock)
            assert log == ["open", "close"]
        assert log == ["open", "close"]  # once

    async def test_release_while_a_dependent_is_being_built(self) -> None:
        made: list[str] = []
        closed: list[str] = []
        gate = asyncio.Event()

        @rt.atom
        def base(ctx: rt.ResolveContext) -> str:
            name = f"base#{len(made) + 1}"
            made.append(name)
            ctx.cleanup(lambda: closed.append(name))
            return name

        @rt.atom(deps={"b": base})
        async def top(ctx: rt.ResolveContext, b: str) -> str:
            await gate.wait()
            ctx.cleanup(lambda: closed.append(f"top({b})"))
            return f"top({b})"

        async with rt.create_scope() as scope:
            building = asyncio.create_task(scope.resolve(top))
            await asyncio.sleep(0)
            await scope.release(base)
            gate.set()
            # Built on the released base: cleaned up and built again on the new one.
            assert await building == "top(base#2)"
            assert await scope.resolve(top) == "top(base#2)"
            assert closed == ["base#1", "top(base#1)"]
        assert closed == ["base#1", "top(base#1)", "top(base#2)", "base#2"]


async def test_an_extension_added_later_sees_only_the_pairs_it_saw_open() -> None:
    # DESIGN §6: every context is reported open once and close once, open before close.
    class Log(rt.Extension):
        def __init__(self) -> None:
            self.log: list[tuple[str, str]] = []

        def on_context_open(self, ctx: rt.ExecutionContext) -> None:
            self.log.append(("open", ctx.name))

        def on_context_close(self, ctx: rt.ExecutionContext) -> None:
            self.log.append(("close", ctx.name))

    @rt.flow
    async def f(ctx: rt.ExecutionContext) -> int:
        return 1

    first = Log()
    late = Log()
    scope = rt.create_scope(extensions=[first])
    async with scope, scope.create_context(name="b") as b:
        await b.exec(f)
        scope.use_extension(late)
        await b.exec(f)
    assert late.log == [("open", "f"), ("close", "f")]
    assert first.log == [
        ("open", "b"),
        ("open", "f"),
        ("close", "f"),
        ("open", "f"),
        ("close", "f"),
        ("close", "b"),
    ]


async def test_a_failed_cleanup_names_its_atom_or_resource() -> None:
    """The group says cleanups failed; each failure says whose cleanup it was."""

    @rt.atom
    async def pool(ctx: rt.ResolveContext) -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("pool cleanup failed")

    @rt.resource
    async def tx(ctx: rt.ResolveContext) -> AsyncIterator[int]:
        yield 2
        raise RuntimeError("tx cleanup failed")

    scope = rt.create_scope()
    await scope.resolve(pool)
    boundary = scope.create_context(name="b")
    await boundary.resolve(tx)
    with pytest.raises(ExceptionGroup) as closing:
        await boundary.close()
    assert closing.value.exceptions[0].__notes__ == ["in the cleanup of resource 'tx'"]
    with pytest.raises(ExceptionGroup) as disposing:
        await scope.dispose()
    assert disposing.value.exceptions[0].__notes__ == ["in the cleanup of atom 'pool'"]
