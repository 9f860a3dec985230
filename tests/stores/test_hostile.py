"""Hostile values and names (DESIGN §3) on every store: memory, SQLite (a real file) and
PostgreSQL. One rule for keys, ids and names, checked before anything is written; values
that are not JSON are a SerializationError; what a failing step records is always readable."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest

import runtree
from runtree._json import MAX_NAME_BYTES, error_text, readable
from runtree.errors import SerializationError, SerializationWarning, StepFailedError, StoreError
from runtree.sessions import Sessions
from runtree.stores import InMemoryStore, Store
from runtree.stores._sql import SqlStore

StoreFactory = Callable[..., Store]

BAD_NAMES = [
    pytest.param("", id="empty"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("x\ud800y", id="lone-surrogate"),
    pytest.param("k" * (MAX_NAME_BYTES + 1), id="too-long"),
    pytest.param("é" * (MAX_NAME_BYTES // 2 + 1), id="too-many-bytes"),
]


def sql(store: Store) -> SqlStore:
    assert isinstance(store, SqlStore)
    return store


async def rows(store: Store, tree_id: str) -> dict[str, object]:
    return dict(await sql(store).journal_load(tree_id))


@pytest.mark.parametrize("bad", BAD_NAMES)
async def test_a_bad_key_or_root_id_is_refused_before_any_write(
    open_store: StoreFactory, bad: str
) -> None:
    async with open_store() as store:
        s = sql(store)
        record = {"name": "step", "ok": True, "value": 1}
        with pytest.raises(StoreError, match=r"^.*journal key.*$"):
            await s.journal_acquire("tree", bad, "owner")
        with pytest.raises(StoreError, match=r"^.*journal key.*$"):
            await s.journal_record("tree", bad, "owner", record)  # type: ignore[arg-type]
        with pytest.raises(StoreError, match=r"^.*root id.*$"):
            await s.journal_acquire(bad, "k", "owner")
        with pytest.raises(StoreError, match=r"^.*root id.*$"):
            await s.journal_record(bad, "k", "owner", record)  # type: ignore[arg-type]
        await s.journal_release(bad, "owner")  # nothing was written: nothing to release
        assert await rows(store, "tree") == {}


@pytest.mark.parametrize("bad", BAD_NAMES[1:])  # the journal itself refuses "" (TypeError)
async def test_a_bad_key_in_a_durable_tree_is_a_store_error_and_the_step_does_not_run(
    open_store: StoreFactory, bad: str
) -> None:
    ran: list[int] = []
    async with open_store() as store:
        async with (
            runtree.create_scope(store=store) as scope,
            scope.create_context(id="job") as ctx,
        ):
            with pytest.raises(StoreError):
                await ctx.run(lambda: ran.append(1), key=bad, name="step")
            assert await ctx.run(lambda: 5, key="fine", name="step") == 5
        assert ran == []
        assert list(await rows(store, "job")) == ["fine"]


async def test_a_root_id_with_a_lone_surrogate_is_a_store_error_and_closes_cleanly(
    open_store: StoreFactory,
) -> None:
    async with open_store() as store, runtree.create_scope(store=store) as scope:

        async def use() -> None:
            # Refused when the root is made, or at its first keyed step; either way it
            # closes without an ExceptionGroup (nothing was claimed).
            async with scope.create_context(id="job\ud800") as ctx:
                await ctx.run(lambda: 1, key="k", name="step")

        with pytest.raises(StoreError, match=r"^.*root id.*lone surrogate.*$"):
            await use()


@pytest.mark.parametrize("bad", BAD_NAMES[1:4])
async def test_session_names_follow_the_same_rule(open_store: StoreFactory, bad: str) -> None:
    async with open_store() as store:
        sessions = Sessions(store)
        with pytest.raises(StoreError, match=r"^.*project name.*$"):
            await sessions.create(bad)
        session = await sessions.create("p")
        with pytest.raises(StoreError, match=r"^.*shared data key.*$"):
            await session.set_shared_data(bad, 1)
        with pytest.raises(StoreError, match=r"^.*command name.*$"):
            await session.start_command(bad)
        with pytest.raises(StoreError, match=r"^.*session id.*$"):
            await sessions.get(bad)
        fresh = await sessions.get(session.session_id)
        assert fresh.shared_data == {} and fresh.command_history == []


async def test_an_int_too_long_to_print_is_a_serialization_error(
    open_store: StoreFactory,
) -> None:
    async with open_store() as store:
        session = await Sessions(store).create("p")
        with pytest.raises(SerializationError, match=r"^.*decimal digits.*$"):
            await session.set_shared_data("k", 10**5000)
        with pytest.raises(SerializationError):
            await session.start_command("c", {"n": [10**5000]})
        with pytest.raises(SerializationError):
            await sql(store).journal_record(
                "t", "k", "o", {"name": "s", "ok": True, "value": 10**5000}
            )
        assert await rows(store, "t") == {}
        assert (await Sessions(store).get(session.session_id)).shared_data == {}


async def test_a_step_returning_an_int_too_long_to_print_returns_it_with_a_warning(
    open_store: StoreFactory,
) -> None:
    big = 10**5000
    async with (
        open_store() as store,
        runtree.create_scope(store=store) as scope,
        scope.create_context(id="job") as ctx,
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert await ctx.run(lambda: big, key="k", name="step") == big
        assert any(issubclass(w.category, SerializationWarning) for w in caught)
        assert await rows(store, "job") == {}


class Nasty(Exception):
    pass


@pytest.mark.parametrize(
    "message", ["bad \ud800 text", "nul \x00 inside", "both \udfff and \x00"], ids=str.split
)
async def test_a_failing_step_reaches_its_caller_and_its_record_is_readable(
    open_durable: StoreFactory, message: str
) -> None:
    error = Nasty(message)

    def fail() -> None:
        raise error

    async with open_durable() as store:
        async with (
            runtree.create_scope(store=store) as scope,
            scope.create_context(id="job") as ctx,
        ):
            with pytest.raises(Nasty) as info:
                await ctx.run(fail, key="k", name="step")
            assert info.value is error
        recorded = dict((await rows(store, "job"))["k"])  # type: ignore[call-overload]
        recorded.pop("input_digest", None)
        assert recorded == {
            "name": "step",
            "ok": False,
            "error_type": "Nasty",
            "error_message": readable(message),
        }
    async with (
        open_durable() as store,
        runtree.create_scope(store=store) as scope,
        scope.create_context(id="job") as ctx,
    ):
        with pytest.raises(StepFailedError) as replay:
            await ctx.run(fail, key="k", name="step")
        assert replay.value.message == readable(message)
        str(replay.value).encode("utf-8")  # printable


def test_readable_text_and_error_text_never_raise() -> None:
    class BrokenStr(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert readable("a\ud800b\x00c") == "a\\ud800b\\x00c"
    assert error_text(BrokenStr()) == "<BrokenStr: str() raised RuntimeError>"
    assert error_text(ValueError("\udfff")) == "\\udfff"


async def test_the_in_memory_store_keeps_going_past_a_thousand_steps() -> None:
    async with (
        InMemoryStore() as store,
        runtree.create_scope(store=store) as scope,
        scope.create_context(id="job") as ctx,
    ):
        for i in range(1_200):
            assert await ctx.run(lambda i=i: i, key=f"k{i}", name="step") == i
        assert len(await rows(store, "job")) == 1_200
