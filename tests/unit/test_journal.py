"""The in-memory journal: a keyed step runs once per context tree."""

from __future__ import annotations

import asyncio
import warnings

import pytest

import runtree as rt
from runtree import JournalMismatchError


class Counter:
    def __init__(self) -> None:
        self.runs = 0


def counted(counter: Counter, name: str = "step") -> rt.Flow[object, object]:
    async def body(ctx: rt.ExecutionContext) -> object:
        counter.runs += 1
        await asyncio.sleep(0)
        if ctx.input == "fail":
            raise ValueError(f"failed run {counter.runs}")
        return {"run": counter.runs, "input": ctx.input}

    return rt.flow(body, name=name)


class TestJournal:
    async def test_same_key_anywhere_in_the_tree_replays(self) -> None:
        c = Counter()
        step = counted(c)

        @rt.flow
        async def deeper(ctx: rt.ExecutionContext) -> object:
            return await ctx.exec(step, "other input", key="k1")

        async with rt.create_scope() as scope, scope.create_context() as root:
            first = await root.exec(step, "a", key="k1")
            again = await root.exec(step, "a", key="k1")
            with pytest.warns(rt.JournalInputWarning, match="'k1'"):
                nested = await root.exec(deeper)  # another input under the same key
            assert first == {"run": 1, "input": "a"}
            assert again is first and nested is first
            assert c.runs == 1
            assert root.journal_keys() == ["k1"]

    async def test_an_equal_input_of_another_json_type_warns_as_after_a_restart(
        self,
    ) -> None:
        # 1 == True == 1.0 in Python, but their digests (of their JSON) differ: the check
        # gives the same answer in this process as in the next one.
        c = Counter()
        step = counted(c)
        async with rt.create_scope() as scope, scope.create_context() as root:
            await root.exec(step, 1, key="k")
            for other in (True, 1.0):
                with pytest.warns(rt.JournalInputWarning, match="digest =1,"):
                    await root.exec(step, other, key="k")
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                await root.exec(step, 1, key="k")  # the same input: silent
            assert c.runs == 1

    async def test_the_warning_points_at_the_users_line(self) -> None:
        c = Counter()
        step = counted(c)
        async with rt.create_scope() as scope, scope.create_context() as root:
            await root.exec(step, "a", key="w")
            with pytest.warns(rt.JournalInputWarning) as seen:
                await root.exec(step, "b", key="w")
        assert seen[0].filename == __file__

    async def test_recorded_errors_replay_as_the_same_object(self) -> None:
        c = Counter()
        step = counted(c)
        async with rt.create_scope() as scope, scope.create_context() as root:
            with pytest.raises(ValueError) as first:
                await root.exec(step, "fail", key="bad")
            with pytest.raises(ValueError) as second:
                await root.exec(step, "fail", key="bad")
            assert second.value is first.value
            assert c.runs == 1

    async def test_two_roots_never_share_entries(self) -> None:
        c = Counter()
        step = counted(c)
        async with rt.create_scope() as scope:
            a, b = scope.create_context(), scope.create_context()
            await a.exec(step, 1, key="k")
            await b.exec(step, 1, key="k")
        assert c.runs == 2

    async def test_concurrent_execs_with_one_key_run_once(self) -> None:
        c = Counter()
        step = counted(c)
        async with rt.create_scope() as scope, scope.create_context() as root:
            results = await asyncio.gather(*(root.exec(step, "x", key="same") for _ in range(5)))
        assert c.runs == 1
        assert all(r is results[0] for r in results)

    async def test_reset_journal_by_glob(self) -> None:
        c = Counter()
        step = counted(c)
        async with rt.create_scope() as scope, scope.create_context() as root:
            for key in ("user:1", "user:2", "order:1"):
                await root.exec(step, key, key=key)
            assert await root.reset_journal("user:*") == 2
            assert root.journal_keys() == ["order:1"]
            await root.exec(step, "user:1", key="user:1")
            await root.exec(step, "order:1", key="order:1")
            assert c.runs == 4
            assert await root.reset_journal() == 2
            assert root.journal_keys() == []

    async def test_run_accepts_keys_too(self) -> None:
        calls = []
        async with rt.create_scope() as scope, scope.create_context() as root:
            for _ in range(3):
                await root.run(calls.append, "x", key="append")
        assert calls == ["x"]

    async def test_the_same_key_for_a_different_step_fails_loudly(self) -> None:
        a, b = counted(Counter(), "charge"), counted(Counter(), "refund")
        async with rt.create_scope() as scope, scope.create_context() as root:
            await root.exec(a, 1, key="payment")
            with pytest.raises(JournalMismatchError) as info:
                await root.exec(b, 1, key="payment")
        assert "'payment' was recorded for 'charge'" in str(info.value)

    async def test_cancellations_and_timeouts_are_not_journaled(self) -> None:
        runs = 0

        @rt.flow
        async def slow_once(ctx: rt.ExecutionContext) -> str:
            nonlocal runs
            runs += 1
            if runs == 1:
                await asyncio.sleep(30)
            return "second run"

        async with rt.create_scope() as scope, scope.create_context() as root:
            with pytest.raises(rt.ExecTimeoutError):
                await root.exec(slow_once, key="k", timeout=0.01)
            assert await root.exec(slow_once, key="k") == "second run"
            assert await root.exec(slow_once, key="k") == "second run"
        assert runs == 2

    async def test_keyed_step_journals_its_outcome_after_retries(self) -> None:
        attempts = 0

        def flaky() -> str:
            nonlocal attempts
            attempts += 1
            if attempts < 3:
                raise OSError("again")
            return "finally"

        async with rt.create_scope() as scope, scope.create_context() as root:
            assert await root.run(flaky, key="f", retry=3) == "finally"
            assert await root.run(flaky, key="f", retry=3) == "finally"
        assert attempts == 3


async def test_replays_are_reported_on_the_calling_context() -> None:
    step = counted(Counter())

    @rt.flow
    async def caller(ctx: rt.ExecutionContext) -> object:
        await ctx.exec(step, 1, key="a")
        await ctx.exec(step, 1, key="a")
        return ctx.details.metadata.get("journal_replays")

    async with rt.create_scope() as scope, scope.create_context() as root:
        assert await root.exec(caller) == ["a"]
