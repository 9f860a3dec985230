"""Translations of tests/test_workflow_management.py and test_async_workflow_management.py."""

import asyncio

import pytest
from dbos_support import env, run_status, wait_for

import runtree
from runtree.errors import Cancelled, RunNotFoundError, RunStateError

C: dict = {}
EV: dict = {}


def bump(k):
    C[k] = C.get(k, 0) + 1


@pytest.fixture(autouse=True)
def _reset():
    C.clear()
    EV.clear()


def ev(name):
    if name not in EV:
        EV[name] = asyncio.Event()
    return EV[name]


# ---- test_cancel_resume / test_resume_workflow_async / test_cancel_resume_txn ------
@runtree.flow
async def cr_wf(ctx):
    rid = ctx.root.id
    await ctx.run(lambda: bump("steps"), key="one")
    ev(rid + ":main").set()
    await ev(rid + ":wf").wait()
    await ctx.run(lambda: bump("steps"), key="two")
    return ctx.input


@pytest.mark.asyncio
async def test_cancel_resume(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        h = scope.exec(cr_wf, 5, id="cr-1")
        await ev("cr-1:main").wait()
        info = await runs.cancel("cr-1")
        assert info.root_id == "cr-1"
        with pytest.raises(Cancelled):
            await asyncio.wait_for(asyncio.shield(h), 5)
        assert h.status == "cancelled"
        assert C["steps"] == 1
        await wait_for(lambda: run_status(runs, "cr-1"), timeout=5)
        assert await run_status(runs, "cr-1") == "cancelled"
        ev("cr-1:wf").set()  # the resumed run should not block
        h2 = await runs.resume("cr-1", scope)
        assert await h2 == 5
        assert C["steps"] == 2
        assert await run_status(runs, "cr-1") == "completed"
        # DESIGN differs from DBOS: resuming a completed run raises RunStateError
        with pytest.raises(RunStateError):
            await runs.resume("cr-1", scope)
        assert C["steps"] == 2


# ---- test_cancel_after_final_step ---------------------------------------------------
@runtree.flow
async def final_step_wf(ctx):
    rid = ctx.root.id
    await ctx.run(lambda: bump("steps"), key="one")
    ev(rid + ":main").set()
    await ev(rid + ":wf").wait()
    return ctx.input


@pytest.mark.asyncio
async def test_cancel_after_final_step(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        h = scope.exec(final_step_wf, 5, id="cafs")
        await ev("cafs:main").wait()
        await runs.cancel("cafs")
        with pytest.raises(Cancelled):
            await asyncio.wait_for(asyncio.shield(h), 5)
        assert await run_status(runs, "cafs") == "cancelled"
        ev("cafs:wf").set()
        assert await (await runs.resume("cafs", scope)) == 5
        assert await run_status(runs, "cafs") == "completed"
        assert C["steps"] == 1


# ---- test_bulk_cancel / test_bulk_resume ----------------------------------------------
@pytest.mark.asyncio
async def test_bulk_cancel_and_resume(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        ids = [f"bulk-{i}" for i in range(3)]
        hs = []
        for i, rid in enumerate(ids):
            hs.append(scope.exec(cr_wf, i, id=rid))
            await ev(rid + ":main").wait()
        assert C["steps"] == 3
        for rid in ids:
            await runs.cancel(rid)
        for h in hs:
            with pytest.raises(Cancelled):
                await asyncio.wait_for(asyncio.shield(h), 5)
        assert C["steps"] == 3
        assert {r.root_id for r in await runs.list(status="cancelled")} == set(ids)
        for rid in ids:
            ev(rid + ":wf").set()
        resumed = [await runs.resume(rid, scope) for rid in ids]
        assert [await h for h in resumed] == [0, 1, 2]
        assert C["steps"] == 6


# ---- test_cancel_workflow_children (nested execs of one tree) ---------------------
@runtree.flow
async def grandchild(ctx):
    ev("gc:main").set()
    await ev("gc:wf").wait()
    await ctx.run(lambda: bump("noop"), key="gc-noop")


@runtree.flow
async def childf(ctx):
    await ctx.exec(grandchild, None, key="gc")


@runtree.flow
async def parentf(ctx):
    await ctx.exec(childf, None, key="c")


@pytest.mark.asyncio
async def test_cancel_workflow_children(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        h = scope.exec(parentf, None, id="tree-1")
        await ev("gc:main").wait()
        await runs.cancel("tree-1")
        with pytest.raises(Cancelled):
            await asyncio.wait_for(asyncio.shield(h), 5)
        assert "noop" not in C
        tree = await runs.get("tree-1")
        assert tree.run.status == "cancelled"
        assert {n.status for n in tree.nodes} == {"cancelled"}, [
            (n.name, n.status) for n in tree.nodes
        ]


# ---- test_resume_nonexistent_workflow / test_fork_nonexistent_workflow -------------
@pytest.mark.asyncio
async def test_resume_fork_cancel_nonexistent(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        with pytest.raises(RunNotFoundError):
            await runs.resume("missing", scope)
        with pytest.raises(RunNotFoundError):
            await runs.fork("missing", from_key="x")
        with pytest.raises(RunNotFoundError):
            await runs.cancel("missing")
        assert isinstance(RunNotFoundError("x"), KeyError)


# ---- test_delete_workflow / test_bulk_delete -> prune -----------------------------
@runtree.flow
async def simple(ctx):
    return await ctx.run(lambda: (bump("s"), ctx.input)[1], key="s")


@pytest.mark.asyncio
async def test_bulk_delete_via_prune(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        ids = [f"del-{i}" for i in range(3)]
        for i, rid in enumerate(ids):
            assert await scope.exec(simple, i, id=rid) == i
        assert C["s"] == 3
        assert await runs.prune(older_than=0) == 3
        for rid in ids:
            with pytest.raises(RunNotFoundError):
                await runs.get(rid)
        # journal went with it: a re-run runs the step again
        assert await scope.exec(simple, 0, id="del-0") == 0
        assert C["s"] == 4
        assert await runs.prune(older_than=0) == 1
        assert await runs.prune(older_than=0) == 0


# ---- test_garbage_collection --------------------------------------------------------
@runtree.flow
async def blocked_gc(ctx):
    await ctx.run(lambda: 0, key="txn")
    ev("gc-started").set()
    await ev("gc-release").wait()
    return ctx.root.id


@pytest.mark.asyncio
async def test_garbage_collection(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        h = scope.exec(blocked_gc, None, id="blocked")
        await ev("gc-started").wait()
        for i in range(10):
            assert await scope.exec(simple, i, id=f"gc-{i}") == i
        n = await runs.prune(
            older_than=0, status=("completed", "running", "failed", "cancelled", "interrupted")
        )
        assert n == 10
        remaining = await runs.list()
        assert [r.root_id for r in remaining] == ["blocked"]
        ev("gc-release").set()
        assert await h == "blocked"
        assert await runs.prune(older_than=0) == 1
        assert await runs.list() == []
        # a cutoff between two batches
        for i in range(5):
            await scope.exec(simple, i, id=f"old-{i}")
        await asyncio.sleep(1.0)
        for i in range(5):
            await scope.exec(simple, i, id=f"new-{i}")
        assert await runs.prune(older_than=0.5) == 5
        assert len(await runs.list()) == 5


# ---- test_fork_steps / test_restart_fromsteps_* / test_fork_workflow_async --------
def make_step(i):
    def step(x):
        bump(f"s{i}")
        return x + i

    step.__name__ = f"step{i}"
    return step


STEPS = [make_step(i) for i in range(1, 6)]


@runtree.flow
async def five_steps(ctx):
    total = 0
    for i, fn in enumerate(STEPS, 1):
        total += await ctx.run(fn, ctx.input, key=f"k{i}")
    return total


def counts():
    return [C.get(f"s{i}", 0) for i in range(1, 6)]


@pytest.mark.asyncio
async def test_fork_steps(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        assert await scope.exec(five_steps, 1, id="fs") == 20
        assert counts() == [1, 1, 1, 1, 1]
        fid = await runs.fork("fs", from_key="k3", new_id="fs-fork-1")
        assert fid == "fs-fork-1"
        info = (await runs.get(fid)).run
        assert info.status == "interrupted"
        assert info.input == 1 and info.flow == (await runs.get("fs")).run.flow
        assert await (await runs.resume(fid, scope)) == 20
        assert counts() == [1, 1, 2, 2, 2]
        fid2 = await runs.fork("fs", from_key="k5")
        assert fid2 != "fs"
        assert await (await runs.resume(fid2, scope)) == 20
        assert counts() == [1, 1, 2, 2, 3]
        fid3 = await runs.fork("fs", from_key="k1")
        assert await (await runs.resume(fid3, scope)) == 20
        assert counts() == [2, 2, 3, 3, 4]
        # fork of a fork
        fid4 = await runs.fork(fid3, from_key="k2")
        assert await (await runs.resume(fid4, scope)) == 20
        assert counts() == [2, 3, 4, 4, 5]
        with pytest.raises(RunStateError):
            await runs.fork("fs", from_key="nope")
        with pytest.raises(RunStateError):
            await runs.fork("fs", from_key="k1", new_id="fs-fork-1")
        # the original is untouched
        assert await run_status(runs, "fs") == "completed"


# ---- test_fork_from_failure -----------------------------------------------------------
def f_one():
    bump("one")
    return 1


def f_two():
    bump("two")
    if C["two"] == 1:
        raise Exception("step two failed")
    return 2


def f_three():
    bump("three")
    if C["three"] == 1:
        raise Exception("step three failed")
    return 3


@runtree.flow
async def three_step(ctx):
    return (
        await ctx.run(f_one, key="one")
        + await ctx.run(f_two, key="two")
        + await ctx.run(f_three, key="three")
    )


@pytest.mark.asyncio
async def test_fork_from_failure(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        with pytest.raises(Exception, match="step two failed"):
            await scope.exec(three_step, None, id="wf1")
        with pytest.raises(Exception, match="step three failed"):
            await scope.exec(three_step, None, id="wf2")
        assert await scope.exec(three_step, None, id="wf3") == 6
        assert (C["one"], C["two"], C["three"]) == (3, 3, 2)
        f1 = await runs.fork("wf1", from_key="two")
        f2 = await runs.fork("wf2", from_key="three")
        f3 = await runs.fork("wf3", from_key="three")
        for f in (f1, f2, f3):
            assert await (await runs.resume(f, scope)) == 6
        assert (C["one"], C["two"], C["three"]) == (3, 4, 5)
        # resume (not fork) of a failed run: the failed step runs again
        C.update(two=1)  # make step two fail no more
        # wf1 was failed; resume re-runs the failed step only
        assert await (await runs.resume("wf1", scope)) == 6
        assert (C["one"], C["two"], C["three"]) == (3, 2, 6)
        # fork from a key the original never recorded
        with pytest.raises(RunStateError):
            await runs.fork("wf1", from_key="nonexistent_step")


# ---- test_list_workflows_async ------------------------------------------------------
@pytest.mark.asyncio
async def test_list_workflows(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        ids = []
        for i in range(3):
            ids.append(f"lw-{i}")
            await scope.exec(simple, i, id=ids[-1])
            await asyncio.sleep(0.01)
        listed = await runs.list()
        assert [r.root_id for r in listed] == list(reversed(ids))  # newest first
        assert len(await runs.list(limit=2)) == 2
        assert len(await runs.list(flow=simple)) == 3
        assert len(await runs.list(flow=three_step)) == 0
        assert len(await runs.list(status="completed")) == 3
        assert len(await runs.list(status=["failed", "cancelled"])) == 0
        since = (await runs.get("lw-1")).run.created_at
        assert {r.root_id for r in await runs.list(since=since)} == {"lw-1", "lw-2"}


# ---- test_list_workflow_steps_async -----------------------------------------------
@pytest.mark.asyncio
async def test_list_workflow_steps(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        await scope.exec(five_steps, 1, id="steps-1")
        tree = await runs.get("steps-1")
        keyed = [n for n in tree.nodes if n.key]
        assert [n.key for n in keyed] == ["k1", "k2", "k3", "k4", "k5"]
        assert [n.name for n in keyed] == ["step1", "step2", "step3", "step4", "step5"]
        assert [n.output for n in keyed] == [2, 3, 4, 5, 6]


# ---- fork into an id that is taken by an (unrecorded) journal tree -------------------
@pytest.mark.asyncio
async def test_fork_new_id_taken_by_journal(tmp_path):
    """BREAK: StoreError 'may be corrupt' instead of RunStateError (repro_fork_taken_id.py)."""
    async with env(tmp_path, record="none") as (_store, scope, runs):
        await scope.exec(five_steps, 1, id="jz")
    async with env(tmp_path) as (_store, scope, runs):
        await scope.exec(five_steps, 1, id="jo")
        with pytest.raises(RunStateError):
            await runs.fork("jo", from_key="k3", new_id="jz")
