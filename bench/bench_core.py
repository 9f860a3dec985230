"""The hot path against a bare ``await f()``: exec, warm resolve, a whole boundary, and
what an extension, a journal key or explicit default options add.

Budgets (DESIGN "Budgets"): exec on an open context <= 12x, warm resolve <= 3x,
create_context + exec + close <= 20x. The rest is informational.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from harness import Env, Group, Pair, Runner, Settings, Timed, Timer, cross_ratio, run_with_gc

import runtree

__all__ = ["PassThrough", "bare_floor", "build", "const", "fixed", "in_flow", "trivial"]


async def const() -> int:
    """The floor's callee: an ``async def`` returning a constant."""
    return 1


def bare_floor() -> Timed:
    """A fresh floor: ``await f()`` with ``f`` an ``async def`` returning a constant."""

    async def env(_ops: int) -> Env:
        return {"f": const}

    return Timed("bare await", "await f()", env)


def fixed(**values: object) -> Callable[[int], Awaitable[Env]]:
    """An environment that is the same for every batch."""

    async def env(_ops: int) -> Env:
        return dict(values)

    return env


async def trivial(ctx: runtree.ExecutionContext) -> int:
    return 1


class PassThrough(runtree.Extension):
    """An extension whose ``wrap_exec`` only calls ``next``."""

    async def wrap_exec(self, next: Callable[[], Awaitable[object]], op: runtree.ExecOp) -> object:
        return await next()


def in_flow(root: runtree.ExecutionContext) -> Runner:
    """A runner that times the statement inside a running flow body, with ``ctx`` bound
    to that flow's context (the environment carries a ``ctx`` placeholder)."""

    async def body(ctx: runtree.ExecutionContext) -> int:
        timer, n, env = cast(tuple[Timer, int, Env], ctx.input)
        return await timer(n, **{**env, "ctx": ctx})

    outer: runtree.Flow[Any, int] = runtree.flow(body, name="bench-outer")

    async def run(timer: Timer, n: int, env: Env) -> int:
        return await root.exec(outer, (timer, n, env))

    return run


def _vs(pairs: dict[str, Pair], key: str, base: str, label: str) -> str:
    r = cross_ratio(pairs, key, base)
    return "" if r is None else f"{r:.2f}x {label}"


async def build(settings: Settings) -> Group:
    group = Group("core")
    flow = runtree.flow(trivial, name="trivial")
    answer = runtree.atom(lambda ctx: 42, name="answer")

    scope = runtree.create_scope()
    group.cleanups.append(scope.dispose)
    root = scope.create_context()
    await scope.resolve(answer)

    ext_scope = runtree.create_scope(extensions=[PassThrough()])
    group.cleanups.append(ext_scope.dispose)
    ext_root = ext_scope.create_context()

    exec_body = "await ctx.exec(flow)"
    boundary_body = """
        c = scope.create_context()
        await c.exec(flow)
        await c.close()
    """
    group.pairs += [
        Pair(
            "exec_root",
            "ctx.exec(trivial) on a root",
            Timed("exec", exec_body, fixed(ctx=root, flow=flow)),
            bare_floor(),
            budget=12,
        ),
        Pair(
            "exec_in_flow",
            "ctx.exec(trivial) in a flow body",
            Timed("exec", exec_body, fixed(ctx=None, flow=flow), runner=in_flow(root)),
            Timed("bare await", "await f()", fixed(ctx=None, f=const), runner=in_flow(root)),
            budget=12,
        ),
        Pair(
            "resolve_warm",
            "scope.resolve(atom), warm",
            Timed("resolve", "await scope.resolve(a)", fixed(scope=scope, a=answer)),
            bare_floor(),
            budget=3,
        ),
        Pair(
            "create_exec_close",
            "create_context + exec + close",
            Timed("boundary", boundary_body, fixed(scope=scope, flow=flow)),
            bare_floor(),
            budget=20,
        ),
        Pair(
            "create_exec_close_gc",
            "create_context + exec + close, gc on",
            Timed("boundary", boundary_body, fixed(scope=scope, flow=flow), runner=run_with_gc),
            bare_floor(),
            note=lambda p: _vs(p, "create_exec_close_gc", "create_exec_close", "with gc off"),
        ),
        Pair(
            "exec_ext",
            "exec + 1 pass-through wrap_exec",
            Timed("exec+ext", exec_body, fixed(ctx=ext_root, flow=flow)),
            bare_floor(),
            note=lambda p: _vs(p, "exec_ext", "exec_root", "plain exec"),
        ),
        Pair(
            "exec_defaults",
            "exec(timeout=None, retry=0)",
            Timed(
                "exec+defaults",
                "await ctx.exec(flow, timeout=None, retry=0)",
                fixed(ctx=root, flow=flow),
            ),
            bare_floor(),
            note=lambda p: _vs(p, "exec_defaults", "exec_root", "plain exec"),
        ),
    ]

    # Journal keys: a fresh root per batch and distinct keys (drawn with next(), ≈ 25 ns).
    roots: list[runtree.ExecutionContext] = []

    async def keyed_env(ops: int) -> Env:
        while roots:
            await roots.pop().close()
        roots.append(scope.create_context())
        return {"ctx": roots[-1], "flow": flow, "keys": iter([f"k{i}" for i in range(ops)])}

    async def close_roots() -> None:
        while roots:
            await roots.pop().close()

    group.cleanups.append(close_roots)
    replay_root = scope.create_context()
    await replay_root.exec(flow, key="done")
    group.pairs += [
        Pair(
            "exec_key",
            "exec(key=...), new keys, in memory",
            Timed("exec+key", "await ctx.exec(flow, key=next(keys))", keyed_env, unroll=1),
            bare_floor(),
            note=lambda p: _vs(p, "exec_key", "exec_root", "plain exec"),
        ),
        Pair(
            "exec_key_replay",
            "exec(key=...), journal hit (replay)",
            Timed("replay", 'await ctx.exec(flow, key="done")', fixed(ctx=replay_root, flow=flow)),
            bare_floor(),
            note=lambda p: _vs(p, "exec_key_replay", "exec_root", "plain exec"),
        ),
    ]
    return group
