"""The typer application behind ``runtree``."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .. import _scope
from .._defs import Flow
from ..errors import RuntreeError, StoreError
from ._render import TreeRecorder, render_tree, tree_data
from ._runs import register as _register_runs

T = TypeVar("T")

DEFAULT_STORE = "sqlite:///.runtree/runtree.db"

app = typer.Typer(
    help="runtree: hierarchical, durable execution contexts. "
    f"The store comes from RUNTREE_STORE (default {DEFAULT_STORE}).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        out.print(f"runtree {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """runtree: hierarchical, durable execution contexts."""


session_app = typer.Typer(help="Sessions: one context tree across commands.", no_args_is_help=True)
app.add_typer(session_app, name="session")
_register_runs(app)  # `runtree runs ...` and `runtree worker` (cli/_runs.py)

out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]


def store_url() -> str:
    return os.environ.get("RUNTREE_STORE") or DEFAULT_STORE


def _run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; turn runtree's errors into a message and exit code 1."""
    try:
        return asyncio.run(make())
    except RuntreeError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None


def _parse_json(text: str, what: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        err.print(
            f"[red]error:[/red] {what} is not valid JSON ({exc.msg} at position {exc.pos}); "
            f'quote it for the shell, e.g. --input \'{{"topic": "x"}}\'',
            highlight=False,
        )
        raise typer.Exit(2) from None


def _print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


async def _with_sessions(fn: Callable[[Any], Awaitable[T]]) -> T:
    from ..sessions import Sessions
    from ..stores import from_url

    async with from_url(store_url()) as store:
        return await fn(Sessions(store))


def _session_dict(session: Any) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "project_name": session.project_name,
        "project_type": session.project_type,
        "started_at": session.started_at,
        "active": getattr(session, "active", None),
        "loaded_context": sorted(session.loaded_context),
        "loaded_memory": sorted(session.loaded_memory),
        "shared_data": session.shared_data,
        "command_history": [_command_dict(c) for c in session.command_history],
    }


def _command_dict(cmd: Any) -> dict[str, Any]:
    return {
        "command": cmd.command,
        "status": cmd.status,
        "started_at": cmd.started_at,
        "completed_at": cmd.completed_at,
        "inputs": cmd.inputs,
        "outputs": cmd.outputs,
        "context_loaded": list(cmd.context_loaded),
        "memory_updated": list(cmd.memory_updated),
        "skills_invoked": list(cmd.skills_invoked),
    }


def print_session(session: Any) -> None:
    data = _session_dict(session)
    state = "active" if data["active"] in (True, None) else "ended"
    out.print(
        f"[bold]session[/bold] {data['session_id']}  project [bold]{data['project_name']}"
        f"[/bold] ({data['project_type'] or '-'})  started {data['started_at']}  {state}"
    )
    history = Table("command", "status", "started", "context loaded")
    history.add_column("outputs", no_wrap=True)
    for c in data["command_history"]:
        style = {"success": "green", "failed": "red", "running": "yellow"}.get(c["status"], "")
        outputs = json.dumps(c["outputs"].get("result", c["outputs"]), default=str)
        history.add_row(
            c["command"],
            f"[{style}]{c['status']}[/{style}]" if style else c["status"],
            str(c["started_at"])[11:19],
            ", ".join(c["context_loaded"]) or "-",
            outputs if len(outputs) <= 48 else outputs[:47] + "…",
        )
    out.print(history)
    out.print(f"loaded context: {', '.join(data['loaded_context']) or '-'}")
    out.print(f"loaded memory:  {', '.join(data['loaded_memory']) or '-'}")
    shared = Table("shared key", "value")
    for key, value in data["shared_data"].items():
        text = json.dumps(value, default=str)
        shared.add_row(key, text if len(text) <= 64 else text[:63] + "…")
    out.print(shared)


# -- session commands -----------------------------------------------------------------


