"""ExecutionContext: one node of the execution tree.

Hot path notes (see BENCHMARKS.md): ``exec`` with no key, timeout, retry or exec
extensions runs inline in the caller's task: one slotted child object, a ContextVar
set/reset, two ``time.time()`` calls and a dict lookup for the running task. Everything
rare (callbacks, resources, metadata, errors, cancellation state) lives in a lazily created
``_Extra`` record so an idle child stays small.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextvars import ContextVar, Token
from time import time
from types import MethodType, ModuleType
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    TypeVar,
    Unpack,
    final,
    overload,
)

from . import _cancel
from ._defs import Flow, Resource
from ._details import (
    ContextDetails,
    ContextStatus,
    ExecOptions,
    FlowHandle,
    Settled,
    StreamOptions,
)
from ._extensions import run_wrapped
from ._json import shown
from ._tags import ALL_VALUES, MISSING, ParsedTag, Tag, Tagged
from .errors import (
    Cancelled,
    ContextClosedError,
    ExecTimeoutError,
    MissingTagError,
    NestingError,
)

if TYPE_CHECKING:
    from ._defs import Atom
    from ._execution import Execution
    from ._journal import Journal
    from ._scope import Scope
    from ._stream import FlowStream

__all__ = [
    "ContextDetails",
    "ExecOptions",
    "ExecutionContext",
    "FlowHandle",
    "Settled",
    "current_context",
]

log = logging.getLogger("runtree")

T = TypeVar("T")
In = TypeVar("In")
Out = TypeVar("Out")
R = TypeVar("R")
if TYPE_CHECKING:
    # PEP 696 default: a bare ``ExecutionContext`` means ``ExecutionContext[object]`` (no
    # "missing type parameters" under --strict); the stdlib TypeVar has no default before
    # 3.13, and this module imports nothing outside the standard library at run time.
    from typing_extensions import TypeVar as _TypeVarDefault

    InputT = _TypeVarDefault("InputT", default=object, covariant=True)
else:
    InputT = TypeVar("InputT", covariant=True)
Y = TypeVar("Y")


_OPEN: ContextStatus = "running"
PENDING: Any = object()  # ``_out`` of a recorded exec still running
FAILED: Any = object()  # ``_out`` of a recorded exec that raised
_current: ContextVar[ExecutionContext | None] = ContextVar("runtree.current_context", default=None)
_ids = itertools.count(1)
# Ids are unique within the process and, with the prefix, across processes sharing a store.
# A context's id is f"{_PREFIX}-{n}" for its number n (run trees write the number alone,
# with the prefix once per chunk of nodes).
_PREFIX = f"{os.getpid():x}{secrets.token_hex(3)}"
_task_of = _cancel.task_of


def current_context() -> ExecutionContext | None:
    """The innermost running :class:`ExecutionContext` of this task, or ``None``."""
    return _current.get()


class AutoId(str):
    """A context id runtree made (``prefix-n``), as opposed to one given with ``id=``:
    ``type(ctx._id) is str`` holds only for given ids."""

    __slots__ = ()


def has_given_id(ctx: ExecutionContext) -> bool:
    """Whether ``ctx`` is a root created with ``id=`` (its tree is durable, its run
    recorded by default), whatever reading ``ctx.id`` made of a generated one."""
    return type(getattr(ctx, "_id", None)) is str


def checked_tags(tags: object) -> tuple[Tagged[Any], ...]:
    """``tags=`` as a tuple of bound tags, or a ``TypeError`` saying what to write —
    before any context is made (one made and then refused would stay open)."""
    if isinstance(tags, Tagged):
        msg = f"tags= takes a list of bound tags (got {shown(tags)}); write tags=[...]"
        raise TypeError(msg)
    if not isinstance(tags, Iterable):
        msg = f"tags= takes a list of bound tags like [tenant('acme')] (got {shown(tags)})"
        raise TypeError(msg)
    items = tuple(tags)
    for item in items:
        if not isinstance(item, Tagged):
            msg = (
                f"tags= takes bound tags like tenant('acme') (got {shown(item)}); "
                "call the tag with a value"
            )
            raise TypeError(msg)
    return items


def _not_a_tag(tag: object, method: str) -> TypeError:
    return TypeError(
        f"ctx.{method}() takes a tag made with runtree.tag(...) (got {shown(tag)}): pass the "
        "tag object itself, e.g. tenant = runtree.tag('tenant'); ctx.get(tenant)"
    )


def check_timeout(timeout: object, name: str) -> None:
    """``timeout=`` is ``None`` or a positive number of seconds (the error names the
    step)."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        msg = f"timeout= takes seconds (a number) or None (got {shown(timeout)}) for {name!r}"
        raise TypeError(msg)
    if not timeout > 0:
        msg = f"timeout= must be a positive number of seconds (got {shown(timeout)}) for {name!r}"
        raise ValueError(msg)


class _Extra:
    """Rarely used state of a context, created on first use."""

    __slots__ = (
        "boundaries",
        "callbacks",
        "cancel_reason",
        "closed_waiters",
        "closing",
        "drained",
        "error",
        "journal",
        "metadata",
        "opened",
        "own_tags",
        "resources",
        "sealed",
        "timed_out",
        "unstarted",
        "waits",
        "waits_left",
    )

    def __init__(self) -> None:
        # open nested boundaries, as an ordered set (removal is O(1) when one closes)
        self.boundaries: dict[ExecutionContext, None] | None = None
        self.callbacks: list[_Callback] | None = None
        self.cancel_reason: str | None = None
        self.closed_waiters: list[asyncio.Future[None]] | None = None
        self.closing = False
        self.drained: asyncio.Future[None] | None = None
        self.error: BaseException | None = None
        self.journal: Journal | None = None
        self.metadata: dict[str, object] | None = None
        # on_context_open hooks ran for this context: (the scope's close hooks then,)
        self.opened: tuple[list[Callable[[ExecutionContext], object]]] | None = None
        self.own_tags: dict[Tag[Any], object] | None = None
        self.resources: dict[Resource[Any], object] | None = None
        # on_close callbacks have run: whatever registers cleanup later must run it itself
        self.sealed = False
        self.timed_out: float | None = None
        # the root of a scope.exec whose task has not started: its Execution (closed now,
        # both are cancelled)
        self.unstarted: Execution[Any] | None = None
        # tasks waiting in this context without a child of their own (a journal key
        # another exec holds) -> a future set when the last one leaves (see _wait_here)
        self.waits: dict[asyncio.Task[Any], None] | None = None
        self.waits_left: asyncio.Future[None] | None = None


