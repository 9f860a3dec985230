"""Growth: loading a session reads only its newest commands, older ones come page by page,
and starting or completing a command uses indexes instead of scanning the history."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtree.sessions import Sessions
from runtree.stores import SqliteStore


async def fill(store: SqliteStore, n: int) -> str:
    sessions = Sessions(store)
    session = await sessions.create("p")
    for i in range(n):
        await session.start_command(f"c{i}", {"i": i})
        if i % 50 == 0:
            await session.record_context_load("d", f"t{i}", "x")
        await session.complete_command(f"c{i}", "success", {"i": i})
    return session.session_id


async def test_a_loaded_session_holds_the_newest_page_and_pages_back(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "runtree.db") as store:
        session_id = await fill(store, 250)
        session = await Sessions(store).get(session_id)
        assert [c.command for c in session.command_history] == [f"c{i}" for i in range(150, 250)]
        older = await session.get_command_history(limit=100, before=session.command_history[0])
        assert [c.command for c in older] == [f"c{i}" for i in range(50, 150)]
        everything = await session.get_command_history()
        assert [c.command for c in everything] == [f"c{i}" for i in range(250)]
        assert everything[200].context_loaded == ["d:t200"]
        assert everything[0].context_loaded == ["d:t0"]
        assert everything[1].context_loaded == []
        with pytest.raises(ValueError, match=r"^.*limit.*positive.*$"):
            await session.get_command_history(limit=0)


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ("c_running", "runtree_commands_running"),  # running commands only, not the history
        ("c_find_running", "runtree_commands_name"),
        ("c_last", "runtree_commands_name"),
        ("c_page", "runtree_commands_session"),
    ],
)
async def test_command_queries_use_their_index(tmp_path: Path, query: str, index: str) -> None:
    async with SqliteStore(tmp_path / "runtree.db") as store:
        await fill(store, 20)
        assert store._conn is not None
        params = {
            "c_running": ("s",),
            "c_find_running": ("s", "c"),
            "c_last": ("s", "c"),
            "c_page": ("s", 10, 5),
        }[query]
        rows = store._conn.execute(f"EXPLAIN QUERY PLAN {store._q[query]}", params)
        plan = " ".join(str(r[-1]) for r in rows)
        assert f"INDEX {index}" in plan, plan