@session_app.command("start")
def session_start(
    project: Annotated[str, typer.Argument(help="Project name.")],
    project_type: Annotated[str | None, typer.Option("--type", help="Project type.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Start a new session for PROJECT."""
    session = _run(lambda: _with_sessions(lambda s: s.create(project, project_type)))
    if as_json:
        _print_json(_session_dict(session))
    else:
        out.print(session.session_id)


@session_app.command("list")
def session_list(as_json: JsonFlag = False) -> None:
    """List sessions, newest first."""
    sessions = _run(lambda: _with_sessions(lambda s: s.list()))
    if as_json:
        _print_json([_session_dict(s) for s in sessions])
        return
    table = Table()
    table.add_column("session", no_wrap=True)
    for column in ("project", "type", "started", "commands", "state"):
        table.add_column(column)
    for s in sessions:
        active = getattr(s, "active", None)
        table.add_row(
            s.session_id,
            s.project_name,
            s.project_type or "-",
            s.started_at[:19].replace("T", " "),
            str(len(s.command_history)),
            "active" if active in (True, None) else "ended",
        )
    out.print(table)


@session_app.command("show")
def session_show(
    session_id: Annotated[str, typer.Argument(help="Session id.")], as_json: JsonFlag = False
) -> None:
    """Show a session: command history, loaded context and memory, shared data."""
    session = _run(lambda: _with_sessions(lambda s: s.get(session_id)))
    if as_json:
        _print_json(_session_dict(session))
    else:
        print_session(session)


@session_app.command("get")
def session_get(
    session_id: Annotated[str, typer.Argument(help="Session id.")],
    key: Annotated[str, typer.Argument(help="Shared data key.")],
) -> None:
    """Print a shared data value as JSON (exit 1 when the key is not set)."""

    async def get(sessions: Any) -> tuple[bool, object]:
        session = await sessions.get(session_id)
        await session.get_shared_data(key)
        return key in session.shared_data, session.shared_data.get(key)

    found, value = _run(lambda: _with_sessions(get))
    if not found:
        err.print(
            f"[red]error:[/red] session {session_id!r} has no shared data {key!r}; "
            f"set it with: runtree session set {session_id} {key} JSON",
            highlight=False,
        )
        raise typer.Exit(1)
    _print_json(value)


@session_app.command("set")
def session_set(
    session_id: Annotated[str, typer.Argument(help="Session id.")],
    key: Annotated[str, typer.Argument(help="Shared data key.")],
    value: Annotated[str, typer.Argument(help="The value, as JSON.")],
) -> None:
    """Set a shared data value (JSON)."""
    parsed = _parse_json(value, "VALUE")

    async def put(sessions: Any) -> None:
        session = await sessions.get(session_id)
        await session.set_shared_data(key, parsed)

    _run(lambda: _with_sessions(put))


@session_app.command("end")
def session_end(session_id: Annotated[str, typer.Argument(help="Session id.")]) -> None:
    """End a session (it stays readable)."""

    async def end(sessions: Any) -> None:
        session = await sessions.get(session_id)
        await session.end()

    _run(lambda: _with_sessions(end))


# -- run ---------------------------------------------------------------------------------


def load_flow(target: str) -> Flow[Any, Any]:
    """``package.module:flow_name`` → the Flow object."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        err.print(
            f"[red]error:[/red] {target!r} is not MODULE:FLOW (e.g. myapp.flows:build)",
            highlight=False,
        )
        raise typer.Exit(2)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        err.print(f"[red]error:[/red] cannot import module {module_name!r}: {exc}", highlight=False)
        raise typer.Exit(2) from None
    found = getattr(module, attr, None)
    if not isinstance(found, Flow):
        err.print(
            f"[red]error:[/red] {target!r} is not a runtree flow (got {type(found).__name__}); "
            "define it with @runtree.flow",
            highlight=False,
        )
        raise typer.Exit(2)
    return found


async def run_flow(
    flow: Flow[Any, Any], value: object, session_id: str | None, command: str | None
) -> tuple[object, TreeRecorder, Any]:
    recorder = TreeRecorder()
    if session_id is None:
        async with _scope.create_scope(extensions=[recorder]) as scope:
            result = await scope.exec(flow, value)
        return result, recorder, None
    from ..sessions import Sessions
    from ..stores import from_url

    async with from_url(store_url()) as store:
        session = await Sessions(store).get(session_id)
        async with _scope.create_scope(extensions=[recorder], store=store) as scope:
            result = await session.exec(flow, value, command=command or flow.name, scope=scope)
        session = await Sessions(store).get(session_id)
    return result, recorder, session


@app.command("run")
def run_command(
    target: Annotated[str, typer.Argument(help="MODULE:FLOW, e.g. myapp.flows:build")],
    input: Annotated[str, typer.Option("--input", help="The flow's input, as JSON.")] = "null",
    session: Annotated[
        str | None, typer.Option("--session", help="Run as a command of this session.")
    ] = None,
    command: Annotated[
        str | None, typer.Option("--command", help="Command name (default: the flow's).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a flow, alone or as a command of a session, and print its execution tree."""
    flow = load_flow(target)
    value = _parse_json(input, "--input")
    result, recorder, sess = _run(lambda: run_flow(flow, value, session, command))
    if as_json:
        _print_json(
            {
                "result": result,
                "session_id": None if sess is None else sess.session_id,
                "tree": tree_data(recorder),
            }
        )
        return
    title = f"{command or flow.name}" + (f"  (session {session})" if session else "")
    out.print(render_tree(recorder, title))
    out.print(f"[bold]result[/bold] {json.dumps(result, default=str)}")


@app.command("demo")
def demo(
    as_json: JsonFlag = False,
) -> None:
    """Run a brainstorm → implement → test chain, each command in its own process."""
    from ._demo import run_demo

    run_demo(as_json=as_json, store=store_url())


__all__ = ["app", "print_session", "run_flow", "store_url", "StoreError"]
