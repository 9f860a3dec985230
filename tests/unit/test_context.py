"""ExecutionContext: the tree of contexts, data isolation, close and cleanup order."""

from __future__ import annotations

import asyncio

import pytest

import runtree as rt
from runtree import ContextClosedError, current_context


@rt.flow
async def echo(ctx: rt.ExecutionContext) -> object:
    return ctx.input


class TestHierarchy:
    async def test_root_child_grandchild_parent_chain(self) -> None:
        seen: dict[str, rt.ExecutionContext] = {}

        @rt.flow
        async def grandchild(ctx: rt.ExecutionContext) -> None:
            seen["grandchild"] = ctx

        @rt.flow
        async def child(ctx: rt.ExecutionContext) -> None:
            seen["child"] = ctx
            await ctx.exec(grandchild)

        async with rt.create_scope() as scope, scope.create_context(name="req") as root:
            await root.exec(child)
            c, g = seen["child"], seen["grandchild"]
            assert g.parent is c
            assert c.parent is root
            assert root.parent is None
            assert g.root is root and c.root is root and root.root is root
            assert g.scope is scope
            assert (root.name, c.name, g.name) == ("req", "child", "grandchild")
            assert len({root.id, c.id, g.id}) == 3
            assert c.closed and g.closed and not root.closed

    async def test_each_exec_gets_a_new_child_with_its_own_input_and_data(self) -> None:
        children: list[rt.ExecutionContext] = []

        @rt.flow
        async def worker(ctx: rt.ExecutionContext) -> object:
            children.append(ctx)
            ctx.data["mine"] = ctx.input
            await asyncio.sleep(0)  # interleave with the sibling
            return (ctx.input, ctx.data["mine"])

        async with rt.create_scope() as scope, scope.create_context() as root:
            root.data["root"] = True
            results = await asyncio.gather(*(root.exec(worker, i) for i in range(5)))
            assert results == [(i, i) for i in range(5)]
            assert len({id(c) for c in children}) == 5
            assert all("root" not in c.data for c in children)
            assert root.data == {"root": True}

    async def test_input_is_parsed_by_the_flow(self) -> None:
        @rt.flow(parse=int)
        async def double(ctx: rt.ExecutionContext) -> int:
            assert isinstance(ctx.input, int)
            return ctx.input * 2

        async with rt.create_scope() as scope, scope.create_context() as root:
            assert await root.exec(double, "21") == 42
            with pytest.raises(rt.ParseError) as info:
                await root.exec(double, "x")
            assert info.value.name == "double"
            assert "input of flow 'double'" in str(info.value)

    async def test_sync_and_async_flows(self) -> None:
        sync_flow = rt.flow(lambda ctx: ctx.input + 1, name="inc")
        async with rt.create_scope() as scope, scope.create_context() as root:
            assert await root.exec(sync_flow, 1) == 2
            assert await root.exec(echo, "x") == "x"

    async def test_current_context_is_the_innermost_running_context(self) -> None:
        seen = []

        @rt.flow
        async def inner(ctx: rt.ExecutionContext) -> None:
            seen.append(current_context() is ctx)

        @rt.flow
        async def outer(ctx: rt.ExecutionContext) -> None:
            seen.append(current_context() is ctx)
            await ctx.exec(inner)
            seen.append(current_context() is ctx)

        assert current_context() is None
        async with rt.create_scope() as scope, scope.create_context() as root:
            await root.exec(outer)
            assert current_context() is None
        assert seen == [True, True, True]

    async def test_run_executes_plain_callables_in_a_child(self) -> None:
        def add(a: int, b: int, *, scale: int = 1) -> int:
            ctx = current_context()
            assert ctx is not None and ctx.name.endswith("add")
            return (a + b) * scale

        async def fetch(x: str) -> str:
            await asyncio.sleep(0)
            ctx = current_context()
            assert ctx is not None
            return f"{ctx.parent.name if ctx.parent else None}:{x}"

        async with rt.create_scope() as scope, scope.create_context(name="r") as root:
            assert await root.run(add, 1, 2, scale=10) == 30
            assert await root.run(fetch, "x") == "r:x"

    async def test_details_record_the_lifecycle(self) -> None:
        kept: list[rt.ExecutionContext] = []

        @rt.flow
        async def ok(ctx: rt.ExecutionContext) -> None:
            kept.append(ctx)
            ctx.details.metadata["rows"] = 3
            assert ctx.details.status == "running"
            assert ctx.details.completed_at is None

        @rt.flow
        async def bad(ctx: rt.ExecutionContext) -> None:
            kept.append(ctx)
            raise ValueError("no")

        async with rt.create_scope() as scope, scope.create_context() as root:
            await root.exec(ok)
            with pytest.raises(ValueError, match=r"^no$"):
                await root.exec(bad)
        good, failed = (k.details for k in kept)
        assert good.status == "completed" and good.error is None
        assert good.metadata == {"rows": 3}
        assert good.completed_at is not None and good.completed_at >= good.started_at
        assert good.name == "ok"
        assert failed.status == "failed"
        assert isinstance(failed.error, ValueError)


