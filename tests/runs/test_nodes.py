"""Node details: stream nodes, replayed nodes whose input changed, large and long-lived
trees (several writes per node, many nodes per write), on every store."""

from __future__ import annotations

import asyncio
import hashlib
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import runtree
from runtree.errors import JournalInputWarning
from runtree.runs import RunNode, Runs, RunTree
from runtree.stores import Store

StoreFactory = Callable[..., Store]


@runtree.flow
async def count(ctx: runtree.ExecutionContext) -> AsyncIterator[int]:
    n = ctx.input
    assert isinstance(n, int)
    for i in range(n):
        yield i


@runtree.flow
async def broken(ctx: runtree.ExecutionContext) -> AsyncIterator[int]:
    yield 1
    raise RuntimeError("the feed dropped")


@runtree.flow
async def double(ctx: runtree.ExecutionContext) -> int:
    assert isinstance(ctx.input, int)
    return ctx.input * 2


def kinds(tree: RunTree, kind: str) -> list[RunNode]:
    return [n for n in tree.nodes if n.kind == kind]


class TestStreams:
    async def test_a_stream_is_a_node_with_its_item_count(self, open_store: StoreFactory) -> None:
        @runtree.flow
        async def reader(ctx: runtree.ExecutionContext) -> list[int]:
            items = [i async for i in ctx.exec_stream(count, 3)]
            items += [await ctx.exec(double, items[-1])]
            return items

        async with open_store() as store, runtree.create_scope(store=store) as scope:
            assert await scope.exec(reader, None, id="s-1") == [0, 1, 2, 4]
            tree = await Runs(store).get("s-1")
        [stream] = kinds(tree, "stream")
        assert (stream.name, stream.status, stream.input) == ("count", "completed", 3)
        assert stream.metadata["stream_items"] == 3
        assert stream.completed_at is not None and stream.replayed is False
        [root] = tree.roots()
        assert [n.kind for n in tree.children(root)] == ["stream", "flow"]

    async def test_failed_and_left_streams(self, open_store: StoreFactory) -> None:
        @runtree.flow
        async def reader(ctx: runtree.ExecutionContext) -> int:
            async with ctx.exec_stream(count, 100) as left:
                async for i in left:
                    if i == 2:
                        break
            try:
                async for _ in ctx.exec_stream(broken):
                    pass
            except RuntimeError:
                return 1
            return 0

        async with open_store() as store, runtree.create_scope(store=store) as scope:
            assert await scope.exec(reader, None, id="s-2") == 1
            tree = await Runs(store).get("s-2")
        left, failed = kinds(tree, "stream")
        assert left.status == "cancelled" and left.metadata["stream_items"] == 3  # 0, 1, 2
        assert failed.status == "failed" and failed.metadata["stream_items"] == 1
        assert failed.error is not None
        assert (failed.error.type, failed.error.message) == ("RuntimeError", "the feed dropped")

    async def test_a_keyed_stream_replayed(self, open_durable: StoreFactory) -> None:
        @runtree.flow
        async def reader(ctx: runtree.ExecutionContext) -> list[int]:
            return [i async for i in ctx.exec_stream(count, 4, key="feed")]

        async with open_durable() as store, runtree.create_scope(store=store) as scope:
            assert await scope.exec(reader, None, id="s-3") == [0, 1, 2, 3]
            assert await scope.exec(reader, None, id="s-3") == [0, 1, 2, 3]
            tree = await Runs(store).get("s-3")
        [stream] = kinds(tree, "stream")
        assert stream.replayed and stream.key == "feed" and stream.status == "completed"
        assert stream.output == [0, 1, 2, 3] and stream.metadata["stream_items"] == 4
        assert not stream.input_changed

    async def test_a_replayed_stream_left_early_ends_as_its_context(
        self, open_durable: StoreFactory
    ) -> None:
        @runtree.flow
        async def first_only(ctx: runtree.ExecutionContext) -> int:
            async with ctx.exec_stream(count, 4, key="feed") as stream:
                async for item in stream:
                    assert stream.context.details.metadata["replayed"] is True
                    return item
            raise AssertionError("the replay yields the recorded items")

        @runtree.flow
        async def reader(ctx: runtree.ExecutionContext) -> list[int]:
            return [i async for i in ctx.exec_stream(count, 4, key="feed")]

        async with open_durable() as store, runtree.create_scope(store=store) as scope:
            assert await scope.exec(reader, None, id="s-4") == [0, 1, 2, 3]
            assert await scope.exec(first_only, None, id="s-4") == 0  # replayed, left early
            tree = await Runs(store).get("s-4")
        [stream] = kinds(tree, "stream")
        assert stream.replayed and stream.status == "cancelled"
        assert stream.metadata["stream_items"] == 1


