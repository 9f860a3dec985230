"""runtree.testing, the pytest plugin, run through ``pytester`` under pytest-asyncio and
under anyio's plugin; and ``scope.override`` on a live scope."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

import runtree as rt
from runtree.testing import TreeRecorder, assert_tree

pytest_plugins = ["pytester"]

COMMON = """
import asyncio
import pytest
import runtree as rt
from runtree.testing import assert_tree

EVENTS = []
tenant = rt.tag("tenant")

@rt.atom
async def db(ctx):
    loop = asyncio.get_running_loop()
    EVENTS.append(("open", id(loop)))
    yield {"acme": ["alice"], "globex": ["bob"]}
    assert asyncio.get_running_loop() is loop  # cleanup in the loop that opened it
    EVENTS.append(("close", id(loop)))

@rt.flow(deps={"db": db, "who": rt.tags.required(tenant)})
async def users(ctx, db, who):
    return db[who]

@rt.flow(deps={"users": users})
async def report(ctx, users):
    return len(await users())
"""


def run(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_it=COMMON + textwrap.dedent(body))
    return pytester.runpytest("-p", "no:cacheprovider", *args)


class TestWithoutAnAsyncPlugin:
    """An unmarked ``async def`` test that uses the fixtures runs under runtree's own
    runner (an event loop of its own); a marked one is left to its plugin."""

    BODY = """
        RUNS = []

        @pytest.mark.runtree(tags=[tenant("acme")])
        async def test_unmarked(rt_ctx):
            RUNS.append("unmarked")
            assert await rt_ctx.exec(users) == ["alice"]

        async def test_unmarked_scope(rt_scope):
            RUNS.append("scope")
            assert not rt_scope.disposed

        def test_afterwards():
            assert RUNS == ["unmarked", "scope"]
            opened = [e for e in EVENTS if e[0] == "open"]
            closed = [e for e in EVENTS if e[0] == "close"]
            assert len(opened) == 1 and closed == [("close", opened[0][1])]
        """

    def test_under_pytest_asyncio_strict(self, pytester: pytest.Pytester) -> None:
        run(pytester, self.BODY).assert_outcomes(passed=3)

    def test_with_no_async_plugin_at_all(self, pytester: pytest.Pytester) -> None:
        run(pytester, self.BODY, "-p", "no:asyncio").assert_outcomes(passed=3)

    def test_under_pytest_asyncio_auto_it_runs_once(self, pytester: pytest.Pytester) -> None:
        run(pytester, self.BODY, "-o", "asyncio_mode=auto").assert_outcomes(passed=3)

    def test_an_async_test_without_the_fixtures_is_left_alone(
        self, pytester: pytest.Pytester
    ) -> None:
        result = run(pytester, "async def test_plain():\n    pass\n")
        result.assert_outcomes(failed=1)  # pytest's own "not natively supported"
        result.stdout.fnmatch_lines(["*async def functions are not natively supported*"])


class TestUnderPytestAsyncio:
    def test_fixtures_marker_and_dispose_in_the_tests_loop(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            @pytest.mark.asyncio
            @pytest.mark.runtree(tags=[tenant("acme")])
            async def test_scope(rt_scope):
                assert await rt_scope.exec(users) == ["alice"]
                assert not rt_scope.disposed

            @pytest.mark.asyncio
            @pytest.mark.runtree(presets=[rt.preset(db, {"acme": ["fake"]})], tags=[tenant("acme")])
            async def test_ctx_with_presets(rt_ctx):
                assert await rt_ctx.exec(report) == 1
                assert rt_ctx.name == "test_ctx_with_presets"
                assert_tree(rt_ctx, ("test_ctx_with_presets", "running", [
                    ("report", "completed", [("users", "completed")]),
                ]))

            def test_afterwards():
                opened = [e for e in EVENTS if e[0] == "open"]
                closed = [e for e in EVENTS if e[0] == "close"]
                assert len(opened) == 1 and closed == [("close", opened[0][1])]
            """,
        )
        result.assert_outcomes(passed=3)

    def test_a_failing_test_still_disposes(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            @pytest.mark.asyncio
            @pytest.mark.runtree(tags=[tenant("globex")])
            async def test_fails(rt_scope):
                await rt_scope.resolve(db)
                assert False, "on purpose"

            def test_afterwards():
                assert [e[0] for e in EVENTS] == ["open", "close"]
            """,
        )
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(["*on purpose*"])

    def test_an_unmarked_test_with_async_fixtures_is_told_to_mark_itself(
        self, pytester: pytest.Pytester
    ) -> None:
        """Strict mode: pytest-asyncio runs the async fixture, in its loop, but not the
        unmarked test; runtree's runner would run the test in a loop of its own, apart
        from what the fixture made. It says what to do instead."""
        result = run(
            pytester,
            """
            import pytest_asyncio

            @pytest_asyncio.fixture
            async def warmed(rt_scope):
                return await rt_scope.resolve(db)

            async def test_unmarked(rt_scope, warmed):
                assert warmed

            @pytest.mark.asyncio
            async def test_marked(rt_scope, warmed):
                assert warmed
            """,
            "--asyncio-mode=strict",
        )
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(
            ["*test_unmarked uses async fixtures (warmed) but no async plugin runs it: mark it*"]
        )


class TestUnderAnyio:
    def test_fixtures_and_dispose(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            @pytest.fixture
            def anyio_backend():
                return "asyncio"

            @pytest.mark.anyio
            @pytest.mark.runtree(tags=[tenant("globex")], store="memory")
            async def test_ctx(rt_ctx, rt_scope):
                assert rt_scope.store is not None
                assert await rt_ctx.exec(users, key="u") == ["bob"]
                assert rt_ctx.journal_keys() == ["u"]

            def test_afterwards():
                assert [e[0] for e in EVENTS] == ["open", "close"]
            """,
        )
        result.assert_outcomes(passed=2)


