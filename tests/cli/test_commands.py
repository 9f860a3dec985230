"""The `runtree` command line, run as a subprocess on a real SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FLOWS = """
import runtree as rt
from runtree.sessions import current_session

@rt.flow
async def add(ctx):
    session = current_session()
    total = ctx.input["a"] + ctx.input["b"]
    if session is not None:
        await session.set_shared_data("total", total)
    return await ctx.exec(rt.flow(lambda c: c.input * 10, name="scale"), total, key="scale")

@rt.flow
async def broken(ctx):
    raise ValueError("broken on purpose")

not_a_flow = 42
"""


@pytest.fixture
def cli(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "myflows.py").write_text(FLOWS)
    env = {**os.environ, "RUNTREE_STORE": f"sqlite:///{tmp_path / 'store.db'}"}

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "runtree", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    return run


def test_session_lifecycle(cli) -> None:  # type: ignore[no-untyped-def]
    sid = cli("session", "start", "shop", "--type", "python").stdout.strip()
    listed = json.loads(cli("session", "list", "--json").stdout)
    assert [s["session_id"] for s in listed] == [sid]
    assert listed[0]["project_type"] == "python"
    cli("session", "set", sid, "plan", '{"steps": [1, 2]}')
    assert json.loads(cli("session", "get", sid, "plan").stdout) == {"steps": [1, 2]}
    missing = cli("session", "get", sid, "nope", ok=False)
    assert missing.returncode == 1
    assert "has no shared data 'nope'" in missing.stderr
    cli("session", "end", sid)
    shown = json.loads(cli("session", "show", sid, "--json").stdout)
    assert shown["active"] is False
    assert shown["shared_data"] == {"plan": {"steps": [1, 2]}}
    assert "shop" in cli("session", "show", sid).stdout


def test_run_as_a_session_command_keeps_history_and_journal(cli) -> None:  # type: ignore[no-untyped-def]
    sid = cli("session", "start", "math").stdout.strip()
    first = json.loads(
        cli(
            "run", "myflows:add", "--input", '{"a": 1, "b": 2}', "--session", sid,
            "--command", "sum", "--json",
        ).stdout
    )  # fmt: skip
    assert first["result"] == 30
    tree = first["tree"][0]
    assert tree["children"][0]["name"] == "add"
    assert tree["children"][0]["children"][0]["name"] == "scale"
    again = json.loads(
        cli("run", "myflows:add", "--input", '{"a": 1, "b": 2}', "--session", sid, "--json").stdout
    )
    assert again["result"] == 30
    add_node = again["tree"][0]["children"][0]
    assert add_node["metadata"]["journal_replays"] == ["scale"]
    assert add_node["children"] == []
    shown = json.loads(cli("session", "show", sid, "--json").stdout)
    assert [c["command"] for c in shown["command_history"]] == ["sum", "add"]
    assert shown["command_history"][0]["inputs"] == {"input": {"a": 1, "b": 2}}
    assert shown["command_history"][0]["outputs"] == {"result": 30}
    assert shown["shared_data"]["total"] == 3
    human = cli("run", "myflows:add", "--input", '{"a": 2, "b": 2}').stdout
    assert "add" in human and "result 40" in human


def test_bad_input_gets_clear_errors(cli) -> None:  # type: ignore[no-untyped-def]
    bad_json = cli("run", "myflows:add", "--input", "{nope", ok=False)
    assert bad_json.returncode == 2
    assert "--input is not valid JSON" in bad_json.stderr
    not_flow = cli("run", "myflows:not_a_flow", ok=False)
    assert "is not a runtree flow" in not_flow.stderr
    no_colon = cli("run", "myflows", ok=False)
    assert "is not MODULE:FLOW" in no_colon.stderr
    missing = cli("session", "show", "no-such-session", ok=False)
    assert missing.returncode == 1
    assert "'no-such-session'" in missing.stderr
    assert "Traceback" not in missing.stderr
    failing = cli("run", "myflows:broken", ok=False)
    assert failing.returncode != 0
    assert "broken on purpose" in failing.stderr


def test_demo_runs_the_chain_in_separate_processes(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    report = json.loads(cli("demo", "--json").stdout)
    commands = [c["command"] for c in report["session"]["command_history"]]
    assert commands == ["brainstorm", "implement", "test", "test"]
    assert all(c["status"] == "success" for c in report["session"]["command_history"])
    assert report["session"]["shared_data"]["test_report"] == {"passed": 3, "failed": 0}
    implement = report["runs"][1]["tree"][0]["children"][0]
    assert "product:vision hit" in implement["metadata"]["context"]
    rerun = report["runs"][3]["tree"][0]["children"][0]
    assert len(rerun["metadata"]["journal_replays"]) == 3
    assert (tmp_path / "store.db").stat().st_mode & 0o777 == 0o600


def test_demo_on_the_default_store_keeps_runtree_folder_private(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RUNTREE_STORE"}
    done = subprocess.run(
        [sys.executable, "-m", "runtree", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "the session after the chain" in done.stdout
    folder = tmp_path / ".runtree"
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "runtree.db").stat().st_mode & 0o777 == 0o600


def test_version_and_help(cli) -> None:  # type: ignore[no-untyped-def]
    import runtree

    assert cli("--version").stdout.strip() == f"runtree {runtree.__version__}"
    assert "session" in cli("--help").stdout
