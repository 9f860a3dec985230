"""More tests: Execution.cancel, timeouts in the record, idle create_context roots,
non-JSON run input, big inputs, edge-triggered cancellation."""

import asyncio

import pytest
from dbos_support import env, run_status, wait_for

import runtree
from runtree.errors import Cancelled, ExecTimeoutError, RunStateError

C: dict = {}
EV: dict = {}


def bump(k):
    C[k] = C.get(k, 0) + 1
    return C[k]


def ev(name):
    if name not in EV:
        EV[name] = asyncio.Event()
    return EV[name]


@pytest.fixture(autouse=True)
def _reset():
    C.clear()
    EV.clear()


@runtree.flow
async def two_steps_block(ctx):
    await ctx.run(lambda: bump("one"), key="one")
    ev("ready").set()
    await ev("go").wait()
    await ctx.run(lambda: bump("two"), key="two")
    return ctx.input


# test_cancel_workflow_async via the handle
@pytest.mark.asyncio
async def test_execution_cancel_recorded_and_resumable(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        h = scope.exec(two_steps_block, 3, id="ec")
        await ev("ready").wait()
        h.cancel()
        with pytest.raises(Cancelled):
            await h
        assert h.status == "cancelled"
        assert await run_status(runs, "ec") == "cancelled"
        ev("go").set()
        assert await (await runs.resume("ec", scope)) == 3
        assert (C["one"], C["two"]) == (1, 1)


@runtree.flow
async def sleepy(ctx):
    await asyncio.sleep(10)


@pytest.mark.asyncio
async def test_timeout_recorded_as_failed(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        h = scope.exec(sleepy, None, id="tr", timeout=0.1)
        with pytest.raises(ExecTimeoutError):
            await h
        info = (await runs.get("tr")).run
        assert info.status == "failed"
        assert info.error is not None and info.error.type == "ExecTimeoutError"


@pytest.mark.asyncio
async def test_cancel_idle_boundary_root(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        async with scope.create_context(id="idle") as root:
            await root.run(lambda: 1, key="k")
            await runs.cancel("idle")
            await wait_for(lambda: root.cancelled, timeout=5)
            with pytest.raises(Cancelled):
                await root.run(lambda: 2, key="k2")
        assert await run_status(runs, "idle") == "cancelled"


class Obj:
    pass


@runtree.flow
async def takes_obj(ctx):
    raise RuntimeError("fail")


@pytest.mark.asyncio
async def test_non_json_run_input(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        with pytest.raises(RuntimeError):
            await scope.exec(takes_obj, Obj(), id="nj")
        info = (await runs.get("nj")).run
        assert info.status == "failed"
        with pytest.raises(RunStateError):
            await runs.resume("nj", scope)


@runtree.flow
async def big_input(ctx):
    if bump("big") == 1:
        raise RuntimeError("first")
    return len(ctx.input["blob"])


@pytest.mark.asyncio
async def test_big_input_resume(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        blob = "x" * 50_000
        with pytest.raises(RuntimeError):
            await scope.exec(big_input, {"blob": blob}, id="big")
        assert (await runs.get("big")).run.input == {"blob": blob}
        assert await (await runs.resume("big", scope)) == 50_000


@runtree.flow
async def stubborn(ctx):
    ev("st-ready").set()
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        return "suppressed"


@pytest.mark.asyncio
async def test_stubborn_root_catches_cancel(tmp_path):
    """DBOS stubborn_step: a body that swallows the cancellation; DESIGN: edge-triggered,
    its value is the result. The record must agree with the Execution."""
    async with env(tmp_path) as (_store, scope, runs):
        h = scope.exec(stubborn, None, id="stub")
        await ev("st-ready").wait()
        await runs.cancel("stub")
        res = await asyncio.gather(h, return_exceptions=True)
        info = (await runs.get("stub")).run
        exp = {"completed": "completed", "cancelled": "cancelled", "failed": "failed"}[h.status]
        assert info.status == exp, (res, h.status, info)


@runtree.flow
async def nested_keys(ctx):
    async def inner(name):
        return await runtree.current_context().run(lambda: (bump(name), name)[1], key=name)

    await ctx.run(inner, "k1", key="outer1")
    await ctx.run(inner, "k2", key="outer2")
    return "ok"


@pytest.mark.asyncio
async def test_nested_steps_fork(tmp_path):
    """test_nested_steps: nested keyed steps record in the root journal; fork respects record
    order."""
    async with env(tmp_path) as (_store, scope, runs):
        assert await scope.exec(nested_keys, None, id="ns") == "ok"
        f = await runs.fork("ns", from_key="outer2")
        assert await (await runs.resume(f, scope)) == "ok"
        assert C == {"k1": 1, "k2": 1}  # k2 recorded before outer2: replays
        f = await runs.fork("ns", from_key="k2")
        assert await (await runs.resume(f, scope)) == "ok"
        assert C == {"k1": 1, "k2": 2}
