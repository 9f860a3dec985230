"""In CI (``CI=true``) a PostgreSQL test that would be skipped fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests/stores/test_postgres.py::test_a_bad_schema_name_is_refused"


@pytest.mark.parametrize(("ci", "expected"), [("true", 1), ("", 0)])
def test_a_skipped_postgres_test_fails_in_ci(ci: str, expected: int) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RUNTREE_TEST_PG_DSN", "CI")}
    if ci:
        env["CI"] = ci
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            TARGET,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == expected, proc.stdout + proc.stderr
    if ci:
        assert "a PostgreSQL test was skipped in CI" in proc.stdout
    else:
        assert "1 skipped" in proc.stdout
