"""The `runtree` console script, run as a subprocess in a temporary folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cli_support import FLOWS, RUNTREE, Run, clean_env, run_cli


@pytest.fixture
def cli(tmp_path: Path) -> Run:
    """``cli(*args, code=0)`` runs ``runtree`` in a folder holding ``myflows.py``, with
    ``RUNTREE_STORE`` on a SQLite file there, and checks the exit status."""
    assert RUNTREE.is_file(), f"the console script is not installed at {RUNTREE}"
    (tmp_path / "myflows.py").write_text(FLOWS)
    env = clean_env(RUNTREE_STORE=f"sqlite:///{tmp_path / 'store.db'}")

    def run(*args: str, code: int | None = 0) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=tmp_path, env=env, code=code)

    return run
