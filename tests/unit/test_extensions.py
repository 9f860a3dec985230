"""Extensions wrap resolution and execution; first registered is outermost."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

import runtree as rt
from runtree import ExecOp, ResolveOp


class Recorder(rt.Extension):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def wrap_exec(self, next: Callable[[], Awaitable[object]], op: ExecOp) -> object:
        target = getattr(op.target, "name", None) or getattr(op.target, "__name__", None)
        self.log.append(f"{self.name}>{op.kind}:{target}")
        try:
            return await next()
        finally:
            self.log.append(f"{self.name}<{op.kind}")

    async def wrap_resolve(self, next: Callable[[], Awaitable[object]], op: ResolveOp) -> object:
        self.log.append(f"{self.name} resolve {op.atom.name}")
        return await next()


@rt.flow
async def leaf(ctx: rt.ExecutionContext) -> int:
    return 1


@rt.flow
async def tree(ctx: rt.ExecutionContext) -> list[object]:
    a = await ctx.exec(leaf)
    b = await ctx.run(lambda: 2)
    c = await ctx.parallel(ctx.exec(leaf))
    return [a, b, c]


class TestWrapExec:
    async def test_order_and_kinds(self) -> None:
        log: list[str] = []
        async with rt.create_scope(extensions=[Recorder("A", log), Recorder("B", log)]) as scope:
            assert await scope.exec(tree) == [1, 2, [1]]
        assert log == [
            "A>execute:tree",
            "B>execute:tree",
            "A>subflow:leaf",
            "B>subflow:leaf",
            "B<subflow",
            "A<subflow",
            "A>fn:<lambda>",
            "B>fn:<lambda>",
            "B<fn",
            "A<fn",
            "A>parallel:None",
            "B>parallel:None",
            "A>subflow:leaf",
            "B>subflow:leaf",
            "B<subflow",
            "A<subflow",
            "B<parallel",
            "A<parallel",
            "B<execute",
            "A<execute",
        ]

    async def test_op_context_is_the_child_with_a_walkable_parent(self) -> None:
        seen: list[tuple[str, object, object]] = []

        class Tracer(rt.Extension):
            async def wrap_exec(self, next: Callable[[], Awaitable[object]], op: ExecOp) -> object:
                parent = op.context.parent
                seen.append(
                    (op.kind, op.context.name, parent.data.get("trace") if parent else None)
                )
                op.context.data["trace"] = f"span-{op.context.name}"
                return await next()

        async with rt.create_scope(extensions=[Tracer()]) as scope:
            await scope.exec(tree)
        assert seen[0] == ("execute", "tree", None)
        assert seen[1] == ("subflow", "leaf", "span-tree")

    async def test_extension_errors_reach_the_caller_and_the_child_is_closed(self) -> None:
        children: list[rt.ExecutionContext] = []

        class Policy(rt.Extension):
            async def wrap_exec(self, next: Callable[[], Awaitable[object]], op: ExecOp) -> object:
                if op.kind == "subflow":
                    children.append(op.context)
                    raise PermissionError(f"{op.context.name} denied")
                return await next()

        async with rt.create_scope(extensions=[Policy()]) as scope:
            with pytest.raises(PermissionError, match=r"^leaf denied$"):
                await scope.exec(tree)
        assert children[0].closed

    async def test_use_extension_returns_a_remover(self) -> None:
        log: list[str] = []
        async with rt.create_scope() as scope:
            root = scope.create_context()
            remove = scope.use_extension(Recorder("X", log))
            await root.exec(leaf)
            remove()
            await root.exec(leaf)
        assert log == ["X>subflow:leaf", "X<subflow"]


class TestHooks:
    async def test_resolve_wraps_actual_resolution_only(self) -> None:
        log: list[str] = []
        a = rt.atom(lambda ctx: 1, name="a")
        async with rt.create_scope(extensions=[Recorder("R", log)]) as scope:
            await scope.resolve(a)
            await scope.resolve(a)
        assert log == ["R resolve a"]

    async def test_lifecycle_hooks_sync_and_async(self) -> None:
        log: list[str] = []

        class Life(rt.Extension):
            async def init(self, scope: rt.Scope) -> None:
                await asyncio.sleep(0)
                log.append("init")

            def dispose(self, scope: rt.Scope) -> None:
                log.append("dispose")

            def on_context_open(self, ctx: rt.ExecutionContext) -> None:
                log.append(f"open {ctx.name}")

            async def on_context_close(self, ctx: rt.ExecutionContext) -> None:
                log.append(f"close {ctx.name} {ctx.details.status}")

        scope = rt.create_scope(extensions=[Life()])
        assert log == []  # an async init waits for the first resolve/exec
        root = scope.create_context(name="r")
        await root.exec(leaf)
        await root.close()
        await scope.dispose()
        assert log == [
            "init",
            "open r",
            "open leaf",
            "close leaf completed",
            "close r completed",
            "dispose",
        ]

    async def test_boundaries_open_with_their_first_work_and_idle_ones_report_at_close(
        self,
    ) -> None:
        log: list[str] = []

        class Life(rt.Extension):
            def on_context_open(self, ctx: rt.ExecutionContext) -> None:
                log.append(f"open {ctx.name}")

            def on_context_close(self, ctx: rt.ExecutionContext) -> None:
                log.append(f"close {ctx.name}")

        async with rt.create_scope(extensions=[Life()]) as scope:
            idle = scope.create_context(name="idle")
            await idle.close()
            root = scope.create_context(name="root")
            batch = scope.create_context(parent=root, name="batch")
            await batch.exec(leaf)
            await batch.exec(leaf)
            await root.close()
        assert log == [
            "open idle",
            "close idle",
            "open root",
            "open batch",
            "open leaf",
            "close leaf",
            "open leaf",
            "close leaf",
            "close batch",
            "close root",
        ]


class TestNestingWithExtensions:
    async def test_one_pass_through_extension_still_nests_two_hundred_levels(self) -> None:
        class PassThrough(rt.Extension):
            async def wrap_exec(self, next: Callable[[], Awaitable[object]], op: ExecOp) -> object:
                return await next()

        @rt.flow
        async def dive(ctx: rt.ExecutionContext) -> int:
            n: int = ctx.input  # type: ignore[assignment]
            return 0 if n == 0 else 1 + await ctx.exec(dive, n - 1)

        async with rt.create_scope(extensions=[PassThrough()]) as scope:
            root = scope.create_context()
            assert await root.exec(dive, 200) == 200
            with pytest.raises(rt.NestingError):
                await root.exec(dive, 10_000)
            await root.close()

    async def test_an_extension_that_answers_without_next_completes_the_child(self) -> None:
        seen: list[rt.ExecutionContext] = []

        class Cache(rt.Extension):
            async def wrap_exec(self, next: Callable[[], Awaitable[object]], op: ExecOp) -> object:
                seen.append(op.context)
                return "from cache"

        async with rt.create_scope(extensions=[Cache()]) as scope:
            root = scope.create_context()
            assert await root.exec(leaf) == "from cache"
            await root.close()
        assert seen[0].closed
        assert seen[0].details.status == "completed"

    @pytest.mark.parametrize("wrappers", [1, 2])
    @pytest.mark.parametrize("options", [{}, {"timeout": 30.0}, {"retry": 1}])
    async def test_the_op_is_as_documented_and_the_body_runs_what_was_exec_d(
        self, wrappers: int, options: dict[str, object]
    ) -> None:
        # Whatever a wrapper does to the op's fields, the body runs the flow and the input
        # the exec was given (on every path: one wrapper or a chain, with options or not).
        ops: list[ExecOp] = []

        class Meddler(rt.Extension):
            async def wrap_exec(self, next: Callable[[], Awaitable[object]], op: ExecOp) -> object:
                if not ops:  # the outermost wrapper sees the op untouched
                    assert (op.kind, op.target, op.input, op.key, op.attempt) == (
                        "subflow",
                        echo,
                        "given",
                        None,
                        1,
                    )
                ops.append(op)
                assert op.context.input == "given"
                assert op.context.parent is root
                assert rt.current_context() is not op.context
                op.input = "changed"
                op.target = leaf
                return await next()

        @rt.flow
        async def echo(ctx: rt.ExecutionContext) -> object:
            assert rt.current_context() is ctx
            return ctx.input

        async with rt.create_scope(extensions=[Meddler() for _ in range(wrappers)]) as scope:
            root = scope.create_context()
            assert await root.exec(echo, "given", **options) == "given"  # type: ignore[call-overload]
            assert ops[0].context.details.status == "completed"
            await root.close()
        assert len(ops) == wrappers
