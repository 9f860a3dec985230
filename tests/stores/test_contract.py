"""The store contract: the same tests on every store (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import runtree
from runtree.errors import (
    CommandNotRunningError,
    SerializationError,
    SerializationWarning,
    SessionNotFoundError,
    StepFailedError,
)
from runtree.sessions import Sessions
from runtree.stores import Store
from runtree.stores._sql import SqlStore

StoreFactory = Callable[..., Store]


def sql(store: Store) -> SqlStore:
    assert isinstance(store, SqlStore)
    return store


class TestJournal:
    async def test_a_rerun_replays_values_and_errors_without_running(
        self, open_store: StoreFactory
    ) -> None:
        calls: list[str] = []

        def step(name: str) -> dict[str, object]:
            calls.append(name)
            if name == "bad":
                raise ValueError("no luck")
            return {"step": name, "n": [1, 2.5, None, True]}

        async with open_store() as store:
            for _ in range(2):  # the second scope is "after a restart": a new owner
                async with (
                    runtree.create_scope(store=store) as scope,
                    scope.create_context(id="job-1") as ctx,
                ):
                    assert await ctx.run(step, "a", key="a", name="step") == {
                        "step": "a",
                        "n": [1, 2.5, None, True],
                    }
                    with pytest.raises((ValueError, StepFailedError), match=r"^.*no luck.*$"):
                        await ctx.run(step, "bad", key="bad", name="step")
        assert calls == ["a", "bad"]

    async def test_a_recorded_error_comes_back_as_step_failed_error(
        self, open_store: StoreFactory
    ) -> None:
        def boom() -> None:
            raise KeyError("missing thing")

        async with open_store() as store:
            async with (
                runtree.create_scope(store=store) as scope,
                scope.create_context(id="job") as ctx,
            ):
                with pytest.raises(KeyError):
                    await ctx.run(boom, key="k", name="boom")
            async with (
                runtree.create_scope(store=store) as scope,
                scope.create_context(id="job") as ctx,
            ):
                with pytest.raises(StepFailedError) as info:
                    await ctx.run(boom, key="k", name="boom")
        assert info.value.key == "k"
        assert info.value.type_name == "KeyError"
        assert "missing thing" in info.value.message

    async def test_a_value_that_is_not_json_is_returned_not_stored_and_warned(
        self, open_store: StoreFactory
    ) -> None:
        marker = object()
        calls = 0

        def step() -> object:
            nonlocal calls
            calls += 1
            return marker

        async with open_store() as store:
            for _ in range(2):
                async with (
                    runtree.create_scope(store=store) as scope,
                    scope.create_context(id="job") as ctx,
                ):
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        assert await ctx.run(step, key="opaque", name="step") is marker
            records = await sql(store).journal_load("job")
        assert calls == 2  # nothing stored: the step ran again
        assert "opaque" not in records
        assert [w.category for w in caught] == [SerializationWarning]
        assert "'opaque'" in str(caught[0].message)

    async def test_reset_journal_deletes_durably_by_pattern(self, open_store: StoreFactory) -> None:
        async with open_store() as store:
            async with (
                runtree.create_scope(store=store) as scope,
                scope.create_context(id="job") as ctx,
            ):
                for key in ("fetch:1", "fetch:2", "parse:1"):
                    await ctx.run(lambda key=key: key, key=key, name="s")
                assert await ctx.reset_journal("fetch:*") == 2
                assert await ctx.run(lambda: "again", key="fetch:1", name="s") == "again"
            records = await sql(store).journal_load("job")
            assert {k: r["value"] for k, r in records.items()} == {
                "fetch:1": "again",
                "parse:1": "parse:1",
            }
            async with (
                runtree.create_scope(store=store) as scope,
                scope.create_context(id="job") as ctx,
            ):
                await ctx.reset_journal()
            assert await sql(store).journal_load("job") == {}

    async def test_a_key_is_recorded_once_and_the_first_record_stands(
        self, open_store: StoreFactory
    ) -> None:
        async with open_store() as store:
            backend = sql(store)
            first = await backend.journal_record(
                "t", "k", "o1", {"name": "s", "ok": True, "value": 1}
            )
            second = await backend.journal_record(
                "t", "k", "o2", {"name": "s", "ok": False, "error_type": "E", "error_message": "m"}
            )
            assert first == {"name": "s", "ok": True, "value": 1}
            assert second == first
            assert (await backend.journal_load("t"))["k"]["value"] == 1

    async def test_concurrent_execs_with_one_key_run_once_on_a_durable_tree(
        self, open_store: StoreFactory
    ) -> None:
        runs = 0

        async def step() -> int:
            nonlocal runs
            runs += 1
            await asyncio.sleep(0.01)
            return runs

        async with (
            open_store() as store,
            runtree.create_scope(store=store) as scope,
            scope.create_context(id="race") as ctx,
        ):
            got = await asyncio.gather(*(ctx.run(step, key="k", name="s") for _ in range(4)))
        assert runs == 1
        assert got == [1, 1, 1, 1]

    async def test_trees_are_separate(self, open_store: StoreFactory) -> None:
        async with open_store() as store, runtree.create_scope(store=store) as scope:
            async with scope.create_context(id="a") as ctx:
                await ctx.run(lambda: "from a", key="k", name="s")
            async with scope.create_context(id="b") as ctx:
                assert await ctx.run(lambda: "from b", key="k", name="s") == "from b"

    async def test_a_second_owner_waits_for_the_holders_outcome(
        self, open_store: StoreFactory
    ) -> None:
        """Two owners (two scopes, as two workers would be) reach the same key: the body
        runs once and both get its value."""
        started = asyncio.Event()
        release = asyncio.Event()
        runs = 0

        async def body() -> str:
            nonlocal runs
            runs += 1
            started.set()
            await release.wait()
            return "the one result"

        async def worker() -> str:
            async with (
                runtree.create_scope(store=store) as scope,
                scope.create_context(id="shared-job") as ctx,
            ):
                return await ctx.run(body, key="step", name="body")

        async with open_store() as store:
            first = asyncio.create_task(worker())
            await started.wait()
            second = asyncio.create_task(worker())
            # The second worker is parked on the first's claim, not running the body.
            done, _ = await asyncio.wait({second}, timeout=0.2)
            assert not done
            release.set()
            assert await asyncio.wait_for(asyncio.gather(first, second), 10) == [
                "the one result",
                "the one result",
            ]
        assert runs == 1


class TestLeases:
    async def test_a_claim_whose_holder_is_gone_is_taken_over_after_the_lease(
        self, open_durable: StoreFactory
    ) -> None:
        async with open_durable(lease=0.3) as dead, open_durable(lease=0.3) as alive:
            holder = sql(dead)
            # Make the holder look like a process on another machine that stopped
            # renewing: only its lease can tell it is gone.
            holder._info.host = "another-machine"
            assert await holder.journal_acquire("tree", "k", "owner-a") is None
            await holder._stop_renewer()
            holder._held.clear()
            record = await asyncio.wait_for(sql(alive).journal_acquire("tree", "k", "owner-b"), 10)
            assert record is None  # owner-b holds the tree now and runs the step
            stored = await sql(alive).journal_record(
                "tree", "k", "owner-b", {"name": "s", "ok": True, "value": 2}
            )
            assert stored["value"] == 2

    async def test_a_live_holder_keeps_its_claim_past_the_lease(
        self, open_durable: StoreFactory
    ) -> None:
        async with open_durable(lease=0.6) as first, open_durable(lease=0.6) as second:
            sql(first)._info.host = "another-machine"
            assert await sql(first).journal_acquire("tree", "k", "owner-a") is None
            # The renewer keeps the claim alive: the second owner keeps waiting.
            waiting = asyncio.create_task(sql(second).journal_acquire("tree", "k", "owner-b"))
            done, _ = await asyncio.wait({waiting}, timeout=1.5)  # 2.5 leases
            assert not done
            await sql(first).journal_record(
                "tree", "k", "owner-a", {"name": "s", "ok": True, "value": "a"}
            )
            assert (await asyncio.wait_for(waiting, 10)) == {"name": "s", "ok": True, "value": "a"}
            await sql(first).journal_release("tree", "owner-a")

    async def test_release_lets_the_next_owner_go_on_at_once(
        self, open_store: StoreFactory
    ) -> None:
        async with open_store() as store:
            backend = sql(store)
            assert await backend.journal_acquire("tree", "k1", "a") is None
            await backend.journal_release("tree", "a")
            assert await asyncio.wait_for(backend.journal_acquire("tree", "k2", "b"), 5) is None
            await backend.journal_release("tree", "b")


class TestSessions:
    async def test_create_get_list(self, open_store: StoreFactory) -> None:
        async with open_store() as store:
            sessions = Sessions(store)
            first = await sessions.create("alpha", "python")
            second = await sessions.create("beta")
            got = await sessions.get(first.session_id)
            assert (got.session_id, got.project_name, got.project_type) == (
                first.session_id,
                "alpha",
                "python",
            )
            assert got.started_at == first.started_at
            assert "+00:00" in got.started_at  # ISO 8601 with a UTC offset
            assert [s.session_id for s in await sessions.list()] == [
                second.session_id,
                first.session_id,
            ]
            assert [s.session_id for s in await sessions.list(project_name="alpha")] == [
                first.session_id
            ]

    async def test_get_unknown_names_the_id(self, open_store: StoreFactory) -> None:
        async with open_store() as store:
            with pytest.raises(SessionNotFoundError, match=r"^No session 'nope-42' in this store"):
                await Sessions(store).get("nope-42")
            with pytest.raises(KeyError):
                await Sessions(store).get("nope-42")
            # An id no session can have is not found either (as Runs.get answers), on
            # every store alike: nothing reaches the store, nothing raises another error.
            for impossible in ("", "a\x00b", "\ud800", "x" * 5000, None, 42):
                with pytest.raises(SessionNotFoundError):
                    await Sessions(store).get(impossible)  # type: ignore[arg-type]

    async def test_get_or_create_returns_the_active_session(self, open_store: StoreFactory) -> None:
        async with open_store() as store:
            sessions = Sessions(store)
            a = await sessions.get_or_create("proj")
            b = await sessions.get_or_create("proj")
            assert a.session_id == b.session_id
            await b.end()
            c = await sessions.get_or_create("proj")
            assert c.session_id != a.session_id
            d = await sessions.create("proj")
            assert (await sessions.get_or_create("proj")).session_id == d.session_id
            assert not (await sessions.get(c.session_id)).active
            assert (await sessions.get(a.session_id)).ended_at is not None

    async def test_concurrent_get_or_create_yields_one_session(
        self, open_store: StoreFactory
    ) -> None:
        async with open_store() as store:
            sessions = Sessions(store)
            got = await asyncio.gather(*(sessions.get_or_create("race") for _ in range(8)))
            assert len({s.session_id for s in got}) == 1

    async def test_shared_data_round_trips_and_rejects_non_json(
        self, open_store: StoreFactory
    ) -> None:
        async with open_store() as store:
            session = await Sessions(store).create("p")
            await session.set_shared_data("plan", {"steps": ["a", "b"], "n": 2})
            with pytest.raises(SerializationError, match=r"^Shared data 'plan' of session"):
                await session.set_shared_data("plan", {"bad": {1, 2}})
            assert await session.get_shared_data("plan") == {"steps": ["a", "b"], "n": 2}
            assert await session.get_shared_data("absent", "dflt") == "dflt"
            again = await Sessions(store).get(session.session_id)
            assert again.shared_data == {"plan": {"steps": ["a", "b"], "n": 2}}

    async def test_commands_record_history(self, open_store: StoreFactory) -> None:
        async with open_store() as store:
            session = await Sessions(store).create("p")
            started = await session.start_command("brainstorm", {"topic": "x"})
            assert started.status == "running"
            await session.record_context_load("product", "vision", "# Vision")
            await session.record_skill("outline")
            await session.set_shared_data("ideas", ["a"])
            assert await session.get_previous_command() is None  # skips the running one
            done = await session.complete_command("brainstorm", "partial", {"ideas": 1})
            assert (done.status, done.outputs, done.inputs) == (
                "partial",
                {"ideas": 1},
                {"topic": "x"},
            )
            assert done.context_loaded == ["product:vision"]
            assert done.skills_invoked == ["outline"]
            assert done.completed_at is not None
            await session.start_command("implement", {})
            previous = await session.get_previous_command()
            assert previous is not None and previous.command == "brainstorm"
            assert (await session.get_previous_command("implement")) is None
            history = (await Sessions(store).get(session.session_id)).command_history
            assert [(c.command, c.status) for c in history] == [
                ("brainstorm", "partial"),
                ("implement", "running"),
            ]

    async def test_completing_a_command_never_started_is_an_error(
        self, open_store: StoreFactory
    ) -> None:
        async with open_store() as store:
            session = await Sessions(store).create("p")
            with pytest.raises(
                CommandNotRunningError, match=r"^Cannot complete command 'test' .*never started"
            ) as info:
                await session.complete_command("test", "success")
            assert isinstance(info.value, RuntimeError)
            assert (info.value.session_id, info.value.command) == (session.session_id, "test")
            await session.start_command("test")
            await session.complete_command("test", "success")
            with pytest.raises(
                RuntimeError, match=r"^Cannot complete command 'test' .*not running"
            ):
                await session.complete_command("test", "failed")
            with pytest.raises(ValueError, match=r"^complete_command\('test'\) status must be"):
                await session.complete_command("test", "done")  # type: ignore[arg-type]

    async def test_cache_first_context_and_memory(self, open_store: StoreFactory) -> None:
        loads: list[tuple[str, str]] = []

        class Provider:
            async def get_conditional_context(self, domain: str, topic: str) -> object | None:
                loads.append((domain, topic))
                return None if topic == "none" else f"{domain}/{topic}"

        class Memory:
            def __init__(self) -> None:
                self.data: dict[tuple[str, str], object] = {}

            async def get(self, layer: str, key: str) -> object | None:
                return self.data.get((layer, key))

            async def put(self, layer: str, key: str, content: object) -> None:
                self.data[(layer, key)] = content

        async with open_store() as store:
            session = await Sessions(store).create("p")
            await session.start_command("c")
            assert await session.load_context("code", "style", Provider()) == "code/style"
            assert await session.load_context("code", "style", Provider()) == "code/style"
            assert await session.load_context("code", "none", Provider()) is None
            assert loads == [("code", "style"), ("code", "none")]
            memory = Memory()
            await session.put_memory("project", "decisions", ["use sqlite"], memory)
            assert await session.get_memory("project", "decisions", memory) == ["use sqlite"]
            assert await session.get_cached_memory("project", "decisions") == ["use sqlite"]
            done = await session.complete_command("c")
            assert done.context_loaded == ["code:style"]
            assert done.memory_updated == ["project:decisions"]
            again = await Sessions(store).get(session.session_id)
            assert again.stats == {"context_hits": 1, "context_misses": 2, "memory_hits": 1}
            assert again.loaded_context == {"code:style": "code/style"}
            assert again.loaded_memory == {"project:decisions": ["use sqlite"]}

    async def test_exec_runs_a_flow_as_a_command_with_a_durable_journal(
        self, open_store: StoreFactory
    ) -> None:
        from runtree.sessions import current_session

        runs: list[str] = []

        @runtree.flow
        async def plan(ctx: runtree.ExecutionContext) -> dict[str, Any]:
            session = current_session()
            assert session is not None
            ideas = await ctx.run(
                lambda: runs.append("ideas") or ["a", "b"], key="ideas", name="ideas"
            )
            await session.set_shared_data("ideas", ideas)
            return {"topic": ctx.input, "ideas": ideas}

        async with open_store() as store:
            session = await Sessions(store).create("p")
            assert await session.exec(plan, "tasks", command="brainstorm") == {
                "topic": "tasks",
                "ideas": ["a", "b"],
            }
            assert await session.exec(plan, "tasks", command="brainstorm") == {
                "topic": "tasks",
                "ideas": ["a", "b"],
            }
            assert current_session() is None
            history = (await Sessions(store).get(session.session_id)).command_history
        assert runs == ["ideas"]  # the keyed step replayed the second time
        assert [(c.command, c.status, c.inputs) for c in history] == [
            ("brainstorm", "success", {"input": "tasks"}),
            ("brainstorm", "success", {"input": "tasks"}),
        ]
        assert history[0].outputs == {"result": {"topic": "tasks", "ideas": ["a", "b"]}}

    async def test_exec_records_a_failed_command(self, open_store: StoreFactory) -> None:
        @runtree.flow
        def broken(ctx: runtree.ExecutionContext) -> None:
            raise RuntimeError("disk full")

        async with open_store() as store:
            session = await Sessions(store).create("p")
            with pytest.raises(RuntimeError, match=r"^disk full$"):
                await session.exec(broken, None, command="implement")
            (cmd,) = (await Sessions(store).get(session.session_id)).command_history
        assert cmd.status == "failed"
        assert cmd.outputs == {"error": {"type": "RuntimeError", "message": "disk full"}}

    async def test_a_command_left_running_by_a_dead_process_is_interrupted(
        self, open_durable: StoreFactory
    ) -> None:
        async with open_durable(lease=0.2) as gone, open_durable() as store:
            # A process elsewhere started a command and stopped renewing its lease.
            sql(gone)._info.host = "another-machine"
            session = await Sessions(gone).create("p")
            await session.start_command("implement", {"n": 1})
            await sql(gone)._stop_renewer()
            sql(gone)._running_commands.clear()
            later = await Sessions(store).get(session.session_id)

            async def start_when_expired() -> None:
                while True:  # the lease must run out first: poll, bounded by wait_for
                    await later.start_command("test")
                    if later.command_history[0].status == "failed":
                        return
                    await later.complete_command("test", "failed")
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(start_when_expired(), 10)
            first = later.command_history[0]
            assert (first.command, first.status) == ("implement", "failed")
            assert "interrupted" in str(first.outputs["error"])

    async def test_a_command_of_a_live_process_is_not_interrupted(
        self, open_store: StoreFactory
    ) -> None:
        async with open_store() as store:
            session = await Sessions(store).create("p")
            await session.start_command("long")
            other = await Sessions(store).get(session.session_id)
            await other.start_command("short")
            assert [c.status for c in other.command_history] == ["running", "running"]
            await session.complete_command("long")
            await other.complete_command("short")