class TestPlugin:
    def test_sync_tests_and_sqlite_store(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            SCOPES = []

            @pytest.mark.runtree(store="sqlite")
            def test_sync(rt_scope, tmp_path):
                SCOPES.append(rt_scope)
                assert (tmp_path / "runtree.db").exists() or rt_scope.store is not None

            def test_afterwards():
                assert SCOPES[0].disposed
            """,
        )
        result.assert_outcomes(passed=2)

    def test_the_closest_marker_wins_and_bad_options_are_named(
        self, pytester: pytest.Pytester
    ) -> None:
        result = run(
            pytester,
            """
            pytestmark = pytest.mark.runtree(tags=[tenant("acme")])

            @pytest.mark.asyncio
            @pytest.mark.runtree(tags=[tenant("globex")])
            async def test_closest(rt_scope):
                assert await rt_scope.exec(users) == ["bob"]

            @pytest.mark.runtree(preset=[])
            def test_typo(rt_scope):
                pass

            @pytest.mark.runtree(store="mongo")
            def test_bad_store(rt_scope):
                pass
            """,
        )
        result.assert_outcomes(passed=1, errors=2)
        result.stdout.fnmatch_lines(
            ["*unknown option(s)*preset*", "*store='mongo'*use 'memory', 'sqlite'*"]
        )

    def test_assert_tree_names_the_difference(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            @pytest.mark.asyncio
            @pytest.mark.runtree(tags=[tenant("acme")])
            async def test_mismatch(rt_ctx):
                await rt_ctx.exec(report)
                assert_tree(rt_ctx, (..., ..., [("report", "failed", ...)]))
            """,
        )
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(
            ["*at test_mismatch > report: expected status 'failed', got 'completed'*"]
        )


# -- assert_tree in this process ------------------------------------------------------


class TestNothingOutlivesItsTest:
    BODY = """
        import gc, weakref

        REFS = []

        @rt.flow
        async def big(ctx):
            ctx.data["blob"] = bytearray(1_000_000)
            return 1

        @pytest.mark.parametrize("i", range(3))
        async def test_async(rt_ctx, i):
            await rt_ctx.exec(big)
            REFS.append(weakref.ref(rt_ctx.scope))

        @pytest.mark.parametrize("i", range(3))
        def test_sync(rt_scope, i):
            REFS.append(weakref.ref(rt_scope))

        def test_all_freed():
            gc.collect()
            assert len(REFS) == 6
            assert [r() for r in REFS] == [None] * 6
    """

    @pytest.mark.parametrize("mode", ["strict", "auto"])
    def test_a_finished_tests_scope_and_tree_are_freed(
        self, pytester: pytest.Pytester, mode: str
    ) -> None:
        """A long suite does not keep every test's scope, contexts and data: the test
        item (which lives for the whole session) holds none of them afterwards."""
        body = self.BODY
        if mode == "strict":
            body = body.replace(
                "async def test_async", "@pytest.mark.asyncio\n        async def test_async"
            )
        run(pytester, body, f"--asyncio-mode={mode}").assert_outcomes(passed=7)


@dataclass(frozen=True)
class Node:
    node_id: str
    parent_id: str | None
    name: str
    status: str


@dataclass
class RunTree:
    nodes: list[Node] = field(default_factory=list)

    def children(self, node: Node) -> list[Node]:
        return [n for n in self.nodes if n.parent_id == node.node_id]


