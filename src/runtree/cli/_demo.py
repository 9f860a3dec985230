"""``runtree demo``: the brainstorm → implement → test chain of :mod:`runtree.cli.demo`.

Each command runs in its own process (``runtree run runtree.cli.demo:COMMAND --session
ID``) on the store the CLI uses, and they share one session, found again on the next
demo (``get_or_create``): a second demo shows what persisted — cache hits and replays.
The output is designed for 80 columns (the width rich uses when output is piped).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

from rich.rule import Rule
from rich.text import Text

from ..errors import RuntreeError
from ..stores._secrets import redact
from ._common import (
    CliError,
    StoreRef,
    json_text,
    json_written,
    message_of,
    print_error,
    program,
)
from ._render import out_console, print_to, render_session, session_dict

DEMO_PROJECT = "runtree-demo"
FLOWS = "runtree.cli.demo"

# (command, what to look for on a first chain, what to look for on a later one)
STEPS = [
    (
        "brainstorm",
        "Loads the product vision (a cache miss: the session has never seen it) and "
        "records three ideas in the session's shared data.",
        "The session was found again: the vision is a cache hit and the ideas replay "
        "from the durable journal instead of running.",
    ),
    (
        "implement",
        "A new process: the vision is a cache hit, the ideas come from shared data, "
        "one keyed step per file runs in parallel.",
        "Every file step replays from the journal; the context loads are cache hits.",
    ),
    (
        "test",
        "Reads the files implement shared and records a test report.",
        "Every test step replays from the journal.",
    ),
    (
        "test",
        "The same command again: every keyed step replays from the durable journal, "
        "nothing runs twice.",
        "Again: replays only.",
    ),
]


def _open_session(ref: StoreRef) -> Any:
    from ..sessions import Sessions
    from ..stores import from_url

    async def start() -> Any:
        async with from_url(ref.url) as store:
            return await Sessions(store).get_or_create(DEMO_PROJECT, "demo")

    return asyncio.run(start())


def _load_session(ref: StoreRef, session_id: str) -> Any:
    from ..sessions import Sessions
    from ..stores import from_url

    async def load() -> Any:
        async with from_url(ref.url) as store:
            return await Sessions(store).get(session_id)

    return asyncio.run(load())


def run_demo(*, as_json: bool, ref: StoreRef) -> None:
    """Find or create the demo session, run the chain in separate processes, print it."""
    if ref.path is None and not ref.url.strip().lower().startswith("postgres"):
        raise CliError(
            f"the demo runs each command in its own process and needs a durable store; "
            f"RUNTREE_STORE={redact(ref.url)} keeps nothing between processes: unset it or use "
            "sqlite:///path.db or postgresql://...",
            code=2,
            kind="UsageError",
        )

    try:
        session = _open_session(ref)
    except RuntreeError as exc:
        raise CliError(
            f"the demo cannot use the store {ref.shown}: {message_of(exc)}",
            kind=type(exc).__name__,
        ) from None
    session_id = str(session.session_id)
    first = not session.command_history
    out = out_console()
    if not as_json:
        intro = Text("runtree demo", style="bold")
        intro.append(
            ": brainstorm → implement → test, each command in its own process, sharing one session."
        )
        print_to(out, intro)
        print_to(out, Text(f"store    {ref.shown}", style="dim"), soft_wrap=True)
        found = (
            "new"
            if first
            else f"found again: {len(session.command_history)} commands already recorded"
        )
        print_to(out, Text(f"session  {session_id} ({found})", style="dim"))
    env = {**os.environ, "RUNTREE_STORE": ref.url}
    transcripts: list[dict[str, Any]] = []
    for i, (command, why_first, why_again) in enumerate(STEPS, start=1):
        shown = f"runtree run {FLOWS}:{command} --session {session_id}"
        if not as_json:
            out.print()
            out.print(Rule(Text(f"{i}/{len(STEPS)}  {command}", style="bold"), align="left"))
            print_to(out, Text(f"$ {shown}", style="dim"))
            print_to(out, Text(why_first if first else why_again, style="italic"))
            sys.stdout.flush()  # before the child writes to the same stdout
        argv = [sys.executable, "-m", "runtree", "run", f"{FLOWS}:{command}"]
        argv += ["--session", session_id, *(["--json"] if as_json else [])]
        done = subprocess.run(argv, env=env, capture_output=as_json, text=True, check=False)
        if as_json and done.stdout.strip():
            try:
                transcripts.append({"command": command, **json.loads(done.stdout)})
            except json.JSONDecodeError:
                transcripts.append({"command": command, "ok": False, "output": done.stdout})
        if done.returncode != 0:
            message = f"the demo stopped: `{shown}` failed (exit {done.returncode})"
            if as_json:
                sys.stderr.write(done.stderr)
                error = {"type": "DemoError", "message": message}
                sys.stdout.write(json_text({"ok": False, "error": error, "runs": transcripts}))
                json_written()
                sys.stdout.write("\n")
                print_error(message)
                raise SystemExit(1)
            raise CliError(message)

    try:
        session = _load_session(ref, session_id)
    except RuntreeError as exc:
        raise CliError(f"the demo cannot read the store {ref.shown}: {message_of(exc)}") from None
    if as_json:
        doc = {
            "ok": True,
            "session": session_dict(session),
            "session_found_again": not first,
            "runs": transcripts,
        }
        sys.stdout.write(json_text(doc) + "\n")
        json_written()
        return
    out.print()
    out.print(Rule(Text("the session after the chain", style="bold"), align="left"))
    print_to(out, render_session(session, width=out.width, store=ref.shown), soft_wrap=True)
    _next_steps(out, session_id, ref)


def _next_steps(out: Any, session_id: str, ref: StoreRef) -> None:
    name, activate = program()
    out.print()
    out.print(Rule(Text("next", style="bold"), align="left"))
    lines: list[tuple[str, str]] = []
    if activate:
        lines.append((activate, f"puts {name} on the PATH of this shell"))
    lines += [
        (f"{name} session show {session_id}", "this session"),
        (f"{name} session get {session_id} test_report", "one shared value, as JSON"),
        (f"{name} session list", "every session in the store"),
        (f"{name} runs list", "the recorded run trees: each command above is one"),
        (f"{name} run {FLOWS}:test --session {session_id}", "one command again"),
        (f"{name} demo", "the chain again: everything persisted"),
        (f"{name} ui", "the runs and sessions as live waterfalls in the browser"),
    ]
    if ref.how == "RUNTREE_STORE":
        lines.append((f"export RUNTREE_STORE={redact(ref.url)}", "the store the demo used"))
    for command, why in lines:
        print_to(out, Text(f"  # {why}", style="dim"))
        print_to(out, Text(f"  {command}"))
