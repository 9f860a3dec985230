"""Recording run trees: what a recorded run and its nodes hold, on every store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import runtree
from runtree.errors import RunNotFoundError, RunStateError
from runtree.runs import RunInfo, RunNode, Runs, RunTree
from runtree.sessions import Sessions
from runtree.stores import SqliteStore, Store

StoreFactory = Callable[..., Store]

tenant = runtree.tag("tenant", serializable=True)
secret = runtree.tag("secret")


@runtree.flow
async def double(ctx: runtree.ExecutionContext) -> int:
    assert isinstance(ctx.input, int)
    return ctx.input * 2


@runtree.flow
async def boom(ctx: runtree.ExecutionContext) -> None:
    raise ValueError(f"bad input {ctx.input!r}")


@runtree.flow
async def pipeline(ctx: runtree.ExecutionContext) -> dict[str, Any]:
    a = await ctx.exec(double, 2, key="a")
    b = await ctx.run(lambda x: x + 1, a, name="inc")
    pair = await ctx.parallel(ctx.exec(double, 10), ctx.exec(double, 20))
    return {"a": a, "b": b, "pair": pair}


def by_name(tree: RunTree, name: str) -> list[RunNode]:
    return [n for n in tree.nodes if n.name == name]


class TestRecordedRun:
    async def test_a_run_and_its_nodes(self, open_store: StoreFactory) -> None:
        async with open_store() as store, runtree.create_scope(store=store) as scope:
            result = await scope.exec(pipeline, {"n": 1}, id="job-1")
            tree = await Runs(store).get("job-1")
        assert result == {"a": 4, "b": 5, "pair": [20, 40]}
        run = tree.run
        assert isinstance(run, RunInfo)
        assert (run.root_id, run.name, run.status) == ("job-1", "pipeline", "completed")
        assert run.flow == f"{__name__}:pipeline"
        assert run.input == {"n": 1}
        assert run.output == result
        assert run.error is None and run.session_id is None
        assert run.completed_at is not None and run.created_at <= run.completed_at
        [root] = tree.roots()
        assert (root.kind, root.node_id, root.parent_id) == ("root", "job-1", None)
        kinds = [(n.name, n.kind) for n in tree.walk()]
        assert kinds == [
            ("pipeline", "root"),
            ("double", "flow"),
            ("inc", "fn"),
            ("parallel", "parallel"),
            ("double", "flow"),
            ("double", "flow"),
        ]
        [keyed] = [n for n in tree.nodes if n.key == "a"]
        assert (keyed.input, keyed.output, keyed.replayed, keyed.attempt) == (2, 4, False, 1)
        [par] = by_name(tree, "parallel")
        assert sorted(c.input for c in tree.children(par)) == [10, 20]  # type: ignore[type-var]
        [inc] = by_name(tree, "inc")
        assert (inc.input, inc.output, inc.status) == ([4], 5, "completed")
        assert all(n.status == "completed" and n.completed_at for n in tree.nodes)
        with pytest.raises(AttributeError):
            run.status = "failed"  # type: ignore[misc]

    async def test_a_rerun_replays_recorded_steps(self, open_durable: StoreFactory) -> None:
        async with open_durable() as store:
            async with runtree.create_scope(store=store) as scope:
                await scope.exec(pipeline, None, id="job-2")
            async with runtree.create_scope(store=store) as scope:
                await scope.exec(pipeline, None, id="job-2")
            tree = await Runs(store).get("job-2")
        [keyed] = [n for n in tree.nodes if n.key == "a"]
        assert keyed.replayed and keyed.output == 4 and keyed.status == "completed"
        assert keyed.parent_id == "job-2"
        assert len(tree.nodes) == 6  # the first attempt's nodes were replaced

    async def test_failure_is_recorded_and_raised_unchanged(self, open_store: StoreFactory) -> None:
        @runtree.flow
        async def outer(ctx: runtree.ExecutionContext) -> None:
            await ctx.exec(double, 1)
            await ctx.exec(boom, "x", retry=1)

        async with open_store() as store, runtree.create_scope(store=store) as scope:
            with pytest.raises(ValueError, match=r"^bad input 'x'$"):
                await scope.exec(outer, None, id="job-3")
            tree = await Runs(store).get("job-3")
        assert tree.run.status == "failed"
        assert tree.run.error is not None
        assert (tree.run.error.type, tree.run.error.message) == ("ValueError", "bad input 'x'")
        attempts = by_name(tree, "boom")
        assert [(n.attempt, n.status) for n in attempts] == [(1, "failed"), (2, "failed")]
        assert [n.name for n in tree.failing_path()] == ["outer", "boom"]

    async def test_cancelled_run(self, open_store: StoreFactory) -> None:
        started = asyncio.Event()

        @runtree.flow
        async def waits(ctx: runtree.ExecutionContext) -> None:
            started.set()
            await asyncio.Event().wait()

        async with open_store() as store, runtree.create_scope(store=store) as scope:
            execution = scope.exec(waits, None, id="job-4")
            await started.wait()
            execution.cancel("stop")
            with pytest.raises(runtree.Cancelled):
                await execution
            info = (await Runs(store).get("job-4")).run
        assert info.status == "cancelled"

    async def test_boundaries_and_nested_boundaries(self, open_store: StoreFactory) -> None:
        async with open_store() as store, runtree.create_scope(store=store) as scope:
            async with scope.create_context(id="req-1", name="request") as root:
                await root.exec(double, 3)
                async with scope.create_context(parent=root, name="tx") as inner:
                    await inner.exec(double, 4)
            tree = await Runs(store).get("req-1")
        assert tree.run.flow == f"{__name__}:double" and tree.run.input == 3
        assert tree.run.status == "completed" and tree.run.name == "request"
        shape = [(n.name, n.kind, d) for n, d in tree.walk_with_depth()]
        assert shape == [
            ("request", "root", 0),
            ("double", "flow", 1),
            ("tx", "boundary", 1),
            ("double", "flow", 2),
        ]
        [tx] = by_name(tree, "tx")
        assert tx.status == "completed" and tx.completed_at is not None

    async def test_tags_and_metadata(self, open_store: StoreFactory) -> None:
        @runtree.flow
        async def tagged(ctx: runtree.ExecutionContext) -> None:
            ctx.details.metadata["rows"] = 3
            ctx.details.metadata["obj"] = object()

        async with open_store() as store, runtree.create_scope(store=store) as scope:
            async with scope.create_context(id="t-1") as root:
                await root.exec(tagged, tags=[tenant("acme"), secret("pw")])
            tree = await Runs(store).get("t-1")
        [node] = by_name(tree, "tagged")
        assert node.tags == {"tenant": "acme"}  # only serializable tags
        assert node.metadata["rows"] == 3
        assert str(node.metadata["obj"]).startswith("<runtree: not JSON> <object object")


class TestWhatIsRecorded:
    async def test_durable_records_roots_with_an_id(self, open_store: StoreFactory) -> None:
        async with open_store() as store, runtree.create_scope(store=store) as scope:
            await scope.exec(double, 1)
            async with scope.create_context() as ctx:
                await ctx.exec(double, 1)
            await scope.exec(double, 2, id="kept")
            runs = await Runs(store).list()
        assert [r.root_id for r in runs] == ["kept"]

    async def test_all_and_none(self, open_store: StoreFactory) -> None:
        async with open_store() as store:
            async with runtree.create_scope(store=store, record="all") as scope:
                await scope.exec(double, 1)
                async with scope.create_context() as ctx:
                    await ctx.exec(double, 1)
            assert len(await Runs(store).list()) == 2
            async with runtree.create_scope(store=store, record="none") as scope:
                await scope.exec(double, 1, id="not-kept")
            assert len(await Runs(store).list()) == 2

    def test_bad_options(self) -> None:
        store = runtree.stores.InMemoryStore()
        with pytest.raises(ValueError, match=r"^create_scope\(record=\.\.\.\) must be"):
            runtree.create_scope(store=store, record="some")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"record_limit"):
            runtree.create_scope(store=store, record_limit=3)
        for not_bool in ("no", "false", 0, None):
            with pytest.raises(TypeError, match=r"^create_scope\(record_values=\.\.\.\)"):
                runtree.create_scope(store=store, record_values=not_bool)  # type: ignore[arg-type]

    async def test_values_cut_and_not_json(self, open_store: StoreFactory) -> None:
        @runtree.flow
        async def big(ctx: runtree.ExecutionContext) -> object:
            return {"text": "x" * 500, "obj": None} if ctx.input == "big" else object()

        async with open_store() as store:
            scope = runtree.create_scope(store=store, record_limit=100)
            async with scope, scope.create_context(id="v-1") as root:
                await root.exec(big, "big")
                await root.exec(big, "obj")
            tree = await Runs(store).get("v-1")
            nodes = by_name(tree, "big")
            cut, other = nodes[0].output, nodes[1].output
            assert isinstance(cut, str) and cut.startswith("<runtree: cut, 522 bytes of JSON> ")
            assert len(cut) <= 100
            assert isinstance(other, str) and other.startswith("<runtree: not JSON> <object")
            async with runtree.create_scope(store=store, record_values=False) as scope:
                await scope.exec(pipeline, {"n": 2}, id="v-2")
            tree = await Runs(store).get("v-2")
        assert all(n.input is None and n.output is None for n in tree.nodes)
        assert tree.run.input == {"n": 2}  # a run's own input is kept whole: resume needs it

    async def test_a_long_str_or_int_is_cut_like_any_value(self, open_store: StoreFactory) -> None:
        @runtree.flow
        async def echo(ctx: runtree.ExecutionContext) -> object:
            return ctx.input

        long_text, long_int = "y" * 150, 10**100
        async with open_store() as store:
            scope = runtree.create_scope(store=store, record_limit=64)
            async with scope, scope.create_context(id="v-3") as root:
                assert await root.exec(echo, long_text) == long_text  # the values themselves
                assert await root.exec(echo, long_int) == long_int  # are untouched
                assert await root.exec(echo, "short") == "short"
            nodes = by_name(await Runs(store).get("v-3"), "echo")
        for node, size in zip(nodes, (152, 101), strict=False):
            for recorded in (node.input, node.output):
                assert isinstance(recorded, str)
                assert recorded.startswith(f"<runtree: cut, {size} bytes of JSON> ")
                assert len(recorded) <= 64
        assert (nodes[2].input, nodes[2].output) == ("short", "short")

    async def test_a_keyed_steps_output_is_what_its_journal_recorded(
        self, open_store: StoreFactory
    ) -> None:
        """The node's output of a keyed step is the journal's JSON of the value (encoded
        once for both): changing the value after the step changes neither; it is cut to
        ``record_limit`` as any value; ``record_values=False`` still stores none."""

        @runtree.flow
        async def items(ctx: runtree.ExecutionContext) -> list[object]:
            return list(range(ctx.input))

        async with open_store() as store:
            scope = runtree.create_scope(store=store, record_limit=64)
            async with scope, scope.create_context(id="j-1") as root:
                await root.exec(items, 0, key="warm")  # the tree is held from here on
                got = await root.exec(items, 3, key="small")
                got.append("changed after")
                big = await root.exec(items, 40, key="big")
                big.clear()
                await root.exec(items, 2)  # not keyed: encoded from the value
            nodes = {n.key: n for n in by_name(await Runs(store).get("j-1"), "items")}
            assert nodes["small"].output == [0, 1, 2]
            size = len(runtree._json.compact(list(range(40))))
            cut = nodes["big"].output
            assert isinstance(cut, str) and cut.startswith(f"<runtree: cut, {size} bytes")
            assert nodes[None].output == [0, 1]
            scope = runtree.create_scope(store=store, record_values=False)
            async with scope, scope.create_context(id="j-2") as root:
                await root.exec(items, 0, key="warm")
                await root.exec(items, 3, key="small")
            tree = await Runs(store).get("j-2")
        assert all(n.output is None for n in tree.nodes)

    async def test_session_commands_are_runs(self, open_store: StoreFactory) -> None:
        async with open_store() as store:
            session = await Sessions(store).create("proj")
            assert await session.exec(double, 5, command="twice") == 10
            with pytest.raises(ValueError, match=r"^bad input 7$"):
                await session.exec(boom, 7, command="explode")
            runs = await Runs(store).list()
        assert [(r.command, r.status, r.session_id) for r in runs] == [
            ("explode", "failed", session.session_id),
            ("twice", "completed", session.session_id),
        ]
        assert runs[1].output == 10 and runs[1].flow == f"{__name__}:double"


class TestRecordingNeverChangesOutcomes:
    @pytest.mark.record_loss
    async def test_a_failing_store_is_logged_and_counted(
        self, open_store: StoreFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with open_store() as store:

            async def broken(*args: object, **kwargs: object) -> None:
                raise OSError("disk full")

            store.runs_write = broken  # type: ignore[attr-defined]
            store.runs_start = broken  # type: ignore[attr-defined]
            with caplog.at_level(logging.WARNING, logger="runtree"):
                async with runtree.create_scope(store=store) as scope:
                    details = await scope.exec(pipeline, None, id="f-1", details=True)
        assert details.ok and details.value == {"a": 4, "b": 5, "pair": [20, 40]}
        assert details.context.details.metadata["runtree.record_failures"] == 1
        assert "run trees: starting run failed" in caplog.text

    @pytest.mark.record_loss
    async def test_failing_node_writes_keep_the_flow_going(self, open_store: StoreFactory) -> None:
        async with open_store() as store:
            real = store.runs_write  # type: ignore[attr-defined]

            tried = asyncio.Event()

            async def broken(nodes: Any, finished: Any = (), beat: bool = False) -> Any:
                if finished:
                    return await real(nodes, finished, beat)
                tried.set()
                raise OSError("disk full")

            store.runs_write = broken  # type: ignore[attr-defined]

            @runtree.flow
            async def slow(ctx: runtree.ExecutionContext) -> int:
                await ctx.exec(double, 1)
                await tried.wait()  # a tick tried to write the buffered node, and failed
                return 7

            async with runtree.create_scope(store=store) as scope:
                details = await scope.exec(slow, None, id="f-2", details=True)
            tree = await Runs(store).get("f-2")
        assert details.value == 7
        assert int(details.context.details.metadata["runtree.record_failures"]) >= 1  # type: ignore[call-overload]
        assert tree.run.status == "completed"
        assert [n.name for n in tree.nodes] == ["slow"]  # the lost node row stays lost


class TestRunsApi:
    async def test_list_filters_and_order(self, open_store: StoreFactory) -> None:
        async with open_store() as store, runtree.create_scope(store=store) as scope:
            for i in range(5):
                await scope.exec(double, i, id=f"r-{i}")
            with pytest.raises(ValueError):
                await scope.exec(boom, 1, id="r-bad")
            runs = Runs(store)
            newest = await runs.list(limit=3)
            assert [r.root_id for r in newest] == ["r-bad", "r-4", "r-3"]
            assert [r.root_id for r in await runs.list(status="failed")] == ["r-bad"]
            assert len(await runs.list(flow=double)) == 5
            assert len(await runs.list(flow=f"{__name__}:boom")) == 1
            cutoff = (await runs.get("r-3")).run.created_at
            assert [r.root_id for r in await runs.list(since=cutoff)] == ["r-bad", "r-4", "r-3"]
            assert await runs.list(status="running") == []
            with pytest.raises(RunNotFoundError, match=r"^No run 'nope' in this store"):
                await runs.get("nope")
            with pytest.raises(KeyError):
                await runs.get("nope")
            with pytest.raises(ValueError, match=r"status"):
                await runs.list(status="done")  # type: ignore[arg-type]

    async def test_list_takes_several_statuses(self, open_store: StoreFactory) -> None:
        """As ``prune`` does: one query per status, merged newest first, cut to ``limit``."""
        async with open_store() as store, runtree.create_scope(store=store) as scope:
            for i in range(3):
                await scope.exec(double, i, id=f"ok-{i}")
                with pytest.raises(ValueError):
                    await scope.exec(boom, i, id=f"bad-{i}")
            runs = Runs(store)
            both = await runs.list(status=["completed", "failed"])
            assert [r.root_id for r in both] == [
                "bad-2", "ok-2", "bad-1", "ok-1", "bad-0", "ok-0"
            ]  # fmt: skip
            assert [r.root_id for r in both] == [r.root_id for r in await runs.list()]
            assert [r.root_id for r in await runs.list(status=("failed",), limit=2)] == [
                "bad-2",
                "bad-1",
            ]
            cut = await runs.list(status={"completed", "failed", "running"}, limit=3)
            assert [r.root_id for r in cut] == ["bad-2", "ok-2", "bad-1"]
            assert len(await runs.list(status=["failed", "failed"])) == 3
            assert await runs.list(status=["running", "interrupted"]) == []
            with pytest.raises(ValueError, match=r"^runs.list\(status=...\) must be one of"):
                await runs.list(status=["completed", "done"])  # type: ignore[list-item]
            with pytest.raises(ValueError, match=r"no status"):
                await runs.list(status=[])
            with pytest.raises(TypeError, match=r"a status or a list"):
                await runs.list(status=3)  # type: ignore[arg-type]

    def test_runs_needs_a_store(self) -> None:
        with pytest.raises(TypeError, match=r"^Runs\(store\) needs a runtree store"):
            Runs(object())


async def test_the_runs_flow_is_the_first_flow_directly_under_its_root(tmp_path: Path) -> None:
    # A first exec inside a nested boundary is not the run's flow (resume would run that
    # step alone as the whole run): the flow stays unknown, and resume says so.
    @runtree.flow
    async def in_boundary(ctx: runtree.ExecutionContext) -> str:
        raise RuntimeError("inner failed")

    async def run(scope: runtree.Scope) -> None:
        root = scope.create_context(id="nested-first")
        async with root, scope.create_context(parent=root) as b:
            await b.exec(in_boundary, "x")

    store = SqliteStore(tmp_path / "f.db")
    async with store, runtree.create_scope(store=store) as scope:
        with pytest.raises(RuntimeError):
            await run(scope)
        info = (await Runs(store).get("nested-first")).run
        assert info.flow is None
        with pytest.raises(RunStateError, match="ran no flow first"):
            await Runs(store).resume("nested-first", scope)