class TestAssertTree:
    def test_a_run_tree_shape(self) -> None:
        tree = RunTree(
            [
                Node("1", None, "job", "failed"),
                Node("2", "1", "fetch", "completed"),
                Node("3", "1", "store", "failed"),
            ]
        )
        assert_tree(tree, ("job", "failed", [("fetch", "completed"), ("store", "failed")]))
        with pytest.raises(AssertionError, match=r"^at job: expected 1 child, got 2"):
            assert_tree(tree, ("job", "failed", [("fetch", "completed")]))
        twins = RunTree(
            [
                Node("1", None, "job", "failed"),
                Node("2", "1", "step", "completed"),
                Node("3", "1", "step", "failed"),
            ]
        )
        with pytest.raises(AssertionError) as said:  # same-named siblings: which one
            assert_tree(twins, ("job", ..., [("step", ...), ("step", "completed")]))
        message = str(said.value)
        assert message.startswith("at job > step[1]: expected status 'completed', got 'failed'")
        assert "'step' ..." in message and "Ellipsis" not in message

    async def test_an_execution_is_its_root_context(self) -> None:
        @rt.flow
        async def leaf(ctx: rt.ExecutionContext) -> int:
            return 1

        @rt.flow
        async def job(ctx: rt.ExecutionContext) -> int:
            return await ctx.exec(leaf)

        async with rt.create_scope(extensions=[TreeRecorder()]) as scope:
            execution = scope.exec(job)
            await execution
            assert_tree(execution, ("job", "completed", [("leaf", "completed")]))

    async def test_a_context_of_a_recorded_scope(self) -> None:
        @rt.flow
        async def leaf(ctx: rt.ExecutionContext) -> int:
            return 1

        @rt.flow
        async def fails(ctx: rt.ExecutionContext) -> int:
            raise ValueError("no")

        async with rt.create_scope(extensions=[TreeRecorder()]) as scope:
            async with scope.create_context(name="job") as job:
                await job.parallel(job.exec(leaf), job.exec(leaf, name="second"))
                await job.parallel_settled(job.exec(fails))
            assert_tree(
                job,
                ("job", "completed", [("leaf", ...), ("second", "completed"), ("fails", "failed")]),
            )

    async def test_a_scope_without_a_recorder_is_refused(self) -> None:
        async with rt.create_scope() as scope:
            ctx = scope.create_context()
            with pytest.raises(TypeError, match=r"^assert_tree needs the context's scope to"):
                assert_tree(ctx, ("root", "running"))


# -- scope.override -------------------------------------------------------------------


def config_chain(log: list[str]) -> tuple[rt.Atom[str], rt.Flow[None, str]]:
    """An atom ``config``, an atom ``client`` that depends on it and a flow ``use`` that
    returns the client; each logs its set-up and its cleanup."""

    @rt.atom
    async def config(ctx: rt.ResolveContext) -> AsyncIterator[str]:
        log.append("config up")
        yield "real"
        log.append("config down")

    @rt.atom(deps={"config": config})
    async def client(ctx: rt.ResolveContext, config: str) -> AsyncIterator[str]:
        log.append(f"client up {config}")
        yield f"client({config})"
        log.append(f"client down {config}")

    @rt.flow(deps={"client": client})
    async def use(ctx: rt.ExecutionContext, client: str) -> str:
        return client

    return config, use


