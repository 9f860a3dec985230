"""Nested execs cost few frames: 300 levels fit under the default recursion limit, and
going deeper is a clear error, not a crash."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import runtree as rt
from runtree.runs import Runs
from runtree.stores import SqliteStore


@rt.flow
async def dive(ctx: rt.ExecutionContext) -> int:
    remaining: int = ctx.input  # type: ignore[assignment]
    if remaining == 0:
        return 0
    return 1 + await ctx.exec(dive, remaining - 1)


class TestNesting:
    async def test_three_hundred_levels_fit_under_the_default_limit(self) -> None:
        assert sys.getrecursionlimit() == 1000
        async with rt.create_scope() as scope, scope.create_context() as root:
            assert await root.exec(dive, 300) == 300

    async def test_deeper_is_a_nesting_error_and_everything_closes(self) -> None:
        closed: list[bool] = []

        @rt.flow
        async def deep(ctx: rt.ExecutionContext) -> int:
            ctx.on_close(lambda: closed.append(True))
            return 1 + await ctx.exec(deep)

        async with rt.create_scope() as scope, scope.create_context() as root:
            with pytest.raises(rt.NestingError) as info:
                await root.exec(deep)
            assert isinstance(info.value, RecursionError)
            assert "recursion limit" in str(info.value)
            assert len(closed) > 300
            # the scope is still usable afterwards
            assert await root.exec(dive, 10) == 10


class TestNestingRecorded:
    """A recorded plain exec (the recorder inline) costs the frames of a plain exec: 300
    levels fit, deeper is a NestingError, and the tree is written whole."""

    async def test_three_hundred_levels_fit_and_deeper_is_a_nesting_error(
        self, tmp_path: Path
    ) -> None:
        async with SqliteStore(tmp_path / "deep.db") as store:
            async with rt.create_scope(store=store) as scope:
                assert scope._record_only is not None
                async with scope.create_context(id="deep") as root:
                    assert await root.exec(dive, 300) == 300
                    with pytest.raises(rt.NestingError):
                        await root.exec(dive, 1000)
            tree = await Runs(store).get("deep")
        dives = [n for n in tree.nodes if n.name == "dive"]
        assert len([n for n in dives if n.status == "completed"]) == 301
        failed = [n for n in dives if n.status == "failed"]
        assert len(failed) > 300
        assert {n.error.type for n in failed if n.error} == {"NestingError"}
        assert all(n.completed_at is not None for n in dives)
