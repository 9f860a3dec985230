"""`runtree` when something fails: one line on stderr, the tree, exit 1 (2 for usage)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

from cli_support import FLOWS, RUNTREE, Run, clean_env, one_error_line, run_many


def test_a_failing_flow_prints_its_tree_and_one_line(cli: Run) -> None:
    done = cli("run", "myflows:boom", code=1)
    line = one_error_line(done)
    assert line == (
        "error: myflows:boom failed in inner: ValueError: broken [/b] on purpose "
        "second line of the message (--debug prints the traceback)"
    )
    out = done.stdout.splitlines()
    assert out[0] == "the flow prints this"
    assert out[1] == "myflows:boom"
    assert out[2].startswith("└── boom  failed  ")
    assert out[3].startswith("    ├── fine  completed  ")
    assert out[4].startswith("    └── inner  failed  ")
    # The failing node's error, on a line of its own under the node.
    assert out[5] == "        ✗ ValueError: broken [/b] on purpose second line of the message"
    # It is recorded as a run tree in the store.
    assert re.fullmatch(r"run    (\S+)  \(runtree runs show \1\)", out[6])
    assert len(out) == 7
    assert "✗" not in "".join(out[:5])  # only the failing node is marked


def test_debug_adds_the_traceback(cli: Run) -> None:
    done = cli("run", "myflows:boom", "--debug", code=1)
    assert "Traceback (most recent call last)" in done.stderr
    assert 'raise ValueError("broken [/b] on purpose' in done.stderr
    assert done.stderr.splitlines()[-1].startswith("error: myflows:boom failed in inner")
    assert "--debug prints" not in done.stderr


def test_json_failure_is_one_document_with_an_error_object(cli: Run) -> None:
    done = cli("run", "myflows:boom", "--json", code=1)
    doc = json.loads(done.stdout)
    assert doc["ok"] is False
    assert doc["error"] == {
        "type": "ValueError",
        "message": "broken [/b] on purpose\nsecond line of the message",
    }
    boom = doc["tree"][0]
    assert (boom["name"], boom["status"], boom["failed_here"]) == ("boom", "failed", False)
    inner = boom["children"][1]
    assert (inner["name"], inner["status"], inner["failed_here"]) == ("inner", "failed", True)
    assert inner["error"]["type"] == "ValueError"
    shown = json.loads(cli("runs", "show", doc["run_id"], "--json").stdout)
    assert shown["run"]["status"] == "failed" and shown["run"]["flow"] == "myflows:boom"
    # The flow's print went to stderr, before the one error line.
    lines = done.stderr.splitlines()
    assert len(lines) == 2 and lines[0] == "the flow prints this"
    assert lines[1].startswith("error: myflows:boom failed in inner: ValueError: broken")


def _bad_module(tmp_path: Path) -> None:
    (tmp_path / "badmod.py").write_text(
        "print('importing')\nraise RuntimeError('cannot import [/b] this')\n"
    )


def test_a_module_that_raises_on_import(cli: Run, tmp_path: Path) -> None:
    _bad_module(tmp_path)
    done = cli("run", "badmod:flow", code=1)
    assert one_error_line(done) == (
        "error: module 'badmod' failed to import: RuntimeError: cannot import [/b] this"
    )
    as_json = cli("run", "badmod:flow", "--json", code=1)
    doc = json.loads(as_json.stdout)
    assert doc["ok"] is False and doc["tree"] == []
    assert doc["error"]["type"] == "RuntimeError"
    assert as_json.stderr.startswith("importing\nerror: module 'badmod' failed to import")
    debug = cli("run", "badmod:flow", "--debug", code=1)
    assert "Traceback" in debug.stderr and "badmod.py" in debug.stderr


USAGE_ERRORS = [
    (["run", "myflows:wants_dict", "--input", "NaN"], "--input is not valid JSON (NaN is"),
    (
        ["run", "myflows:wants_dict", "--input", '{"limit": 1e999}'],
        "--input is not valid JSON (1e999 is too large for a float)",
    ),
    (["run", "myflows:wants_dict", "--input", "{nope"], "--input is not valid JSON (Expect"),
    (["run", "myflows:nosuch"], "module myflows has no attribute nosuch; its flows: add,"),
    (["run", "myflows:not_a_flow"], "myflows:not_a_flow is an int, not a runtree flow"),
    (["run", "myflows"], "'myflows' is not MODULE:FLOW (e.g. myapp.flows:build)"),
    (["run", "nosuchmodule:f"], "no module named 'nosuchmodule' (looked in "),
    (["run", "myflows:add", "--session", ""], "--session must not be empty"),
    (["run", "myflows:add", "--command", " "], "--command must not be empty"),
    (["session", "show", ""], "ID must not be empty"),
    (["runs", "show", ""], "ID must not be empty"),
    (["runs", "cancel", " "], "ID must not be empty"),
    (["runs", "fork", "", "--from", "k"], "ID must not be empty"),
    (["session", "start", ""], "PROJECT must not be empty"),
    (["session", "set", "some-id", "", "1"], "KEY must not be empty"),
    (["session", "set", "some-id", "k", "{bad"], "the value is not valid JSON"),
    (["session", "get", "", "k"], "ID must not be empty"),
    (["session", "end", ""], "ID must not be empty"),
    (["run"], "Missing argument 'MODULE:FLOW'"),
    (["session", "nosuch"], "No such command 'nosuch'"),
]


def test_usage_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "myflows.py").write_text(FLOWS)
    env = clean_env(RUNTREE_STORE=f"sqlite:///{tmp_path / 'store.db'}")
    results = run_many([(args, tmp_path, env) for args, _ in USAGE_ERRORS])
    wrong = []
    for (args, expected), done in zip(USAGE_ERRORS, results, strict=True):
        lines = done.stderr.splitlines()
        if done.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error: " + expected):
            wrong.append(f"runtree {' '.join(args)!r}: exit {done.returncode}, {done.stderr!r}")
    assert not wrong, "\n".join(wrong)
    assert not (tmp_path / "store.db").exists()


def test_usage_errors_under_json_are_a_json_document(cli: Run) -> None:
    done = cli("run", "myflows:nosuch", "--json", code=2)
    doc = json.loads(done.stdout)
    assert doc["ok"] is False and doc["error"]["type"] == "UsageError"
    assert doc["error"]["message"].startswith("module myflows has no attribute nosuch")


def test_a_bad_input_reaching_the_flow_is_a_flow_failure(cli: Run) -> None:
    line = one_error_line(cli("run", "myflows:wants_dict", "--input", "[1]", code=1))
    assert line.startswith("error: myflows:wants_dict failed in wants_dict: TypeError: list ")


def test_error_lines_are_never_wrapped(cli: Run, tmp_path: Path) -> None:
    # stderr to a file, as in a log: still one line, however long.
    name = "a_module_name_long_enough_to_push_the_error_line_past_eighty_columns"
    with (tmp_path / "err.txt").open("w") as err:
        done = subprocess.run(
            [str(RUNTREE), "run", f"{name}:flow"],
            cwd=tmp_path, env=clean_env(COLUMNS="40"), stderr=err, text=True, check=False,
        )  # fmt: skip
    assert done.returncode == 2
    text = (tmp_path / "err.txt").read_text()
    assert text.count("\n") == 1 and len(text) > 120 and name in text


def test_ctrl_c_is_recorded_as_cancelled(cli: Run, tmp_path: Path) -> None:
    sid = cli("session", "start", "shop").stdout.strip()
    env = clean_env(RUNTREE_STORE=f"sqlite:///{tmp_path / 'store.db'}")
    proc = subprocess.Popen(
        [str(RUNTREE), "run", "myflows:slow", "--session", sid, "--json"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    assert proc.stderr.readline() == "started\n"  # the flow is running: interrupt it
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err == "error: myflows:slow was cancelled by Ctrl-C in slow\n"
    doc = json.loads(out)
    assert doc["ok"] is False
    assert doc["error"] == {"type": "Cancelled", "message": "interrupted (Ctrl-C)"}
    slow = doc["tree"][0]["children"][0]
    assert (slow["name"], slow["status"]) == ("slow", "cancelled")
    run = json.loads(cli("runs", "show", doc["run_id"], "--json").stdout)["run"]
    assert run["status"] == "cancelled" and run["session_id"] == sid
    shown = json.loads(cli("session", "show", sid, "--json").stdout)
    (command,) = shown["command_history"]
    assert command["outputs"]["error"]["type"] == "Cancelled"
    assert "interrupted (Ctrl-C)" in command["outputs"]["error"]["message"]
