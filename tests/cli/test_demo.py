"""`runtree demo`: the chain, what a second demo shows, errors, and its look at 80x30."""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import termios
from pathlib import Path

from cli_support import RUNTREE, clean_env, one_error_line, run_cli, run_many

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def test_demo_store_errors_are_one_line(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_text("not a database\n" * 10)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = [
        (f"sqlite:///{corrupt}", 1, f"the demo cannot use the store {corrupt}: "),
        (f"sqlite:///{blocker}/runtree.db", 1, f"the demo cannot use the store {blocker}/"),
        ("memory://", 2, "the demo runs each command in its own process and needs a durable"),
    ]
    results = run_many([(["demo"], tmp_path, clean_env(RUNTREE_STORE=url)) for url, _, _ in cases])
    for (_, code, expected), done in zip(cases, results, strict=True):
        assert done.returncode == code, done.stderr
        assert one_error_line(done).startswith("error: " + expected)
    assert corrupt.read_text() == "not a database\n" * 10  # never overwritten


def _pty_run(args: list[str], cwd: Path, env: dict[str, str], cols: int, rows: int) -> str:
    """Run in a pseudo-terminal of ``cols`` x ``rows``; the whole output, escapes removed."""
    main, child = os.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=child, stdout=child, stderr=child)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def _check_layout(text: str, width: int, folder: Path) -> list[str]:
    lines = text.splitlines()
    for heading in ("1/4  brainstorm", "2/4  implement", "3/4  test", "4/4  test"):
        assert any(line.startswith(heading + " ──") for line in lines), heading
    assert any(line.startswith("the session after the chain ──") for line in lines)
    assert any(line.startswith("next ──") for line in lines)
    for line in lines:
        # rich never cuts a column to "xxx…" followed by more columns.
        assert not re.search(r"\S…\s+\S", line), line
        assert "│" not in line, line  # no table borders
        # Left to the terminal: the run's result line, and a path (never broken in two).
        if not line.startswith("result ") and str(folder) not in line:
            assert len(line) <= width, line
    assert "cli._demo" not in text
    assert "$ runtree run runtree.cli.demo:brainstorm --session " in text
    return lines


def test_demo_at_80x30_in_a_terminal(tmp_path: Path) -> None:
    env = clean_env(TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    text = _pty_run([str(RUNTREE), "demo"], tmp_path, env, cols=80, rows=30)
    lines = _check_layout(text, 80, tmp_path)
    assert lines[1] == "sharing one session."
    assert lines[2] == f"store    {tmp_path}/.runtree/runtree.db"
    assert re.fullmatch(r"session  \d{8}-\d{6}-[0-9a-f]{8} \(new\)", lines[3])
    assert "    └── brainstorm  completed" in text
    assert "context product:vision miss" in text
    # The last lines say what to run next, with commands that exist.
    tail = text[text.index("next ──") :]
    commands = [line.strip() for line in tail.splitlines()[1:] if not line.strip().startswith("#")]
    assert any(c.startswith("runtree session show ") for c in commands)
    assert "runtree session list" in commands and "runtree demo" in commands
    assert "runtree runs list" in commands  # every command shown exists:
    for c in commands:
        if c.startswith("runtree "):
            assert _is_a_command(c.split()[1:]), c


def _is_a_command(words: list[str]) -> bool:
    """``words`` starts with a real (sub)command of the ``runtree`` application."""
    from typer.main import get_command

    from runtree.cli._app import app

    command: object = get_command(app)
    for word in words:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            return True  # a command: the rest are its arguments
        if word not in subcommands:
            return False
        command = subcommands[word]
    return getattr(command, "commands", None) is None


def test_a_second_demo_piped_shows_what_persisted_in_80_columns(tmp_path: Path) -> None:
    env = clean_env()
    first = json.loads(run_cli("demo", "--json", cwd=tmp_path, env=env).stdout)
    assert first["ok"] is True and first["session_found_again"] is False
    history = first["session"]["command_history"]
    assert [c["command"] for c in history] == ["brainstorm", "implement", "test", "test"]
    assert all(c["status"] == "success" for c in history)
    assert first["session"]["shared_data"]["test_report"] == {"passed": 3, "failed": 0}
    brainstorm = first["runs"][0]["tree"][0]["children"][0]
    assert brainstorm["metadata"]["context"] == ["product:vision miss"]
    implement = first["runs"][1]["tree"][0]["children"][0]
    assert "product:vision hit" in implement["metadata"]["context"]
    rerun = first["runs"][3]["tree"][0]["children"][0]
    assert len(rerun["metadata"]["journal_replays"]) == 3 and rerun["children"] == []
    assert (tmp_path / ".runtree").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / ".runtree" / "runtree.db").stat().st_mode & 0o777 == 0o600
    done = run_cli("demo", cwd=tmp_path, env=env)  # piped: rich lays out 80 columns
    _check_layout(done.stdout, 80, tmp_path)
    assert done.stderr == ""
    again = done.stdout
    assert "(found again: 4 commands already recorded)" in again
    assert "replayed brainstorm:ideas" in again
    assert "context product:vision hit, code:conventions hit" in again
    assert "miss" not in again
    assert "commands (8)" in again
    sid = first["session"]["session_id"]
    assert f"session  {sid} (found again" in again
    # Nothing ran: every node under a command is a replay, no child contexts.
    assert "generate_ideas" not in again and "write_code" not in again
