"""A brainstorm → implement → test chain on a real SQLite file: each command with a fresh
store object, each in its own process, a command killed midway, concurrent writers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runtree.sessions import Sessions
from runtree.stores import SqliteStore

# The chain's flows; a worker process and the in-process test both run this source.
FLOWS = r"""
import os
import runtree
from runtree.sessions import FileContextProvider, current_session

LOG = os.environ["CHAIN_LOG"]
provider = FileContextProvider(os.environ["CHAIN_CONTEXT"])

def note(line):
    with open(LOG, "a") as f:
        f.write(line + "\n")

def ideas_step():
    note("ran ideas")
    return ["add", "list"]

@runtree.flow
async def brainstorm(ctx):
    session = current_session()
    vision = await session.load_context("product", "vision", provider)
    ideas = await ctx.run(ideas_step, key="ideas", name="ideas")
    await session.set_shared_data("ideas", ideas)
    return {"ideas": len(ideas), "vision": vision}

@runtree.flow
async def implement(ctx):
    session = current_session()
    await session.load_context("product", "vision", provider)
    files = []
    for idea in await session.get_shared_data("ideas"):
        def code(idea=idea):
            note("ran code " + idea)
            if os.environ.get("CHAIN_CRASH") == idea:
                os._exit(17)
            return idea + ".py"
        files.append(await ctx.run(code, key="code:" + idea, name="code"))
    await session.set_shared_data("files", files)
    return {"files": files}

@runtree.flow
async def test(ctx):
    session = current_session()
    previous = await session.get_previous_command("implement")
    report = {f: "passed" for f in await session.get_shared_data("files")}
    await session.set_shared_data("report", report)
    return {"after": previous.command, "passed": len(report)}

FLOWS = {"brainstorm": brainstorm, "implement": implement, "test": test}
"""

WORKER = r"""
import asyncio, json, sys
from runtree.sessions import Sessions
from runtree.stores import SqliteStore

db, session_id, command = sys.argv[1:4]
namespace = {}
exec(open(sys.argv[4]).read(), namespace)

async def main():
    async with SqliteStore(db) as store:
        session = await Sessions(store).get(session_id)
        result = await session.exec(namespace["FLOWS"][command], None, command=command)
    print(json.dumps(result))

