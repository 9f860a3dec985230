"""DBOS `dbos workflow list/get/cancel/resume/fork` analogues via `runtree runs ...`."""

import json
import os
import subprocess

import pytest
from dbos_flows import count
from dbos_support import HERE, RUNTREE, env, kill9, run_status, spawn, wait_file


@pytest.fixture(autouse=True)
def _test_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DBOS_TEST_DIR", str(tmp_path))
    monkeypatch.delenv("DBOS_TEST_BLOCK", raising=False)


def cli(tmp_path, *args, ok=True):
    e = dict(
        os.environ,
        DBOS_TEST_DIR=str(tmp_path),
        PYTHONPATH=HERE,
        RUNTREE_STORE=f"sqlite:///{tmp_path}/rt.db",
    )
    e.pop("DBOS_TEST_BLOCK", None)
    r = subprocess.run(
        [RUNTREE, *args], env=e, capture_output=True, text=True, cwd=HERE, timeout=60
    )
    if ok:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


@pytest.mark.asyncio
async def test_cli_list_show_resume_fork_prune(tmp_path):
    p = spawn(tmp_path, "rec_wf", {"a": "c", "b": "l"}, "cli-1", block="after-s1")
    wait_file(tmp_path, "ready-after-s1")
    kill9(p)
    q = spawn(tmp_path, "rec_wf", {"a": "d", "b": "e"}, "cli-2")
    q.communicate(timeout=30)

    runs_ = json.loads(cli(tmp_path, "runs", "list", "--json").stdout)
    by = {r["root_id"]: r for r in runs_}
    assert by["cli-1"]["status"] == "interrupted"
    assert by["cli-2"]["status"] == "completed" and by["cli-2"]["output"] == "de"
    only = json.loads(cli(tmp_path, "runs", "list", "--status", "interrupted", "--json").stdout)
    assert [r["root_id"] for r in only] == ["cli-1"]
    running = json.loads(cli(tmp_path, "runs", "list", "--status", "running", "--json").stdout)
    assert running == []

    show = json.loads(cli(tmp_path, "runs", "show", "cli-1", "--json").stdout)
    assert show["run"]["root_id"] == "cli-1"

    res = json.loads(
        cli(tmp_path, "runs", "resume", "cli-1", "--module", "dbos_flows", "--json").stdout
    )
    assert res["ok"] is True and res["result"] == "cl"
    assert count(str(tmp_path), "s1-cli-1") == 1

    r = cli(tmp_path, "runs", "resume", "cli-1", "--module", "dbos_flows", ok=False)
    assert r.returncode == 1 and "completed" in r.stderr

    fk = json.loads(
        cli(tmp_path, "runs", "fork", "cli-2", "--from", "s2", "--id", "cli-2b", "--json").stdout
    )
    assert fk["root_id"] == "cli-2b" and fk["forked_from"] == "cli-2" and fk["from_key"] == "s2"
    res = json.loads(
        cli(tmp_path, "runs", "resume", "cli-2b", "--module", "dbos_flows", "--json").stdout
    )
    assert res["ok"] and res["result"] == "de"
    assert count(str(tmp_path), "s1-cli-2") == 1 and count(str(tmp_path), "s2-cli-2") == 1
    assert count(str(tmp_path), "s2-cli-2b") == 1

    r = cli(tmp_path, "runs", "show", "nope", ok=False)
    assert r.returncode == 1 and "nope" in r.stderr

    pr = json.loads(cli(tmp_path, "runs", "prune", "--older-than", "0s", "--json").stdout)
    assert pr == {"pruned": 3}
    assert json.loads(cli(tmp_path, "runs", "list", "--json").stdout) == []


@pytest.mark.asyncio
async def test_cli_cancel_live(tmp_path):
    p = spawn(tmp_path, "long_wf", 4, "cli-c", block="long")
    wait_file(tmp_path, "ready-long-cli-c")
    r = json.loads(cli(tmp_path, "runs", "cancel", "cli-c", "--reason", "ops", "--json").stdout)
    assert r["root_id"] == "cli-c"
    out, err = p.communicate(timeout=20)
    assert "Cancelled" in out, (out, err)
    async with env(tmp_path) as (_store, _scope, runs):
        assert await run_status(runs, "cli-c") == "cancelled"
