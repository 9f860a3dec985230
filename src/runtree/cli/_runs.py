"""``runtree runs list|show|cancel|resume|fork|prune`` and ``runtree worker``.

Output for people is plain text that fits 80 columns (user data is never interpreted as
markup); ``--json`` prints one JSON document (shapes in docs/runs.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import random
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from .._defs import Flow
from ..errors import RunNotFoundError, RuntreeError
from ._common import json_written, print_error, printable, require_text, store_ref

if TYPE_CHECKING:
    from ..runs import RunInfo, Runs, RunTree

__all__ = ["register", "render_list", "render_tree"]

T = TypeVar("T")

WIDTH = 80

runs_app = typer.Typer(
    help="Recorded run trees: list, show, cancel, resume, fork, prune.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document for programs.")]
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="Store URL (default: RUNTREE_STORE, else the local store)."),
]
RunId = Annotated[str, typer.Argument(metavar="ID", help="The run's root id.", show_default=False)]


def register(app: typer.Typer) -> None:
    """Add ``runs`` and ``worker`` to the ``runtree`` application."""
    app.add_typer(runs_app, name="runs")
    app.command("worker")(worker)


# -- plumbing --------------------------------------------------------------------------


def _fail(message: str, code: int = 1) -> typer.Exit:
    print_error(message)
    return typer.Exit(code)


def _with_runs(store: str | None, fn: Callable[[Runs], Awaitable[T]], *, read: bool) -> T:
    ref = store_ref(store)
    url = ref.url
    if read and ref.missing:
        raise _fail(f"no store at {ref.shown} (set RUNTREE_STORE or pass --store URL)")

    async def go() -> T:
        from ..runs import Runs
        from ..stores import from_url

        async with from_url(url) as opened:
            return await fn(Runs(opened))

    try:
        return asyncio.run(go())
    except RunNotFoundError as exc:  # every "not found" names the store (cli.md)
        raise _fail(
            f"no run {exc.root_id!r} in the store {ref.shown}; list runs with `runtree runs list`"
        ) from None
    except (RuntreeError, LookupError) as exc:
        raise _fail(_message(exc)) from None


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = "(its message cannot be printed)"
    if isinstance(exc, KeyError) and text.startswith(("'", '"')) and len(exc.args) == 1:
        text = str(exc.args[0]) if not isinstance(exc, RuntreeError) else text
    return text


def _print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str, ensure_ascii=False) + "\n")
    json_written()


def _fit(text: str, width: int) -> str:
    """User text on one line (runs of whitespace, newlines included, become one space),
    cut to ``width``."""
    return _cut(" ".join(str(text).split()), width)


def _cut(line: str, width: int) -> str:
    """An assembled line (its spacing kept) cut to ``width``; control characters in it
    (from user data) written as escapes."""
    line = printable(line)
    return line if len(line) <= width else line[: max(width - 1, 0)] + "…"


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _took(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``15m``, ``45s``, ``2w`` or plain seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if found is None:
        msg = f"--older-than takes a duration like 30d, 12h, 15m or 45s (got {text!r})"
        raise ValueError(msg)
    return float(found.group(1)) * _UNITS.get(found.group(2) or "s", 1)


# -- rendering -------------------------------------------------------------------------


def render_list(runs: list[RunInfo]) -> str:
    """Runs as a table of 80 columns. Ids are never cut (they are what the other commands
    take): when the longest does not fit its column, each run takes two lines, its id
    whole on the first."""
    if not runs:
        return "no runs recorded"
    id_width = max(7, *(len(r.root_id) for r in runs))
    rest = "{status:<11} {flow:<22} {created:<19} {took}"

    def details(r: RunInfo, flow_width: int) -> str:
        flow = r.command if r.command else (r.flow or r.name)
        return (
            f"{r.status:<11} {_fit(flow, flow_width):<{flow_width}} "
            f"{_when(r.created_at):<19} {_took(r.duration)}"
        )

    # One line a run while the flow column keeps 12 characters: id, status (11), flow,
    # created (19) and took (up to 8), four spaces between them, in WIDTH.
    flow_width = min(22, WIDTH - id_width - 11 - 19 - 8 - 4)
    if flow_width >= 12:
        head = f"{'ROOT ID':<{id_width}} {'STATUS':<11} {'FLOW':<{flow_width}} {'CREATED':<19} TOOK"
        lines = [head]
        lines.extend(_cut(f"{r.root_id:<{id_width}} {details(r, flow_width)}", WIDTH) for r in runs)
        return "\n".join(lines)
    lines = [
        f"ROOT ID\n  {rest.format(status='STATUS', flow='FLOW', created='CREATED', took='TOOK')}"
    ]
    for r in runs:
        lines.append(r.root_id)
        lines.append(_cut(f"  {details(r, 24)}", WIDTH))
    return "\n".join(lines)


def render_tree(tree: RunTree) -> str:
    """A run tree for people, 80 columns: name, key, status, duration, replayed, error
    per node; the nodes on the failing path are marked with ✗."""
    run = tree.run
    head = f"run {run.root_id}  {run.status}  {_took(run.duration)}"
    lines = [_cut(head, WIDTH)]
    what = run.flow or "-"
    if run.session_id:
        what += f"  session {run.session_id} command {run.command}"
    lines.append(_cut(f"flow {_fit(what, WIDTH)}  started {_when(run.created_at)}", WIDTH))
    if run.cancel_requested and run.status == "running":
        lines.append(_fit(f"cancel requested: {run.cancel_requested}", WIDTH))
    failing = {n.node_id for n in tree.failing_path()}
    last: dict[int, bool] = {}
    walked = list(tree.walk_with_depth())
    for i, (node, depth) in enumerate(walked):
        is_last = all(d != depth for _, d in _until_shallower(walked, i + 1, depth))
        last[depth] = is_last
        prefix = "".join("   " if last.get(d) else "│  " for d in range(1, depth))
        if depth:
            prefix += "└─ " if is_last else "├─ "
        mark = "✗ " if node.node_id in failing else ""
        label = node.name + (f" [{node.key}]" if node.key else "")
        if node.attempt > 1:
            label += f" (attempt {node.attempt})"
        left = _cut(prefix + mark + _fit(label, 46), 46)
        note = "replayed" if node.replayed else ""
        if node.error is not None and node.node_id in failing:
            note = _fit(f"{node.error.type}: {node.error.message}", WIDTH)
        line = f"{left:<46} {node.status:<10} {_took(node.duration):>9}  {note}"
        lines.append(_cut(line.rstrip(), WIDTH))
    if run.error is not None:
        lines.append(_fit(f"error: {run.error.type}: {run.error.message}", WIDTH))
    return "\n".join(lines)


def _until_shallower(walked: list[Any], start: int, depth: int) -> list[tuple[Any, int]]:
    """The nodes after ``start`` until the walk leaves the subtree at ``depth``."""
    out = []
    for node, d in walked[start:]:
        if d < depth:
            break
        out.append((node, d))
    return out


# -- runs commands ---------------------------------------------------------------------


@runs_app.command("list")
def runs_list(
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            help="running, completed, failed, cancelled or interrupted (repeatable: any of them).",
        ),
    ] = None,
    flow: Annotated[str | None, typer.Option("--flow", help="module:qualname of the flow.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many.")] = 50,
    as_json: JsonFlag = False,
    store: StoreOpt = None,
) -> None:
    """List recorded runs, newest first."""
    statuses = tuple(status) if status else None

    async def go(runs: Runs) -> list[RunInfo]:
        try:
            return await runs.list(status=statuses, flow=flow, limit=limit)  # type: ignore[arg-type]
        except ValueError as exc:
            raise _fail(str(exc), 2) from None

    ref = store_ref(store)
    if ref.missing:  # nothing recorded yet: an empty list, as `session list` says
        if as_json:
            _print_json([])
        else:
            sys.stdout.write(f"no runs recorded (no store at {ref.shown})\n")
        return
    found = _with_runs(store, go, read=True)
    if as_json:
        _print_json([r.to_dict() for r in found])
    else:
        sys.stdout.write(render_list(found) + "\n")


@runs_app.command("show")
def runs_show(run_id: RunId, as_json: JsonFlag = False, store: StoreOpt = None) -> None:
    """Show a run's tree: name, status, duration, key, replayed, error per node."""
    require_text(run_id, "ID")
    tree = _with_runs(store, lambda runs: runs.get(run_id), read=True)
    if as_json:
        _print_json(tree.to_dict())
    else:
        sys.stdout.write(render_tree(tree) + "\n")