class TestCleanupOrder:
    async def test_on_close_runs_when_each_exec_completes(self) -> None:
        log: list[str] = []

        @rt.flow
        async def inner(ctx: rt.ExecutionContext) -> None:
            ctx.on_close(lambda: log.append("grandchild"))

        @rt.flow
        async def outer(ctx: rt.ExecutionContext) -> None:
            ctx.on_close(lambda: log.append("child"))
            await ctx.exec(inner)
            log.append("after-inner")

        async with rt.create_scope() as scope, scope.create_context() as root:
            await root.exec(outer)
            log.append("after-outer")
        assert log == ["grandchild", "after-inner", "child", "after-outer"]

    async def test_callbacks_run_in_reverse_order_after_descendants(self) -> None:
        log: list[str] = []
        async with rt.create_scope() as scope:
            root = scope.create_context()
            root.on_close(lambda: log.append("root-1"))

            async def async_cb() -> None:
                await asyncio.sleep(0)
                log.append("root-2")

            root.on_close(async_cb)
            removed = root.on_close(lambda: log.append("never"))
            removed()
            nested = scope.create_context(parent=root)
            nested.on_close(lambda: log.append("nested"))
            await root.close()
        assert log == ["nested", "root-2", "root-1"]

    async def test_status_and_error_are_final_before_callbacks(self) -> None:
        seen: list[tuple[str, object]] = []

        @rt.flow
        async def failing(ctx: rt.ExecutionContext) -> None:
            ctx.on_close(lambda: seen.append((ctx.details.status, ctx.details.error)))
            raise KeyError("k")

        async with rt.create_scope() as scope, scope.create_context() as root:
            with pytest.raises(KeyError):
                await root.exec(failing)
        assert seen[0][0] == "failed"
        assert isinstance(seen[0][1], KeyError)

    async def test_cleanup_failure_after_success_raises_a_group(self) -> None:
        @rt.flow
        async def leaky(ctx: rt.ExecutionContext) -> int:
            ctx.on_close(lambda: 1 / 0)
            return 1

        async with rt.create_scope() as scope, scope.create_context() as root:
            with pytest.raises(ExceptionGroup) as info:
                await root.exec(leaky)
            assert isinstance(info.value.exceptions[0], ZeroDivisionError)

    async def test_cleanup_failure_after_an_error_keeps_the_error(self) -> None:
        @rt.flow
        async def both(ctx: rt.ExecutionContext) -> None:
            ctx.on_close(lambda: 1 / 0)
            raise ValueError("body")

        async with rt.create_scope() as scope, scope.create_context() as root:
            with pytest.raises(ValueError) as info:
                await root.exec(both)
        assert str(info.value) == "body"
        assert any("also failed" in note for note in info.value.__notes__)


class TestClose:
    async def test_double_close_is_a_no_op(self) -> None:
        log: list[str] = []
        async with rt.create_scope() as scope:
            root = scope.create_context()
            root.on_close(lambda: log.append("closed"))
            await root.close()
            await root.close()
        assert log == ["closed"]

    async def test_closed_context_rejects_exec_but_stays_readable(self) -> None:
        kept: list[rt.ExecutionContext] = []

        @rt.flow
        async def child(ctx: rt.ExecutionContext) -> None:
            ctx.data["x"] = 1
            kept.append(ctx)

        async with rt.create_scope() as scope, scope.create_context(name="req") as root:
            await root.exec(child)
            closed_child = kept[0]
            with pytest.raises(ContextClosedError) as info:
                await closed_child.exec(echo)
            assert str(info.value).startswith("ExecutionContext 'child' is closed")
            assert closed_child.data == {"x": 1}
            assert closed_child.parent is root
            assert closed_child.details.status == "completed"
            with pytest.raises(ContextClosedError):
                await closed_child.run(print)
        with pytest.raises(ContextClosedError, match=r"^ExecutionContext 'req' is closed"):
            await root.exec(echo)

    async def test_nested_boundary_shares_the_tree_and_closes_with_its_parent(self) -> None:
        async with rt.create_scope() as scope:
            with pytest.warns(UserWarning, match="without a store"):
                root = scope.create_context(id="tree-1")
            nested = scope.create_context(parent=root, name="batch")
            assert nested.root is root and nested.parent is root
            with pytest.raises(TypeError, match=r"roots only"):
                scope.create_context(parent=root, id="x")
            await root.close()
            assert nested.closed
            with pytest.raises(ContextClosedError):
                scope.create_context(parent=root)

    async def test_context_cannot_close_itself_from_inside(self) -> None:
        @rt.flow
        async def selfish(ctx: rt.ExecutionContext) -> None:
            await ctx.close()

        async with rt.create_scope() as scope, scope.create_context() as root:
            with pytest.raises(RuntimeError, match=r"cannot close itself"):
                await root.exec(selfish)


class TestNestedBoundaries:
    async def test_closed_nested_boundaries_are_forgotten_by_their_parent(self) -> None:
        async with rt.create_scope() as scope, scope.create_context() as root:
            for _ in range(3):
                async with scope.create_context(parent=root) as nested:
                    await nested.exec(echo, 1)
                assert nested.closed
            assert root._x is not None
            assert not root._x.boundaries


async def test_exec_of_something_that_is_not_a_flow_is_a_clear_type_error() -> None:
    async with rt.create_scope() as scope, scope.create_context() as root:
        with pytest.raises(TypeError, match=r"^ctx.exec\(\) takes a flow .*use ctx.run\(\)"):
            await root.exec(print)  # type: ignore[arg-type]
