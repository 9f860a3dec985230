"""More crash translations: a crash inside a gather, a direct re-run takes a dead claim over
at once (no lease wait), prune by status."""

import time
from datetime import timedelta

import dbos_flows
import pytest
from dbos_flows import count
from dbos_support import env, kill9, run_status, spawn, wait_file


@pytest.fixture(autouse=True)
def _test_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DBOS_TEST_DIR", str(tmp_path))
    monkeypatch.delenv("DBOS_TEST_BLOCK", raising=False)


@pytest.mark.asyncio
async def test_crash_inside_gather(tmp_path):
    p = spawn(tmp_path, "parallel_crash_wf", None, "pc", block="slow-branch")
    wait_file(tmp_path, "ready-slow-branch")
    time.sleep(0.2)
    kill9(p)
    async with env(tmp_path) as (_store, scope, _runs):
        [h] = await scope.recover([dbos_flows.parallel_crash_wf])
        assert await h == ["f", "s"]
        assert count(str(tmp_path), "fast-pc") == 1
        assert count(str(tmp_path), "slow-pc") == 2


@pytest.mark.asyncio
async def test_dead_claim_taken_over_at_once(tmp_path):
    p = spawn(tmp_path, "in_step_wf", None, "dead", block="in-step", lease=30.0)
    wait_file(tmp_path, "ready-in-step")
    kill9(p)
    async with env(tmp_path, lease=30.0) as (_store, scope, runs):
        t0 = time.monotonic()
        assert await scope.exec(dbos_flows.in_step_wf, None, id="dead") == "done"
        assert time.monotonic() - t0 < 5
        assert await run_status(runs, "dead") == "completed"


@pytest.mark.asyncio
async def test_prune_by_status(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        await scope.exec(dbos_flows.quick_ok, None, id="ok1")
        with pytest.raises(RuntimeError):
            await scope.exec(dbos_flows.quick_fail, None, id="bad1")
        assert await runs.prune(older_than=timedelta(hours=1)) == 0
        assert await runs.prune(older_than=0, status="failed") == 1
        assert [r.root_id for r in await runs.list()] == ["ok1"]
        with pytest.raises(ValueError):
            await runs.prune(older_than=-1)
        assert await runs.prune(older_than=timedelta(0)) == 1