@runs_app.command("cancel")
def runs_cancel(
    run_id: RunId,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
    as_json: JsonFlag = False,
    store: StoreOpt = None,
) -> None:
    """Cancel a run: its live owner cancels it within one lease renewal; a run whose
    process died is marked cancelled at once."""
    require_text(run_id, "ID")
    info = _with_runs(store, lambda runs: runs.cancel(run_id, reason), read=True)
    if as_json:
        _print_json(info.to_dict())
    elif info.status == "running":
        sys.stdout.write(f"run {run_id}: cancel requested; its owner stops it shortly\n")
    else:
        sys.stdout.write(f"run {run_id}: {info.status}\n")


def _import_modules(modules: list[str]) -> list[Flow[Any, Any]]:
    """Import ``modules`` (the working folder is searched last); their flows."""
    from .._drivers import import_drivers

    import_drivers()  # sqlite3/psycopg load before this folder can shadow them
    here = os.getcwd()
    if here not in sys.path:
        sys.path.append(here)
    flows: list[Flow[Any, Any]] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise _fail(f"cannot import module {name!r}: {exc}", 2) from None
        flows.extend(v for v in vars(module).values() if isinstance(v, Flow))
    return flows


@runs_app.command("resume")
def runs_resume(
    run_id: RunId,
    module: Annotated[
        list[str] | None,
        typer.Option("--module", help="Import this module first (repeatable)."),
    ] = None,
    as_json: JsonFlag = False,
    store: StoreOpt = None,
) -> None:
    """Run a failed, cancelled or interrupted run again here, under the same id:
    recorded successes replay, failures run again."""
    require_text(run_id, "ID")
    flows = _import_modules(list(module or ()))
    url = store_ref(store).url

    async def run() -> tuple[bool, object, RunTree]:
        from .._scope import create_scope
        from ..runs import Runs
        from ..stores import from_url

        async with from_url(url) as opened:
            runs = Runs(opened)
            ok, value = True, None
            async with create_scope(store=opened) as scope:
                execution = await runs.resume(run_id, scope, flows=flows)
                try:
                    value = await execution
                except Exception as exc:
                    ok, value = False, exc
            return ok, value, await runs.get(run_id)

    try:
        ok, value, tree = asyncio.run(run())
    except (RuntreeError, LookupError) as exc:
        raise _fail(_message(exc)) from None
    if as_json:
        body: dict[str, object] = {"ok": ok, "tree": tree.to_dict()}
        if ok:
            body["result"] = value
        else:
            assert isinstance(value, BaseException)
            body["error"] = {"type": type(value).__name__, "message": _message(value)}
        _print_json(body)
    else:
        sys.stdout.write(render_tree(tree) + "\n")
        if ok:
            sys.stdout.write(f"result {json.dumps(value, default=str, ensure_ascii=False)}\n")
    if not ok:
        assert isinstance(value, BaseException)
        raise _fail(f"{type(value).__name__}: {_message(value)}")


