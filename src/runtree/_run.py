"""The full exec path: journal keys, retries, timeouts, exec extensions, presets, deps,
``ctx.run`` and ``parallel``. The plain ``ctx.exec`` path is inlined in ``_context``."""

from __future__ import annotations

import asyncio
import inspect
import math
import random
import sys
from collections.abc import Awaitable, Coroutine, Iterable
from functools import partial
from time import time
from types import CoroutineType, MethodType
from typing import TYPE_CHECKING, Any, final

from . import _context, _stream
from ._context import (
    _OPEN,
    FAILED,
    ExecOptions,
    ExecutionContext,
    Settled,
    _open_child,
    check_timeout,
    checked_tags,
    reset_abandoned,
)
from ._defs import Flow
from ._extensions import ExecKind, ExecOp, new_op, run_wrapped
from ._journal import Entry, check_key
from ._json import shown
from ._tags import MISSING
from .errors import Cancelled, ExecTimeoutError

# An assignment, not an import: CPython 3.11 compiles ``name.method()`` on an imported
# name as an attribute load plus a call (it expects a module), which builds a bound
# method at every call; on an assigned name it is a method call.
_current = _context._current

if TYPE_CHECKING:
    from ._journal import Journal

__all__ = ["Call", "exec_full", "exec_keyed", "parallel", "run_body", "run_sub", "sub_op"]

# Frames one level of the full path costs (exec, exec_full, attempts, attempt, body,
# factory) before extension wrappers: used to stop runaway nesting before CPython does.
_FULL_PATH_FRAMES = 7


_OPTION_NAMES = frozenset(ExecOptions.__annotations__)


@final
class Call:
    """One ``exec``/``run`` on the full path: what runs, under which parent, with which
    options. Built once per call; every attempt reads it."""

    __slots__ = (
        "args",
        "input",
        "journal",
        "key",
        "kind",
        "kwargs",
        "name",
        "options",
        "parent",
        "retry",
        "tags",
        "target",
        "timeout",
    )

    def __init__(
        self,
        parent: ExecutionContext,
        kind: ExecKind,
        target: Any,
        input: object,
        args: tuple[object, ...],
        kwargs: dict[str, object] | None,
        options: ExecOptions,
    ) -> None:
        # The options dict is read directly: no keyword binding per exec.
        self.parent = parent
        self.kind: ExecKind = kind
        self.target = target
        self.input = input
        self.args = args
        self.kwargs = kwargs
        self.options = options  # the retry pacing is read from it when a retry comes
        self.key = options.get("key")
        self.timeout = options.get("timeout")
        self.retry = options.get("retry", 0)
        tags = options.get("tags")
        self.tags = checked_tags(tags) if tags else ()
        self.name = options.get("name") or ""
        self.journal: Journal | None = None  # a keyed call's journal (set by exec_full)


def exec_options(
    parent: ExecutionContext, flow: Flow[Any, Any], input: object, options: ExecOptions
) -> Coroutine[Any, Any, object]:
    """``ctx.exec`` with options (or on a scope whose execs all take the full path): the
    options checked here, the exec's coroutine returned (no frame of its own)."""
    if not _OPTION_NAMES.issuperset(options):
        unknown = set(options) - _OPTION_NAMES
        msg = (
            f"exec() got unexpected keyword argument(s) {', '.join(sorted(unknown))}; "
            f"options are {', '.join(sorted(_OPTION_NAMES))}"
        )
        raise TypeError(msg)
    return exec_full(Call(parent, "subflow", flow, input, (), None, options))


