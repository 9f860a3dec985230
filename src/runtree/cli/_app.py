"""The typer application behind ``runtree``.

Every failure is one line on stderr (``error: ...``) and an exit status: 1 when something
failed, 2 when the command line is wrong, 130 after Ctrl-C. ``--json`` output is one JSON
document on stdout, on failure too.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import secrets
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperCommand

from .._defs import Flow
from ..errors import RuntreeError, SessionNotFoundError
from ._common import (
    STORE_DIR,
    STORE_FILE,
    CliError,
    StoreRef,
    error_line,
    error_object,
    find_store,
    human_time,
    json_error_document,
    json_text,
    json_written,
    last_error,
    message_of,
    one_line,
    one_line_diagnostics,
    print_error,
    require_text,
    usage_error,
)
from ._common import out_console as _out
from ._common import session_dict as _session_dict
from ._runs import register as _register_runs
from ._tree import TreeRecorder, failing_context, tree_data
from ._ui import register as _register_ui

T = TypeVar("T")

_HELP = (
    "runtree: hierarchical, durable execution contexts. The store is RUNTREE_STORE, "
    f"else the nearest {STORE_DIR}/{STORE_FILE} in this folder or a parent, "
    f"else {STORE_DIR}/{STORE_FILE} here."
)


class _Command(TyperCommand):
    """Help that reads like a man page: flags as flags, arguments by their metavar."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or (param.name or "").upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        args: list[tuple[str, str]] = []
        opts: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or (param.name or "").upper()
                args.append((name, getattr(param, "help", None) or ""))
            else:
                record = param.get_help_record(ctx)
                if record is not None:
                    opts.append(record)
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