class TestInputChanged:
    async def test_a_replay_for_another_input_is_marked(self, open_durable: StoreFactory) -> None:
        @runtree.flow
        async def job(ctx: runtree.ExecutionContext) -> list[int]:
            n = ctx.input
            assert isinstance(n, int)
            same = await ctx.exec(double, 1, key="same")
            moved = await ctx.exec(double, n, key="moved")
            fn = await ctx.run(lambda x: x + 1, n, key="fn")
            return [same, moved, fn]

        async with open_durable() as store, runtree.create_scope(store=store) as scope:
            assert await scope.exec(job, 5, id="c-1") == [2, 10, 6]
            with pytest.warns(JournalInputWarning):
                # the same id with another input: the outcomes recorded for 5 replay
                assert await scope.exec(job, 7, id="c-1") == [2, 10, 6]
            tree = await Runs(store).get("c-1")
        nodes = {n.key: n for n in tree.nodes if n.key is not None}
        assert all(n.replayed for n in nodes.values())
        assert not nodes["same"].input_changed and "input_changed" not in nodes["same"].metadata
        for key in ("moved", "fn"):
            assert nodes[key].input_changed, nodes[key]
            digests = nodes[key].metadata["input_changed"]
            assert isinstance(digests, dict) and set(digests) == {"recorded", "now"}
            assert digests["recorded"] != digests["now"]
        assert nodes["moved"].input == 7  # what was given this time
        assert nodes["moved"].metadata["input_changed"] == {"recorded": "=5", "now": "=7"}

    async def test_digests_of_an_earlier_version_still_compare(self, tmp_path: Path) -> None:
        """Journals written before short inputs were their own digest hold a hash for
        every input: the same input replays silently, another one warns, on SQLite as the
        tables were left by that version."""
        import sqlite3

        from runtree.stores import SqliteStore

        runs = 0

        @runtree.flow
        async def step(ctx: runtree.ExecutionContext) -> int:
            nonlocal runs
            runs += 1
            assert isinstance(ctx.input, int)
            return ctx.input * 3

        path = tmp_path / "old.db"
        async with (
            SqliteStore(path) as store,
            runtree.create_scope(store=store) as scope,
            scope.create_context(id="old-1") as root,
        ):
            assert await root.exec(step, 4, key="k") == 12
        with sqlite3.connect(path) as conn:
            old = hashlib.sha256(b"4").hexdigest()[:16]
            assert conn.execute("UPDATE runtree_journal SET input_digest = ?", (old,)).rowcount == 1
        async with SqliteStore(path) as store, runtree.create_scope(store=store) as scope:
            with warnings.catch_warnings():
                warnings.simplefilter("error", JournalInputWarning)
                async with scope.create_context(id="old-1") as root:
                    assert await root.exec(step, 4, key="k") == 12
            with pytest.warns(JournalInputWarning, match=old):
                async with scope.create_context(id="old-1") as root:
                    assert await root.exec(step, 5, key="k") == 12
        assert runs == 1


class TestWrites:
    async def test_many_nodes_in_one_write(self, open_store: StoreFactory) -> None:
        @runtree.flow
        async def wide(ctx: runtree.ExecutionContext) -> int:
            total = 0
            for i in range(130):  # more than one multi-row statement
                total += await ctx.exec(double, i)
            return total

        async with open_store() as store, runtree.create_scope(store=store) as scope:
            assert await scope.exec(wide, None, id="w-1") == sum(range(130)) * 2
            tree = await Runs(store).get("w-1")
        flows = kinds(tree, "flow")
        assert [n.input for n in flows] == list(range(130))
        assert [n.output for n in flows] == [2 * i for i in range(130)]
        assert all(n.status == "completed" for n in flows)

    async def test_a_node_written_running_then_ended(
        self, open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async with open_store() as store, runtree.create_scope(store=store) as scope:
            written = asyncio.Event()
            write = store.runs_write  # type: ignore[attr-defined]

            async def runs_write(nodes: Sequence[Any], *args: Any) -> Any:
                found = await write(nodes, *args)
                if any(len(row) > 4 and row[4] == "slow" for row in nodes):  # (a full row)
                    written.set()
                return found

            monkeypatch.setattr(store, "runs_write", runs_write)
            release = asyncio.Event()

            @runtree.flow
            async def slow(ctx: runtree.ExecutionContext) -> str:
                await release.wait()
                return "done"

            async with scope.create_context(id="r-1") as root:
                task = asyncio.ensure_future(root.exec(slow, {"x": [1, 2]}))
                await written.wait()  # the tick wrote the running node
                [node] = by_name(await Runs(store).get("r-1"), "slow")
                assert (node.status, node.completed_at, node.output) == ("running", None, None)
                assert node.input == {"x": [1, 2]}
                release.set()
                assert await task == "done"
            [node] = by_name(await Runs(store).get("r-1"), "slow")
        assert (node.status, node.output, node.input) == ("completed", "done", {"x": [1, 2]})
        assert node.completed_at is not None

    async def test_long_lived_nodes_under_a_flow_are_written_again_when_they_end(
        self, open_store: StoreFactory
    ) -> None:
        # A stream, a parallel call and a nested boundary whose parent is a flow (its id
        # generated) outlive a flush (100 ms): written running, then ended. The second
        # write once read the parent's id as a context (and lost the node's end).
        @runtree.flow
        async def ticks(ctx: runtree.ExecutionContext) -> AsyncIterator[int]:
            for i in range(3):
                await asyncio.sleep(0.06)
                yield i

        @runtree.flow
        async def nap(ctx: runtree.ExecutionContext) -> int:
            await asyncio.sleep(0.15)
            return 1

        @runtree.flow
        async def inner(ctx: runtree.ExecutionContext) -> list[object]:
            out: list[object] = [[x async for x in ctx.exec_stream(ticks)]]
            out.append(await ctx.parallel(ctx.exec(nap), ctx.exec(nap)))
            async with ctx.scope.create_context(parent=ctx, name="tx") as tx:
                out.append(await tx.exec(nap))
            return out

        @runtree.flow
        async def outer(ctx: runtree.ExecutionContext) -> list[object]:
            return await ctx.exec(inner)

        async with open_store() as store, runtree.create_scope(store=store) as scope:
            assert await scope.exec(outer, None, id="long-1") == [[0, 1, 2], [1, 1], 1]
            tree = await Runs(store).get("long-1")
        assert {n.kind: n.status for n in tree.nodes if n.kind != "flow"} == {
            "root": "completed",
            "stream": "completed",
            "parallel": "completed",
            "boundary": "completed",
        }
        assert all(n.status == "completed" for n in tree.nodes)


def by_name(tree: RunTree, name: str) -> list[RunNode]:
    return [n for n in tree.nodes if n.name == name]
