"""A command whose flow fails with an error that is hard to print (its ``__str__`` raises,
its message holds a lone surrogate or a NUL) reaches the caller as that very error, and the
command is recorded ``failed`` with a readable message, on SQLite and in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

import runtree
from runtree.sessions import Sessions
from runtree.stores import InMemoryStore, SqliteStore, Store


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot print me")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize(
    ("error", "recorded"),
    [
        (BrokenStr(), "<BrokenStr: str() raised RuntimeError>"),
        (ValueError("bad \ud800 and \x00"), "bad \\ud800 and \\x00"),
    ],
    ids=["str-raises", "surrogate-and-nul"],
)
async def test_the_flows_own_error_reaches_the_caller(
    tmp_path: Path, kind: str, error: Exception, recorded: str
) -> None:
    store: Store = InMemoryStore() if kind == "memory" else SqliteStore(tmp_path / "rt.db")

    @runtree.flow
    async def fails(ctx: runtree.ExecutionContext) -> None:
        raise error

    async with store:
        session = await Sessions(store).create("p")
        with pytest.raises(type(error)) as info:
            await session.exec(fails, None, command="c")
        assert info.value is error
        command = (await Sessions(store).get(session.session_id)).command_history[-1]
        assert command.status == "failed"
        assert command.outputs["error"] == {"type": type(error).__qualname__, "message": recorded}