asyncio.run(main())
"""


@pytest.fixture
def chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    context = tmp_path / "context"
    (context / "product").mkdir(parents=True)
    (context / "product" / "vision.md").write_text("# A task tracker\n")
    paths = {
        "db": tmp_path / ".runtree" / "runtree.db",
        "log": tmp_path / "log.txt",
        "flows": tmp_path / "flows.py",
        "worker": tmp_path / "worker.py",
        "context": context,
    }
    paths["flows"].write_text(FLOWS)
    paths["worker"].write_text(WORKER)
    monkeypatch.setenv("CHAIN_LOG", str(paths["log"]))
    monkeypatch.setenv("CHAIN_CONTEXT", str(context))
    return paths


def ran(log: Path) -> list[str]:
    return [line[4:] for line in log.read_text().splitlines() if line.startswith("ran ")]


async def new_session(db: Path) -> str:
    async with SqliteStore(db) as store:
        return (await Sessions(store).create("tracker", "python")).session_id


async def check_chain(db: Path, session_id: str) -> None:
    async with SqliteStore(db) as store:
        session = await Sessions(store).get(session_id)
    assert [(c.command, c.status) for c in session.command_history] == [
        ("brainstorm", "success"),
        ("implement", "success"),
        ("test", "success"),
    ]
    brainstorm, implement, test = session.command_history
    assert brainstorm.outputs == {"result": {"ideas": 2, "vision": "# A task tracker\n"}}
    assert implement.outputs == {"result": {"files": ["add.py", "list.py"]}}
    assert test.outputs == {"result": {"after": "implement", "passed": 2}}
    assert brainstorm.context_loaded == implement.context_loaded == ["product:vision"]
    assert session.stats == {"context_misses": 1, "context_hits": 1}
    assert session.loaded_context == {"product:vision": "# A task tracker\n"}
    assert session.shared_data == {
        "ideas": ["add", "list"],
        "files": ["add.py", "list.py"],
        "report": {"add.py": "passed", "list.py": "passed"},
    }


async def test_each_command_with_a_fresh_store_object(chain: dict[str, Path]) -> None:
    namespace: dict[str, Any] = {}
    exec(chain["flows"].read_text(), namespace)
    session_id = await new_session(chain["db"])
    for command in ("brainstorm", "implement", "test"):
        async with SqliteStore(chain["db"]) as store:
            session = await Sessions(store).get(session_id)
            await session.exec(namespace["FLOWS"][command], None, command=command)
    await check_chain(chain["db"], session_id)
    assert ran(chain["log"]) == ["ideas", "code add", "code list"]


def run_command(chain: dict[str, Path], session_id: str, command: str, **env: str) -> Any:
    done = subprocess.run(
        [
            sys.executable,
            str(chain["worker"]),
            str(chain["db"]),
            session_id,
            command,
            str(chain["flows"]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )
    if env.get("CHAIN_CRASH"):
        assert done.returncode == 17, done.stderr
        return None
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_each_command_in_its_own_process(chain: dict[str, Path]) -> None:
    session_id = await new_session(chain["db"])
    assert run_command(chain, session_id, "brainstorm")["ideas"] == 2
    assert run_command(chain, session_id, "implement") == {"files": ["add.py", "list.py"]}
    assert run_command(chain, session_id, "test") == {"after": "implement", "passed": 2}
    await check_chain(chain["db"], session_id)
    # Running implement again replays its journaled steps: no body runs.
    assert run_command(chain, session_id, "implement") == {"files": ["add.py", "list.py"]}
    assert ran(chain["log"]) == ["ideas", "code add", "code list"]


async def test_a_command_killed_midway_is_interrupted_and_its_steps_replay(
    chain: dict[str, Path],
) -> None:
    session_id = await new_session(chain["db"])
    run_command(chain, session_id, "brainstorm")
    run_command(chain, session_id, "implement", CHAIN_CRASH="list")  # dies in step 2
    async with SqliteStore(chain["db"]) as store:
        session = await Sessions(store).get(session_id)
        assert [c.status for c in session.command_history] == ["success", "running"]
    assert run_command(chain, session_id, "implement") == {"files": ["add.py", "list.py"]}
    async with SqliteStore(chain["db"]) as store:
        session = await Sessions(store).get(session_id)
    statuses = [(c.command, c.status) for c in session.command_history]
    assert statuses == [
        ("brainstorm", "success"),
        ("implement", "failed"),
        ("implement", "success"),
    ]
    assert "interrupted" in json.dumps(session.command_history[1].outputs)
    # "code add" was recorded before the crash: it ran once; "code list" ran twice.
    assert ran(chain["log"]) == ["ideas", "code add", "code list", "code list"]


WRITER = r"""
import asyncio, os, sys, time
from runtree.sessions import Sessions
from runtree.stores import SqliteStore

db, session_id, who, go = sys.argv[1:5]

async def main():
    async with SqliteStore(db) as store:
        session = await Sessions(store).get(session_id)
        open(f"{go}.ready.{os.getpid()}", "w").close()
        while not os.path.exists(go):  # start together with the other writers
            time.sleep(0.005)
        await asyncio.gather(
            *(session.set_shared_data(f"{who}-{i}", {"who": who, "i": i}) for i in range(50))
        )
        await session.set_shared_data("last", who)

asyncio.run(main())
"""


async def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    db = tmp_path / "rt.db"
    session_id = await new_session(db)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(db), session_id, f"p{n}", str(go)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    try:
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("go.ready.*"))) < 4:  # all at the starting line
            assert time.monotonic() < deadline, "the writers did not start"
            time.sleep(0.01)
        go.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            proc.kill()
    async with SqliteStore(db) as store:
        data = (await Sessions(store).get(session_id)).shared_data
    assert data.pop("last") in {"p0", "p1", "p2", "p3"}
    assert data == {f"p{n}-{i}": {"who": f"p{n}", "i": i} for n in range(4) for i in range(50)}


RACER = r"""
import asyncio, os, sys, time
from runtree.sessions import Sessions
from runtree.stores import SqliteStore

db, go = sys.argv[1:3]

async def main():
    async with SqliteStore(db) as store:
        open(f"{go}.ready.{os.getpid()}", "w").close()
        while not os.path.exists(go):
            time.sleep(0.005)
        print((await Sessions(store).get_or_create("raced")).session_id)

asyncio.run(main())
"""


def test_get_or_create_racing_in_processes_yields_one_session(tmp_path: Path) -> None:
    db = tmp_path / "rt.db"
    asyncio.run(SqliteStore(db).aclose())  # the schema exists before the race
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(db), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("go.ready.*"))) < 4:  # all at the starting line
        assert time.monotonic() < deadline, "the racers did not start"
        time.sleep(0.01)
    go.touch()
    ids = set()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        ids.add(out.strip())
    assert len(ids) == 1