class _Callback:
    """An ``on_close`` callback, or the rest of a generator factory (``finish``)."""

    __slots__ = ("finish", "fn")

    def __init__(
        self,
        fn: Callable[[], object] | None,
        finish: Callable[[BaseException | None], Awaitable[None]] | None = None,
    ) -> None:
        self.fn = fn
        self.finish = finish


@final
class ExecutionContext(Generic[InputT]):
    """One node of the execution tree: the context of a request, job, command or step.

    Made by ``scope.create_context()`` / ``scope.exec()`` (a *boundary*) or by
    ``ctx.exec()`` / ``ctx.run()`` (a child, closed when that exec finishes).
    """

    __slots__ = (
        "_boundary",
        "_cancelled",
        "_completed_at",
        "_data",
        "_depth",
        "_id",
        "_loop",
        "_out",
        "_root",
        "_running",
        "_started_at",
        "_status",
        "_tags",
        "_task",
        "_x",
        "input",
        "name",
        "parent",
        "scope",
    )

    # Not constructed directly: children are built inline by ``exec`` (no __init__ call
    # on the hot path) or by ``_child()``; boundaries by ``boundary_context()``. Slots
    # that stay unset until used: ``_data``, ``_completed_at``, ``_loop`` and ``root``
    # (boundaries only); ``_id`` is ``None`` (children) or unset (an inline root) until
    # first read, or the counter's number (other boundaries).
    # The boundary this context belongs to; ``None`` on a boundary itself (no reference
    # cycle, so a closed root is freed by refcounting, not by the cyclic collector).
    _boundary: ExecutionContext | None
    _loop: asyncio.AbstractEventLoop | None
    _id: str | int | None
    _data: dict[str, Any]
    _completed_at: float
    _started_at: float
    _status: ContextStatus
    _tags: dict[object, object]  # tag -> value, and (ALL_VALUES, tag) -> all values
    _depth: int
    _task: asyncio.Task[Any] | None
    _x: _Extra | None
    _cancelled: bool
    _root: ExecutionContext | None  # boundaries only: None on a root
    # Children running in other tasks than this context's own work: ``None``, the one
    # child (the common case: no container to allocate), or a dict used as an ordered set.
    _running: ExecutionContext | dict[ExecutionContext, None] | None
    # A recorded plain exec's outcome, for the run-tree recorder (set by the recorded
    # copy of the plain path only): PENDING while it runs, then its result, or FAILED
    # (the error is ``_x.error``).
    _out: object
    name: str
    parent: ExecutionContext | None
    scope: Scope
    input: InputT  # the parsed input; annotate ``ctx: ExecutionContext[int]`` to type it

    # -- identity and plain fields ---------------------------------------------------

    @property
    def id(self) -> str:
        """Unique within the process (and across processes sharing a store); a root made
        with ``id=`` keeps that id."""
        ident = getattr(self, "_id", None)  # unset until first read (no exception)
        if type(ident) is not str and type(ident) is not AutoId:
            # Made once, on the first read (recorders and tracers read it per exec). An
            # AutoId, so that a root's id read is never taken for one given with id=.
            ident = self._id = AutoId(f"{_PREFIX}-{next(_ids) if ident is None else ident}")
        return ident

    @property
    def root(self) -> ExecutionContext:
        """The root of this context's tree."""
        b = self._boundary or self
        r = b._root
        return b if r is None else r

    @property
    def data(self) -> dict[str, Any]:
        """This context's own dict: never shared with the parent or siblings."""
        try:
            return self._data
        except AttributeError:
            d: dict[str, Any] = {}
            self._data = d
            return d

    def _closed_at(self) -> float | None:
        return getattr(self, "_completed_at", None)

    @property
    def details(self) -> ContextDetails:
        return ContextDetails(self)

    @property
    def closed(self) -> bool:
        return self._status is not _OPEN

    @property
    def cancelled(self) -> bool:
        """``True`` once this context or an ancestor was cancelled (or timed out)."""
        ctx: ExecutionContext | None = self
        while ctx is not None:
            if ctx._cancelled:
                return True
            ctx = ctx.parent
        return False

    def raise_if_cancelled(self) -> None:
        """Raise :class:`Cancelled` when :attr:`cancelled` is true."""
        ctx: ExecutionContext | None = self
        while ctx is not None:
            if ctx._cancelled:
                x = ctx._x
                raise Cancelled(self.name, None if x is None else x.cancel_reason)
            ctx = ctx.parent
        return

    def __repr__(self) -> str:
        return f"<ExecutionContext {self.name!r} id={self.id} status={self._status}>"

    def _extra(self) -> _Extra:
        x = self._x
        if x is None:
            x = self._x = _Extra()
        return x

    # -- tags ------------------------------------------------------------------------

    def get(self, tag: Tag[T]) -> T:
        """The nearest value of ``tag``: this context, its parents, the scope, the default.

        Raises:
            MissingTagError: nothing binds the tag and it has no default.
        """
        value = self._tags.get(tag, MISSING)
        if value is MISSING:
            try:
                value = tag._default
            except AttributeError:
                raise _not_a_tag(tag, "get") from None
            if value is MISSING:
                raise MissingTagError(tag.label, f"context {self.name!r}")
        return value  # type: ignore[return-value]

    def find(self, tag: Tag[T]) -> T | None:
        """Like :meth:`get`, but ``None`` when there is no value."""
        value = self._tags.get(tag, MISSING)
        if value is MISSING:
            try:
                value = tag._default
            except AttributeError:
                raise _not_a_tag(tag, "find") from None
            if value is MISSING:
                return None
        return value  # type: ignore[return-value]

    @overload
    def set(self, tag: ParsedTag[T], value: object) -> None: ...
    @overload
    def set(self, tag: Tag[T], value: T) -> None: ...
    def set(self, tag: Tag[T], value: object) -> None:
        """Bind ``tag`` on this context only: children created afterwards see it, the
        parent and siblings do not. ``parse``/serializable checks run first."""
        if not isinstance(tag, Tag):
            raise _not_a_tag(tag, "set")
        value = tag.check(value)
        # Copy on write: children share their parent's view until they bind something,
        # which keeps tag lookup O(1) at any depth (and children keep their snapshot).
        view = dict(self._tags)
        self._bind_one(view, tag, value)
        self._tags = view

    def get_all(self, tag: Tag[T]) -> list[T]:
        """Every value of ``tag`` visible here, nearest first (the default excluded)."""
        return list(self._tags.get((ALL_VALUES, tag), ()))  # type: ignore[call-overload,no-any-return]

    def _bind_one(self, view: dict[object, object], tag: Tag[Any], value: object) -> None:
        x = self._extra()
        if x.own_tags is None:
            x.own_tags = {}
        # The view also keeps every visible value, nearest first, for tags.all: this
        # context's own value replaces an earlier one of its own, else goes in front.
        farther: tuple[object, ...] = view.get((ALL_VALUES, tag), ())  # type: ignore[assignment]
        if tag in x.own_tags:
            farther = farther[1:]
        view[tag] = value
        view[(ALL_VALUES, tag)] = (value, *farther)
        x.own_tags[tag] = value

    def _bind_tags(self, tagged: Iterable[Tagged[Any]]) -> None:
        """Bind tags checked by :func:`checked_tags`."""
        view = None
        for item in tagged:
            if view is None:
                view = dict(self._tags)
            self._bind_one(view, item.tag, item.value)
        if view is not None:
            self._tags = view

    # -- resolving -------------------------------------------------------------------

    @overload
    async def resolve(self, target: Atom[T]) -> T: ...
    @overload
    async def resolve(self, target: Resource[T]) -> T: ...
    async def resolve(self, target: Atom[T] | Resource[T]) -> T:
        """The value a dependency on ``target`` would get in this context."""
        if isinstance(target, Resource):
            return await self.scope._resolver.resource(self, target, ())  # type: ignore[return-value]
        return await self.scope.resolve(target)

    # -- running work ----------------------------------------------------------------

    @overload
    async def exec(
        self,
        flow: Flow[object, AsyncIterator[Y]],
        input: object = None,
        **options: Unpack[ExecOptions],
    ) -> list[Y]: ...
    @overload
    async def exec(
        self, flow: Flow[object, Out], input: object = None, **options: Unpack[ExecOptions]
    ) -> Out: ...
    async def exec(
        self, flow: Flow[object, Out], input: object = None, **options: Unpack[ExecOptions]
    ) -> Out:
        """Run ``flow`` in a new child context and close the child when it finishes.

        Args:
            flow: The flow to run; ``input`` is parsed by its ``parse`` first.
            key: Journal key: the outcome is recorded in the tree's journal and a later
                exec with the same key anywhere in the tree replays it without running.
            timeout: Seconds per attempt; :class:`ExecTimeoutError` when exceeded.
            retry: Further attempts after a failure (not after cancellation), each in a
                fresh child context. ``retry_delay`` seconds before the first retry,
                multiplied by ``retry_backoff`` each time, plus up to ``retry_jitter``
                seconds of random jitter; only errors matching ``retry_on`` are retried.
            tags: Bound tags for the child (nearest wins).
            name: The child's name (default: the flow's name).

        Raises:
            ContextClosedError: this context is closed.
            Cancelled: the child (or this context) was cancelled.
            ExecTimeoutError: an attempt exceeded ``timeout``.
        """
        try:
            name = flow.name  # (a try costs nothing in 3.11 until it raises)
        except AttributeError:
            msg = f"ctx.exec() takes a flow (got {shown(flow)}); use ctx.run() for plain callables"
            raise TypeError(msg) from None
        scope = self.scope
        if options:
            if (
                len(options) == 1
                and options.get("key") is not None
                and (not scope._exec_slow or scope._wrap_only)
            ):
                # The most common option alone: the keyed lane (fewer frames).
                return await _run.exec_keyed(self, flow, input, options["key"])  # type: ignore[return-value]
            if not _plain_options(options):
                return await _run.exec_options(self, flow, input, options)  # type: ignore[return-value]
        if scope._exec_slow:
            if scope._wrap_only:
                # Only exec extensions in the way: wrap a plain child, with no layers
                # between the wrappers and the body (n + 3 frames per level).
                if self._status is not _OPEN or self._cancelled:
                    self._refuse("exec")
                # ``answer``: the run-tree recorder, when it is the only extension;
                # ``body``: the child's record. (No new locals: every local of this
                # method costs each exec, the plain path's too.)
                answer: Any = scope._record_only
                body: Any
                if answer is not None:
                    # ---- the plain path below, recording the child: the recorder's
                    # wrap_exec inline, with no op, no wrapper and no extra frame. A
                    # copy made on purpose (a check on the plain path costs every exec);
                    # tests/runs/test_record_lanes.py and test_path_parity.py hold the
                    # two to the same outcomes and trees. ----
                    boundary = self._boundary
                    if boundary is None:
                        boundary = self
                    loop = boundary._loop
                    task = _task_of(loop) if loop is not None else None
                    if task is None:
                        task = _task_of(boundary._bind_loop())
                    child = _new_context()
                    if task is self._task:
                        depth = self._depth + 2
                        foreign = False
                    else:
                        cur = _current.get()
                        depth = (0 if cur is None else cur._depth) + 2
                        foreign = True
                    if depth > scope._max_depth:
                        raise NestingError(name, depth)
                    child.name = name
                    child.parent = self
                    child.scope = scope
                    child.input = input
                    child._tags = self._tags
                    child._status = _OPEN
                    child._depth = depth
                    child._task = task
                    child._boundary = boundary
                    child._x = None
                    child._running = None
                    child._cancelled = False
                    child._id = None
                    child._started_at = time()
                    if foreign:
                        if self._running is None:
                            self._running = child
                        else:
                            self._attach(child)
                    # Recorder.start, inline for the common case: a recorded run, no
                    # parallel call running, the parent not a nested boundary.
                    body = answer.runs.get(boundary._root or boundary)
                    if (
                        body is not None
                        and not body.broken
                        and not answer._parallels
                        and (boundary is not self or self is body.root)
                    ):
                        child._out = PENDING
                        if self is body.root:
                            body.last_direct = child
                            if body.first_direct is None:
                                body.first_direct = child
                        answer.buffer.append(child)
                        body = True
                    else:
                        body = answer.start(child, self)
                    token = _current.set(child)
                    try:
                        if body is False:  # the first exec under a boundary root
                            body = await answer.begin(child, self, flow, input)
                            if child._cancelled:
                                child.raise_if_cancelled()
                        if flow.plain:
                            result: Any = await flow.factory(child)  # type: ignore[misc]
                        else:
                            if flow.parse is not None:
                                if body:  # the node shows the input as given
                                    answer.keep_input(child, input)
                                child.input = flow.parse_input(input)
                            if flow.deps:
                                deps = await scope._resolver.context_deps(child, flow.deps, ())
                                result = flow.factory(child, **deps)
                            else:
                                result = flow.factory(child)
                            if flow.is_async or inspect.isawaitable(result):
                                result = await result
                            elif flow.is_stream:
                                result = await _stream.collect(result)
                    except GeneratorExit:
                        reset_abandoned(token)
                        child._abandon()
                        child._out = FAILED
                        raise
                    except BaseException as exc:
                        _current.reset(token)
                        child._out = FAILED
                        raise await child._fail(exc)
                    _current.reset(token)
                    if child._x is None and child._running is None:
                        child._status = "completed"
                        child._completed_at = time()
                        if foreign:
                            if self._running is child:
                                self._running = None
                                if self._x is not None:
                                    self._drained()
                            else:
                                self._detach(child)
                    else:
                        await child._succeed()
                    child._out = result
                    return result  # type: ignore[no-any-return]
                wrappers = scope._wrap_exec
                child = _open_child(self, name, input, 3 + len(wrappers))
                op = _run.sub_op(child, flow, input, None)
                # ``next``: the body bound to its arguments (cheaper than a partial; a
                # lambda would turn child/flow/input into cells, slowing the plain path)
                body = MethodType(_run.run_sub, (child, flow, input))
                try:
                    # run_wrapped(wrappers, body, op), inlined: its call is 2 % of this lane
                    if len(wrappers) == 1:
                        answer = await wrappers[0](body, op)
                    else:
                        answer = await run_wrapped(wrappers, body, op)
                except BaseException as exc:
                    if child._status is not _OPEN:
                        raise
                    raise await child._fail(exc)
                if child._status is _OPEN:
                    # An extension answered without running the body (a cache, say).
                    await child._succeed()
                return answer  # type: ignore[no-any-return]
            return await _run.exec_options(self, flow, input, options)  # type: ignore[return-value]
        # ---- the plain path: kept inline, since frames and nanoseconds count here ----
        if self._status is not _OPEN or self._cancelled:
            self._refuse("exec")
        boundary = self._boundary
        if boundary is None:
            boundary = self
        loop = boundary._loop
        task = _task_of(loop) if loop is not None else None
        if task is None:  # first exec on this boundary, or a boundary of another loop
            task = _task_of(boundary._bind_loop())
        child = _new_context()
        if task is self._task:
            depth = self._depth + 2
            foreign = False
        else:
            cur = _current.get()
            depth = (0 if cur is None else cur._depth) + 2
            foreign = True
        if depth > scope._max_depth:
            raise NestingError(name, depth)
        child.name = name
        child.parent = self
        child.scope = scope
        child.input = input
        child._tags = self._tags
        child._status = _OPEN
        child._depth = depth
        child._task = task
        child._boundary = boundary
        child._x = None
        child._running = None
        child._cancelled = False
        child._started_at = time()
        if foreign:
            if self._running is None:
                self._running = child
            else:
                self._attach(child)
        token = _current.set(child)
        try:
            if flow.plain:
                result = await flow.factory(child)  # type: ignore[misc]
            else:
                if flow.parse is not None:
                    child.input = flow.parse_input(input)
                if flow.deps:
                    deps = await scope._resolver.context_deps(child, flow.deps, ())
                    result = flow.factory(child, **deps)
                else:
                    result = flow.factory(child)
                if flow.is_async or inspect.isawaitable(result):
                    result = await result
                elif flow.is_stream:
                    result = await _stream.collect(result)
        except GeneratorExit:
            reset_abandoned(token)
            child._abandon()
            raise
        except BaseException as exc:
            _current.reset(token)
            raise await child._fail(exc)
        _current.reset(token)
        if child._x is None and child._running is None:
            child._status = "completed"
            child._completed_at = time()
            if foreign:
                if self._running is child:
                    self._running = None
                    if self._x is not None:
                        self._drained()
                else:
                    self._detach(child)
        else:
            await child._succeed()
        return result  # type: ignore[no-any-return]

    def exec_stream(
        self,
        flow: Flow[object, AsyncIterator[Y]],
        input: object = None,
        **options: Unpack[StreamOptions],
    ) -> FlowStream[Y]:
        """Stream the items of ``flow`` (an async-generator flow) from a new child context.

        ``async for item in ctx.exec_stream(flow, input):`` runs the generator in the
        consumer's task, one step per item, with the child as the current context.
        Options: ``key`` (the items are journaled when the stream completes; a replay
        yields them without running), ``timeout`` (bounds the whole stream), ``tags``,
        ``name``. See :class:`runtree.FlowStream`.

        Raises:
            ContextClosedError: this context is closed.
            TypeError: ``flow`` does not stream, or ``retry=`` was passed.
        """
        return _stream.exec_stream(self, flow, input, options)

    @overload
    async def run(
        self,
        fn: Callable[..., Awaitable[R]],
        *args: object,
        key: str | None = ...,
        timeout: float | None = ...,
        retry: int = ...,
        tags: Iterable[Tagged[Any]] = ...,
        name: str | None = ...,
        retry_delay: float = ...,
        retry_backoff: float = ...,
        retry_jitter: float = ...,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = ...,
        **kwargs: object,
    ) -> R: ...
    @overload
    async def run(
        self,
        fn: Callable[..., R],
        *args: object,
        key: str | None = ...,
        timeout: float | None = ...,
        retry: int = ...,
        tags: Iterable[Tagged[Any]] = ...,
        name: str | None = ...,
        retry_delay: float = ...,
        retry_backoff: float = ...,
        retry_jitter: float = ...,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = ...,
        **kwargs: object,
    ) -> R: ...
    async def run(
        self,
        fn: Callable[..., object],
        *args: object,
        key: str | None = None,
        timeout: float | None = None,
        retry: int = 0,
        tags: Iterable[Tagged[Any]] = (),
        name: str | None = None,
        retry_delay: float = 0.0,
        retry_backoff: float = 1.0,
        retry_jitter: float = 0.0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        **kwargs: object,
    ) -> object:
        """Run a plain callable (sync or async) in a new child context.

        ``fn(*args, **kwargs)`` is called with the child as
        :func:`runtree.current_context`. The options are the same as :meth:`exec`; their
        names (``key``, ``timeout``, ``retry``, ``tags``, ``name``, ``retry_*``) are
        reserved: pass ``functools.partial(fn, key=...)`` to give ``fn`` such an argument.
        """
        return await _run.exec_full(
            _run.Call(
                self,
                "fn",
                fn,
                args if args else None,
                args,
                kwargs,
                {
                    "key": key,
                    "timeout": timeout,
                    "retry": retry,
                    "tags": tags,
                    "name": name,
                    "retry_delay": retry_delay,
                    "retry_backoff": retry_backoff,
                    "retry_jitter": retry_jitter,
                    "retry_on": retry_on,
                },
            )
        )

    async def parallel(self, *aws: Awaitable[T]) -> list[T]:
        """Await ``aws`` concurrently; results in order.

        The first failure cancels the others, waits for them to finish (their
        ``on_close`` callbacks included) and is raised.
        """
        return await _run.parallel(self, aws, settled=False)

    async def parallel_settled(self, *aws: Awaitable[T]) -> list[Settled[T]]:
        """Await ``aws`` concurrently; a :class:`Settled` for each, in order. A member's
        failure never raises here."""
        return await _run.parallel(self, aws, settled=True)

    # -- journal ---------------------------------------------------------------------

    async def reset_journal(self, pattern: str | None = None) -> int:
        """Forget journal entries of this tree whose key matches ``pattern`` (a glob;
        ``None`` = all). Returns how many were forgotten."""
        journal = self.scope._journal_of(self.root)
        return await journal.reset(pattern)

    def journal_keys(self) -> list[str]:
        """Keys recorded in this tree's journal, as loaded in this process."""
        x = self.root._x
        if x is None or x.journal is None:
            return []
        return sorted(x.journal.entries)

    # -- lifecycle -------------------------------------------------------------------

    def on_close(self, fn: Callable[[], object]) -> Callable[[], None]:
        """Run ``fn`` (sync or async) when this context closes.

        Callbacks run in reverse registration order, after the descendants' callbacks;
        ``details.status`` and ``details.error`` are final by then. Returns a function
        that unregisters ``fn``.
        """
        x = self._x
        if self._status is not _OPEN and (x is None or not x.closing or x.sealed):
            self._refuse("register on_close")
        entry = _Callback(fn)
        x = self._extra()
        if x.callbacks is None:
            x.callbacks = []
        x.callbacks.append(entry)
        callbacks = x.callbacks

        def unregister() -> None:
            try:
                callbacks.remove(entry)
            except ValueError:
                pass

        return unregister

    def cancel(self, reason: str | None = None) -> None:
        """Cancel this context's running work and its descendants (not its parent).

        The caller awaiting the cancelled exec gets :class:`Cancelled`; its own task goes
        on. Cancellation is edge-triggered like asyncio's: a body that catches
        ``Cancelled``/``CancelledError`` may keep awaiting; :attr:`cancelled` stays true.
        """
        if self._cancelled or (self._status is not _OPEN):
            return
        self._mark_cancelled(reason)

    def _mark_cancelled(self, reason: str | None, timed_out: float | None = None) -> None:
        self._cancelled = True
        _cancel.generation[0] += 1  # (streams check their ancestors when this moves)
        x = self._extra()
        x.cancel_reason = reason
        if timed_out is not None:
            x.timed_out = timed_out
        if self._task is not None and not self._task.done():
            _cancel.request(self._task, self)
        child: ExecutionContext
        for child in list(self._running_children()):
            if not child._cancelled and child._status is _OPEN:
                child._mark_cancelled(reason)
        for nested in list(x.boundaries or ()):
            if not nested._cancelled and nested._status is _OPEN:
                nested._mark_cancelled(reason)
        if x.waits:
            for task in list(x.waits):
                _cancel.request(task, self)

    async def _wait_here(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` — a wait that has no child context of its own (a journal
        key another exec or worker holds) — so that this context's cancellation and
        close reach it whatever task awaits it: it is cancelled with this context (the
        caller gets :class:`Cancelled`), and closing waits for it to leave."""
        task = _task_of(asyncio.get_running_loop())
        if task is None or task is self._task:
            # This context's own task: its cancellation is delivered here already.
            return await awaitable
        x = self._extra()
        if x.waits is None:
            x.waits = {}
        x.waits[task] = None
        try:
            if self._cancelled:
                _cancel.request(task, self)
            return await awaitable
        except asyncio.CancelledError:
            if _cancel.consume(task, self):
                raise Cancelled(self.name, x.cancel_reason or "closed") from None
            raise
        finally:
            x.waits.pop(task, None)
            if not x.waits and x.waits_left is not None and not x.waits_left.done():
                x.waits_left.set_result(None)

    async def _join_waits(self, x: _Extra) -> None:
        """Cancel the waits in this context (see :meth:`_wait_here`) and wait until
        they left."""
        assert x.waits
        for task in list(x.waits):
            _cancel.request(task, self)
        if x.waits:
            x.waits_left = asyncio.get_running_loop().create_future()
            await x.waits_left

    async def close(self) -> None:
        """Close this context: cancel and join running descendants, close nested
        boundaries, then run ``on_close`` callbacks and resource cleanups. Idempotent.

        Raises:
            ExceptionGroup: one or more cleanups failed (all of them still ran).
            RuntimeError: called from inside this context's own running work.
        """
        x = self._x
        if (
            x is None
            and self._task is None
            and self.parent is None
            and self._status is _OPEN
            and not self._running
            and not self.scope._lifecycle
        ):
            # An idle root with nothing registered (the request hot path).
            self._status = "cancelled" if self._cancelled else "completed"
            self._completed_at = time()
            self.scope._roots.pop(self, None)
            return
        if x is not None and x.closing:
            if self._closed_at() is None:
                await self._wait_closed()
            return
        if self._status is not _OPEN and self._closed_at() is not None:
            return
        if self._task is not None:
            # A running exec child, or a scope.exec root: stop its work; its exec closes it.
            loop = self._task.get_loop()
            if _task_of(loop) is self._task:
                msg = (
                    f"ExecutionContext {self.name!r} cannot close itself from inside its own "
                    "work; return from the flow, or call ctx.cancel()"
                )
                raise RuntimeError(msg)
            self.cancel("closed")
            await self._wait_closed()
            return
        if self._running:
            # Refuse before changing anything: a boundary cannot join work that runs in
            # the very task asking it to close.
            me = _task_of(asyncio.get_running_loop())
            for child in self._running_children():
                if child._task is me:
                    msg = (
                        f"ExecutionContext {self.name!r} cannot close while its child "
                        f"{child.name!r} runs in the closing task; close it after the "
                        "child returns"
                    )
                    raise RuntimeError(msg)
        if self._cancelled or (x is not None and x.unstarted is not None):
            # A cancelled boundary did not finish its work (or, the root of a scope.exec,
            # never started it): its resources see why (the transaction idiom rolls
            # back), like an exec child that was cancelled.
            x = self._extra()
            reason = Cancelled(
                self.name,
                "its scope closed it before it started"
                if x.unstarted is not None
                else x.cancel_reason,
            )
            x.error = reason
            self._status = "cancelled"
            if x.unstarted is not None:
                x.unstarted._closed_unstarted()  # its Execution: cancelled, never running
            await self._close_now(reason, raised=False)
        else:
            self._status = "completed"
            await self._close_now(None)

    async def __aenter__(self) -> ExecutionContext:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: object,
    ) -> None:
        x = self._x
        if exc is None or self._task is not None or self._status is not _OPEN or (x and x.closing):
            await self.close()
            return
        x = self._extra()
        # The block raised: the boundary ends failed (cancelled) with that error, its
        # resources see it at ``yield`` (a transaction rolls back), and the error goes on
        # unchanged; cleanup failures become notes on it.
        cancelled = isinstance(exc, (asyncio.CancelledError, Cancelled))
        x.error = exc
        self._status = "cancelled" if cancelled else "failed"
        await self._close_now(exc)

    async def _wait_closed(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        x = self._extra()
        if x.closed_waiters is None:
            x.closed_waiters = []
        x.closed_waiters.append(fut)
        await fut

    # -- internals -------------------------------------------------------------------

    def _refuse(self, operation: str) -> None:
        if self._status is not _OPEN:
            raise ContextClosedError(self.name, operation)
        x = self._x
        raise Cancelled(self.name, None if x is None else x.cancel_reason)

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        # get_running_loop() costs ~200 ns on 3.11: remember it on the boundary and on
        # the scope, whose next boundaries start with it.
        loop = self._loop = self.scope._loop = asyncio.get_running_loop()
        return loop

    def _running_children(self) -> list[ExecutionContext]:
        running = self._running
        if running is None:
            return []
        if type(running) is dict:
            return list(running)
        return [running]  # type: ignore[list-item]

    def _attach(self, child: ExecutionContext) -> None:
        """Track a child running in another task than this context's own work, so that
        cancelling or closing this context reaches it."""
        running = self._running
        if running is None:
            self._running = child
        elif type(running) is dict:
            running[child] = None
        elif running is not child:
            self._running = {running: None, child: None}  # type: ignore[dict-item]

    def _detach(self, child: ExecutionContext) -> None:
        running = self._running
        if running is child:  # the common case first: the one child it tracked
            self._running = None
            if self._x is not None:
                self._drained()
            return
        if running is None:
            return
        if type(running) is dict:
            running.pop(child, None)
            if running:
                return
            self._running = None
        else:
            return
        self._drained()

    def _drained(self) -> None:
        x = self._x
        if x is not None and x.drained is not None and not x.drained.done():
            x.drained.set_result(None)

    def _abandon(self) -> None:
        """The exec's coroutine was closed without finishing (never awaited to the end)."""
        self._status = "cancelled"
        self._completed_at = time()
        if self._cancelled:
            _cancel.forget(self._task, self)
        if self.parent is not None:
            self.parent._detach(self)

    async def _fail(self, exc: BaseException) -> BaseException:
        """Close this child after its body raised ``exc``; return the error to raise
        (``exc`` itself, or ``Cancelled``/``ExecTimeoutError`` in place of the
        ``CancelledError`` of this context's own cancellation)."""
        x = self._extra()
        err = exc
        if isinstance(exc, asyncio.CancelledError):
            status: ContextStatus = "cancelled"
            if self._cancelled and _cancel.consume(self._task, self):
                if x.timed_out is not None:
                    err = ExecTimeoutError(self.name, x.timed_out)
                    status = "failed"
                else:
                    err = Cancelled(self.name, x.cancel_reason)
        else:
            status = "cancelled" if isinstance(exc, Cancelled) else "failed"
            if self._cancelled:
                # Cancelled (or timed out), but the body turned the CancelledError into
                # another error: take the request back, or the task stays marked as
                # cancelling and later cancellations and timeouts of it are never sent.
                _cancel.discard(self._task, self)
        x.error = err
        self._status = status
        if err is not exc:
            # Raised in place of the CancelledError: the caller sees it alone.
            err.__cause__ = None
            err.__suppress_context__ = True
        await self._close_now(err)
        return err

    async def _succeed(self) -> None:
        if self._cancelled:
            # Cancelled, but the body returned before seeing it: the result stands.
            _cancel.discard(self._task, self)
        self._status = "completed"
        await self._close_now(None)

    async def _close_now(self, error: BaseException | None, *, raised: bool = True) -> None:
        """Run the closing steps; ``_status`` (and ``error``) are already final.

        ``raised``: the caller raises ``error`` itself (cleanup failures become notes on
        it); otherwise cleanup failures are raised here as an ``ExceptionGroup``."""
        x = self._extra()
        x.closing = True
        scope = self.scope
        failures: list[Exception] = []
        interrupted: BaseException | None = None
        reopened = False
        # Callbacks, resource cleanups and close hooks run with this context current: what
        # they log (runtree.logging) carries the ids of the context that is closing.
        token = _current.set(self)
        try:
            if self._running:
                try:
                    await self._join_running()
                except asyncio.CancelledError:
                    if self._task is None:
                        # A boundary whose closer was cancelled while its children were
                        # still unwinding: leave it open (its children and callbacks are
                        # untouched) so that a later close() finishes the job.
                        reopened = True
                        x.closing = False
                        self._status = _OPEN
                        raise
                    if interrupted is None:
                        interrupted = asyncio.CancelledError()
            if x.waits:
                try:
                    await self._join_waits(x)
                except asyncio.CancelledError:
                    if interrupted is None:
                        interrupted = asyncio.CancelledError()
            if x.boundaries:
                # Deepest first, iteratively: a chain of nested boundaries may be far
                # deeper than the recursion limit.
                for nested in _nested_postorder(self):
                    try:
                        await nested.close()
                    except ExceptionGroup as group:
                        failures.extend(group.exceptions)
                    except Exception as exc:  # one nested boundary must not stop the rest
                        failures.append(exc)
            if x.callbacks:
                callbacks = x.callbacks
                while callbacks:
                    entry = callbacks.pop()
                    try:
                        if entry.finish is not None:
                            await entry.finish(error)
                        else:
                            assert entry.fn is not None
                            res = entry.fn()
                            if inspect.isawaitable(res):
                                await res
                    except Exception as exc:
                        if exc is not error:
                            failures.append(exc)
                    except asyncio.CancelledError as exc:
                        if interrupted is None and exc is not error:
                            interrupted = exc
            x.sealed = True
            if scope._lifecycle:
                # Every context is reported open once and closed once, in pairs: a
                # boundary closed before any work reports its opening now.
                try:
                    if not x.opened:
                        await scope._context_opened(self)
                    await scope._context_closed(self)
                except Exception as exc:
                    failures.append(exc)
        finally:
            _current.reset(token)
            if not reopened:
                self._finish_close(x)
        if interrupted is not None:
            raise interrupted
        if failures:
            if error is None or not raised:
                raise ExceptionGroup(f"cleanup of ExecutionContext {self.name!r} failed", failures)
            for failure in failures:
                log.error(
                    "cleanup of ExecutionContext %r failed while it closed with %r",
                    self.name,
                    error,
                    exc_info=failure,
                )
                error.add_note(
                    f"cleanup of ExecutionContext {self.name!r} also failed: {shown(failure)}"
                )

    def _finish_close(self, x: _Extra) -> None:
        """The last step of closing: stamp the time, leave the parent (or the scope's
        roots) and wake whoever waits for this context to close."""
        self._completed_at = time()
        parent = self.parent
        if parent is not None:
            parent._detach(self)
            if self._task is None and parent._x is not None and parent._x.boundaries:
                parent._x.boundaries.pop(self, None)
        else:
            self.scope._forget_root(self)
        if x.closed_waiters:
            for fut in x.closed_waiters:
                if not fut.done():
                    fut.set_result(None)
            x.closed_waiters = None

    async def _join_running(self) -> None:
        x = self._extra()
        loop = asyncio.get_running_loop()
        me = _task_of(loop)
        child: ExecutionContext
        for child in list(self._running_children()):
            if child._task is me:
                msg = (
                    f"ExecutionContext {self.name!r} cannot close while its child "
                    f"{child.name!r} runs in the closing task; close it after the child returns"
                )
                raise RuntimeError(msg)
            if child._status is _OPEN:
                child._mark_cancelled("parent closed")
        if self._running_children():
            x.drained = loop.create_future()
            await x.drained


_new_context = ExecutionContext  # no __init__: a bare slotted object


def _child(
    parent: ExecutionContext,
    name: str,
    input: object,
    depth: int,
    task: asyncio.Task[Any] | None,
) -> ExecutionContext:
    """A child context for exec/run (what the inline plain path builds)."""
    child = _new_context()
    child.name = name
    child.parent = parent
    child.scope = parent.scope
    child.input = input
    child._tags = parent._tags
    child._status = _OPEN
    child._depth = depth
    child._task = task
    child._boundary = parent._boundary or parent
    child._x = None
    child._running = None
    child._cancelled = False
    child._id = None
    child._started_at = time()
    return child


def _open_child(
    parent: ExecutionContext, name: str, input: object, frames: int
) -> ExecutionContext:
    """A child of ``parent`` for an exec whose level costs ``frames`` Python frames: its
    task found, its depth checked (:class:`NestingError` before CPython's limit), and
    tracked by ``parent`` when it runs in another task. (The plain path does this inline.)"""
    boundary = parent._boundary or parent
    loop = boundary._loop
    task = _task_of(loop) if loop is not None else None
    if task is None:
        task = _task_of(boundary._bind_loop())
    foreign = task is not parent._task
    if foreign:  # the frames execs already use where work enters from another task
        cur = _current.get()
        depth = (0 if cur is None else cur._depth) + frames
    else:
        depth = parent._depth + frames
    if depth > parent.scope._max_depth:
        raise NestingError(name, depth)
    child = _child(parent, name, input, depth, task)
    if foreign:
        if parent._running is None:  # _attach, inline for its common case
            parent._running = child
        else:
            parent._attach(child)
    return child


def _plain_options(options: ExecOptions) -> bool:
    """Options that all hold their defaults (``timeout=None, retry=0`` ...) keep an exec
    on the plain path: passing a default explicitly costs nothing."""
    for name, value in options.items():
        if name == "tags":
            if value:
                return False
        elif name in ("key", "timeout", "name"):
            if value is not None:
                return False
        elif name == "retry":
            if value != 0 or type(value) is not int:
                return False
        else:
            return False
    return True


def _nested_postorder(ctx: ExecutionContext) -> list[ExecutionContext]:
    """Open nested boundaries under ``ctx``, every one after its own nested ones."""
    out: list[ExecutionContext] = []
    stack: list[tuple[ExecutionContext, bool]] = [
        (b, False) for b in (ctx._x.boundaries if ctx._x and ctx._x.boundaries else ())
    ]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            out.append(node)
            continue
        stack.append((node, True))
        x = node._x
        if x is not None and x.boundaries:
            stack.extend((b, False) for b in x.boundaries)
    return out


def reset_abandoned(token: Token[ExecutionContext | None]) -> None:
    """``_current.reset(token)`` for an exec whose coroutine was closed unfinished: the
    one closing it may be the garbage collector, in whatever context it runs, where the
    token is foreign (the variable is that context's business then, not ours)."""
    try:
        _current.reset(token)
    except ValueError:
        pass


def boundary_context(
    scope: Scope,
    name: str,
    ident: str | None,
    parent: ExecutionContext | None,
    input: object = None,
) -> ExecutionContext:
    """Make a boundary: a root (``parent=None``) or a nested boundary under ``parent``."""
    ctx = ExecutionContext()
    # A given id is an exact str (durable trees and recorded runs test for that type).
    ctx._id = next(_ids) if ident is None else ident if type(ident) is str else str(ident)
    ctx.name = name
    ctx.parent = parent
    ctx.scope = scope
    ctx.input = input
    ctx._status = _OPEN
    ctx._started_at = time()
    ctx._task = None
    ctx._boundary = None
    ctx._x = None
    ctx._running = None
    ctx._loop = None
    if parent is None:
        ctx._root = None
        ctx._loop = scope._loop
        ctx._tags = scope._tag_view
        ctx._depth = 0  # work enters a root from some task: exec counts that task's depth
        ctx._cancelled = False
    else:
        ctx._root = parent.root
        ctx._tags = parent._tags
        ctx._depth = parent._depth
        ctx._cancelled = parent._cancelled
        ctx._loop = (parent._boundary or parent)._loop
        px = parent._extra()
        if px.boundaries is None:
            px.boundaries = {}
        px.boundaries[ctx] = None
    return ctx


if TYPE_CHECKING:
    from . import _run, _stream
else:
    _run = _stream = None  # the exec engine, installed by install_engine()


def install_engine(run: ModuleType, stream: ModuleType) -> None:
    """Called by :mod:`runtree._run` when it loads: the engine that ``exec``/``run``/
    ``parallel``/``exec_stream`` delegate to lives above this module in the layers."""
    global _run, _stream
    _run, _stream = run, stream