app = typer.Typer(
    help=_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
session_app = typer.Typer(
    help="Sessions: one context tree across commands.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(session_app, name="session")


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        sys.stdout.write(f"runtree {__version__}\n")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """runtree: hierarchical, durable execution contexts."""


JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document for programs.")]
SessionId = Annotated[str, typer.Argument(metavar="ID", help="Session id.", show_default=False)]
Key = Annotated[str, typer.Argument(metavar="KEY", help="Shared data key.", show_default=False)]


def _parse_json(text: str, what: str) -> object:
    def reject(name: str) -> object:
        msg = f"{name} is not JSON"
        raise ValueError(msg)

    def finite(number: str) -> float:
        value = float(number)
        if value in (float("inf"), float("-inf")):  # 1e999: no float holds it
            msg = f"{number} is too large for a float"
            raise ValueError(msg)
        return value

    try:
        return json.loads(text, parse_constant=reject, parse_float=finite)
    except ValueError as exc:  # JSONDecodeError is a ValueError
        why = f"{exc.msg} at position {exc.pos}" if isinstance(exc, json.JSONDecodeError) else exc
        raise usage_error(
            f"{what} is not valid JSON ({why}); quote it for the shell, "
            f"e.g. '{{\"topic\": \"x\"}}', '[1, 2]', '\"text\"' or 42"
        ) from None


def _print_json(value: object) -> None:
    sys.stdout.write(json_text(value) + "\n")
    sys.stdout.flush()
    json_written()


# -- the store and sessions ----------------------------------------------------------------


def _where(ref: StoreRef) -> str:
    if ref.how == "RUNTREE_STORE":
        return f"the store {ref.shown} (from RUNTREE_STORE)"
    if ref.missing:
        return (
            f"the store {ref.shown}, which does not exist "
            f"(no {STORE_DIR}/{STORE_FILE} in this folder or a parent; "
            "set RUNTREE_STORE to use another store)"
        )
    return f"the store {ref.shown}"


def _not_found(session_id: str, ref: StoreRef) -> CliError:
    return CliError(
        f"no session {session_id!r} in {_where(ref)}; list sessions with: runtree session list",
        kind="SessionNotFoundError",
    )


def _with_sessions(
    fn: Callable[[Any], Awaitable[T]], *, ref: StoreRef, session_id: str | None = None
) -> T:
    """Open the store, run ``fn(Sessions(store))``, close it; runtree errors become one line.

    Reading commands pass ``session_id`` and never open (so never create) a store file
    that does not exist.
    """
    if session_id is not None and ref.missing:
        raise _not_found(session_id, ref)

    async def go() -> T:
        from ..sessions import Sessions
        from ..stores import from_url

        async with from_url(ref.url) as store:
            return await fn(Sessions(store))

    try:
        return asyncio.run(go())
    except SessionNotFoundError as exc:
        raise _not_found(exc.session_id, ref) from None
    except RuntreeError as exc:
        raise CliError(message_of(exc), kind=type(exc).__name__) from None


def _refuse_ended(session: Any, doing: str) -> None:
    if not session.active and session.ended_at:
        raise CliError(
            f"session {session.session_id} ended at {human_time(session.ended_at)} and takes "
            f"no more {doing}; start a new one with: "
            f"runtree session start {shlex.quote(session.project_name)}",
            kind="SessionEndedError",
        )


def print_session(session: Any, store: StoreRef | None = None) -> None:
    from ._render import print_to, render_session

    out = _out()
    print_to(
        out,
        render_session(session, width=out.width, store=None if store is None else store.shown),
        soft_wrap=True,
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


# -- session commands ----------------------------------------------------------------------


@session_app.command("start", cls=_Command)
def session_start(
    project: Annotated[
        str, typer.Argument(metavar="PROJECT", help="Project name.", show_default=False)
    ],
    project_type: Annotated[
        str | None, typer.Option("--type", metavar="TYPE", help="Project type.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Start a new session for PROJECT; print its id."""
    require_text(project, "PROJECT")
    require_text(project_type, "--type")
    session = _with_sessions(lambda s: s.create(project, project_type), ref=find_store())
    if as_json:
        _print_json(_session_dict(session))
    else:
        sys.stdout.write(f"{session.session_id}\n")


@session_app.command("list", cls=_Command)
def session_list(as_json: JsonFlag = False) -> None:
    """List sessions, newest first."""
    ref = find_store()
    if ref.missing:
        sessions: list[Any] = []
    else:
        sessions = _with_sessions(lambda s: s.list(), ref=ref)
    if as_json:
        _print_json([_session_dict(s) for s in sessions])
        return
    from ._render import print_to, render_session_list

    out = _out()
    if not sessions:
        message = f"no sessions in {_where(ref)}; start one with: runtree session start NAME"
        print_to(out, message, soft_wrap=True)
        return
    print_to(out, render_session_list(sessions, width=out.width), soft_wrap=True)


@session_app.command("show", cls=_Command)
def session_show(session_id: SessionId, as_json: JsonFlag = False) -> None:
    """Show a session: its commands, loaded context and memory, shared data."""
    require_text(session_id, "ID")
    ref = find_store()

    async def load(sessions: Any) -> tuple[Any, dict[str, Any]]:
        session = await sessions.get(session_id)
        return session, await _command_trees(sessions.store, session)

    session, trees = _with_sessions(load, ref=ref, session_id=session_id)
    if as_json:
        doc = _session_dict(session)
        doc["runs"] = {command_id: tree.to_dict() for command_id, tree in trees.items()}
        _print_json(doc)
    else:
        print_session(session, ref)
        if trees:
            from ._runs import render_tree

            for tree in trees.values():
                sys.stdout.write("\n" + render_tree(tree) + "\n")


async def _command_trees(store: object, session: Any) -> dict[str, Any]:
    """The recorded tree of each command in the session's history (newest page), by
    command id; commands recorded before run trees existed have none."""
    from ..errors import RunNotFoundError
    from ..runs import Runs

    runs = Runs(store)
    trees: dict[str, Any] = {}
    for command in session.command_history:
        command_id = getattr(command, "id", None)
        if command_id is None:
            continue
        try:
            trees[str(command_id)] = await runs.get(f"session:{session.session_id}/{command_id}")
        except RunNotFoundError:
            continue
    return trees


@session_app.command("get", cls=_Command)
def session_get(session_id: SessionId, key: Key, as_json: JsonFlag = False) -> None:
    """Print a shared data value as JSON (exit 1 when the key is not set); ``--json``
    changes nothing but errors, which come as one JSON document too."""
    require_text(session_id, "ID")
    require_text(key, "KEY")

    async def get(sessions: Any) -> tuple[bool, object]:
        session = await sessions.get(session_id)
        await session.get_shared_data(key)
        return key in session.shared_data, session.shared_data.get(key)

    found, value = _with_sessions(get, ref=find_store(), session_id=session_id)
    if not found:
        raise CliError(
            f"session {session_id} has no shared data {key!r}; "
            f"set it with: runtree session set {session_id} {key} JSON",
            kind="KeyError",
        )
    _print_json(value)


@session_app.command("set", cls=_Command)
def session_set(
    session_id: SessionId,
    key: Key,
    value: Annotated[
        str, typer.Argument(metavar="JSON", help="The value, as JSON.", show_default=False)
    ],
    as_json: JsonFlag = False,
) -> None:
    """Set a shared data value (JSON); ``--json`` prints what was set."""
    require_text(session_id, "ID")
    require_text(key, "KEY")
    parsed = _parse_json(value, "the value")

    async def put(sessions: Any) -> None:
        session = await sessions.get(session_id)
        _refuse_ended(session, "writes")
        await session.set_shared_data(key, parsed)

    _with_sessions(put, ref=find_store(), session_id=session_id)
    if as_json:
        _print_json({"session_id": session_id, "key": key, "value": parsed})


@session_app.command("end", cls=_Command)
def session_end(session_id: SessionId, as_json: JsonFlag = False) -> None:
    """End a session: it stays readable and takes no more writes; ``--json`` prints the
    session (as ``session show --json``)."""
    require_text(session_id, "ID")

    async def end(sessions: Any) -> tuple[bool, Any]:
        session = await sessions.get(session_id)
        if not session.active and session.ended_at:
            return False, session
        await session.end()
        return True, session

    ended, session = _with_sessions(end, ref=find_store(), session_id=session_id)
    if as_json:
        _print_json(_session_dict(session))
    elif ended:
        sys.stdout.write(
            f"ended session {session.session_id} (project {session.project_name}, "
            f"{_count(len(session.command_history), 'command')}); it stays readable: "
            f"runtree session show {session.session_id}\n"
        )
    else:
        sys.stdout.write(
            f"session {session.session_id} already ended at {human_time(session.ended_at)}\n"
        )


# -- run -----------------------------------------------------------------------------------


def load_flow(target: str) -> Flow[Any, Any]:
    """``package.module:flow_name`` → the Flow object (usage errors say what is wrong)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise usage_error(f"{target!r} is not MODULE:FLOW (e.g. myapp.flows:build)")
    from .._drivers import import_drivers

    import_drivers()  # sqlite3/psycopg load before this folder can shadow them (python -m)
    cwd = os.getcwd()
    if cwd not in sys.path:
        # After installed packages: a file in this folder never replaces a module we use.
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise usage_error(
                f"no module named {exc.name!r} (looked in {cwd} and on the Python path)"
            ) from None
        raise CliError(
            f"module {module_name!r} failed to import: {error_line(exc)}",
            kind=type(exc).__name__,
        ) from exc
    except Exception as exc:
        raise CliError(
            f"module {module_name!r} failed to import: {error_line(exc)}",
            kind=type(exc).__name__,
        ) from exc
    found: object = module
    for part in attr.split("."):
        if not hasattr(found, part):
            flows = sorted(k for k, v in vars(module).items() if isinstance(v, Flow))
            there = f"; its flows: {', '.join(flows)}" if flows else "; it defines no flows"
            raise usage_error(f"module {module_name} has no attribute {part}{there}")
        found = getattr(found, part)
    if not isinstance(found, Flow):
        kind = type(found).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise usage_error(
            f"{target} is {article} {kind}, not a runtree flow; define it with @runtree.flow"
        )
    return found


class _Interrupt:
    """Ctrl-C during a run cancels the running tree (recorded as cancelled, not failed);
    a second Ctrl-C stops at once."""

    def __init__(self, recorder: TreeRecorder) -> None:
        self.recorder = recorder
        self.hit = False
        self.task: asyncio.Task[Any] | None = None

    def __call__(self) -> None:
        roots = self.recorder.roots()
        if (self.hit or not roots) and self.task is not None:
            self.task.cancel()
        for root in roots:
            root.cancel("interrupted (Ctrl-C)")
        self.hit = True

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        try:
            loop.add_signal_handler(signal.SIGINT, self)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            return await work
        try:
            return await work
        finally:
            loop.remove_signal_handler(signal.SIGINT)


class _Recorded:
    """The id of the run tree a ``runtree run`` recorded (``runtree runs show ID``)."""

    run_id: str | None = None


async def _run_flow(
    flow: Flow[Any, Any],
    value: object,
    session_id: str | None,
    command: str | None,
    recorder: TreeRecorder,
    ref: StoreRef,
    recorded: _Recorded,
) -> object:
    """Run ``flow`` on the store, recorded as a run tree (``record="all"``): alone, in a
    root of its own, or as a command of a session."""
    from .._scope import create_scope
    from ..sessions import Sessions
    from ..stores import from_url

    async with from_url(ref.url) as store:
        if session_id is None:
            async with create_scope(extensions=[recorder], store=store, record="all") as scope:
                # A root id of its own makes the run durable: its keyed steps are
                # journaled, so `runs resume` (or a worker, after a crash) replays those
                # that succeeded instead of running them again.
                execution = scope.exec(flow, value, id=_new_run_id())
                recorded.run_id = execution.id
                return await execution
        session = await Sessions(store).get(session_id)
        _refuse_ended(session, "commands")
        try:
            async with create_scope(extensions=[recorder], store=store, record="all") as scope:
                name = command or flow.name
                return await session.exec(flow, value, command=name, scope=scope)
        finally:
            recorded.run_id = await _session_run_id(store, session_id)


def _new_run_id() -> str:
    """A run id for ``runtree run``: its UTC start time, then random hex (sorts by time,
    never repeats)."""
    return f"run-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


async def _session_run_id(store: Any, session_id: str) -> str | None:
    """The run a session command just recorded: the session's newest."""
    from ..runs import Runs

    try:
        for run in await Runs(store).list(limit=20):
            if run.session_id == session_id:
                return run.root_id
    except Exception:  # the run is recorded or not; the command's outcome stands
        return None
    return None


@contextlib.contextmanager
def _stdout_to_stderr(active: bool) -> Iterator[None]:
    """Under ``--json`` stdout holds the JSON document only: what flows print goes to stderr."""
    if not active:
        yield
        return
    sys.stdout.flush()
    # File descriptor 1 too: a subprocess the flow starts, or os.write(1, ...), writes
    # there, not to sys.stdout.
    saved: int | None = None
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no such descriptors (an embedded interpreter): Python's level only
        if saved is not None:
            os.close(saved)
        saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            sys.stderr.flush()
            os.dup2(saved, 1)
            os.close(saved)


@app.command("run", cls=_Command, short_help="Run a flow and print its execution tree.")
def run_command(
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:FLOW", help="The flow, e.g. myapp.flows:build", show_default=False
        ),
    ],
    input: Annotated[
        str, typer.Option("--input", metavar="JSON", help="The flow's input, as JSON.")
    ] = "null",
    session: Annotated[
        str | None,
        typer.Option("--session", metavar="ID", help="Run as a command of this session."),
    ] = None,
    command: Annotated[
        str | None,
        typer.Option("--command", metavar="NAME", help="Command name (default: the flow's)."),
    ] = None,
    as_json: JsonFlag = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Print the traceback of a failure.")
    ] = False,
) -> None:
    """Run a flow and print its execution tree (alone, or as a session command)."""
    title = target + (f"  (session {session})" if session else "")
    recorder = TreeRecorder()
    recorded = _Recorded()
    interrupt = _Interrupt(recorder)
    ref = find_store()
    result: object = None
    failure: BaseException | None = None
    with _stdout_to_stderr(as_json):
        try:
            require_text(session, "--session")
            require_text(command, "--command")
            value = _parse_json(input, "--input")
            flow = load_flow(target)
            if session is not None and ref.missing:
                raise _not_found(session, ref)
            result = asyncio.run(
                interrupt.run(_run_flow(flow, value, session, command, recorder, ref, recorded))
            )
        except CliError as exc:
            failure = exc
        except SessionNotFoundError as exc:
            failure = _not_found(exc.session_id, ref)
        except Exception as exc:
            failure = exc
        except KeyboardInterrupt as exc:  # Ctrl-C before the loop ran
            interrupt.hit = True
            failure = exc
        except SystemExit as exc:  # the flow called sys.exit(): a failure like any other
            failure = exc
        except asyncio.CancelledError as exc:
            if not interrupt.hit:
                raise
            failure = exc  # Ctrl-C before the flow started (or a second one): stop now
    if failure is None:
        _report_success(title, result, recorder, session, as_json, recorded.run_id)
        return
    _report_failure(
        target, title, failure, recorder, session, as_json, debug, interrupt.hit, recorded.run_id
    )


def _report_success(
    title: str,
    result: object,
    recorder: TreeRecorder,
    session: str | None,
    as_json: bool,
    run_id: str | None,
) -> None:
    from .._json import problem

    why = problem(result)
    if why is not None and session is None:  # (a session command warns as it records it)
        sys.stderr.write(
            f"warning: the flow's result is not JSON ({one_line(why)}); it is shown as text\n"
        )
    if as_json:
        tree = tree_data(recorder)
        doc = {"ok": True, "result": result, "session_id": session, "run_id": run_id, "tree": tree}
        _print_json(doc)
        return
    from ._render import print_to, render_tree

    out = _out()
    print_to(out, render_tree(recorder, title))
    line = json_text(result, indent=None)
    sys.stdout.write(f"result {line}\n")
    if run_id is not None:
        sys.stdout.write(f"run    {run_id}\n")


def _report_failure(
    target: str,
    title: str,
    failure: BaseException,
    recorder: TreeRecorder,
    session: str | None,
    as_json: bool,
    debug: bool,
    interrupted: bool,
    run_id: str | None,
) -> NoReturn:
    origin = failing_context(recorder)
    cause = failure
    if origin is not None and origin.details.error is not None and not interrupted:
        cause = origin.details.error
    if isinstance(failure, CliError):
        message, code = failure.message, failure.code
        error = {"type": failure.kind, "message": failure.message}
        if debug and failure.__cause__ is not None:
            traceback.print_exception(failure.__cause__)
    else:
        where = f" in {origin.details.name}" if origin is not None else ""
        if interrupted:
            message, code = f"{target} was cancelled by Ctrl-C{where}", 130
            error = {"type": "Cancelled", "message": "interrupted (Ctrl-C)"}
        else:
            message, code = f"{target} failed{where}: {error_line(cause)}", 1
            error = error_object(cause)
            if not debug:
                message += " (--debug prints the traceback)"
        if debug:
            traceback.print_exception(failure)
    if as_json:
        tree = tree_data(recorder)
        doc = {"ok": False, "error": error, "session_id": session, "run_id": run_id, "tree": tree}
        _print_json(doc)
    elif recorder.contexts:
        from ._render import print_to, render_tree

        out = _out()
        print_to(out, render_tree(recorder, title))
        if run_id is not None:
            sys.stdout.write(f"run    {run_id}  (runtree runs show {run_id})\n")
    print_error(message)
    raise SystemExit(code)


# -- demo ----------------------------------------------------------------------------------


@app.command("demo", cls=_Command, short_help="Run the brainstorm → implement → test demo.")
def demo(as_json: JsonFlag = False) -> None:
    """Run the brainstorm → implement → test chain, one process per command."""
    from ._demo import run_demo

    run_demo(as_json=as_json, ref=find_store())


# Registered after run, demo and session, so `runtree --help` lists them in that order.
_register_runs(app)  # `runtree runs ...` and `runtree worker` (cli/_runs.py)
_register_ui(app)  # `runtree ui` (cli/_ui.py)


# -- entry point ---------------------------------------------------------------------------


def _parse_errors() -> tuple[type[Exception], ...]:
    """The command-line parsing errors of the installed typer (its own click, or click)."""
    found: list[type[Exception]] = []
    vendored = getattr(typer, "TyperException", None)
    if isinstance(vendored, type) and issubclass(vendored, Exception):
        found.append(vendored)
    try:
        import click
    except ImportError:
        pass
    else:
        found.append(click.ClickException)
    return tuple(found)


def run_app(argv: Sequence[str] | None = None) -> None:
    """Run the command line; every error ends as one line on stderr and an exit status."""
    from typer.main import get_command

    args = list(sys.argv[1:] if argv is None else argv)
    one_line_diagnostics(debug="--debug" in args)
    as_json = "--json" in args
    command = get_command(app)
    try:
        status = command.main(
            args=args,
            prog_name="runtree",
            standalone_mode=False,
        )
    except CliError as exc:
        print_error(exc.message)
        if as_json:
            json_error_document(exc.kind, one_line(exc.message))
        raise SystemExit(exc.code) from None
    except RuntreeError as exc:
        print_error(message_of(exc))
        if as_json:
            json_error_document(type(exc).__name__, message_of(exc))
        raise SystemExit(1) from None
    except typer.Abort:
        print_error("aborted")
        raise SystemExit(1) from None
    except Exception as exc:
        if not isinstance(exc, _parse_errors()):
            raise
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            sys.stdout.write(ctx.get_help() + "\n")  # `runtree` alone: the help
            return
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        print_error(exc.format_message() + hint)  # type: ignore[attr-defined]
        if as_json:
            json_error_document("UsageError", one_line(exc.format_message() + hint))  # type: ignore[attr-defined]
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    if isinstance(status, int) and status:
        if as_json:  # a command that failed before writing its own document
            json_error_document("UsageError" if status == 2 else "Error", last_error())
        raise SystemExit(status)


__all__ = ["app", "load_flow", "print_session", "run_app"]
