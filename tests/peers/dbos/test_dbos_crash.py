"""Crash / multi-process translations: test_dbos.py recovery tests, test_singleexec.py,
test_workflow_management.py cancel across processes, test_recovery_thread (worker)."""

import json
import os
import signal
import subprocess

import dbos_flows
import pytest
from dbos_flows import count
from dbos_support import HERE, RUNTREE, env, kill9, run_status, spawn, wait_file, wait_for

from runtree.errors import RunStateError


@pytest.fixture(autouse=True)
def _test_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DBOS_TEST_DIR", str(tmp_path))
    monkeypatch.delenv("DBOS_TEST_BLOCK", raising=False)


# ---- test_recovery_workflow / test_recovery_workflow_step / test_workflow_recovery_async
@pytest.mark.asyncio
async def test_recovery_workflow(tmp_path):
    p = spawn(tmp_path, "rec_wf", {"a": "bob", "b": "1"}, "rec-1", block="after-s1")
    wait_file(tmp_path, "ready-after-s1")
    kill9(p)
    async with env(tmp_path) as (_store, scope, runs):
        info = (await runs.get("rec-1")).run
        assert info.status == "interrupted"
        assert [r.root_id for r in await runs.list(status="interrupted")] == ["rec-1"]
        hs = await scope.recover([dbos_flows.rec_wf])
        assert [h.id for h in hs] == ["rec-1"]
        assert await hs[0] == "bob1"
        assert count(str(tmp_path), "wf-rec-1") == 2
        assert count(str(tmp_path), "s1-rec-1") == 1
        assert count(str(tmp_path), "s2-rec-1") == 1
        tree = await runs.get("rec-1")
        assert tree.run.status == "completed"
        [s1] = [n for n in tree.nodes if n.key == "s1"]
        assert s1.replayed
        assert await scope.recover([dbos_flows.rec_wf]) == []  # nothing left


@pytest.mark.asyncio
async def test_recover_ignores_other_flows(tmp_path):
    p = spawn(tmp_path, "rec_wf", {"a": "x", "b": "y"}, "rec-2", block="after-s1")
    wait_file(tmp_path, "ready-after-s1")
    kill9(p)
    async with env(tmp_path) as (_store, scope, runs):
        assert await scope.recover([dbos_flows.long_wf]) == []
        assert await run_status(runs, "rec-2") == "interrupted"
        r = await runs.resume("rec-2", scope)  # resume of an interrupted run
        assert await r == "xy"
        assert count(str(tmp_path), "s1-rec-2") == 1


# ---- crash inside a step: at least once --------------------------------------------
@pytest.mark.asyncio
async def test_crash_inside_step(tmp_path):
    p = spawn(tmp_path, "in_step_wf", None, "in-1", block="in-step")
    wait_file(tmp_path, "ready-in-step")
    kill9(p)
    async with env(tmp_path) as (_store, scope, _runs):
        [h] = await scope.recover([dbos_flows.in_step_wf])
        assert await h == "done"
        assert count(str(tmp_path), "in-in-1") == 2


# ---- test_recovery_during_retries (crash in the third attempt) ----------------------
@pytest.mark.asyncio
async def test_crash_during_retries(tmp_path):
    p = spawn(tmp_path, "retry_crash_wf", None, "rc-1", block="retry")
    wait_file(tmp_path, "ready-retry")
    kill9(p)
    async with env(tmp_path) as (_store, scope, _runs):
        [h] = await scope.recover([dbos_flows.retry_crash_wf])
        assert await h == "ok"
        assert count(str(tmp_path), "rc-attempts") == 4


# ---- test_duplicate_recovery_does_not_rerun: two recoverers, each run resumed once --
@pytest.mark.asyncio
async def test_concurrent_recoverers(tmp_path):
    ids = [f"dup-{i}" for i in range(6)]
    p = spawn(tmp_path, "rec_wf", {"a": "a", "b": "b"}, ",".join(ids), block="after-s1")
    wait_file(tmp_path, "ready-after-s1", n=6)
    kill9(p)
    r1 = spawn(tmp_path, None, None, None, script="dbos_recoverer.py")
    r2 = spawn(tmp_path, None, None, None, script="dbos_recoverer.py")
    o1, e1 = r1.communicate(timeout=60)
    o2, e2 = r2.communicate(timeout=60)
    assert r1.returncode == 0 and r2.returncode == 0, (e1, e2)
    got1, got2 = json.loads(o1), json.loads(o2)
    assert not set(got1) & set(got2)
    assert set(got1) | set(got2) == set(ids)
    assert all(v == "ab" for v in {**got1, **got2}.values())
    for rid in ids:
        assert count(str(tmp_path), f"wf-{rid}") == 2
        assert count(str(tmp_path), f"s1-{rid}") == 1
        assert count(str(tmp_path), f"s2-{rid}") == 1


