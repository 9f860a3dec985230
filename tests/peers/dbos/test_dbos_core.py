"""Translations of dbos-transact-py tests/test_dbos.py (and test_async.py basics)."""

import asyncio
import warnings

import pytest
from dbos_support import env, run_status, wait_for

import runtree
from runtree.errors import (
    ExecTimeoutError,
    JournalMismatchError,
    RunNotFoundError,
    SerializationWarning,
    StepFailedError,
)

C: dict = {}


def bump(k):
    C[k] = C.get(k, 0) + 1


@pytest.fixture(autouse=True)
def _reset():
    C.clear()


# ---- test_simple_workflow / test_async_workflow / test_async_step -----------------
@runtree.flow
async def s_txn(ctx):
    bump("txn")
    return ctx.input + "1"


def s_step(var):
    bump("step")
    return var


@runtree.flow
async def simple_wf(ctx):
    bump("wf")
    a, b = ctx.input
    res = await ctx.exec(s_txn, b, key="txn")
    res2 = await ctx.run(s_step, a, key="step")
    return res + res2


@pytest.mark.asyncio
async def test_simple_workflow(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        assert await scope.exec(simple_wf, ["bob", "bob"]) == "bob1bob"
        assert await scope.exec(simple_wf, ["alice", "alice"], id="wf-a") == "alice1alice"
        assert C["wf"] == 2
        # DESIGN differs: re-running the id re-runs the body, steps replay
        assert await scope.exec(simple_wf, ["alice", "alice"], id="wf-a") == "alice1alice"
        assert C["txn"] == 2 and C["step"] == 2
        info = (await runs.get("wf-a")).run
        assert info.status == "completed" and info.output == "alice1alice"
        assert info.input == ["alice", "alice"]
        assert info.flow.endswith(":simple_wf")


# ---- test_simple_workflow_attempts_counter ---------------------------------------
@runtree.flow
async def noop(ctx):
    await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_simple_workflow_attempts_counter(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        created = None
        for _ in range(5):
            await scope.exec(noop, None, id="noop-1")
            info = (await runs.get("noop-1")).run
            if created is None:
                created = info.created_at
            assert info.created_at == created  # restarted under same id keeps created_at
            assert info.updated_at >= info.created_at
            assert info.status == "completed"
        assert len([r for r in await runs.list() if r.root_id == "noop-1"]) == 1


# ---- test_child_workflow -----------------------------------------------------------
@runtree.flow
async def child_wf(ctx):
    return ctx.input + "_child"


@runtree.flow
async def parent_wf(ctx):
    result = await ctx.exec(child_wf, "test")
    r2 = await ctx.exec(child_wf, "async", key="child-2")
    return [ctx.root.id, result + r2]


@pytest.mark.asyncio
async def test_child_workflow(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        rid, res = await scope.exec(parent_wf, None, id="parent-1")
        assert rid == "parent-1"
        assert res == "test_childasync_child"
        tree = await runs.get("parent-1")
        root = [n for n in tree.nodes if n.kind == "root"]
        assert len(root) == 1 and root[0].parent_id is None
        kids = tree.children(root[0])
        assert [k.name for k in kids] == ["child_wf", "child_wf"]
        assert [k.key for k in kids] == [None, "child-2"]
        assert all(k.status == "completed" for k in kids)
        assert kids[0].input == "test" and kids[0].output == "test_child"


# ---- test_child_workflow_assigned_id ----------------------------------------------
@runtree.flow
async def assigned_child(ctx):
    assert ctx.root.id == "assigned_child_id"
    return await ctx.run(lambda v: (bump("txn"), v + "1")[1], ctx.input, key="txn")


@runtree.flow
async def parent_assigned(ctx):
    scope = ctx.scope
    r1 = await scope.exec(assigned_child, "first", id="assigned_child_id")
    r2 = await scope.exec(assigned_child, "second", id="assigned_child_id")
    return r1 + r2


@pytest.mark.asyncio
async def test_child_workflow_assigned_id(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "second" is another input: JournalInputWarning
            assert await scope.exec(parent_assigned, None, id="orig-parent") == "first1first1"
            assert await scope.exec(parent_assigned, None) == "first1first1"
        assert C["txn"] == 1
        assert (await runs.get("assigned_child_id")).run.status == "completed"


# ---- test_exception_workflow --------------------------------------------------------
def exc_step(var):
    bump("step")
    raise Exception(var)


@runtree.flow
async def exc_txn(ctx):
    bump("txn")
    raise Exception(ctx.input)


@runtree.flow
async def exception_wf(ctx):
    bump("wf")
    err1 = err2 = None
    try:
        await ctx.exec(exc_txn, "test error", key="txn")
    except Exception as e:
        err1 = e
    try:
        await ctx.run(exc_step, "test error", key="step")
    except Exception as e:
        err2 = e
    assert err1 is not None and err2 is not None
    raise err1


@pytest.mark.asyncio
async def test_exception_workflow(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        with pytest.raises(Exception, match="test error"):
            await scope.exec(exception_wf, None)
        with pytest.raises(Exception) as ei:
            await scope.exec(exception_wf, None, id="exc-1")
        assert "test error" in str(ei.value)
        with pytest.raises(Exception) as ei:
            await scope.exec(exception_wf, None, id="exc-1")
        assert "test error" in str(ei.value)
        assert C["txn"] == 2 and C["step"] == 2
        info = (await runs.get("exc-1")).run
        assert info.status == "failed"
        assert info.error is not None and "test error" in info.error.message


@pytest.mark.asyncio
async def test_exception_workflow_after_restart(tmp_path):
    """The same, with the re-run in a fresh store (a restart): StepFailedError."""
    async with env(tmp_path) as (_store, scope, _runs):
        with pytest.raises(Exception):
            await scope.exec(exception_wf, None, id="exc-2")
    async with env(tmp_path) as (_store, scope, _runs):
        with pytest.raises(Exception) as ei:
            await scope.exec(exception_wf, None, id="exc-2")
        assert isinstance(ei.value, StepFailedError)
        assert "test error" in str(ei.value)
        assert C["txn"] == 1 and C["step"] == 1


# ---- test_temp_workflow ------------------------------------------------------------
@pytest.mark.asyncio
async def test_temp_workflow(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        assert await scope.exec(simple_wf, ["a", "b"]) == "b1a"
        assert await runs.list() == []  # record="durable": roots without id unrecorded
    async with env(tmp_path, name="all.db", record="all") as (_store, scope, runs):
        assert await scope.exec(simple_wf, ["a", "b"]) == "b1a"
        [r] = await runs.list()
        assert r.status == "completed" and r.flow.endswith(":simple_wf")


# ---- test_start_workflow ------------------------------------------------------------
@runtree.flow
async def start_wf(ctx):
    bump("wf")
    return await ctx.run(lambda v: (bump("txn"), v + "1")[1], ctx.input, key="txn") + "bob"


@pytest.mark.asyncio
async def test_start_workflow(tmp_path):
    async with env(tmp_path) as (_store, scope, _runs):
        h = scope.exec(start_wf, "bob", id="sw-1")
        assert h.status == "pending" and h.id == "sw-1"
        assert await h == "bob1bob"
        assert h.status == "completed"
        assert await scope.exec(start_wf, "bob", id="sw-1") == "bob1bob"
        assert C["txn"] == 1


# ---- test_retrieve_workflow ---------------------------------------------------------
@runtree.flow
async def sleep_wf(ctx):
    await asyncio.sleep(ctx.input)
    return ctx.root.id


@runtree.flow
async def sleep_throw(ctx):
    await asyncio.sleep(ctx.input)
    raise Exception("Wake Up!")


@pytest.mark.asyncio
async def test_retrieve_workflow(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        with pytest.raises(RunNotFoundError):
            await runs.get("aaaa")
        h = scope.exec(sleep_wf, 0.5, id="sleep-1")
        await wait_for(lambda: h.status == "running")
        assert await run_status(runs, "sleep-1") == "running"
        assert await h == "sleep-1"
        info = (await runs.get("sleep-1")).run
        assert info.status == "completed" and info.output == "sleep-1"

        h = scope.exec(sleep_throw, 0.3, id="sleep-2")
        await wait_for(lambda: h.status == "running")
        assert await run_status(runs, "sleep-2") == "running"
        with pytest.raises(Exception, match="Wake Up!"):
            await h
        info = (await runs.get("sleep-2")).run
        assert info.status == "failed" and info.output is None
        assert info.error.message == "Wake Up!" and info.error.type == "Exception"


# ---- test_nonserializable_values / test_nonserializable_return (DESIGN: value returned + warning)
def invalid_return():
    return "literal"


@runtree.flow
async def ns_wf(ctx):
    v = await ctx.run(lambda: invalid_return, key="ns")
    return v is invalid_return


@pytest.mark.asyncio
async def test_nonserializable_values(tmp_path):
    async with env(tmp_path) as (_store, scope, _runs):
        with pytest.warns(SerializationWarning, match="ns"):
            assert await scope.exec(ns_wf, None, id="ns-1") is True
        C.clear()
        with pytest.warns(SerializationWarning):
            assert await scope.exec(ns_wf, None, id="ns-1") is True  # runs again


def gen_step():
    yield "val"


@runtree.flow
async def gen_wf(ctx):
    g = await ctx.run(gen_step, key="gen")
    return list(g)


@pytest.mark.asyncio
async def test_nonserializable_return(tmp_path):
    async with env(tmp_path) as (_store, scope, _runs):
        with pytest.warns(SerializationWarning):
            assert await scope.exec(gen_wf, None, id="gen-1") == ["val"]


# ---- test_workflow_timeout ---------------------------------------------------------
@runtree.flow
async def blocked_wf(ctx):
    while True:
        await asyncio.sleep(0.05)


@runtree.flow
async def parent_with_child_timeout(ctx):
    with pytest.raises(ExecTimeoutError):
        await ctx.exec(blocked_wf, None, timeout=0.1)
    return "ok"


@runtree.flow
async def parent_blocking(ctx):
    await ctx.exec(blocked_wf, None, key="child")


@pytest.mark.asyncio
async def test_workflow_timeout(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        h = scope.exec(blocked_wf, None, id="to-1", timeout=0.1)
        with pytest.raises(ExecTimeoutError):
            await h
        assert h.status == "failed"
        assert await run_status(runs, "to-1") == "failed"
        assert await scope.exec(parent_with_child_timeout, None, id="to-2") == "ok"
        h = scope.exec(parent_blocking, None, id="to-3", timeout=0.3)
        with pytest.raises(ExecTimeoutError):
            await h
        tree = await runs.get("to-3")
        assert tree.run.status == "failed"
        kids = [n for n in tree.nodes if n.kind != "root"]
        assert kids and all(n.status in ("cancelled", "failed") for n in kids)


# ---- test_custom_names -----------------------------------------------------------
@runtree.flow(name="workflow_name")
async def custom_named(ctx):
    return await ctx.run(lambda: ctx.root.id, key="s", name="step_name")


@pytest.mark.asyncio
async def test_custom_names(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        assert await scope.exec(custom_named, None, id="cn-1") == "cn-1"
        tree = await runs.get("cn-1")
        assert tree.run.name == "workflow_name"
        step = next(n for n in tree.nodes if n.key == "s")
        assert step.name == "step_name" and step.kind == "fn"


# ---- test_nondeterministic_workflow (test_failures.py) ---------------------------
FLAG = {"v": True}


@runtree.flow
async def nd_one(ctx):
    return 1


@runtree.flow
async def nd_two(ctx):
    return 2


@runtree.flow
async def nondeterministic_wf(ctx):
    return await ctx.exec(nd_one if FLAG["v"] else nd_two, None, key="s")


@pytest.mark.asyncio
async def test_nondeterministic_workflow(tmp_path):
    FLAG["v"] = True
    async with env(tmp_path) as (_store, scope, _runs):
        assert await scope.exec(nondeterministic_wf, None, id="nd-1") == 1
        FLAG["v"] = False
        with pytest.raises(JournalMismatchError):
            await scope.exec(nondeterministic_wf, None, id="nd-1")
    FLAG["v"] = True


# ---- test_workflow_returns_none ------------------------------------------------------
@runtree.flow
async def returns_none(ctx):
    bump("wf")
    await ctx.run(lambda: None, key="n")


@pytest.mark.asyncio
async def test_workflow_returns_none(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        assert await scope.exec(returns_none, ["bob", "bob"], id="none-1") is None
        info = (await runs.get("none-1")).run
        assert info.status == "completed" and info.output is None
