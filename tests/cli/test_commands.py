"""`runtree session ...` and `runtree run` when things go right, on a real SQLite store."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cli_support import FLOWS, Run, clean_env, one_error_line, run_cli, run_many


def test_session_lifecycle(cli: Run) -> None:
    sid = cli("session", "start", "shop", "--type", "python").stdout.strip()
    listed = json.loads(cli("session", "list", "--json").stdout)
    assert [s["session_id"] for s in listed] == [sid]
    assert listed[0]["project_type"] == "python"
    cli("session", "set", sid, "plan", '{"steps": [1, 2]}')
    assert json.loads(cli("session", "get", sid, "plan").stdout) == {"steps": [1, 2]}
    missing = cli("session", "get", sid, "nope", code=1)
    assert "has no shared data 'nope'" in one_error_line(missing)

    ended = cli("session", "end", sid).stdout
    assert ended.startswith(f"ended session {sid} (project shop, 0 commands)")
    again = cli("session", "end", sid).stdout
    when = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.fullmatch(rf"session {sid} already ended at {when}\n", again)

    shown = json.loads(cli("session", "show", sid, "--json").stdout)
    assert shown["active"] is False
    assert shown["shared_data"] == {"plan": {"steps": [1, 2]}}
    # --json keeps ISO 8601 with the offset; people get one format everywhere.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", shown["started_at"])
    human = cli("session", "show", sid).stdout
    assert "shop (python)" in human
    assert re.search(r"started   \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\n", human)
    assert re.search(r"state     ended \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\n", human)
    assert "T" not in re.sub(r"[^\d:T -]", "", human.split("commands")[0])
    table = cli("session", "list").stdout
    assert re.search(rf"{sid}  ended     \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d     0  shop", table)


def test_every_session_command_speaks_json(cli: Run) -> None:
    """``--json`` on get, set and end too: one document, on failure as well."""
    sid = cli("session", "start", "shop").stdout.strip()
    put = json.loads(cli("session", "set", sid, "plan", "[1, 2]", "--json").stdout)
    assert put == {"session_id": sid, "key": "plan", "value": [1, 2]}
    assert json.loads(cli("session", "get", sid, "plan", "--json").stdout) == [1, 2]
    missing = json.loads(cli("session", "get", sid, "nope", "--json", code=1).stdout)
    assert missing["ok"] is False and missing["error"]["type"] == "KeyError"
    ended = json.loads(cli("session", "end", sid, "--json").stdout)
    assert ended["session_id"] == sid and ended["active"] is False
    assert ended["shared_data"] == {"plan": [1, 2]}


def test_ended_sessions_refuse_writes_and_commands(cli: Run) -> None:
    sid = cli("session", "start", "shop").stdout.strip()
    cli("session", "end", sid)
    refused = one_error_line(cli("session", "set", sid, "k", "1", code=1))
    assert f"session {sid} ended at " in refused
    assert "takes no more writes; start a new one with: runtree session start shop" in refused
    run = cli("run", "myflows:add", "--input", '{"a": 1, "b": 2}', "--session", sid, code=1)
    assert "takes no more commands" in one_error_line(run)
    shown = json.loads(cli("session", "show", sid, "--json").stdout)
    assert shown["shared_data"] == {} and shown["command_history"] == []


def test_run_as_a_session_command_keeps_history_and_journal(cli: Run) -> None:
    sid = cli("session", "start", "math").stdout.strip()
    first = json.loads(
        cli(
            "run", "myflows:add", "--input", '{"a": 1, "b": 2}', "--session", sid,
            "--command", "sum", "--json",
        ).stdout
    )  # fmt: skip
    assert first["ok"] is True and first["result"] == 30 and first["session_id"] == sid
    tree = first["tree"][0]
    assert tree["children"][0]["name"] == "add"
    assert tree["children"][0]["children"][0]["name"] == "scale"
    assert tree["started_at"].endswith("+00:00")
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
    human = cli("run", "myflows:add", "--input", '{"a": 2, "b": 2}')
    assert "add  completed" in human.stdout and "result 40" in human.stdout
    assert human.stderr == ""


def test_json_output_is_one_document_even_when_the_flow_prints(cli: Run) -> None:
    done = cli("run", "myflows:chatty", "--json")
    doc = json.loads(done.stdout)  # the whole of stdout is one document
    assert doc["ok"] is True
    assert doc["result"] == {"text": "[/b] [bold]not bold[/bold]"}
    assert done.stderr == "the flow prints this\n"


def test_json_stdout_holds_the_document_only_even_from_subprocesses(cli: Run) -> None:
    """What a flow writes to file descriptor 1 (a tool it runs, ``os.write``) goes to
    stderr under ``--json`` too: stdout is the one document."""
    done = cli("run", "myflows:shells_out", "--json")
    assert json.loads(done.stdout)["result"] == "done"
    assert "from a subprocess" in done.stderr and "from os.write" in done.stderr


def test_a_result_that_is_not_json_is_shown_as_text_with_a_warning(cli: Run) -> None:
    for args in ((), ("--json",)):
        done = cli("run", "myflows:gives_a_set", *args)
        assert done.stderr == (
            "warning: the flow's result is not JSON (set value {1, 2} is not JSON); "
            "it is shown as text\n"
        )
    assert json.loads(done.stdout)["result"] == "{1, 2}"


def test_a_flow_that_calls_sys_exit_is_a_failure_reported_as_one(cli: Run) -> None:
    as_json = cli("run", "myflows:exits", "--json", code=1)
    doc = json.loads(as_json.stdout)
    assert doc["ok"] is False and doc["error"] == {"type": "SystemExit", "message": "3"}
    human = cli("run", "myflows:exits", code=1)
    assert "exits  failed" in human.stdout
    assert one_error_line(human).startswith("error: myflows:exits failed in exits: SystemExit: 3")


def test_user_data_prints_as_text_never_as_markup(cli: Run) -> None:
    human = cli("run", "myflows:chatty").stdout
    assert 'result {"text": "[/b] [bold]not bold[/bold]"}' in human
    sid = cli("session", "start", "[/b]shop[bold]").stdout.strip()
    cli("session", "set", sid, "[/b]", '"[red]x[/red]"')
    shown = cli("session", "show", sid).stdout
    assert "project   [/b]shop[bold]" in shown
    assert '[/b]  "[red]x[/red]"' in shown
    assert "[/b]shop[bold]" in cli("session", "list").stdout
    ran = cli("run", "myflows:chatty", "--session", sid).stdout
    assert "session [/b]shop[bold]  completed" in ran


def test_control_characters_in_user_data_never_reach_the_terminal(cli: Run) -> None:
    """Names, keys, metadata and session fields a flow or user wrote: escapes (``\\x1b``)
    in every output for people — the run's tree (and its replay lines), the session's
    header and loaded context — never raw ANSI sequences."""
    sid = cli("session", "start", "p\x1b[31mRED").stdout.strip()
    outputs = [
        cli("run", "myflows:escapes", "--session", sid, "--command", "x").stdout,
        cli("run", "myflows:escapes", "--session", sid, "--command", "x").stdout,  # replays
        cli("session", "show", sid).stdout,
        cli("session", "list").stdout,
    ]
    for out in outputs:
        assert "\x1b" not in out and "\x07" not in out
    run_tree, replayed, shown, _ = outputs
    assert "fl\\x1b[32mow  completed" in run_tree
    assert "m\\x1b[33m v\\x1b]0;title\\x07" in run_tree
    assert "replayed k\\x1b[41mEVIL" in replayed
    assert "session p\\x1b[31mRED  completed" in run_tree
    assert "project   p\\x1b[31mRED" in shown and "dom\\x1b[31m:t" in shown


def test_help_shows_flags_as_flags(cli: Run) -> None:
    import runtree

    assert cli("--version").stdout == f"runtree {runtree.__version__}\n"
    top = cli("--help").stdout
    assert re.search(r"^  --version +Print the version\.$", top, re.M)
    run = cli("run", "--help").stdout
    assert "Usage: runtree run [OPTIONS] MODULE:FLOW\n" in run
    assert re.search(r"^  --json +Print one JSON document", run, re.M)
    assert re.search(r"^  --debug +Print the traceback", run, re.M)
    assert re.search(r"^  --input JSON +The flow's input", run, re.M)
    for text in (top, run, cli("session", "show", "--help").stdout):
        assert "<bool>" not in text and "{" not in text and "<str>" not in text
    # A flag takes no value: a usage error in one line, exit 2.
    line = one_error_line(cli("run", "myflows:add", "--json=false", code=2))
    assert "'--json' does not take a value" in line
    assert "session" in cli().stdout  # no arguments: the help


def test_reading_commands_create_nothing_and_name_the_store(tmp_path: Path) -> None:
    env = clean_env()
    listed = run_cli("session", "list", cwd=tmp_path, env=env)
    assert "no sessions in the store" in listed.stdout
    assert json.loads(run_cli("session", "list", "--json", cwd=tmp_path, env=env).stdout) == []
    shown = run_cli("session", "show", "abc", cwd=tmp_path, env=env, code=1)
    line = one_error_line(shown)
    store = tmp_path / ".runtree" / "runtree.db"
    assert f"no session 'abc' in the store {store}, which does not exist" in line
    assert "set RUNTREE_STORE to use another store" in line
    writers = [
        ["session", "get", "abc", "k"],
        ["session", "end", "abc"],
        ["session", "set", "abc", "k", "1"],
        ["run", "runtree.cli.demo:test", "--session", "abc"],
    ]
    for done in run_many([(args, tmp_path, env) for args in writers]):
        assert "no session 'abc' in the store" in one_error_line(done), done.args
    assert list(tmp_path.iterdir()) == []


def test_the_store_is_found_in_parent_folders(tmp_path: Path) -> None:
    env = clean_env()
    sid = run_cli("session", "start", "p", cwd=tmp_path, env=env).stdout.strip()
    deeper = tmp_path / "a" / "b"
    deeper.mkdir(parents=True)
    shown = run_cli("session", "show", sid, cwd=deeper, env=env).stdout
    assert f"store     {tmp_path}/.runtree/runtree.db" in shown
    assert not (deeper / ".runtree").exists()
    missing = one_error_line(run_cli("session", "show", "nope", cwd=deeper, env=env, code=1))
    assert f"in the store {tmp_path}/.runtree/runtree.db;" in missing
    other = tmp_path / "elsewhere.db"
    env_store = clean_env(RUNTREE_STORE=f"sqlite:///{other}")
    line = one_error_line(run_cli("session", "show", sid, cwd=deeper, env=env_store, code=1))
    assert f"in the store {other} (from RUNTREE_STORE)" in line
    # The runs commands find it the same way: `runtree run` records there, and what it
    # prints to look at the run works from the same folder.
    (deeper / "myflows.py").write_text(FLOWS)
    run_cli("run", "myflows:chatty", cwd=deeper, env=env)
    listed = json.loads(run_cli("runs", "list", "--json", cwd=deeper, env=env).stdout)
    assert [r["flow"] for r in listed] == ["myflows:chatty"]
    run_cli("runs", "show", listed[0]["root_id"], cwd=deeper, env=env)


def test_json_failures_before_any_command_output_are_one_document(cli: Run) -> None:
    # cli.md: --json writes exactly one JSON document to stdout, on failure too.
    for args, code, kind in (
        (("run", "myflows:chatty", "--bogus", "--json"), 2, "UsageError"),
        (("run", "--json"), 2, "UsageError"),
        (("runs", "show", "nosuch", "--json"), 1, "Error"),
        (("session", "show", "nosuch", "--json"), 1, "SessionNotFoundError"),
    ):
        done = cli(*args, code=code)
        doc = json.loads(done.stdout)
        assert doc["ok"] is False and doc["error"]["type"] == kind, args
        assert doc["error"]["message"], args


def test_runs_list_with_no_store_yet_is_an_empty_list(tmp_path: Path) -> None:
    # As `session list` says: nothing recorded is not an error (and nothing is created).
    env = clean_env()
    shown = run_cli("runs", "list", cwd=tmp_path, env=env).stdout
    assert shown.startswith("no runs recorded (no store at ")
    assert json.loads(run_cli("runs", "list", "--json", cwd=tmp_path, env=env).stdout) == []
    assert list(tmp_path.iterdir()) == []
    run_cli("runs", "show", "x", cwd=tmp_path, env=env, code=1)  # a run: still an error
