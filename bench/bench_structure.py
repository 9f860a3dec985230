"""Costs that grow with the tree: idle children in memory, deep boundary chains, nesting.

Budgets (DESIGN "Budgets"): an idle child context <= 1 KiB; exec on a context 1,000
levels deep <= 2x the same at depth 1; >= 300 levels of nested ``await ctx.exec(...)``
under the default recursion limit, and a clear error (not a crash) beyond.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc

from bench_core import PassThrough, fixed
from harness import Group, Pair, Result, Settings, Timed

import runtree

__all__ = ["build", "idle_child_bytes", "max_nesting"]

DEPTH = 1000
NESTING_BUDGET = 300
IDLE_BUDGET = 1024


async def keep(ctx: runtree.ExecutionContext) -> runtree.ExecutionContext:
    """A flow that returns its own (child) context, so the caller can keep it."""
    return ctx


async def idle_child_bytes(count: int, name: str | None = None) -> float:
    """Bytes each finished child context keeps alive, by ``tracemalloc``.

    ``count`` children are exec'd on one root and kept in a list allocated before the
    first snapshot, so the traced delta is the children alone (object, timestamps and
    whatever else a closed child still references). ``name=`` sends every exec down the
    full path (the one options, extensions and deps take).
    """
    flow = runtree.flow(keep, name="keep")
    async with runtree.create_scope() as scope, scope.create_context() as root:

        async def one() -> runtree.ExecutionContext:
            return await root.exec(flow) if name is None else await root.exec(flow, name=name)

        await one()  # warm: lazily built state of the root and the scope
        kept: list[runtree.ExecutionContext | None] = [None] * count
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(count):
                child = await one()
                kept[i] = child
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        last = kept[-1]
        assert last is not None
        assert last.closed
        del kept
    return (after - before) / count


async def max_nesting(extensions: tuple[runtree.Extension, ...] = ()) -> tuple[int, str]:
    """Nest ``await ctx.exec(...)`` until something stops it, from a shallow caller.

    Returns the deepest level whose body ran and the name of the error that stopped the
    descent (``"none"`` if it reached the cap of 10,000 levels).
    """
    deepest = 0

    async def nest(ctx: runtree.ExecutionContext) -> int:
        nonlocal deepest
        level: int = ctx.input  # type: ignore[assignment]
        deepest = level
        if level >= 10_000:
            return level
        return await ctx.exec(descend, level + 1)

    descend: runtree.Flow[int, int] = runtree.flow(nest, name="nest")
    async with runtree.create_scope(extensions=extensions) as scope:
        root = scope.create_context()
        try:
            await root.exec(descend, 1)
            stopped = "none"
        except runtree.NestingError:
            stopped = "runtree.NestingError"
        except RecursionError:
            stopped = "RecursionError"
        await root.close()
    return deepest, stopped


async def build(settings: Settings) -> Group:
    group = Group("structure")
    count = 2_000 if settings.quick else 10_000
    per_child = await idle_child_bytes(count)
    group.rows.append(
        Result(
            "idle_child",
            "idle child context (tracemalloc)",
            "PASS" if per_child <= IDLE_BUDGET else "FAIL",
            value=per_child,
            unit="B",
            budget=f"<= {IDLE_BUDGET} B",
            note=f"mean of {count:,} children kept after their exec",
        )
    )
    full_path = await idle_child_bytes(count, name="kept")
    group.rows.append(
        Result(
            "idle_child_full",
            "idle child context, exec(name=...)",
            "info",
            value=full_path,
            unit="B",
            note="a child of the full exec path (options, extensions, deps)",
        )
    )

    limit = sys.getrecursionlimit()
    depth, stopped = await max_nesting()
    clear = stopped in ("runtree.NestingError", "RecursionError")
    group.rows.append(
        Result(
            "nesting",
            "nested ctx.exec levels",
            "PASS" if depth >= NESTING_BUDGET and clear else "FAIL",
            value=depth,
            unit="levels",
            budget=f">= {NESTING_BUDGET} levels",
            note=f"stopped by {stopped} (recursion limit {limit})",
        )
    )
    depth_ext, stopped_ext = await max_nesting((PassThrough(),))
    group.rows.append(
        Result(
            "nesting_ext",
            "nested ctx.exec levels, 1 wrap_exec",
            "info",
            value=depth_ext,
            unit="levels",
            note=f"stopped by {stopped_ext}",
        )
    )

    # A chain DEPTH boundaries long: the tag is bound at the top, read at the bottom.
    label: runtree.Tag[str] = runtree.tag("bench.tenant")

    async def read(ctx: runtree.ExecutionContext) -> str:
        return ctx.get(label)

    flow = runtree.flow(read, name="read-tag")
    scope = runtree.create_scope()
    group.cleanups.append(scope.dispose)
    shallow = scope.create_context(tags=[label("acme")])
    top = scope.create_context(tags=[label("acme")])
    bottom = top
    for _ in range(DEPTH - 1):
        bottom = scope.create_context(parent=bottom)
    assert await bottom.exec(flow) == "acme"
    body = "await ctx.exec(flow)"
    group.pairs.append(
        Pair(
            "depth_1000",
            f"exec + ctx.get(tag), {DEPTH:,} levels deep",
            Timed(f"depth {DEPTH}", body, fixed(ctx=bottom, flow=flow)),
            Timed("depth 1", body, fixed(ctx=shallow, flow=flow)),
            budget=2,
            note=lambda _: "tag bound at the top, read at the bottom",
        )
    )
    return group
