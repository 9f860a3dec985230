"""Translations of tests/test_concurrency.py, test_async.py, test_singleexec.py (in-process)."""

import asyncio
import time
import warnings

import pytest
from dbos_support import env, run_status, wait_for

import runtree

C: dict = {}
CONC = {"now": 0, "max": 0, "wf_now": 0, "wf_max": 0}


def bump(k):
    C[k] = C.get(k, 0) + 1
    return C[k]


@pytest.fixture(autouse=True)
def _reset():
    C.clear()
    CONC.update(now=0, max=0, wf_now=0, wf_max=0)


# ---- test_concurrent_workflows ------------------------------------------------------
@runtree.flow
async def id_wf(ctx):
    await asyncio.sleep(ctx.input)
    return ctx.root.id


@pytest.mark.asyncio
async def test_concurrent_workflows(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        start = time.monotonic()
        hs = [scope.exec(id_wf, 1.0, id=f"cw-{i}") for i in range(10)]
        assert [await h for h in hs] == [f"cw-{i}" for i in range(10)]
        assert time.monotonic() - start < 5
        assert len(await runs.list(status="completed")) == 10


# ---- test_max_parallel_workflows ---------------------------------------------------
@pytest.mark.asyncio
async def test_max_parallel_workflows(tmp_path):
    async with env(tmp_path) as (_store, scope, _runs):
        start = time.monotonic()
        hs = [scope.exec(id_wf, 1.0, id=f"mp-{i}") for i in range(50)]
        res = await asyncio.gather(*hs)
        assert res == [f"mp-{i}" for i in range(50)]
        assert time.monotonic() - start < 10


# ---- test_gather_distinct_steps_deterministic_order ---------------------------------
async def sleeper(name, d):
    await asyncio.sleep(d)
    return name


@runtree.flow
async def gather_wf(ctx):
    a, b, c = await ctx.parallel(
        ctx.run(sleeper, "a", 0.05, key="a", name="step_a"),
        ctx.run(sleeper, "b", 0.001, key="b", name="step_b"),
        ctx.run(sleeper, "c", 0.02, key="c", name="step_c"),
    )
    return {"a": a, "b": b, "c": c}


@pytest.mark.asyncio
async def test_gather_distinct_steps_deterministic_order(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        for i in range(10):
            rid = f"g-{i}"
            assert await scope.exec(gather_wf, "x", id=rid) == {"a": "a", "b": "b", "c": "c"}
            tree = await runs.get(rid)
            steps = [n.name for n in tree.nodes if n.key]
            assert steps == ["step_a", "step_b", "step_c"]  # start order
            par = [n for n in tree.nodes if n.kind == "parallel"]
            assert len(par) == 1
            assert [n.name for n in tree.children(par[0])] == ["step_a", "step_b", "step_c"]
            # replay after the fact: nothing runs again
        assert await scope.exec(gather_wf, "x", id="g-0") == {"a": "a", "b": "b", "c": "c"}


# ---- test_gather_manysteps ---------------------------------------------------------
def make_retry_body(name):
    async def body():
        n = bump(name)
        if n <= 2:
            raise Exception("Not yet")
        return "ranStep"

    body.__name__ = name
    return body


@runtree.flow
async def many_steps(ctx):
    conc = ctx.input
    thunks = [
        lambda: ctx.run(lambda: "ranStep", key="runStep1a", name="runStep1a"),
        lambda: ctx.run(make_retry_body("r1"), key="runStepRetry1", retry=4, retry_delay=0.02),
        lambda: ctx.run(make_retry_body("r2"), key="runStepRetry2", retry=4, retry_delay=0.01),
        lambda: ctx.run(lambda: "ranStep", key="runStep2", name="runStep2"),
        lambda: ctx.run(lambda: "3", key="str3", name="str3"),
        lambda: ctx.run(make_retry_body("r3"), key="runStepRetry3", retry=4, retry_delay=0.03),
    ]
    if conc:
        return await ctx.parallel(*[t() for t in thunks])
    return [await t() for t in thunks]


@pytest.mark.asyncio
async def test_gather_manysteps(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        expected = ["ranStep", "ranStep", "ranStep", "ranStep", "3", "ranStep"]
        assert await scope.exec(many_steps, False, id="ser") == expected
        C.clear()
        assert await scope.exec(many_steps, True, id="conc") == expected
        ser = await runs.get("ser")
        con = await runs.get("conc")

        def ok(t):
            return sorted((n.key, n.output) for n in t.nodes if n.key and n.status == "completed")

        assert ok(ser) == ok(con)
        C.clear()
        for k in ("runStepRetry2", "runStep2", "str3"):
            f = await runs.fork("conc", from_key=k)
            assert await (await runs.resume(f, scope)) == expected


# ---- same key, concurrent, one tree: run once ---------------------------------------
@runtree.flow
async def same_key_twice(ctx):
    async def step():
        bump("sk")
        await asyncio.sleep(0.1)
        return "v"

    return await ctx.parallel(ctx.run(step, key="k"), ctx.run(step, key="k"))


@pytest.mark.asyncio
async def test_same_key_concurrent_in_tree(tmp_path):
    async with env(tmp_path) as (_store, scope, _runs):
        assert await scope.exec(same_key_twice, None, id="sk") == ["v", "v"]
        assert C["sk"] == 1


# ---- test_singleexec.test_simple_workflow / test_start_workflow_async: two roots, same
# id, one process
async def conc_step():
    CONC["now"] += 1
    CONC["max"] = max(CONC["max"], CONC["now"])
    bump("step")
    await asyncio.sleep(0.5)
    CONC["now"] -= 1


@runtree.flow
async def conc_wf(ctx):
    await asyncio.sleep(0.1)
    await ctx.run(conc_step, key="step")
    await asyncio.sleep(0.1)
    return "ok"


@pytest.mark.asyncio
async def test_singleexec_same_id_same_process(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            h1 = scope.exec(conc_wf, None, id="se")
            h2 = scope.exec(conc_wf, None, id="se")
            assert await asyncio.gather(h1, h2) == ["ok", "ok"]
        assert CONC["max"] == 1
        assert C["step"] == 1
        assert await run_status(runs, "se") == "completed"


# ---- test_step_sequence --------------------------------------------------------------
@runtree.flow
async def seq_wf(ctx):
    async def step1():
        bump("s1")
        await asyncio.sleep(0.3)
        C["cur"] = 1

    async def step2():
        bump("s2")
        C["cur"] = 2

    await ctx.run(step1, key="step1")
    await ctx.run(step2, key="step2")


@pytest.mark.asyncio
async def test_step_sequence(tmp_path):
    async with env(tmp_path) as (_store, scope, _runs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            await asyncio.gather(
                scope.exec(seq_wf, None, id="sq"), scope.exec(seq_wf, None, id="sq")
            )
        assert C["cur"] == 2 and C["s1"] == 1 and C["s2"] == 1


# ---- test_workflow_with_task_cancellation (DESIGN differs: the execution is cancelled too)
@pytest.mark.asyncio
async def test_awaiting_task_cancelled_cancels_execution(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        h = scope.exec(id_wf, 5.0, id="tc")

        async def waiter():
            return await h

        t = asyncio.ensure_future(waiter())
        await wait_for(lambda: h.status == "running")
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await wait_for(lambda: h.status == "cancelled", timeout=3)
        await wait_for(lambda: (lambda: None)() or True)
        assert await run_status(runs, "tc") == "cancelled"


# ---- test_singleexec / test_start_workflow: a second start of a running id in this process
@runtree.flow
async def divergent(ctx):
    if ctx.input == "fail":
        raise RuntimeError("second start failed")
    await asyncio.sleep(1.0)
    return "first done"


@pytest.mark.asyncio
async def test_second_start_same_id_keeps_owner_record(tmp_path):
    """BREAK: the second root hijacks the record of the live first one (see
    repro_same_id_same_process.py)."""
    from runtree.errors import RunStateError

    async with env(tmp_path) as (_store, scope, runs):
        h1 = scope.exec(divergent, "block", id="dv")
        await asyncio.sleep(0.2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(RuntimeError):
                await scope.exec(divergent, "fail", id="dv")
        info = (await runs.get("dv")).run
        problems = []
        if info.status != "running":
            problems.append(f"status while the owner runs: {info.status}")
        try:
            h3 = await runs.resume("dv", scope)
            await asyncio.gather(h3, return_exceptions=True)
            problems.append("resume accepted while a live root runs the run")
        except RunStateError:
            pass
        assert await h1 == "first done"
        final = (await runs.get("dv")).run
        if final.status != "completed":
            problems.append(f"final status {final.status} though the owner completed")
        assert not problems, problems
