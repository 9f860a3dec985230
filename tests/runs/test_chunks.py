"""Node rows are written in chunks (one row per root per flush). A node written while
running and again when finished reads as its last write; nodes recorded before chunks
existed (``run_nodes`` rows) still read, merged in start order; a flush of more nodes than
a chunk holds writes several; prune takes the chunks with the run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

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


async def test_timestamps_round_trip_exactly_and_old_chunks_still_read(
    open_durable: StoreFactory,
) -> None:
    """A chunk's head holds its rows' timestamps as IEEE 754 doubles (base64): they read
    back exactly as the contexts had them. Chunks written before read as they were: the
    writer's prefix with whole microseconds, and before that float seconds."""
    import base64
    import json
    from array import array

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
        head, *nodes = json.loads(text)  # the head, then the rows without their times
        times = array("d", base64.b64decode(head["t"]))
        assert type(head["p"]) is str and len(times) == 2 * len(nodes)
        assert all(type(v) is not float for n in nodes for v in n)
        tree = await Runs(store).get("times")
        leaves = [x for x in tree.nodes if x.name == "leaf"]
        assert len(leaves) == 3
        for x in leaves:
            ctx = contexts[x.node_id]
            assert x.started_at == ctx.details.started_at
            assert x.completed_at == ctx.details.completed_at
        # Chunks as earlier versions wrote them: float seconds, then whole microseconds
        # after the writer's prefix.
        for root, chunk in (
            ("floats", ["n1", 1, "floats", "n1", "flow", None, 1, "completed", 1000.25, 1001.5]),
            ("micros", ["zz", [7, 1, "micros", "n7", "flow", None, 1, "completed"]]),
        ):
            await s.runs_start((root, root, "job", None, None, 1, 999.0, None, None))
            if root == "micros":
                chunk[1] += [1000250000, 1001500000]  # type: ignore[operator]
            else:
                chunk = [chunk]
            row = chunk[-1]
            assert isinstance(row, list)
            row += [None, None, 0, None, None, None, None]
            await s._write(_op_exec, s._q["r_chunk_put"], (root, json.dumps(chunk)))
            got = await s.runs_get(root)
            assert got is not None
            (read,) = got[1]
            assert (read[7], read[8], read[6]) == (1000.25, 1001.5, "completed")


async def test_a_chunk_of_another_writer_reads_with_its_prefix_full_rows_and_short(
    open_durable: StoreFactory,
) -> None:
    """The stored format (runs_sql._merge): a head with the writer's prefix and the
    times (a NaN for a node still running), a full row, and short rows of a completed
    flow with and without input, output and key."""
    import base64
    import json
    from array import array

    times = array("d", [1000.5, float("nan"), 1000.75, 1001.0, 1001.25, 1001.5])
    head = {"p": "w1", "t": base64.b64encode(times.tobytes()).decode()}
    full = [1, 1, "job", "slow", "fn", "k0", 2, "running", None, None, 0, "3", None, '{"a":1}']
    full += [None]
    chunk = [head, full, [2, 2, 1, "quick"], [3, 3, 1, "keyed", "4", '"out"', "k1", "fn"]]
    async with open_durable() as store:
        s = sql(store)
        await s.runs_start(("job", "job", "job", None, None, 1, 999.0, None, None))
        await s._write(_op_exec, s._q["r_chunk_put"], ("job", json.dumps(chunk)))
        got = await s.runs_get("job")
        assert got is not None
        a, b, c = got[1]
        assert a == (
            "w1-1", "job", "slow", "fn", "k0", 2, "running", 1000.5, None, None, None, 0,
            "3", None, '{"a":1}', None,
        )  # fmt: skip
        assert b == (
            "w1-2", "w1-1", "quick", "flow", None, 1, "completed", 1000.75, 1001.0, None,
            None, 0, None, None, None, None,
        )  # fmt: skip
        assert c == (
            "w1-3", "w1-1", "keyed", "fn", "k1", 1, "completed", 1001.25, 1001.5, None,
            None, 0, "4", '"out"', None, None,
        )  # fmt: skip


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


@pytest.mark.parametrize("wrapped", [False, True])
async def test_a_completed_flow_is_written_short_on_both_lanes(
    open_durable: StoreFactory, wrapped: bool
) -> None:
    """A completed flow with no tags or metadata of its own is written as a short row
    (most nodes: the cheap way), by the inline recorder and as a wrapper alike; a
    function as a short row with its kind; a failure and a node with metadata whole."""
    import json

    class PassThrough(runtree.Extension):
        async def wrap_exec(self, next: Any, op: runtree.ExecOp) -> object:
            return await next()

    @runtree.flow
    async def leaf(ctx: runtree.ExecutionContext) -> object:
        if ctx.input == "fail":
            raise ValueError("no")
        if ctx.input == "noted":
            ctx.details.metadata["n"] = 1
        return ctx.input

    @runtree.flow
    async def top(ctx: runtree.ExecutionContext) -> None:
        await ctx.exec(leaf)
        await ctx.exec(leaf, 2, key="k")
        await ctx.exec(leaf, "noted")
        await ctx.run(lambda: None, name="fn")
        with pytest.raises(ValueError):
            await ctx.exec(leaf, "fail")

    exts = [PassThrough()] if wrapped else []
    async with open_durable() as store:
        async with runtree.create_scope(store=store, extensions=exts) as scope:
            await scope.exec(top, id="short")
        s = sql(store)
        rows = [
            r
            for (text,) in await s._read(_op_all, s._q["r_chunks"], ("short",))
            for r in json.loads(text)[1:]
        ]
        tree = await Runs(store).get("short")
        kinds = {n.node_id: n for n in tree.nodes}
        prefix = json.loads((await s._read(_op_all, s._q["r_chunks"], ("short",)))[0][0])[0]["p"]
        last = {}
        for r in rows:
            last[f"{prefix}-{r[0]}" if type(r[0]) is int else r[0]] = r
        lengths = {(kinds[i].name, kinds[i].input): len(r) for i, r in last.items()}
        assert lengths[("leaf", None)] == 4
        assert lengths[("leaf", 2)] == 7
        assert lengths[("leaf", "noted")] == 15
        assert lengths[("leaf", "fail")] == 15
        assert lengths[("fn", None)] == 8  # a function: short, with its kind
        assert [n.output for n in tree.nodes if n.name == "leaf"] == [None, 2, "noted", None]
