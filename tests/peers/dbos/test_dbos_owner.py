"""test_workflow_outcome_is_owned_by_the_pending_row: only the run's owner writes its outcome."""

import pytest
from dbos_support import env, kill9, spawn, wait_file


@pytest.fixture(autouse=True)
def _test_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DBOS_TEST_DIR", str(tmp_path))
    monkeypatch.delenv("DBOS_TEST_BLOCK", raising=False)


@pytest.mark.parametrize("intruder", ["quick_fail", "quick_ok"])
@pytest.mark.asyncio
async def test_outcome_owned_by_live_owner(tmp_path, intruder):
    owner = spawn(tmp_path, "long_wf", 5, "own-1", block="long")
    try:
        wait_file(tmp_path, "ready-long-own-1")
        async with env(tmp_path) as (_store, _scope, runs):
            before = (await runs.get("own-1")).run
            # another process starts a root under the same id
            p = spawn(tmp_path, intruder, None, "own-1")
            _out, err = p.communicate(timeout=30)
            assert p.returncode == 0, err
            after = await runs.get("own-1")
            assert after.run.status == "running", after.run
            assert after.run.owner == before.owner
            assert after.run.flow == before.flow
            assert after.run.error is None and after.run.output is None
            assert {n.name for n in after.nodes} <= {"long_wf", "one", "<lambda>", "two"}, [
                n.name for n in after.nodes
            ]
    finally:
        kill9(owner)
