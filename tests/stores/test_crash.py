"""Durable journal across real processes on one SQLite file: crashes at every step
boundary, two workers on one key, a claim left by a killed worker."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

STEPS = ("s1", "s2", "s3")
CRASH = 17

# A job of three keyed steps. It logs each body run ("ran") and each record that this
# process inserted ("recorded"), and can os._exit at a chosen point around a chosen step.
JOB = r"""
import asyncio, json, os, sys
import runtree
from runtree.stores import SqliteStore

db, crash_key, point, log = sys.argv[1:5]

def note(line):
    with open(log, "a") as f:
        f.write(line + "\n")

class Store(SqliteStore):
    async def journal_record(self, tree_id, key, owner, record):
        if key == crash_key and point == "before_record":
            os._exit(17)  # the body ran; its outcome is not recorded
        stored = await super().journal_record(tree_id, key, owner, record)
        if stored is record:
            note("recorded " + key)
        if key == crash_key and point == "after_record":
            os._exit(17)
        return stored

    # A success's record, as the journal writes it (its value as JSON text).
    async def journal_record_ok(self, tree_id, key, owner, name, value, digest):
        if key == crash_key and point == "before_record":
            os._exit(17)
        stored = await super().journal_record_ok(tree_id, key, owner, name, value, digest)
        if stored is None:
            note("recorded " + key)
        if key == crash_key and point == "after_record":
            os._exit(17)
        return stored

async def main():
    store = Store(db)
    results = []
    async with runtree.create_scope(store=store) as scope:
        async with scope.create_context(id="job-1") as ctx:
            for key in ("s1", "s2", "s3"):
                if key == crash_key and point == "before_step":
                    os._exit(17)
                def body(key=key):
                    note("ran " + key)
                    if key == crash_key and point == "inside_step":
                        os._exit(17)
                    return {"step": key, "pid": os.getpid()}
                results.append((await ctx.run(body, key=key, name=key))["step"])
    await store.aclose()
    note("done " + json.dumps(results))

asyncio.run(main())
"""


def run_job(script: Path, db: Path, log: Path, crash_key: str, point: str) -> int:
    done = subprocess.run(
        [sys.executable, str(script), str(db), crash_key, point, str(log)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode not in (0, CRASH):
        pytest.fail(f"job failed ({done.returncode}):\n{done.stderr}")
    return done.returncode


@pytest.mark.parametrize("crash_key", STEPS)
@pytest.mark.parametrize("point", ["before_step", "inside_step", "before_record", "after_record"])
def test_a_crash_at_any_step_boundary_loses_no_record_and_records_none_twice(
    tmp_path: Path, crash_key: str, point: str
) -> None:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    db = tmp_path / ".runtree" / "runtree.db"
    log = tmp_path / "log.txt"

    assert run_job(script, db, log, crash_key, point) == CRASH
    first = log.read_text().splitlines() if log.exists() else []
    recorded_before = {line.split()[1] for line in first if line.startswith("recorded")}
    assert run_job(script, db, log, "-", "none") == 0

    lines = log.read_text().splitlines()
    ran = Counter(line.split()[1] for line in lines if line.startswith("ran"))
    recorded = Counter(line.split()[1] for line in lines if line.startswith("recorded"))
    assert lines[-1] == 'done ["s1", "s2", "s3"]'
    assert recorded == Counter(STEPS)  # every step recorded, none twice
    for key in recorded_before:
        assert ran[key] == 1, f"{key} was recorded before the crash but ran again"
    # Only the step whose body ran without its record being kept runs twice.
    twice = {"inside_step": {crash_key}, "before_record": {crash_key}}.get(point, set())
    assert {k for k, n in ran.items() if n == 2} == twice
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT key, count(*) FROM runtree_journal WHERE tree_id = 'job-1' GROUP BY key"
    ).fetchall()
    conn.close()
    assert sorted(rows) == [("s1", 1), ("s2", 1), ("s3", 1)]


# A worker that runs keyed step "k" of tree "shared": the body logs, then waits until the
# file `release` exists. With `--log-waits`, runtree's debug log shows when it parks.
WORKER = r"""
import asyncio, logging, os, sys, time
import runtree
from runtree.stores import SqliteStore

db, name, release, log = sys.argv[1:5]

def note(line):
    with open(log, "a") as f:
        f.write(line + "\n")

class Waits(logging.Handler):
    def emit(self, record):
        if "waits for owner" in record.getMessage():
            note(name + " waits")

logging.getLogger("runtree").addHandler(Waits())
logging.getLogger("runtree").setLevel(logging.DEBUG)

async def body():
    note(name + " ran")
    while not os.path.exists(release):
        await asyncio.sleep(0.01)
    return {"by": name}

async def main():
    store = SqliteStore(db, lease=30)
    async with runtree.create_scope(store=store) as scope:
        async with scope.create_context(id="shared") as ctx:
            note(name + " started")
            value = await ctx.run(body, key="k", name="body")
    await store.aclose()
    note(name + " got " + value["by"])

asyncio.run(main())
"""


def wait_for_line(log: Path, line: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and line in log.read_text().splitlines():
            return
        time.sleep(0.01)
    pytest.fail(f"{line!r} never appeared in {log}: {log.read_text() if log.exists() else ''}")


def start_worker(
    script: Path, db: Path, name: str, release: Path, log: Path
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), str(db), name, str(release), str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> None:
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_two_workers_on_one_key_run_the_body_once(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    db, release, log = tmp_path / "rt.db", tmp_path / "release", tmp_path / "log.txt"
    a = start_worker(script, db, "A", release, log)
    try:
        wait_for_line(log, "A ran")
        b = start_worker(script, db, "B", release, log)
        try:
            wait_for_line(log, "B waits")  # B reached the key and parked on A's claim
            release.touch()
            finish(a)
            finish(b)
        finally:
            b.kill()
    finally:
        a.kill()
    lines = log.read_text().splitlines()
    assert lines.count("A ran") == 1
    assert "B ran" not in lines
    assert "A got A" in lines and "B got A" in lines


def test_a_claim_left_by_a_killed_worker_is_taken_over(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    db, release, log = tmp_path / "rt.db", tmp_path / "release", tmp_path / "log.txt"
    a = start_worker(script, db, "A", release, log)
    try:
        wait_for_line(log, "A ran")
    finally:
        os.kill(a.pid, signal.SIGKILL)
        a.communicate(timeout=30)  # reap it and close its pipes
    release.touch()
    # The lease is 30 s, but the holder's process is gone: B takes over at once.
    started = time.monotonic()
    b = start_worker(script, db, "B", release, log)
    finish(b)
    assert time.monotonic() - started < 20
    lines = log.read_text().splitlines()
    assert "B ran" in lines  # A never recorded: B runs the step
    assert "B got B" in lines
    assert json.dumps(lines)  # the log is intact
