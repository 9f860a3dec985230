"""``runtree run`` imports the user's flows from the working folder, but a module there
named like a store driver (``sqlite3.py``) never replaces the driver: neither with the
console script nor with ``python -m runtree`` (which puts the folder first on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtree.sessions import Sessions
from runtree.stores import SqliteStore

SHADOW = """
open("SHADOW-RAN", "w").write("x")
raise ImportError("a sqlite3.py in the working folder replaced the standard module")
"""
FLOWS = """
import runtree

@runtree.flow
async def hello(ctx: runtree.ExecutionContext) -> int:
    return ctx.input + 1
"""


@pytest.mark.parametrize("how", ["console-script", "python-m"])
async def test_a_sqlite3_py_in_the_working_folder_never_runs(tmp_path: Path, how: str) -> None:
    async with SqliteStore(tmp_path / ".runtree" / "runtree.db") as store:
        session = await Sessions(store).create("proj")
    (tmp_path / "sqlite3.py").write_text(SHADOW, encoding="utf-8")
    (tmp_path / "flows.py").write_text(FLOWS, encoding="utf-8")
    if how == "console-script":
        argv = [str(Path(sys.executable).with_name("runtree"))]
    else:
        argv = [sys.executable, "-m", "runtree"]
    env = {k: v for k, v in os.environ.items() if k not in ("RUNTREE_STORE", "PYTHONPATH")}
    proc = subprocess.run(
        [*argv, "run", "flows:hello", "--input", "1", "--session", session.session_id, "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert not (tmp_path / "SHADOW-RAN").exists(), proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"ok": true' in proc.stdout
