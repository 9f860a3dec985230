"""A recorded durable job for the crash trials (``test_crash_recording``), and the fork
server that starts it.

Starting a Python process that imports runtree costs about half a second of CPU here, and
a trial needs a process to kill; so one server process imports everything once and forks
a child per trial (``serve``). A child runs :data:`job` on a store whose journal and
run-tree writes are traced into the trial's log, one JSON object a line:

- ``{"ev": "ran", "key": K}``: a step body ran (the child's, or the resume's);
- ``{"ev": "recorded", "key": K, "t": T}``: the journal record of ``K`` committed;
- ``{"ev": "flushed", "t": T, "nodes": [[key, status], ...]}``: a run-tree write that
  began at ``T`` (when the recorder took its buffer) committed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import runtree
from runtree.runs import Runs
from runtree.stores import PostgresStore, SqliteStore, Store


def note(log: str, **event: object) -> None:
    line = json.dumps(event) + "\n"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())  # one write: a kill never leaves half a line
    finally:
        os.close(fd)


def _keyed(nodes: Sequence[Sequence[Any]]) -> list[list[object]]:
    """``[key, status]`` of the keyed nodes among buffered rows, whatever their shape: a
    full row ``(root_id, node_id, seq, parent_id, name, kind, key, attempt, status, ...)``,
    a completed flow's short row ``(root_id, text, started, completed)`` or a run's short
    rows ``(root_id, texts, times)`` (see ``runs_sql._chunks``); a short row's text is
    ``[id, seq, parent, name, input, output, key, ...]``."""
    out: list[list[object]] = []
    for row in nodes:
        if len(row) > 4:
            if row[6] is not None:
                out.append([row[6], row[8]])
            continue
        for text in row[1] if len(row) == 3 else [row[1]]:
            short = json.loads(text)
            if len(short) > 6 and short[6] is not None:
                out.append([short[6], "completed"])
    return out


def _traced(base: type[Any], log: str) -> type[Any]:
    class Traced(base):  # type: ignore[misc]
        async def journal_record(
            self, tree_id: str, key: str, owner: str, record: dict[str, Any]
        ) -> dict[str, Any]:
            stored: dict[str, Any] = await super().journal_record(tree_id, key, owner, record)
            if stored is record:
                note(log, ev="recorded", key=key, t=time.time())
            return stored

        # A success's record, as the journal writes it (its value as JSON text).
        async def journal_record_ok(
            self, tree_id: str, key: str, owner: str, name: str, value: str, digest: str | None
        ) -> dict[str, Any] | None:
            stored: dict[str, Any] | None = await super().journal_record_ok(
                tree_id, key, owner, name, value, digest
            )
            if stored is None:
                note(log, ev="recorded", key=key, t=time.time())
            return stored

        async def runs_write(
            self,
            nodes: Sequence[Sequence[object]],
            finished: Sequence[Sequence[object]] = (),
            beat: bool = False,
        ) -> list[tuple[str, str]]:
            began = time.time()
            cancels: list[tuple[str, str]] = await super().runs_write(nodes, finished, beat)
            note(log, ev="flushed", t=began, nodes=_keyed(nodes), final=bool(finished))
            return cancels

    return Traced


def open_store(spec: dict[str, Any], log: str) -> Store:
    if spec["kind"] == "sqlite":
        store: Store = _traced(SqliteStore, log)(spec["path"])
    else:
        store = _traced(PostgresStore, log)(spec["dsn"], schema=spec["schema"])
    return store


@runtree.flow
async def step(ctx: runtree.ExecutionContext) -> dict[str, object]:
    cfg = ctx.input
    assert isinstance(cfg, dict)
    note(cfg["log"], ev="ran", key=cfg["key"])
    await asyncio.sleep(cfg["pause"])
    return {"key": cfg["key"], "by": os.getpid()}


async def fn_step(key: str, log: str, pause: float) -> dict[str, object]:
    note(log, ev="ran", key=key)
    await asyncio.sleep(pause)
    return {"key": key, "by": os.getpid()}


@runtree.flow
async def tick(ctx: runtree.ExecutionContext) -> int:
    return 1  # unkeyed: a node without a journal record


@runtree.flow
async def job(ctx: runtree.ExecutionContext) -> list[object]:
    """``steps`` rounds of keyed steps of every node kind: a flow, a function, two flows
    in parallel, a flow in a nested boundary; an unkeyed flow after each."""
    cfg = ctx.input
    assert isinstance(cfg, dict)
    log, pause = cfg["log"], cfg["pause"]
    out: list[object] = []

    def arg(key: str) -> dict[str, object]:
        return {"key": key, "log": log, "pause": pause}

    for i in range(cfg["steps"]):
        key = f"s{i:02d}"
        kind = i % 4
        if kind == 0:
            out.append((await ctx.exec(step, arg(key), key=key))["key"])
        elif kind == 1:
            out.append((await ctx.run(fn_step, key, log, pause, key=key, name="fn_step"))["key"])
        elif kind == 2:
            a, b = await ctx.parallel(
                ctx.exec(step, arg(key + "a"), key=key + "a"),
                ctx.exec(step, arg(key + "b"), key=key + "b"),
            )
            out.append([a["key"], b["key"]])
        else:
            async with ctx.scope.create_context(parent=ctx, name="tx") as inner:
                out.append((await inner.exec(step, arg(key), key=key))["key"])
        await ctx.exec(tick)
    return out


def keys(steps: int) -> list[str]:
    """Every journal key of a job of ``steps`` rounds."""
    out: list[str] = []
    for i in range(steps):
        key = f"s{i:02d}"
        out += [key + "a", key + "b"] if i % 4 == 2 else [key]
    return out


def expected(steps: int) -> list[object]:
    out: list[object] = []
    for i in range(steps):
        key = f"s{i:02d}"
        out.append([key + "a", key + "b"] if i % 4 == 2 else key)
    return out


async def run_trial(trial: dict[str, Any]) -> None:
    log = trial["log"]
    cfg = {"log": log, "steps": trial["steps"], "pause": trial["pause"]}
    async with open_store(trial["store"], log) as store, runtree.create_scope(store=store) as scope:
        _say(f"begin {trial['n']}")
        await scope.exec(job, cfg, id=trial["root_id"])
    note(log, ev="done", t=time.time())


async def resume_trial(trial: dict[str, Any]) -> None:
    """Resume the trial's run (it was killed); note the result."""
    log = trial["log"]
    async with open_store(trial["store"], log) as store, runtree.create_scope(store=store) as scope:
        execution = await Runs(store).resume(trial["root_id"], scope, flows=[job])
        result = await execution
    note(log, ev="resumed", result=result)


def _child(trial: dict[str, Any]) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.dup2(os.open(trial["log"] + ".err", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), 2)
    try:
        asyncio.run(resume_trial(trial) if trial.get("resume") else run_trial(trial))
    except BaseException:
        import traceback

        traceback.print_exc()
        os._exit(3)
    os._exit(0)


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # one write: safe from the SIGCHLD handler too


def _reap(signum: int, frame: object) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _say(f"exit {pid} {status}")


def serve() -> None:
    """Read trials (JSON, one a line) on stdin; fork a child for each and answer
    ``pid TRIAL PID``; a child says ``begin TRIAL`` when its run starts; report each
    child's end as ``exit PID STATUS`` (after reaping
    it: a killed run's pid is gone when the test looks)."""
    try:  # what a store imports when it opens: once here, not in every child
        import psycopg  # noqa: F401
    except ImportError:
        pass
    import runtree.stores._postgres
    import runtree.stores._sqlite  # noqa: F401

    signal.signal(signal.SIGCHLD, _reap)
    _say("ready")
    for line in sys.stdin:
        trial = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(trial)
        _say(f"pid {trial['n']} {pid}")
