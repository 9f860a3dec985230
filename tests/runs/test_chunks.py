"""Node rows are written in chunks (one row per root per flush). A node written while
running and again when finished reads as its last write; nodes recorded before chunks
existed (``run_nodes`` rows) still read, merged in start order; a flush of more nodes than
a chunk holds writes several; prune takes the chunks with the run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import runtree
from runtree.runs import Runs
from runtree.stores import Store
from runtree.stores._runs_sql import NODES_PER_CHUNK
from runtree.stores._sql import SqlStore, _op_all, _op_exec

StoreFactory = Callable[..., Store]


def sql(store: Store) -> SqlStore:
    assert isinstance(store, SqlStore)
    return store


def node(node_id: str, seq: int, status: str, output: str | None = None) -> tuple[Any, ...]:
    """A node row as the recorder buffers it (root_id first)."""
    return (
        "chunked", node_id, seq, "chunked", f"n{seq}", "flow", None, 1, status,
        1000.0 + seq, None if status == "running" else 2000.0 + seq, None, None, 0,
        None, output, None, None,
    )  # fmt: skip


async def test_last_write_wins_and_old_rows_merge_in_start_order(
    open_durable: StoreFactory,
) -> None:
    async with open_durable() as store:
        s = sql(store)
        await s.runs_start(("chunked", "chunked", "job", None, None, 1, 999.0, None, None))
        # A row as runtree wrote nodes before chunks (one run_nodes row per node).
        legacy = node("a", 1, "completed", '"old"')
        await s._write(_op_exec, s._q["r_node_put"], legacy)
        await s.runs_write([node("b", 2, "running"), node("c", 3, "completed", "3")])
        await s.runs_write([node("b", 2, "completed", '"done"'), node("d", 0, "completed")])
        got = await s.runs_get("chunked")
        assert got is not None
        _, rows = got
        assert [r[0] for r in rows] == ["d", "a", "b", "c"]  # by seq
        by_id = {r[0]: r for r in rows}
        assert by_id["b"][6] == "completed" and by_id["b"][13] == '"done"'
        assert by_id["a"][13] == '"old"'
        assert all(len(r) == 16 for r in rows)


async def test_a_large_tree_round_trips_through_several_chunks(open_durable: StoreFactory) -> None:
    n = NODES_PER_CHUNK * 2 + 7

    @runtree.flow
    async def leaf(ctx: runtree.ExecutionContext) -> int:
        assert isinstance(ctx.input, int)
        return ctx.input

    @runtree.flow
    async def many(ctx: runtree.ExecutionContext) -> int:
        return sum([await ctx.exec(leaf, i) for i in range(n)])

    async with open_durable() as store:
        async with runtree.create_scope(store=store) as scope:
            await scope.exec(many, id="large")
        tree = await Runs(store).get("large")
        leaves = [x for x in tree.nodes if x.name == "leaf"]
        assert [x.output for x in leaves] == list(range(n))
        assert all(x.status == "completed" for x in tree.nodes)
        # Pruning takes the chunks with the run.
        assert await Runs(store).prune(older_than=timedelta(0)) == 1
        s = sql(store)
        assert await s._read(_op_all, s._q["r_chunks"], ("large",)) == []


async def test_timestamps_round_trip_to_the_microsecond_and_old_chunks_still_read(
    open_durable: StoreFactory,
) -> None:
    """Chunks hold timestamps as whole microseconds (a float's repr is the costliest part
    of writing a node); chunks written before held floats and read as they were."""
    import json

    contexts: dict[str, runtree.ExecutionContext] = {}

    @runtree.flow
    async def leaf(ctx: runtree.ExecutionContext) -> None:
        contexts[ctx.id] = ctx

    @runtree.flow
    async def top(ctx: runtree.ExecutionContext) -> None:
        for _ in range(3):
            await ctx.exec(leaf)

    async with open_durable() as store:
        async with runtree.create_scope(store=store) as scope:
            await scope.exec(top, id="times")
        s = sql(store)
        (text,) = (await s._read(_op_all, s._q["r_chunks"], ("times",)))[0]
        prefix, *nodes = json.loads(text)  # the writer's id prefix, then the nodes
        assert type(prefix) is str and all(type(n[8]) is int for n in nodes)
        tree = await Runs(store).get("times")
        leaves = [x for x in tree.nodes if x.name == "leaf"]
        assert len(leaves) == 3
        for x in leaves:
            ctx = contexts[x.node_id]
            assert isinstance(x.started_at, float) and isinstance(x.completed_at, float)
            assert abs(x.started_at - ctx.details.started_at) <= 1e-6
            assert ctx.details.completed_at is not None
            assert abs(x.completed_at - ctx.details.completed_at) <= 1e-6
        # A chunk as the previous version wrote it: float seconds.
        await s.runs_start(("legacy", "legacy", "job", None, None, 1, 999.0, None, None))
        old = [["n1", 1, "legacy", "n1", "flow", None, 1, "completed", 1000.25, 1001.5]]
        old[0] += [None, None, 0, None, None, None, None]
        await s._write(_op_exec, s._q["r_chunk_put"], ("legacy", json.dumps(old)))
        got = await s.runs_get("legacy")
        assert got is not None
        (row,) = got[1]
        assert (row[7], row[8]) == (1000.25, 1001.5)


async def test_the_recorders_own_node_text_is_what_the_store_would_encode(
    open_durable: StoreFactory,
) -> None:
    """A completed exec's chunk entry is written by the recorder as JSON text: it must be
    byte for byte what encoding its row gives, names and keys of any text included."""
    import json

    from runtree._json import compact

    who = runtree.tag("who", serializable=True)

    @runtree.flow(name='naïve "quoted" \\ name ✓')
    async def odd(ctx: runtree.ExecutionContext) -> object:
        ctx.details.metadata["note"] = "é"
        return {"in": ctx.input, "ü": [1, 2.5, None, True]}

    @runtree.flow
    async def top(ctx: runtree.ExecutionContext) -> None:
        await ctx.exec(odd, 'say "hi" ✓', key='ké\\y"1', tags=[who("zoë")])
        await ctx.exec(odd, None)
        await ctx.run(lambda: None, name="plain fn")

    async with open_durable() as store:
        async with runtree.create_scope(store=store) as scope:
            await scope.exec(top, id="texts")
        s = sql(store)
        chunks = await s._read(_op_all, s._q["r_chunks"], ("texts",))
        for (text,) in chunks:
            assert compact(json.loads(text)) == text
        tree = await Runs(store).get("texts")
        odd_nodes = [n for n in tree.nodes if n.name == odd.name]
        assert [n.key for n in odd_nodes] == ['ké\\y"1', None]
        assert odd_nodes[0].input == 'say "hi" ✓'
        assert odd_nodes[0].output == {"in": 'say "hi" ✓', "ü": [1, 2.5, None, True]}
        assert odd_nodes[0].tags == {"who": "zoë"}
        assert odd_nodes[0].metadata == {"note": "é"}
        assert odd_nodes[1].input is None
        assert [n.kind for n in tree.nodes if n.name == "plain fn"] == ["fn"]


async def test_ids_written_as_numbers_read_back_as_the_context_ids(
    open_durable: StoreFactory,
) -> None:
    """A node whose id was never read is written as its number (the chunk holds the
    writer's id prefix): read back, its id and its parent's are the contexts' ids as
    ``ctx.id`` gives them afterwards, and a chunk from another process keeps its prefix."""
    import json

    kept: list[runtree.ExecutionContext] = []

    @runtree.flow
    async def leaf(ctx: runtree.ExecutionContext) -> None:
        kept.append(ctx)  # its id is not read while it runs

    @runtree.flow
    async def top(ctx: runtree.ExecutionContext) -> None:
        await ctx.exec(leaf)
        await ctx.exec(leaf, key="keyed")  # the keyed lane's rows
        async with ctx.scope.create_context(parent=ctx, name="inner") as inner:
            await inner.exec(leaf)  # its parent is a nested boundary

    async with open_durable() as store:
        async with runtree.create_scope(store=store) as scope:
            await scope.exec(top, id="numbers")
        s = sql(store)
        written = [json.loads(t) for (t,) in await s._read(_op_all, s._q["r_chunks"], ("numbers",))]
        assert any(type(n[0]) is int for chunk in written for n in chunk[1:])
        tree = await Runs(store).get("numbers")
        by_id = {n.node_id: n for n in tree.nodes}
        assert len(kept) == 3
        for ctx in kept:
            assert ctx.id in by_id, ctx.name
            assert ctx.parent is not None
            assert by_id[ctx.id].parent_id == ctx.parent.id
        inner_leaf = kept[-1]
        assert by_id[inner_leaf.id].parent_id in by_id  # the nested boundary's own node
        # A chunk another process wrote: its numbers go with its prefix, not ours.
        await s.runs_start(("other", "other", "job", None, None, 1, 999.0, None, None))
        row = [7, 1, "other", "n7", "flow", None, 1, "completed", 1000, 1001]
        row += [None, None, 0, None, None, None, None]
        await s._write(_op_exec, s._q["r_chunk_put"], ("other", json.dumps(["zz9", row])))
        got = await s.runs_get("other")
        assert got is not None
        assert [(r[0], r[1]) for r in got[1]] == [("zz9-7", "other")]
