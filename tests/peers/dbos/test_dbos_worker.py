"""test_recovery_thread / destroy semantics -> runtree worker: grace, cancel, exit 0."""

import os
import signal
import subprocess
import time

import pytest
from dbos_flows import count
from dbos_support import HERE, RUNTREE, env, kill9, run_status, spawn, wait_file, wait_for


@pytest.fixture(autouse=True)
def _test_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DBOS_TEST_DIR", str(tmp_path))
    monkeypatch.delenv("DBOS_TEST_BLOCK", raising=False)


def worker(tmp_path, block=None, grace="0.5"):
    e = dict(os.environ, DBOS_TEST_DIR=str(tmp_path), PYTHONPATH=HERE)
    e.pop("DBOS_TEST_BLOCK", None)
    if block:
        e["DBOS_TEST_BLOCK"] = block
    return subprocess.Popen(
        [
            RUNTREE,
            "worker",
            "dbos_flows",
            "--store",
            f"sqlite:///{tmp_path}/rt.db",
            "--poll",
            "0.2",
            "--grace",
            grace,
        ],
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HERE,
    )


@pytest.mark.asyncio
async def test_worker_grace_then_cancel(tmp_path):
    p = spawn(tmp_path, "long_wf", 9, "wg", block="long")
    wait_file(tmp_path, "ready-long-wg")
    kill9(p)
    w = worker(tmp_path, block="long")
    try:
        wait_file(tmp_path, "ready-long-wg", n=2)  # the worker resumed it and blocks
        t0 = time.monotonic()
        w.send_signal(signal.SIGTERM)
        _out, err = w.communicate(timeout=30)
        assert w.returncode == 0, err
        assert time.monotonic() - t0 < 10
    finally:
        if w.poll() is None:
            kill9(w)
    async with env(tmp_path) as (_store, scope, runs):
        assert await run_status(runs, "wg") == "cancelled"
        assert await (await runs.resume("wg", scope)) == 9
        assert count(str(tmp_path), "one-wg") == 1


@pytest.mark.asyncio
async def test_two_workers_one_run(tmp_path):
    ids = [f"tw-{i}" for i in range(4)]
    p = spawn(tmp_path, "rec_wf", {"a": "a", "b": "b"}, ",".join(ids), block="after-s1")
    wait_file(tmp_path, "ready-after-s1", n=4)
    kill9(p)
    w1, w2 = worker(tmp_path), worker(tmp_path)
    try:
        async with env(tmp_path) as (_store, _scope, runs):

            async def all_done():
                return all([(await runs.get(i)).run.status == "completed" for i in ids])

            await wait_for(all_done, timeout=30)
    finally:
        for w in (w1, w2):
            w.send_signal(signal.SIGTERM)
        for w in (w1, w2):
            w.communicate(timeout=30)
    assert w1.returncode == 0 and w2.returncode == 0
    for i in ids:
        assert count(str(tmp_path), f"wf-{i}") == 2
        assert count(str(tmp_path), f"s2-{i}") == 1
