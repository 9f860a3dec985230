"""Helpers of the DBOS-derived tests: a store + scope + Runs on a temporary SQLite file,
polling, and child processes (``dbos_child.py``, ``dbos_recoverer.py``) that a test kills
with SIGKILL. ``DBOS_TEST_DIR`` is the folder the flows (``dbos_flows``) note their steps
in; ``DBOS_TEST_BLOCK`` makes a flow wait at a named point (see ``dbos_flows``)."""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dbos_flows import count

import runtree
from runtree.runs import Runs
from runtree.stores import SqliteStore

PY = sys.executable
HERE = os.path.dirname(os.path.abspath(__file__))
RUNTREE = str(Path(sys.executable).parent / "runtree")


@contextlib.asynccontextmanager
async def env(tmp_path, name="rt.db", lease=0.6, **scope_kw):
    path = str(tmp_path / name)
    store = SqliteStore(path, lease=lease)
    async with store, runtree.create_scope(store=store, **scope_kw) as scope:
        yield store, scope, Runs(store)


async def wait_for(pred, timeout=10.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        r = pred()
        if asyncio.iscoroutine(r):
            r = await r
        if r:
            return r
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


async def run_status(runs, rid):
    return (await runs.get(rid)).run.status


def spawn(tmp_path, flow, inp, rid, block=None, lease=0.6, script="dbos_child.py"):
    e = dict(os.environ, DBOS_TEST_DIR=str(tmp_path), PYTHONPATH=HERE)
    if block:
        e["DBOS_TEST_BLOCK"] = block
    args = [PY, os.path.join(HERE, script), str(tmp_path / "rt.db")]
    if script == "dbos_child.py":
        args += [flow, json.dumps(inp), rid, str(lease)]
    return subprocess.Popen(args, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_file(tmp_path, name, n=1, timeout=20):
    deadline = time.monotonic() + timeout
    while count(str(tmp_path), name) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} never reached {n}")
        time.sleep(0.02)


def kill9(p):
    p.send_signal(signal.SIGKILL)
    p.communicate()  # reaps it and closes its pipes
