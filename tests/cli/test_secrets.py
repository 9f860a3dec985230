"""A store's password never reaches the terminal, whatever the command prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

RUNTREE = str(Path(sys.executable).parent / "runtree")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:sekret-pw@127.0.0.1:1/db?connect_timeout=1&reconnect=0",
        "postgresql://user@127.0.0.1:1/db?password=sekret-pw&connect_timeout=1&reconnect=0",
    ],
)
@pytest.mark.parametrize(
    "args", [["demo"], ["session", "list"], ["runs", "list"], ["worker", "nosuchmodule"]]
)
def test_no_command_prints_the_password(url: str, args: list[str]) -> None:
    env = {**os.environ, "RUNTREE_STORE": url}
    if args[0] in ("runs", "worker"):
        args = [*args, "--store", url]
    done = subprocess.run(
        [RUNTREE, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "sekret-pw" not in done.stdout + done.stderr
