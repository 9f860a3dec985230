"""The recorder's fast ways for common values (a short str, an int) give exactly what the
general rule (``capture``: JSON text cut to ``record_limit`` bytes, or a marker) gives."""

from __future__ import annotations

import enum
from pathlib import Path

import pytest

import runtree
from runtree._recorder import Recorder, capture
from runtree.errors import RunStateError
from runtree.runs import Runs
from runtree.stores import SqliteStore


class Small(enum.IntEnum):
    ONE = 1


class _Store:
    lease = 30.0


def recorder(limit: int) -> Recorder:
    return Recorder(store=_Store(), mode="durable", limit=limit, values=True)  # type: ignore[arg-type]


def hostile_values(limit: int) -> list[object]:
    short = (limit - 2) // 12
    values: list[object] = []
    for n in (0, 1, short - 1, short, short + 1, limit // 2, limit, limit + 1):
        values += ["x" * n, "😀" * n, "\u2028" * n, "\x00" * n, '"\\' * n]
    values += ["\udc80", "a\udc80b" * 3]  # lone surrogates
    for base in (10**18, 2**63, 10**100, 10**4400):
        values += [base - 1, base, base + 1, -base + 1, -base, -base - 1]
    values += [0, -1, True, False, Small.ONE, 1.5, float("nan"), float("inf"), -0.0]
    values += [{"n": 5}, [1, "a"], {"k": "😀" * limit}, object()]
    return values


@pytest.mark.parametrize("limit", [64, 100, 4096])
def test_fast_ways_agree_with_capture(limit: int) -> None:
    rec = recorder(limit)
    for value in hostile_values(limit):
        assert rec._value(value) == capture(value, limit), repr(value)[:80]


def test_the_journals_input_digest_takes_the_same_text_as_canonical() -> None:
    """The fast ways for an int or a str digest exactly the text ``canonical()`` gives:
    that text itself when it has at most 16 characters, else its hash."""
    import hashlib

    from runtree._journal import input_digest
    from runtree._json import canonical

    for value in [*hostile_values(100), "x" * 14, "x" * 15, 10**15 - 1, -(10**15) + 1]:
        try:
            text = canonical(value)
        except (TypeError, ValueError, RecursionError):
            assert input_digest(value) is None
            continue
        hashed = hashlib.sha256(text.encode()).hexdigest()[:16]
        expected = "=" + text if len(text) <= 16 else hashed
        assert input_digest(value) == expected, repr(value)[:80]


async def test_a_journal_keeps_no_json_text_once_the_nodes_are_written(tmp_path: Path) -> None:
    """A keyed value's JSON text waits on its journal entry only for the recorder: once
    the node is written the entry lets it go (a long root would otherwise hold every
    value twice), and without recording it is never kept."""

    @runtree.flow
    async def step(ctx: runtree.ExecutionContext[int]) -> dict[str, int]:
        return {"n": ctx.input}

    async with SqliteStore(tmp_path / "texts.db") as store:
        for record in ("durable", "none"):
            scope = runtree.create_scope(store=store, record=record)  # type: ignore[arg-type]
            async with scope, scope.create_context(id=f"t-{record}") as root:
                for i in range(3):
                    await root.exec(step, i, key=f"k{i}")
                assert root._x is not None and root._x.journal is not None
                entries = root._x.journal.entries
            assert len(entries) == 3
            assert [e.text for e in entries.values()] == [None, None, None]


class Exploding(dict):  # type: ignore[type-arg]
    """A dict whose contents cannot be read: any encoder that walks it fails."""

    def items(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("items exploded")

    def keys(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("keys exploded")

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("iteration exploded")


class BadKey:
    def __str__(self) -> str:
        raise RuntimeError("no text for this key")


@pytest.mark.record_loss
async def test_values_that_break_their_encoding_never_reach_the_flow(tmp_path: Path) -> None:
    """Recording never changes an outcome: a value whose encoding raises anything is
    recorded as its marker, and a node that cannot be written at all (a metadata key with
    no text) is logged and counted; the flow's result, the root's close and every other
    node are as they would be."""

    @runtree.flow
    async def explode(ctx: runtree.ExecutionContext) -> object:
        return Exploding(a=1)

    @runtree.flow
    async def odd_meta(ctx: runtree.ExecutionContext) -> int:
        ctx.details.metadata[BadKey()] = 1  # type: ignore[index]
        return 2

    @runtree.flow
    async def fine(ctx: runtree.ExecutionContext) -> int:
        return 3

    async with SqliteStore(tmp_path / "hostile.db") as store:
        async with runtree.create_scope(store=store) as scope:
            async with scope.create_context(id="hostile") as root:
                assert type(await root.exec(explode)) is Exploding
                assert await root.exec(odd_meta) == 2
                assert await root.exec(fine) == 3
            assert root.details.metadata["runtree.record_failures"] == 1
        tree = await Runs(store).get("hostile")
    assert tree.run.status == "completed"
    nodes = {n.name: n for n in tree.nodes}
    assert "odd_meta" not in nodes  # the node that could not be written
    assert nodes["fine"].output == 3
    marker = nodes["explode"].output
    assert isinstance(marker, str) and marker.startswith("<runtree: not JSON>")


async def test_a_dict_with_other_keys_is_not_json_in_the_record(tmp_path: Path) -> None:
    # {1: "a"} encodes as {"1": "a"}: another value. The journal refuses it as not JSON;
    # the record marks it the same way, and a run with such an input is not resumable.
    @runtree.flow
    async def job(ctx: runtree.ExecutionContext) -> object:
        raise RuntimeError("first")

    store = SqliteStore(tmp_path / "k.db")
    async with store, runtree.create_scope(store=store) as scope:
        with pytest.raises(RuntimeError):
            await scope.exec(job, {1: "a"}, id="intkey")
        info = (await Runs(store).get("intkey")).run
        assert not info.input_ok and isinstance(info.input, str)
        assert info.input.startswith("<runtree: not JSON>")
        with pytest.raises(RunStateError, match="not JSON"):
            await Runs(store).resume("intkey", scope, flows=[job])