# ---- test_singleexec.test_simple_workflow across processes -----------------------
@pytest.mark.asyncio
async def test_singleexec_two_processes(tmp_path):
    a = spawn(tmp_path, "slow_step_wf", None, "single")
    b = spawn(tmp_path, "slow_step_wf", None, "single")
    oa, ea = a.communicate(timeout=60)
    ob, eb = b.communicate(timeout=60)
    assert a.returncode == 0 and b.returncode == 0, (ea, eb)
    ra, rb = json.loads(oa)[0], json.loads(ob)[0]
    assert ra == rb  # both return the one recorded outcome
    assert count(str(tmp_path), "enter-single") == 1
    assert count(str(tmp_path), "after-single") == 1
    async with env(tmp_path) as (_store, _scope, runs):
        assert await run_status(runs, "single") == "completed"


# ---- test_cancel_resume across processes ------------------------------------------
@pytest.mark.asyncio
async def test_cancel_other_process(tmp_path):
    p = spawn(tmp_path, "long_wf", 5, "lc", block="long")
    wait_file(tmp_path, "ready-long-lc")
    async with env(tmp_path) as (_store, scope, runs):
        info = await runs.cancel("lc", reason="stop")
        assert info.cancel_requested or info.status == "cancelled"
        out, err = p.communicate(timeout=20)
        assert "Cancelled" in out, (out, err)
        assert await run_status(runs, "lc") == "cancelled"
        assert count(str(tmp_path), "two-lc") == 0
        r = await runs.resume("lc", scope)
        assert await r == 5
        assert count(str(tmp_path), "one-lc") == 1
        assert count(str(tmp_path), "two-lc") == 1


# ---- cancel of a run whose owner is dead: cancelled at once -------------------------
@pytest.mark.asyncio
async def test_cancel_dead_owner(tmp_path):
    p = spawn(tmp_path, "long_wf", 7, "dc", block="long")
    wait_file(tmp_path, "ready-long-dc")
    kill9(p)
    async with env(tmp_path) as (_store, scope, runs):
        info = await runs.cancel("dc")
        assert info.status == "cancelled"
        assert await scope.recover([dbos_flows.long_wf]) == []
        r = await runs.resume("dc", scope)
        assert await r == 7
        assert count(str(tmp_path), "one-dc") == 1


# ---- resume refuses a run a live process runs -----------------------------------------
@pytest.mark.asyncio
async def test_resume_live_run_refused(tmp_path):
    p = spawn(tmp_path, "long_wf", 1, "live", block="long")
    try:
        wait_file(tmp_path, "ready-long-live")
        async with env(tmp_path) as (_store, scope, runs):
            with pytest.raises(RunStateError):
                await runs.resume("live", scope)
            assert await scope.recover([dbos_flows.long_wf]) == []
            assert await run_status(runs, "live") == "running"
            # never prune a running run
            assert await runs.prune(older_than=0, status=("running", "completed")) == 0
    finally:
        kill9(p)
    async with env(tmp_path) as (_store, scope, runs):
        assert await run_status(runs, "live") == "interrupted"
        assert await runs.prune(older_than=0, status="interrupted") == 1


# ---- test_recovery_thread -> runtree worker ---------------------------------------
@pytest.mark.asyncio
async def test_worker_recovers(tmp_path):
    p = spawn(tmp_path, "rec_wf", {"a": "w", "b": "k"}, "wk-1", block="after-s1")
    wait_file(tmp_path, "ready-after-s1")
    kill9(p)
    e = dict(os.environ, DBOS_TEST_DIR=str(tmp_path), PYTHONPATH=HERE)
    e.pop("DBOS_TEST_BLOCK", None)
    w = subprocess.Popen(
        [
            RUNTREE,
            "worker",
            "dbos_flows",
            "--store",
            f"sqlite:///{tmp_path}/rt.db",
            "--poll",
            "0.2",
        ],
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HERE,
    )
    try:
        async with env(tmp_path) as (_store, _scope, runs):
            await wait_for(
                lambda: run_status(runs, "wk-1") if False else _done(runs, "wk-1"), timeout=20
            )
            assert (await runs.get("wk-1")).run.output == "wk"
    finally:
        w.send_signal(signal.SIGTERM)
        _out, err = w.communicate(timeout=30)
    assert w.returncode == 0, err
    assert count(str(tmp_path), "s1-wk-1") == 1


async def _done(runs, rid):
    return (await runs.get(rid)).run.status == "completed"
