"""DESIGN §6 "Concurrent session commands": two commands of one session running at once (as
two processes would: two stores on one database) with distinct keys never wait on each
other; the same key still runs once — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import runtree
from runtree.sessions import Sessions
from runtree.stores import Store

StoreFactory = Callable[..., Store]


async def test_distinct_keys_run_at_once_and_a_shared_key_runs_once(
    open_durable: StoreFactory,
) -> None:
    ran: list[str] = []
    a_inside = asyncio.Event()
    release_a = asyncio.Event()

    async def slow(ctx: runtree.ExecutionContext) -> str:
        ran.append("a")
        a_inside.set()
        await release_a.wait()
        return "from A"

    @runtree.flow
    async def first(ctx: runtree.ExecutionContext) -> str:
        shared = await ctx.run(lambda: ran.append("shared") or "shared-A", key="shared", name="s")
        return str(await ctx.exec(runtree.flow(slow), None, key="a")) + "/" + str(shared)

    @runtree.flow
    async def second(ctx: runtree.ExecutionContext) -> str:
        b = await ctx.run(lambda: ran.append("b") or "from B", key="b", name="b")
        return str(b)

    @runtree.flow
    async def third(ctx: runtree.ExecutionContext) -> str:
        return str(await ctx.exec(runtree.flow(slow), None, key="a"))

    async with open_durable(lease=1.0) as store_a, open_durable(lease=1.0) as store_b:
        session = await Sessions(store_a).create("p")
        other = await Sessions(store_b).get(session.session_id)
        command_a = asyncio.create_task(session.exec(first, None, command="A"))
        await asyncio.wait_for(a_inside.wait(), 10)
        # B runs to the end while A is still inside its step.
        assert await asyncio.wait_for(other.exec(second, None, command="B"), 10) == "from B"
        assert not command_a.done()
        # C reaches A's key: it waits for A's outcome instead of running the step again.
        command_c = asyncio.create_task(other.exec(third, None, command="C"))
        await asyncio.sleep(0.2)  # C polls the claim; nothing can finish before release_a
        assert not command_c.done()
        release_a.set()
        assert await asyncio.wait_for(command_a, 10) == "from A/shared-A"
        assert await asyncio.wait_for(command_c, 10) == "from A"
        assert ran == ["shared", "a", "b"]
        history = [
            (c.command, c.status)
            for c in (await Sessions(store_a).get(session.session_id)).command_history
        ]
        assert sorted(history) == [("A", "success"), ("B", "success"), ("C", "success")]