async def exec_full(call: Call) -> object:
    parent, kind, target = call.parent, call.kind, call.target
    if parent._status is not _OPEN or parent._cancelled:
        parent._refuse("run" if kind == "fn" else "exec")
    scope = parent.scope
    if scope._init_pending:
        await scope._run_init()
    if kind == "fn":
        if not callable(target):
            msg = f"ctx.run() takes a callable (got {shown(target)})"
            raise TypeError(msg)
        call.name = call.name or getattr(target, "__name__", None) or repr(target)
    else:
        if not isinstance(target, Flow):
            msg = (
                f"ctx.exec() takes a flow (got {shown(target)}); use ctx.run() for plain callables"
            )
            raise TypeError(msg)
        call.name = call.name or target.name
    step_name, timeout, retry, key = call.name, call.timeout, call.retry, call.key
    check_timeout(timeout, step_name)
    if not isinstance(retry, int) or retry < 0:
        msg = f"retry= must be a non-negative int (got {shown(retry)}) for {step_name!r}"
        raise ValueError(msg)
    if retry:
        _check_retry_options(call.options, step_name)
    if key is None:
        if retry == 0:  # one attempt: no retry loop (one coroutine frame less)
            return await _attempt(call, 1)
        return await _attempts(call)
    check_key(key, step_name)
    journal = call.journal = scope._journal_of(parent.root)
    if not journal.loaded:
        await journal._load()
    given = call.input if kind != "fn" else (call.args, call.kwargs or {})
    entry = journal.entries.get(key)
    if entry is not None:
        return _replayed(parent, kind, step_name, call.input, key, entry, given)
    attempts = partial(_attempt, call, 1) if retry == 0 else partial(_attempts, call)
    return await journal.run(key, step_name, attempts, parent, timeout, given)


def _replayed(
    parent: ExecutionContext,
    kind: ExecKind,
    name: str,
    input: object,
    key: str,
    entry: Entry,
    given: object,
) -> object:
    """The outcome of a keyed exec whose key the journal holds, noted as a replay."""
    # Visible to tracers and tree printouts: this step was replayed, not run.
    x = parent._extra()
    metadata = x.metadata
    if metadata is None:
        metadata = x.metadata = {}
    replays = metadata.setdefault("journal_replays", [])
    assert isinstance(replays, list)
    replays.append(key)
    recorder = parent.scope._recorder
    if recorder is not None:  # run trees: a replayed step is a node too
        recorder.note_replay(parent, kind, name, input, key, entry, given)
    return entry.replay(key, name, given)


# Frames one level of the keyed lane costs (exec, exec_keyed, run_sub, factory) before
# extension wrappers.
_KEYED_FRAMES = 4


async def exec_keyed(
    parent: ExecutionContext, flow: Flow[Any, Any], input: object, key: object
) -> object:
    """``ctx.exec(flow, input, key=k)`` with no other option, on a scope whose execs are
    plain or wrapped by exec extensions alone: the full path's keyed exec (``exec_full``
    → ``Journal.run`` → ``_attempt`` → ``run_body``) in one frame, when the key can be
    claimed without waiting (nobody in this tree runs it, and the store already holds the
    tree for this root). Otherwise, and for every other option, the full path. The same
    outcomes, records, nodes and errors as the full path: the tests run both lanes."""
    if parent._status is not _OPEN or parent._cancelled:
        parent._refuse("exec")
    scope = parent.scope
    name = flow.name
    check_key(key, name)
    assert isinstance(key, str)
    boundary = parent._boundary or parent  # parent.root, inline
    root = boundary._root or boundary
    x = root._x
    journal = x.journal if x is not None and x.journal is not None else scope._journal_of(root)
    if not journal.loaded:
        await journal._load()
    entry = journal.entries.get(key)
    if entry is not None:
        return _replayed(parent, "subflow", name, input, key, entry, input)
    if not journal.claim_now(key):
        return await exec_full(Call(parent, "subflow", flow, input, (), None, {"key": key}))
    try:
        try:
            # _attempt, for one attempt with no timeout, tags, presets or hooks
            if parent._status is not _OPEN or parent._cancelled:
                parent._refuse("exec")
            wrappers = scope._wrap_exec
            child = _open_child(parent, name, input, _KEYED_FRAMES + len(wrappers))
            journal.running[key] = child
            recorder = scope._record_only
            if not wrappers:
                value = await run_sub((child, flow, input))
            elif recorder is not None and (rec := recorder.start(child, parent, key)) is not False:
                # The recorder alone, inline: the child is its own record, as on the
                # plain path (tests/runs/test_record_lanes.py)
                if rec is None:
                    value = await run_sub((child, flow, input))
                else:
                    try:
                        value = await run_sub((child, flow, input))
                    except BaseException:
                        child._out = FAILED
                        raise
                    child._out = value
            else:
                op = sub_op(child, flow, input, key)
                body = MethodType(run_sub, (child, flow, input))
                try:
                    if len(wrappers) == 1:
                        value = await wrappers[0](body, op)
                    else:
                        value = await run_wrapped(wrappers, body, op)
                except BaseException as exc:
                    if child._status is not _OPEN:
                        raise
                    raise await child._fail(exc)
                if child._status is _OPEN:
                    # An extension answered without running the body (a cache, say).
                    await child._succeed()
        except (asyncio.CancelledError, Cancelled, ExecTimeoutError):
            raise  # never journaled: the next exec with this key runs the step again
        except Exception as exc:
            mine = Entry(name, False, None, exc, input)
            if await journal._record(key, mine) is mine:
                raise
        else:
            mine = Entry(name, True, value, None, input)
            if await journal._record(key, mine) is mine:
                return value
        # Another worker recorded this key first: its outcome is the step's outcome.
        return journal.entries[key].replay(key, name)
    finally:
        journal._unclaim(key)


