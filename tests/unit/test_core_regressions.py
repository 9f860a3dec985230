"""Regressions found when the core was tried from outside: each failed before its fix."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator

import pytest

import runtree as rt
from runtree.errors import DependencyCycleError


class CloseOnly(rt.Extension):
    def __init__(self) -> None:
        self.closed: list[str] = []

    def on_context_close(self, ctx: rt.ExecutionContext) -> None:
        self.closed.append(ctx.name)


class OpenOnly(rt.Extension):
    def __init__(self) -> None:
        self.opened: list[str] = []

    def on_context_open(self, ctx: rt.ExecutionContext) -> None:
        self.opened.append(ctx.name)


class Both(rt.Extension):
    def __init__(self) -> None:
        self.log: list[str] = []

    def on_context_open(self, ctx: rt.ExecutionContext) -> None:
        self.log.append(f"open {ctx.name}")

    def on_context_close(self, ctx: rt.ExecutionContext) -> None:
        self.log.append(f"close {ctx.name}")


@rt.flow
async def leaf(ctx: rt.ExecutionContext) -> int:
    return 1


@rt.flow
async def parent(ctx: rt.ExecutionContext) -> int:
    return await ctx.exec(leaf)


class TestLifecycleHooks:
    async def test_close_only_extension_is_called(self) -> None:
        ext = CloseOnly()
        async with rt.create_scope(extensions=[ext]) as scope:
            assert await scope.exec(parent) == 1
        assert ext.closed == ["leaf", "parent"]

    async def test_idle_boundary_reports_open_and_close(self) -> None:
        both = Both()
        async with rt.create_scope(extensions=[both]) as scope:
            b = scope.create_context(name="idle")
            await b.close()
            async with scope.create_context():
                pass
        assert both.log == ["open idle", "close idle", "open root", "close root"]

    async def test_open_only_extension_sees_idle_boundary(self) -> None:
        ext = OpenOnly()
        async with rt.create_scope(extensions=[ext]) as scope, scope.create_context(name="b") as b:
            await b.exec(leaf)
        assert ext.opened == ["b", "leaf"]

    async def test_pairs_for_nested_boundaries_closed_by_parent(self) -> None:
        both = Both()
        async with rt.create_scope(extensions=[both]) as scope:
            root = scope.create_context(name="r")
            scope.create_context(parent=root, name="n1")
            await root.close()
        # every open is matched by one close, descendants close first
        assert sorted(both.log) == sorted(["open r", "open n1", "close n1", "close r"])
        assert both.log.index("open r") < both.log.index("open n1")
        assert both.log.index("close n1") < both.log.index("close r")


class TestResourceProducedWhileClosing:
    async def test_cleanup_runs_when_boundary_closed_during_production(self) -> None:
        started = asyncio.Event()
        release = asyncio.Event()
        log: list[str] = []

        @rt.resource
        async def conn(ctx: rt.ResolveContext) -> AsyncIterator[str]:
            started.set()
            await release.wait()
            log.append("opened")
            try:
                yield "conn"
            finally:
                log.append("closed")

        async with rt.create_scope() as scope:
            b = scope.create_context()
            task = asyncio.create_task(b.resolve(conn))
            await started.wait()
            closing = asyncio.create_task(b.close())
            await asyncio.sleep(0)
            release.set()
            await closing
            with pytest.raises((rt.ContextClosedError, rt.Cancelled)):
                await task
        assert log == ["opened", "closed"]


class TestSelfPresets:
    def test_flow_preset_to_itself_refused(self) -> None:
        with pytest.raises(DependencyCycleError, match="leaf"):
            rt.create_scope(presets=[rt.preset(leaf, leaf)])

    def test_atom_preset_to_itself_refused_at_creation(self) -> None:
        @rt.atom
        def config(ctx: rt.ResolveContext) -> int:
            return 1

        with pytest.raises(DependencyCycleError, match="config"):
            rt.create_scope(presets=[rt.preset(config, config)])

    def test_flow_preset_cycle_refused(self) -> None:
        @rt.flow
        async def other(ctx: rt.ExecutionContext) -> int:
            return 2

        with pytest.raises(DependencyCycleError):
            rt.create_scope(presets=[rt.preset(leaf, other), rt.preset(other, leaf)])


class TestBoundaryAsContextManager:
    async def test_exception_in_block_fails_boundary_and_rolls_back(self) -> None:
        log: list[str] = []

        @rt.resource
        async def tx(ctx: rt.ResolveContext) -> AsyncIterator[str]:
            try:
                yield "tx"
            except BaseException as exc:
                log.append(f"rollback {type(exc).__name__}")
                raise
            else:
                log.append("commit")

        boom = ValueError("boom")

        async def block(scope: rt.Scope) -> rt.ExecutionContext:
            async with scope.create_context() as b:
                await b.resolve(tx)
                holder.append(b)
                raise boom

        holder: list[rt.ExecutionContext] = []
        async with rt.create_scope() as scope:
            with pytest.raises(ValueError) as info:
                await block(scope)
            assert info.value is boom
            b = holder[0]
            assert b.details.status == "failed"
            assert b.details.error is boom
        assert log == ["rollback ValueError"]

    async def test_cleanup_failure_is_a_note_not_a_replacement(self) -> None:
        boom = ValueError("boom")

        def bad() -> None:
            raise RuntimeError("cleanup failed")

        async def block(scope: rt.Scope) -> None:
            async with scope.create_context() as b:
                b.on_close(bad)
                raise boom

        async with rt.create_scope() as scope:
            with pytest.raises(ValueError) as info:
                await block(scope)
        assert info.value is boom
        assert any("cleanup failed" in note for note in getattr(boom, "__notes__", []))


class TestNestedBoundaryCloseIsLinear:
    async def test_many_nested_boundaries_close_fast(self) -> None:
        async with rt.create_scope() as scope:
            root = scope.create_context()
            for _ in range(20_000):
                scope.create_context(parent=root)
            t0 = time.perf_counter()
            await root.close()
            # O(n^2) took ~4 s for 20,000; linear takes well under one.
            assert time.perf_counter() - t0 < 2.0


class TestJournal:
    async def test_timeout_bounds_wait_for_held_key(self) -> None:
        entered = asyncio.Event()

        async def holder() -> int:
            entered.set()
            await asyncio.sleep(10)
            return 1

        async with rt.create_scope() as scope, scope.create_context() as root:
            first = asyncio.create_task(root.run(holder, key="k"))
            await entered.wait()
            with pytest.raises(rt.ExecTimeoutError):
                await root.run(holder, key="k", timeout=0.05)
            first.cancel()
            with pytest.raises((asyncio.CancelledError, rt.Cancelled)):
                await first

    async def test_input_change_replays_with_warning(self) -> None:
        calls: list[int] = []

        @rt.flow
        async def double(ctx: rt.ExecutionContext) -> int:
            assert isinstance(ctx.input, int)
            calls.append(ctx.input)
            return ctx.input * 2

        async with rt.create_scope() as scope, scope.create_context() as root:
            assert await root.exec(double, 2, key="d") == 4
            with pytest.warns(rt.JournalInputWarning, match="'d'"):
                assert await root.exec(double, 3, key="d") == 4
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                assert await root.exec(double, 2, key="d") == 4
        assert calls == [2]

    async def test_other_step_name_still_raises_mismatch(self) -> None:
        async with rt.create_scope() as scope, scope.create_context() as root:
            await root.exec(leaf, key="x")
            with pytest.raises(rt.JournalMismatchError):
                await root.exec(parent, key="x")


class SlowCommitBackend:
    """A journal backend whose record commits, then suspends before returning (as a
    networked store does): the moment a cancellation can land."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, object]] = {}
        self.committed = asyncio.Event()
        self.release = asyncio.Event()

    async def journal_load(self, tree_id: str) -> dict[str, object]:
        return dict(self.rows)

    async def journal_acquire(self, tree_id: str, key: str, owner: str) -> object:
        return self.rows.get(key)

    async def journal_record(
        self, tree_id: str, key: str, owner: str, record: dict[str, object]
    ) -> dict[str, object]:
        self.rows.setdefault(key, record)
        self.committed.set()
        await self.release.wait()
        return self.rows[key]

    async def journal_release(self, tree_id: str, owner: str) -> None:
        return None

    async def journal_delete(self, tree_id: str, pattern: str | None) -> int:
        return 0


class FakeStore:
    def __init__(self, backend: SlowCommitBackend) -> None:
        self.backend = backend

    def journal_backend(self) -> SlowCommitBackend:
        return self.backend


async def test_a_cancel_right_after_the_commit_still_replays_in_the_tree() -> None:
    backend = SlowCommitBackend()
    runs: list[int] = []

    def step() -> int:
        runs.append(len(runs))
        return len(runs) * 10

    async with rt.create_scope(store=FakeStore(backend), record="none") as scope:  # type: ignore[arg-type]
        root = scope.create_context(id="tree")
        first = asyncio.create_task(root.run(step, key="s"))
        await backend.committed.wait()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        backend.release.set()
        assert await root.run(step, key="s") == 10  # replayed: the step ran once
        assert runs == [0]
        await root.close()