class TestOverride:
    @pytest.mark.parametrize("form", ["async with", "with"])
    async def test_releases_dependents_and_restores(self, form: str) -> None:
        """Both forms show the same values inside and after the block. ``async with``
        runs the released values' cleanups on entry and exit; ``with`` (no await) runs
        them once at dispose, dependents first, after the live atoms'."""
        log: list[str] = []
        config, use = config_chain(log)
        async with rt.create_scope() as scope:
            assert await scope.exec(use) == "client(real)"
            if form == "with":
                with scope.override(config, "fake"):
                    assert await scope.exec(use) == "client(fake)"
            else:
                async with scope.override(config, "fake"):
                    assert await scope.exec(use) == "client(fake)"
            assert await scope.exec(use) == "client(real)"
            up = [line for line in log if "up" in line]
            assert up == ["config up", "client up real", "client up fake", "config up",
                          "client up real"]  # fmt: skip
        if form == "async with":
            assert log == [
                "config up",
                "client up real",
                "client down real",
                "config down",
                "client up fake",
                "client down fake",
                "config up",
                "client up real",
                "client down real",
                "config down",
            ]
        else:
            assert log[5:] == [
                "client down real",  # the live ones
                "config down",
                "client down fake",  # forgotten on exit
                "client down real",  # forgotten on entry
                "config down",
            ]

    @pytest.mark.parametrize("form", ["async with", "with"])
    async def test_overlapping_overrides_left_out_of_order_restore_the_original(
        self, form: str
    ) -> None:
        """Two overrides of one target whose blocks overlap without nesting (two tasks,
        or hand-managed): the value is the newest one's while it is active, and once both
        are left the original comes back, whatever the order of leaving."""

        @rt.atom
        def settings(ctx: rt.ResolveContext) -> str:
            return "prod"

        async with rt.create_scope() as scope:
            first, second = scope.override(settings, "a"), scope.override(settings, "b")
            if form == "with":
                first.__enter__()
                second.__enter__()
                first.__exit__(None, None, None)
                assert await scope.resolve(settings) == "b"
                second.__exit__(None, None, None)
            else:
                await first.__aenter__()
                await second.__aenter__()
                await first.__aexit__(None, None, None)
                assert await scope.resolve(settings) == "b"
                await second.__aexit__(None, None, None)
            assert await scope.resolve(settings) == "prod"
            async with scope.override(settings, "c"):  # and the next one nests as before
                assert await scope.resolve(settings) == "c"
            assert await scope.resolve(settings) == "prod"

    async def test_an_override_whose_entry_fails_leaves_nothing_behind(self) -> None:
        """Entering releases the cached value; when its cleanup fails, the block never
        runs and the override is not left in place."""

        @rt.atom
        def conn(ctx: rt.ResolveContext) -> Iterator[str]:
            yield "real"
            raise RuntimeError("cleanup failed")

        scope = rt.create_scope()
        await scope.resolve(conn)
        with pytest.raises(ExceptionGroup):
            async with scope.override(conn, "fake"):
                pytest.fail("the block must not run")
        assert await scope.resolve(conn) == "real"
        assert scope._overrides == []
        with pytest.raises(ExceptionGroup):
            await scope.dispose()  # the real value's cleanup fails again, as written

    def test_with_in_a_sync_test_and_a_flow_target(self) -> None:
        @rt.atom
        def a(ctx: rt.ResolveContext) -> int:
            return 1

        @rt.flow(deps={"a": a})
        async def f(ctx: rt.ExecutionContext, a: int) -> int:
            return a

        @rt.flow
        async def g(ctx: rt.ExecutionContext) -> int:
            return 7

        async def main() -> None:
            async with rt.create_scope() as scope:
                with scope.override(a, 2), scope.override(f, g):
                    assert await scope.exec(f) == 7
                    assert await scope.resolve(a) == 2
                assert await scope.exec(f) == 1
                o = scope.override(a, 3)
                with o:
                    assert await scope.resolve(a) == 3
                    with pytest.raises(RuntimeError, match="already active"):
                        o.__enter__()
                assert await scope.resolve(a) == 1

        asyncio.run(main())

    async def test_flows_and_resources(self) -> None:
        @rt.flow
        async def greet(ctx: rt.ExecutionContext) -> str:
            return "real"

        @rt.flow
        async def fake_greet(ctx: rt.ExecutionContext) -> str:
            return "fake"

        @rt.resource
        def session(ctx: rt.ResolveContext) -> str:
            return "real session"

        async with rt.create_scope() as scope:
            async with scope.override(greet, fake_greet), scope.override(session, "fake session"):
                ctx = scope.create_context()
                assert await ctx.exec(greet) == "fake"
                assert await ctx.resolve(session) == "fake session"
                await ctx.close()
            ctx = scope.create_context()
            assert await ctx.exec(greet) == "real"
            assert await ctx.resolve(session) == "real session"
            await ctx.close()

    async def test_a_resource_resolved_on_an_open_context_keeps_its_value(self) -> None:
        # docs/testing.md: new boundaries get the replacement; open ones keep theirs.
        @rt.resource
        def session(ctx: rt.ResolveContext) -> str:
            return "real session"

        async with rt.create_scope() as scope, scope.create_context() as open_one:
            assert await open_one.resolve(session) == "real session"
            async with scope.override(session, "fake session"):
                assert await open_one.resolve(session) == "real session"
                async with scope.create_context() as new_one:
                    assert await new_one.resolve(session) == "fake session"
            assert await open_one.resolve(session) == "real session"

    async def test_mistakes_are_refused(self) -> None:
        @rt.atom
        def a(ctx: rt.ResolveContext) -> int:
            return 1

        @rt.flow
        async def f(ctx: rt.ExecutionContext) -> int:
            return 1

        async with rt.create_scope() as scope:
            with pytest.raises(TypeError, match=r"^preset\('f'\): a flow can be replaced by"):
                scope.override(f, a)
            with pytest.raises(rt.DependencyCycleError):
                async with scope.override(a, a):
                    pass
            assert await scope.resolve(a) == 1  # the refused override left nothing behind
        with pytest.raises(rt.ScopeDisposedError):
            async with scope.override(a, 2):
                pass