@runs_app.command("fork")
def runs_fork(
    run_id: RunId,
    from_key: Annotated[str, typer.Option("--from", help="The journal key to run again from.")],
    new_id: Annotated[str | None, typer.Option("--id", help="The new run's id.")] = None,
    as_json: JsonFlag = False,
    store: StoreOpt = None,
) -> None:
    """Copy a run whose journal keeps the entries recorded before KEY; resume it to run
    from KEY on."""
    require_text(run_id, "ID")
    require_text(from_key, "--from")
    ident = _with_runs(
        store, lambda runs: runs.fork(run_id, from_key=from_key, new_id=new_id), read=True
    )
    if as_json:
        _print_json({"root_id": ident, "forked_from": run_id, "from_key": from_key})
    else:
        sys.stdout.write(f"{ident}\n")


@runs_app.command("prune")
def runs_prune(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age: 30d, 12h, 15m, 45s or seconds.")
    ],
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="Statuses to prune (repeatable; default completed)."),
    ] = None,
    as_json: JsonFlag = False,
    store: StoreOpt = None,
) -> None:
    """Delete old runs (with their nodes and journal); never a running run."""
    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    statuses = tuple(status or ("completed",))

    async def go(runs: Runs) -> int:
        try:
            return await runs.prune(older_than=age, status=statuses)  # type: ignore[arg-type]
        except ValueError as exc:
            raise _fail(str(exc), 2) from None

    count = _with_runs(store, go, read=True)
    if as_json:
        _print_json({"pruned": count})
    else:
        sys.stdout.write(f"pruned {count} run{'s' if count != 1 else ''}\n")


