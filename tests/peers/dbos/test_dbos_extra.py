"""Further DBOS-derived tests: stale cancel requests, forks picked up by recovery,
timeouts bounding key waits, owner changes, crash-time recording."""

import asyncio
import os
import time

import dbos_flows
import pytest
from dbos_support import env, kill9, run_status, spawn, wait_file

import runtree
from runtree.errors import Cancelled, ExecTimeoutError

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
def _reset(tmp_path, monkeypatch):
    C.clear()
    EV.clear()
    monkeypatch.setenv("DBOS_TEST_DIR", str(tmp_path))
    monkeypatch.delenv("DBOS_TEST_BLOCK", raising=False)


# ---- test_cancel_after_final_step variant: the run finishes before the owner sees the request
@runtree.flow
async def quick_after_gate(ctx):
    await ctx.run(lambda: bump("one"), key="one")
    ev("main").set()
    await ev("gate").wait()
    return ctx.input


@pytest.mark.asyncio
async def test_stale_cancel_request_does_not_hit_rerun(tmp_path):
    async with env(tmp_path, lease=3.0) as (_store, scope, runs):  # renewal every 1 s
        h = scope.exec(quick_after_gate, 5, id="stale")
        await ev("main").wait()
        await runs.cancel("stale")
        ev("gate").set()
        res = await asyncio.gather(h, return_exceptions=True)
        first = (await runs.get("stale")).run
        # Either outcome is allowed (the owner acts at its next renewal); it must be consistent
        if isinstance(res[0], BaseException):
            assert first.status == "cancelled"
        else:
            assert first.status == "completed"
        # a later run under the same id must not be cancelled by the old request
        h2 = scope.exec(quick_after_gate, 6, id="stale")
        await asyncio.sleep(1.5)  # past a renewal
        assert await asyncio.wait_for(h2, 5) == 6
        assert (await runs.get("stale")).run.status == "completed"


# ---- fork shows as interrupted so that a worker serving its flow picks it up -------
@runtree.flow
async def forkable(ctx):
    a = await ctx.run(lambda: bump("a"), key="a")
    b = await ctx.run(lambda: bump("b"), key="b")
    return [a, b]