def sub_op(child: ExecutionContext, flow: Flow[Any, Any], input: object, key: str | None) -> ExecOp:
    """``ExecOp("subflow", flow, input, key, child)`` for the lanes that run ``run_sub``
    under wrappers, built without ``__init__`` (about half the cost)."""
    op = new_op(ExecOp)
    op.kind = "subflow"
    op.target = flow
    op.input = input
    op.key = key
    op.context = child
    op.attempt = 1
    return op


def _check_retry_options(options: ExecOptions, step_name: str) -> None:
    """The retry pacing options, checked before the first attempt runs (a bad one would
    otherwise surface only at the first retry, in place of the step's own error)."""
    for name in ("retry_delay", "retry_backoff", "retry_jitter"):
        if name not in options:
            continue
        value = options[name]
        positive = name == "retry_backoff"  # a factor: 0 would stop the pauses at once
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and (value > 0 if positive else value >= 0)
        )
        if not ok:
            what = "> 0" if positive else ">= 0"
            msg = f"{name}= must be a number {what} (got {shown(value)}) for {step_name!r}"
            raise ValueError(msg)
    retry_on = options.get("retry_on", Exception)
    kinds = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if not kinds or not all(isinstance(k, type) and issubclass(k, BaseException) for k in kinds):
        msg = (
            f"retry_on= must be an exception class or a tuple of them (got {shown(retry_on)}) "
            f"for {step_name!r}"
        )
        raise TypeError(msg)


async def _attempts(call: Call) -> object:
    parent = call.parent
    attempt = 1
    pause = 0.0
    while True:
        try:
            return await _attempt(call, attempt, pause)
        except Exception as exc:
            if (
                attempt > call.retry
                or isinstance(exc, (Cancelled, RecursionError))  # NestingError: never
                or not isinstance(exc, call.options.get("retry_on", Exception))
                or parent._cancelled
                or parent._status is not _OPEN
            ):
                raise
        options = call.options
        jitter = options.get("retry_jitter", 0.0)
        pause = options.get("retry_delay", 0.0) * (
            options.get("retry_backoff", 1.0) ** (attempt - 1)
        ) + (random.random() * jitter if jitter else 0.0)
        attempt += 1


