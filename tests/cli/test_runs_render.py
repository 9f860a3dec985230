"""`runtree runs list` at 80 columns: ids are never cut (they are what other commands take)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from runtree.cli._runs import render_list
from runtree.runs import RunInfo


def info(root_id: str, command: str | None = None) -> RunInfo:
    now = time.time()
    return RunInfo(
        root_id=root_id,
        name="job",
        flow="myflows:job",
        input=None,
        status="completed",
        error=None,
        output=None,
        owner="me",
        created_at=now,
        updated_at=now,
        completed_at=now + 0.5,
        session_id=None,
        command=command,
        cancel_requested=None,
        tree_id=root_id,
        input_ok=True,
    )


def test_short_ids_one_line_each() -> None:
    lines = render_list([info("ok-1"), info("bad-1")]).splitlines()
    assert lines[0].split()[:3] == ["ROOT", "ID", "STATUS"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["ok-1", "completed"],
        ["bad-1", "completed"],
    ]
    assert all(len(line) <= 80 for line in lines)


def test_long_session_ids_are_shown_whole_within_80_columns() -> None:
    long_id = "session:7f3a9c2e4b1d4e6f8a0b2c4d6e8f0a1b/12"
    lines = render_list([info(long_id, "implement"), info("ok-1")]).splitlines()
    assert long_id in lines
    assert "ok-1" in lines
    assert all(len(line) <= 80 for line in lines)
    assert not any(line.startswith("session:") and "…" in line for line in lines)


def test_every_id_length_fits_80_columns_with_every_column() -> None:
    # A fork of a `runtree run` run has a 24-character id ("<id>-fork-<hex>").
    for n in range(4, 60):
        run = info("r" * n)
        lines = render_list([run, info("ok-1")]).splitlines()
        assert all(len(line) <= 80 for line in lines), (n, lines)
        assert not any(line.endswith("…") for line in lines), (n, lines)
        assert any(line.rstrip().endswith("500.0 ms") for line in lines), (n, lines)
        assert any(line.startswith("r" * n) for line in lines)


def test_session_show_prints_each_commands_tree_aligned(tmp_path: Path) -> None:
    env = {**os.environ, "RUNTREE_STORE": f"sqlite:///{tmp_path / 'rt.db'}", "COLUMNS": "80"}
    runtree = str(Path(sys.executable).parent / "runtree")
    demo = subprocess.run(
        [runtree, "demo", "--json"], env=env, capture_output=True, text=True, check=False
    )
    assert demo.returncode == 0, demo.stderr
    session_id = json.loads(demo.stdout)["session"]["session_id"]
    shown = subprocess.run(
        [runtree, "session", "show", session_id],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert f"run session:{session_id}/1 completed" in "\n".join(lines).replace("  ", " ")
    nested = [
        line for line in lines if line.lstrip().startswith(("└─ generate_ideas", "├─ write_code"))
    ]
    assert nested and all(line.startswith("   ") for line in nested)  # indented under its parent
    assert all(len(line) <= 80 for line in lines)
    as_json = json.loads(
        subprocess.run(
            [runtree, "session", "show", session_id, "--json"],
            env=env, capture_output=True, text=True, check=False,
        ).stdout
    )  # fmt: skip
    assert set(as_json["runs"]) == {str(c["id"]) for c in as_json["command_history"]}


def test_control_characters_in_user_data_are_escaped() -> None:
    # An ANSI sequence in an id, a flow name or an error must not reach the terminal.
    run = info("evil\x1b]0;title\x07\x1b[31m")
    shown = render_list([run])
    assert "\x1b" not in shown and "\x07" not in shown
    assert "evil\\x1b]0;title\\x07\\x1b[31m" in shown
    from runtree.cli._common import one_line

    assert one_line("boom \x1b[2J\r\nagain") == "boom \\x1b[2J again"