@pytest.mark.asyncio
async def test_fork_picked_up_by_recover(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        assert await scope.exec(forkable, None, id="fk") == [1, 1]
        fid = await runs.fork("fk", from_key="b", new_id="fk-2")
        assert await run_status(runs, fid) == "interrupted"
        hs = await scope.recover([forkable])
        assert [h.id for h in hs] == ["fk-2"]
        assert await hs[0] == [1, 2]
        assert await run_status(runs, fid) == "completed"


# ---- timeout bounds the wait for a key another exec holds (one tree) ----------------
@runtree.flow
async def key_wait(ctx):
    async def slow():
        await asyncio.sleep(1.0)
        return "slow"

    t0 = time.monotonic()
    first = asyncio.ensure_future(ctx.run(slow, key="k"))
    await asyncio.sleep(0.05)
    try:
        await ctx.run(slow, key="k", timeout=0.2)
        got = "value"
    except ExecTimeoutError:
        got = "timeout"
    waited = time.monotonic() - t0
    await first
    return [got, waited]


@pytest.mark.asyncio
async def test_timeout_bounds_key_wait(tmp_path):
    async with env(tmp_path) as (_store, scope, _runs):
        got, waited = await scope.exec(key_wait, None, id="kw")
        assert got == "timeout" and waited < 0.8


# ---- the same across processes -------------------------------------------------------
@runtree.flow
async def key_wait_proc(ctx):
    async def step():
        return "mine"

    t0 = time.monotonic()
    try:
        await ctx.run(step, key="slow", timeout=0.3)
        return ["value", time.monotonic() - t0]
    except ExecTimeoutError:
        return ["timeout", time.monotonic() - t0]


@pytest.mark.asyncio
async def test_timeout_bounds_key_wait_across_processes(tmp_path):
    p = spawn(tmp_path, "slow_step_wf", None, "kwp")
    wait_file(tmp_path, "enter-kwp")
    try:
        async with env(tmp_path) as (_store, scope, _runs):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got, waited = await scope.exec(key_wait_proc, None, id="kwp")
            assert got == "timeout" and waited < 0.9, (got, waited)
    finally:
        p.communicate(timeout=30)


# ---- test_eid_reset: the run's owner becomes the recovering process ----------------------
@pytest.mark.asyncio
async def test_owner_after_recovery(tmp_path):
    p = spawn(tmp_path, "rec_wf", {"a": "1", "b": "2"}, "own", block="after-s1")
    wait_file(tmp_path, "ready-after-s1")
    async with env(tmp_path) as (_store, scope, runs):
        before = (await runs.get("own")).run.owner
    kill9(p)
    async with env(tmp_path) as (_store, scope, runs):
        [h] = await scope.recover([dbos_flows.rec_wf])
        await h
        after = (await runs.get("own")).run
        assert after.owner != before
        assert after.created_at <= after.updated_at


# ---- a crash right after start (before any step): the run is still recoverable ---------
@runtree.flow
async def starts_then_blocks(ctx):
    await dbos_flows.block_if("start")
    return "fine"


@pytest.mark.asyncio
async def test_crash_before_any_step(tmp_path):
    p = spawn(tmp_path, "rec_wf", {"a": "1", "b": "2"}, "early", block="none")
    p.communicate(timeout=30)  # sanity run to completion
    # now a flow that blocks before its first step
    import subprocess

    from dbos_support import HERE, PY

    code = (
        "import asyncio,runtree,sys; sys.path.insert(0, {!r})\n"
        "import test_dbos_extra as m\n"
        "from runtree.stores import SqliteStore\n"
        "async def main():\n"
        "  async with SqliteStore({!r}, lease=0.6) as s, runtree.create_scope(store=s) as sc:\n"
        "    await sc.exec(m.starts_then_blocks, None, id='nostep')\n"
        "asyncio.run(main())\n"
    ).format(HERE, str(tmp_path / "rt.db"))
    e = dict(os.environ, DBOS_TEST_DIR=str(tmp_path), DBOS_TEST_BLOCK="start", PYTHONPATH=HERE)
    q = subprocess.Popen([PY, "-c", code], env=e, cwd=HERE)
    wait_file(tmp_path, "ready-start")
    kill9(q)
    async with env(tmp_path) as (_store, scope, runs):
        assert await run_status(runs, "nostep") == "interrupted"
        hs = await scope.recover([starts_then_blocks])
        assert [h.id for h in hs] == ["nostep"]
        assert await hs[0] == "fine"


# ---- node rows survive a crash (at most the last 100 ms lost) ----------------------------
@pytest.mark.asyncio
async def test_nodes_recorded_before_crash(tmp_path):
    p = spawn(tmp_path, "rec_wf", {"a": "1", "b": "2"}, "nodes", block="after-s1")
    wait_file(tmp_path, "ready-after-s1")
    time.sleep(0.5)
    kill9(p)
    async with env(tmp_path) as (_store, _scope, runs):
        tree = await runs.get("nodes")
        s1 = [n for n in tree.nodes if n.key == "s1"]
        assert s1 and s1[0].status == "completed" and s1[0].output == "1"


# ---- cancel reason reaches the caller ----------------------------------------------------
@runtree.flow
async def waits_forever(ctx):
    ev("wf-main").set()
    await asyncio.sleep(60)


@pytest.mark.asyncio
async def test_cancel_reason(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        h = scope.exec(waits_forever, None, id="why")
        await ev("wf-main").wait()
        await runs.cancel("why", reason="operator said so")
        with pytest.raises(Cancelled) as ei:
            await asyncio.wait_for(asyncio.shield(h), 5)
        assert "operator said so" in str(ei.value.reason)
        tree = await runs.get("why")
        assert tree.run.status == "cancelled"
        assert tree.run.cancel_requested is None  # the owner acted


# ---- cancel during retry backoff interrupts the pause at once ---------------------------
@runtree.flow
async def long_backoff(ctx):
    def fail():
        bump("lb")
        ev("lb-failed").set()
        raise RuntimeError("x")

    await ctx.run(fail, key="lb", retry=3, retry_delay=30)


@pytest.mark.asyncio
async def test_cancel_during_backoff(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        h = scope.exec(long_backoff, None, id="lb")
        await ev("lb-failed").wait()
        t0 = time.monotonic()
        await runs.cancel("lb")
        with pytest.raises(Cancelled):
            await asyncio.wait_for(asyncio.shield(h), 5)
        assert time.monotonic() - t0 < 2
        assert C["lb"] == 1
        # nothing journaled: resume runs the step again
        assert await run_status(runs, "lb") == "cancelled"


# ---- resume of a failed run records the new attempt; status transitions -------------
@runtree.flow
async def fail_once(ctx):
    def step():
        if bump("fo") == 1:
            raise ConnectionError("db down")
        return "ok"

    return await ctx.run(step, key="fo")


@pytest.mark.asyncio
async def test_resume_failed_run_statuses(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        with pytest.raises(ConnectionError):
            await scope.exec(fail_once, None, id="fo")
        t = await runs.get("fo")
        assert t.run.status == "failed" and t.run.error.type == "ConnectionError"
        created = t.run.created_at
        h = await runs.resume("fo", scope)
        assert await h == "ok"
        t = await runs.get("fo")
        assert t.run.status == "completed" and t.run.error is None and t.run.output == "ok"
        assert t.run.created_at == created
        assert [n.status for n in t.nodes if n.key == "fo"] == ["completed"]