# -- worker ----------------------------------------------------------------------------


def worker(
    modules: Annotated[
        list[str], typer.Argument(metavar="MODULE...", help="Modules whose flows to serve.")
    ],
    store: StoreOpt = None,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between looks.")] = 5.0,
    grace: Annotated[
        float, typer.Option("--grace", help="Seconds runs may finish after SIGTERM.")
    ] = 10.0,
) -> None:
    """Recover runs orphaned by dead processes: import MODULEs, resume every interrupted
    run of their flows, look again every --poll seconds (with jitter). SIGTERM or SIGINT
    stops it: running runs get --grace seconds, then are cancelled (exit 0)."""
    stopped: list[int] = []
    # Until the loop runs, a stop request is remembered here (never the default action).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stopped.append(signum))
    if not poll > 0 or not grace >= 0:
        raise _fail("--poll must be > 0 and --grace >= 0", 2)
    flows = _import_modules(modules)
    if not flows:
        raise _fail(f"no runtree flows in {', '.join(modules)}", 2)
    url = store_ref(store).url
    try:
        asyncio.run(_serve(url, flows, poll, grace, stopped))
    except (RuntreeError, LookupError) as exc:
        raise _fail(_message(exc)) from None


def _say(text: str) -> None:
    sys.stderr.write(f"runtree worker: {text}\n")
    sys.stderr.flush()


async def _serve(
    url: str, flows: list[Flow[Any, Any]], poll: float, grace: float, stopped: list[int]
) -> None:
    from .._scope import create_scope
    from ..stores import from_url

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if stopped:
        stop.set()
    running: dict[asyncio.Future[None], Any] = {}
    try:
        async with from_url(url) as opened, create_scope(store=opened) as scope:
            _say(f"serving {len(flows)} flow(s); pid {os.getpid()}")
            while not stop.is_set():
                for execution in await scope.recover(flows):
                    _say(f"resuming run {execution.id}")
                    fut = asyncio.ensure_future(_finish(execution))
                    running[fut] = execution
                    fut.add_done_callback(running.pop)
                wait = poll * random.uniform(0.5, 1.5)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
            _say("stopping")
            if running:
                deadline = time.monotonic() + grace
                left = max(deadline - time.monotonic(), 0)
                _, pending = await asyncio.wait(list(running), timeout=left)
                for left_over in pending:
                    running[left_over].cancel("the worker stopped")  # its awaiter: Cancelled
                if pending:
                    await asyncio.wait(pending)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _finish(execution: Any) -> None:
    try:
        await execution
    except Exception as exc:
        _say(f"run {execution.id} failed: {type(exc).__name__}: {_message(exc)}")
    else:
        _say(f"run {execution.id} completed")