async def _attempt(call: Call, attempt: int, pause: float = 0.0) -> object:
    parent, kind, target, input, key = call.parent, call.kind, call.target, call.input, call.key
    if parent._status is not _OPEN or parent._cancelled:
        parent._refuse("run" if kind == "fn" else "exec")
    scope = parent.scope
    wrappers = scope._wrap_exec
    child = _open_child(parent, call.name, input, _FULL_PATH_FRAMES + len(wrappers))
    if call.tags:
        child._bind_tags(call.tags)
    if key is not None:
        journal = call.journal
        assert journal is not None
        journal.running[key] = child
    if pause > 0:
        # The retry pause belongs to the attempt's child, so cancelling or closing the
        # parent (even an idle boundary) reaches it at once.
        try:
            await asyncio.sleep(pause)
        except BaseException as exc:
            raise await child._fail(exc)
    if scope._lifecycle:
        try:
            await scope._context_opened(child)
        except BaseException as exc:
            raise await child._fail(exc)
    args, kwargs, timeout = call.args, call.kwargs, call.timeout
    if not wrappers:
        return await run_body(child, kind, target, input, args, kwargs, timeout)
    op = ExecOp(kind, target, input, key, child, attempt)
    body = partial(run_body, child, kind, target, input, args, kwargs, timeout)
    try:
        result = await run_wrapped(wrappers, body, op)
    except BaseException as exc:
        if child._status is not _OPEN:
            raise
        raise await child._fail(exc)
    if child._status is _OPEN:
        # An extension answered without running the body (a cache, say).
        await child._succeed()
    return result


def _time_out(ctx: ExecutionContext, seconds: float) -> None:
    if ctx._status is _OPEN and ctx._task is not None:
        ctx._mark_cancelled(f"timed out after {seconds:g}s", timed_out=seconds)


async def run_body(
    ctx: ExecutionContext,
    kind: ExecKind,
    target: Any,
    input: object,
    args: tuple[object, ...],
    kwargs: dict[str, object] | None,
    timeout: float | None,
) -> object:
    """Run the work of ``ctx`` (a child, or a ``scope.exec`` root) and close ``ctx``."""
    scope = ctx.scope
    handle = None
    if timeout is not None:
        assert ctx._task is not None
        handle = ctx._task.get_loop().call_later(timeout, _time_out, ctx, timeout)
    token = _current.set(ctx)
    try:
        if ctx._cancelled:
            ctx.raise_if_cancelled()
        if kind == "fn":
            result = target(*args, **(kwargs or {}))
        else:
            flow: Flow[Any, Any] = target
            replacement = scope._flow_presets.get(flow, MISSING) if scope._flow_presets else MISSING
            if replacement is not MISSING:
                if not isinstance(replacement, Flow):
                    result = replacement
                    flow = None  # type: ignore[assignment]
                else:
                    flow = replacement
            if flow is not None:
                if flow.parse is not None:
                    ctx.input = flow.parse_input(input)
                if flow.deps:
                    deps = await scope._resolver.context_deps(ctx, flow.deps, ())
                    result = flow.factory(ctx, **deps)
                else:
                    result = flow.factory(ctx)
        if type(result) is CoroutineType or inspect.isawaitable(result):
            result = await result
        elif kind != "fn" and inspect.isasyncgen(result):
            result = await _stream.collect(result)  # a streaming flow, exec'd: its items
    except GeneratorExit:
        if handle is not None:
            handle.cancel()
        reset_abandoned(token)
        ctx._abandon()
        raise
    except BaseException as exc:
        if handle is not None:
            handle.cancel()
        _current.reset(token)
        raise await ctx._fail(exc)
    if handle is not None:
        handle.cancel()
    _current.reset(token)
    if ctx._x is None and not ctx._cancelled and not ctx._running and not scope._lifecycle:
        # Nothing registered on the context: finish it the way the plain path does.
        ctx._status = "completed"
        ctx._completed_at = time()
        parent = ctx.parent
        if parent is None:
            scope._forget_root(ctx)
        elif parent._running:
            parent._detach(ctx)
    else:
        await ctx._succeed()
    return result


