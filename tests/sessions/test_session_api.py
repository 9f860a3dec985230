"""Session details: file-backed collaborators, exec edge cases, bad input."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import pytest

import runtree
from runtree.errors import SerializationError, SerializationWarning
from runtree.sessions import (
    ContextProvider,
    FileContextProvider,
    FileMemoryProvider,
    FileSkillInvoker,
    MemoryProvider,
    Sessions,
    SkillInvoker,
    current_session,
)
from runtree.stores import InMemoryStore, SqliteStore


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class TestFileProviders:
    async def test_context_files(self, tmp_path: Path) -> None:
        (tmp_path / "code").mkdir()
        (tmp_path / "code" / "style.md").write_text("# Style")
        (tmp_path / "code" / "limits.json").write_text('{"lines": 100}')
        provider = FileContextProvider(tmp_path)
        assert isinstance(provider, ContextProvider)
        assert await provider.get_conditional_context("code", "style") == "# Style"
        assert await provider.get_conditional_context("code", "limits") == {"lines": 100}
        assert await provider.get_conditional_context("code", "absent") is None
        with pytest.raises(ValueError, match=r"^domain must be a plain name"):
            await provider.get_conditional_context("../etc", "passwd")
        with pytest.raises(ValueError, match=r"^topic must be a plain name"):
            await provider.get_conditional_context("code", "..")

    async def test_memory_files_are_private_and_atomic(self, tmp_path: Path) -> None:
        root = tmp_path / "memory"
        memory = FileMemoryProvider(root)
        assert isinstance(memory, MemoryProvider)
        assert await memory.get("project", "decisions") is None
        await memory.put("project", "decisions", ["sqlite by default"])
        await memory.put("project", "decisions", ["sqlite by default", "json only"])
        assert await memory.get("project", "decisions") == ["sqlite by default", "json only"]
        path = root / "project" / "decisions.json"
        assert mode(path) == 0o600
        assert mode(root) == mode(root / "project") == 0o700
        assert sorted(p.name for p in (root / "project").iterdir()) == ["decisions.json"]
        with pytest.raises(SerializationError, match=r"^Memory project:x must be strict JSON"):
            await memory.put("project", "x", {1, 2})

    async def test_skills_are_recorded_in_the_running_command(self, tmp_path: Path) -> None:
        (tmp_path / "outline").mkdir()
        (tmp_path / "outline" / "SKILL.md").write_text("Write an outline.")
        (tmp_path / "review.md").write_text("Review it.")
        invoker = FileSkillInvoker(tmp_path)
        assert isinstance(invoker, SkillInvoker)

        @runtree.flow
        async def write(ctx: runtree.ExecutionContext) -> object:
            first = await invoker.invoke("outline", {"topic": "x"})
            await invoker.invoke("review")
            with pytest.raises(LookupError, match=r"^Skill 'absent' not found"):
                await invoker.invoke("absent")
            return first

        async with InMemoryStore() as store:
            session = await Sessions(store).create("p")
            result = await session.exec(write, None, command="write")
            (cmd,) = session.command_history
        assert result == {
            "skill": "outline",
            "instructions": "Write an outline.",
            "inputs": {"topic": "x"},
        }
        assert cmd.skills_invoked == ["outline", "review"]

    async def test_load_context_from_files_hits_after_the_first_load(self, tmp_path: Path) -> None:
        (tmp_path / "product").mkdir()
        (tmp_path / "product" / "vision.md").write_text("# Vision")
        provider = FileContextProvider(tmp_path)
        async with SqliteStore(tmp_path / "rt.db") as store:
            session = await Sessions(store).create("p")
            assert await session.load_context("product", "vision", provider) == "# Vision"
            (tmp_path / "product" / "vision.md").write_text("# Changed")  # cache wins
            again = await Sessions(store).get(session.session_id)
            assert await again.load_context("product", "vision", provider) == "# Vision"
            assert again.stats == {"context_misses": 1, "context_hits": 1}


class TestExec:
    async def test_current_session_is_set_only_inside(self) -> None:
        seen = []

        @runtree.flow
        def look(ctx: runtree.ExecutionContext) -> str:
            session = current_session()
            assert session is not None
            seen.append(session.session_id)
            return ctx.root.id

        async with InMemoryStore() as store:
            session = await Sessions(store).create("p")
            root_id = await session.exec(look, None, command="look")
        assert seen == [session.session_id]
        assert root_id == session.root_id == f"session:{session.session_id}"
        assert current_session() is None

    async def test_a_given_scope_is_used_and_left_open(self, tmp_path: Path) -> None:
        @runtree.flow
        def hello(ctx: runtree.ExecutionContext) -> str:
            return "hi"

        async with SqliteStore(tmp_path / "rt.db") as store:
            session = await Sessions(store).create("p")
            async with runtree.create_scope(store=store) as scope:
                assert await session.exec(hello, None, command="hi", scope=scope) == "hi"
                assert not scope.disposed
            async with runtree.create_scope() as plain:
                with pytest.raises(ValueError, match=r"needs a scope with a store"):
                    await session.exec(hello, None, command="hi", scope=plain)

    async def test_input_that_is_not_json_starts_no_command(self) -> None:
        @runtree.flow
        def noop(ctx: runtree.ExecutionContext) -> None:
            return None

        async with InMemoryStore() as store:
            session = await Sessions(store).create("p")
            with pytest.raises(SerializationError, match=r"^Inputs of command 'noop'"):
                await session.exec(noop, {"when": object()}, command="noop")
            assert (await session.refresh()).command_history == []

    async def test_a_result_that_is_not_json_is_returned_and_recorded_as_null(self) -> None:
        marker = object()

        @runtree.flow
        def opaque(ctx: runtree.ExecutionContext) -> object:
            return marker

        async with InMemoryStore() as store:
            session = await Sessions(store).create("p")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert await session.exec(opaque, None, command="opaque") is marker
            (cmd,) = session.command_history
        assert [w.category for w in caught] == [SerializationWarning]
        assert cmd.status == "success"
        assert cmd.outputs == {"result": None, "unserializable": "object"}


class TestBadInput:
    async def test_names_are_checked(self) -> None:
        async with InMemoryStore() as store:
            sessions = Sessions(store)
            with pytest.raises(TypeError, match=r"^project_name must be a non-empty str"):
                await sessions.create("")
            session = await sessions.create("p")
            with pytest.raises(ValueError, match=r"^domain must not contain ':'"):
                await session.record_context_load("a:b", "c", "x")
            with pytest.raises(TypeError, match=r"^shared data key must be a non-empty str"):
                await session.set_shared_data("", 1)
            with pytest.raises(SerializationError, match=r"^Context 'a:b' of session"):
                await session.record_context_load("a", "b", float("nan"))
            assert await session.get_cached_context("a", "b") is None

    def test_sessions_need_a_store(self) -> None:
        with pytest.raises(TypeError, match=r"^Sessions needs a store from runtree.stores"):
            Sessions(object())  # type: ignore[arg-type]