async def run_sub(body: tuple[ExecutionContext, Flow[Any, Any], object]) -> object:
    """``run_body`` for a plain ``ctx.exec`` under exec wrappers alone (no presets, no
    timeout, no lifecycle hooks): the body of the inline plain path, in its own frame so
    that the wrappers can await it. Its one argument is ``(child, flow, input)``: bound
    to it (``MethodType(run_sub, (child, flow, input))``, the cheapest ``next`` to
    build) it is what a wrapper's ``next()`` runs, whatever the wrapper does to the op's
    fields; the lanes with no wrapper to call await it directly, with no op."""
    ctx, flow, input = body
    token = _current.set(ctx)
    try:
        if ctx._cancelled:  # a wrapper awaited something, and the child was cancelled
            ctx.raise_if_cancelled()
        if flow.plain:
            result: Any = await flow.factory(ctx)  # type: ignore[misc]
        else:
            if flow.parse is not None:
                ctx.input = flow.parse_input(input)
            if flow.deps:
                deps = await ctx.scope._resolver.context_deps(ctx, flow.deps, ())
                result = flow.factory(ctx, **deps)
            else:
                result = flow.factory(ctx)
            if flow.is_async or inspect.isawaitable(result):
                result = await result
            elif flow.is_stream:
                result = await _stream.collect(result)
    except GeneratorExit:
        reset_abandoned(token)
        ctx._abandon()
        raise
    except BaseException as exc:
        _current.reset(token)
        raise await ctx._fail(exc)
    _current.reset(token)
    # (a cancel leaves ``_x`` set: the plain path's test, plus hooks added meanwhile)
    if ctx._x is None and ctx._running is None and not ctx.scope._lifecycle:
        ctx._status = "completed"
        ctx._completed_at = time()
        parent: Any = ctx.parent
        running = parent._running
        if running is ctx:  # parent._detach(ctx), inline for its common case
            parent._running = None
            if parent._x is not None:
                parent._drained()
        elif running:
            parent._detach(ctx)
    else:
        await ctx._succeed()
    return result


async def parallel(
    ctx: ExecutionContext, aws: tuple[Awaitable[Any], ...], *, settled: bool
) -> list[Any]:
    if ctx._status is not _OPEN or ctx._cancelled:
        for aw in aws:  # never leave a coroutine un-awaited
            if inspect.iscoroutine(aw):
                aw.close()
        ctx._refuse("run parallel work")
    scope = ctx.scope
    if scope._init_pending:
        await scope._run_init()

    async def run() -> list[Any]:
        return await _gather(aws, settled=settled)

    if not scope._wrap_exec:
        return await run()
    op = ExecOp("parallel", None, None, None, ctx)
    return await run_wrapped(scope._wrap_exec, run, op)  # type: ignore[return-value]


async def _gather(aws: tuple[Awaitable[Any], ...], *, settled: bool) -> list[Any]:
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    if not tasks:
        return []
    first: BaseException | None = None
    try:
        if settled:
            await asyncio.wait(tasks)
        else:
            pending: set[asyncio.Future[Any]] = set(tasks)
            while pending and first is None:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                for t in tasks:  # the earliest failure; argument order breaks ties
                    if t.done():
                        if t.cancelled():
                            first = Cancelled("parallel member", "its task was cancelled")
                        else:
                            first = t.exception()
                        if first is not None:
                            break
            if pending:
                for p in pending:
                    p.cancel()
                await _join(pending)
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        await _join(tasks)
        _retrieve(tasks)
        raise
    _retrieve(tasks)
    if settled:
        out: list[Any] = []
        for t in tasks:
            if t.cancelled():
                error = Cancelled("parallel member", "its task was cancelled")
                out.append(Settled(False, None, error))
            elif t.exception() is not None:
                out.append(Settled(False, None, t.exception()))
            else:
                out.append(Settled(True, t.result(), None))
        return out
    if first is not None:
        raise first
    return [t.result() for t in tasks]


def _retrieve(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Mark every member's exception as retrieved (no "never retrieved" log)."""
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()


async def _join(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Wait until every task is done, even if this task is cancelled meanwhile (the
    cancellation is re-raised afterwards: never swallowed)."""
    remaining = {t for t in tasks if not t.done()}
    cancelled = False
    while remaining:
        try:
            await asyncio.wait(remaining)
        except asyncio.CancelledError:
            cancelled = True
        remaining = {t for t in remaining if not t.done()}
    if cancelled:
        raise asyncio.CancelledError


# The context's methods call this engine; it sits above them in the layers, so it installs
# itself instead of being imported from below (no import cycle).
_context.install_engine(sys.modules[__name__], _stream)
