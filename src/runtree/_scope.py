"""Scope: owns atoms (resolved once, cleaned up in reverse order), extensions, presets and
the roots of execution trees."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextvars import ContextVar
from time import time as _time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, final, overload

from . import _run  # noqa: F401  (loads the exec engine the contexts delegate to)
from ._context import (
    ExecutionContext,
    _new_context,
    boundary_context,
    checked_tags,
    has_given_id,
)
from ._defs import Atom, Flow, Preset, Resource
from ._execution import Execution, ExecutionDetails
from ._extensions import Extension, overrides
from ._journal import Journal, JournalBackend
from ._json import check_name, shown
from ._recorder import Recorder, RecordMode, make_recorder
from ._resolve import ResolveContext as ResolveContext
from ._resolve import Resolver
from ._tags import ALL_VALUES, MISSING, Tag, Tagged
from .errors import (
    MissingTagError,
    ScopeDisposedError,
)

if TYPE_CHECKING:
    from ._override import Override
    from .stores._base import Store

__all__ = ["Scope", "create_scope"]

T = TypeVar("T")
In = TypeVar("In")
Out = TypeVar("Out")
Y = TypeVar("Y")

log = logging.getLogger("runtree")
# The scope whose async Extension.init is running here (tasks it starts inherit it).
_initializing: ContextVar[Scope | None] = ContextVar("runtree_initializing", default=None)
_root_owner_ids = itertools.count(1)  # one journal owner per root


@final
class Scope:
    """Owns atoms and their cleanup, extensions, presets and open execution trees.

    Create with :func:`runtree.create_scope`; ``async with`` disposes it on exit.
    """

    def __init__(
        self,
        *,
        tags: Iterable[Tagged[Any]] = (),
        extensions: Iterable[Extension] = (),
        presets: Iterable[Preset[Any]] = (),
        store: Store | None = None,
        record: RecordMode = "durable",
        record_limit: int = 4096,
        record_values: bool = True,
    ) -> None:
        if store is not None and not callable(getattr(store, "journal_backend", None)):
            url = isinstance(store, str)
            hint = " (open a URL with runtree.stores.from_url(url))" if url else ""
            msg = f"create_scope(store=...) takes a runtree store{hint} (got {shown(store)})"
            raise TypeError(msg)
        self._recorder = make_recorder(store, record, record_limit, record_values)
        self._tag_view: dict[object, object] = {}
        for item in tags:
            if not isinstance(item, Tagged):
                msg = (
                    "create_scope(tags=...) takes bound tags like tenant('acme') "
                    f"(got {shown(item)})"
                )
                raise TypeError(msg)
            self._tag_view[item.tag] = item.value
            self._tag_view[(ALL_VALUES, item.tag)] = (item.value,)
        self._resolver = resolver = Resolver(self, presets)
        # The same dicts as the resolver's: the hot paths read them without a hop.
        self._cache = resolver.cache
        self._presets = resolver.presets
        self._flow_presets = resolver.flow_presets
        self.store = store
        self._roots: dict[ExecutionContext, None] = {}
        self._overrides: list[Override] = []  # active scope.override()s, oldest first
        self._disposed = False  # atom cleanups have begun: nothing resolves any more
        # Dispose has begun: no new context or execution (atoms still resolve while the
        # open contexts close; their cleanups may need them).
        self._ending = False
        # The dispose under way, until it is over: a second dispose() waits for it.
        self._closing: asyncio.Future[None] | None = None
        self._extensions: list[Extension] = []
        self._init_pending: list[Extension] = []
        self._init_running: asyncio.Future[None] | None = None
        self._wrap_exec: list[Callable[..., Awaitable[object]]] = []
        self._wrap_resolve: list[Callable[..., Awaitable[object]]] = []
        self._open_hooks: list[Callable[[ExecutionContext], object]] = []
        self._close_hooks: list[Callable[[ExecutionContext], object]] = []
        # Some extension watches context lifecycles: every context is then reported to
        # the open and the close hooks, in pairs, whichever of the two exist.
        self._lifecycle = False
        self._exec_slow = bool(self._flow_presets)
        self._wrap_only = False
        self._record_only: Recorder | None = None
        # Each plain exec level costs 2 frames; keep headroom for the caller and cleanups.
        self._max_depth = sys.getrecursionlimit() - 120
        self._journal_owner = ""
        self._warned_id = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop boundaries start with
        if self._recorder is not None:  # run trees: the outermost wrapper (see _recorder)
            self._add_extension(self._recorder)
        for ext in extensions:
            self._add_extension(ext)

    # -- tags ------------------------------------------------------------------------

    def _get_tag(self, tag: Tag[T]) -> T:
        value = self._tag_view.get(tag, MISSING)
        if value is MISSING:
            value = tag._default
            if value is MISSING:
                raise MissingTagError(tag.label, "scope")
        return value  # type: ignore[return-value]

    # -- extensions ------------------------------------------------------------------

    def _add_extension(self, ext: Extension) -> None:
        self._extensions.append(ext)
        init = getattr(ext, "init", None)
        if init is not None and overrides(ext, "init"):
            if inspect.iscoroutinefunction(init):
                self._init_pending.append(ext)
            else:
                result = init(self)
                if inspect.isawaitable(result):  # pragma: no cover - defensive
                    msg = f"{ext!r}.init returned an awaitable; declare it `async def init`"
                    raise TypeError(msg)
        self._rebuild_hooks()

    def _rebuild_hooks(self) -> None:
        exts = self._extensions
        self._wrap_exec = [e.wrap_exec for e in exts if overrides(e, "wrap_exec")]
        self._wrap_resolve = [e.wrap_resolve for e in exts if overrides(e, "wrap_resolve")]
        self._open_hooks = [e.on_context_open for e in exts if overrides(e, "on_context_open")]
        self._close_hooks = [
            e.on_context_close for e in reversed(exts) if overrides(e, "on_context_close")
        ]
        # Anything that needs more than the inline plain exec path sends every exec of the
        # scope down the full path (one flag to test on the hot path).
        self._lifecycle = bool(self._open_hooks or self._close_hooks)
        others = bool(self._flow_presets or self._init_pending or self._lifecycle)
        self._exec_slow = bool(self._wrap_exec) or others
        # Only wrap_exec hooks: exec builds the child itself and calls the wrappers.
        self._wrap_only = bool(self._wrap_exec) and not others
        # The run-tree recorder as the only one: the exec lanes call it inline (no frame).
        rec = self._recorder
        alone = rec is not None and self._wrap_only and self._wrap_exec == [rec.wrap_exec]
        self._record_only = rec if alone else None

    def use_extension(self, ext: Extension) -> Callable[[], None]:
        """Add ``ext`` (innermost so far); returns a function that removes it."""
        self._check_open("add an extension")
        self._add_extension(ext)

        def remove() -> None:
            if ext in self._extensions:
                self._extensions.remove(ext)
                if ext in self._init_pending:
                    self._init_pending.remove(ext)
                self._rebuild_hooks()

        return remove

    async def _run_init(self) -> None:
        """Run the pending async ``init`` hooks, once, before any resolve or exec goes on:
        concurrent first calls wait for the one that runs them. A failing ``init`` stays
        pending (the next call runs it again, as a failing atom factory is not cached);
        its error reaches every call that waited for it."""
        while self._init_pending:
            running = self._init_running
            if running is not None:
                if _initializing.get() is self:
                    # An init itself resolving or execing (in its task, or in one it
                    # started, which inherits the variable): it goes on.
                    return
                await asyncio.shield(running)
                continue
            done = self._init_running = asyncio.get_running_loop().create_future()
            try:
                while self._init_pending:
                    ext = self._init_pending[0]
                    token = _initializing.set(self)
                    try:
                        await ext.init(self)  # type: ignore[misc]
                    finally:
                        _initializing.reset(token)
                    if self._init_pending and self._init_pending[0] is ext:
                        del self._init_pending[0]
            except BaseException as exc:
                if isinstance(exc, Exception):
                    done.set_exception(exc)
                    done.exception()  # retrieved: waiters re-raise it
                else:  # cancelled: a waiter runs the hooks instead
                    done.set_result(None)
                raise
            else:
                done.set_result(None)
            finally:
                self._init_running = None
                self._rebuild_hooks()

    async def _context_opened(self, ctx: ExecutionContext) -> None:
        """Run the open hooks for ``ctx``, after those of any boundary above it that has
        not started work before (``create_context`` is synchronous: a boundary reports
        its opening when its first work starts)."""
        waiting: list[ExecutionContext] = []
        node = ctx.parent
        while node is not None:
            if node._boundary is None and not node._extra().opened:
                waiting.append(node)
            node = node.parent
        for boundary in reversed(waiting):
            await self._run_open_hooks(boundary)
        await self._run_open_hooks(ctx)

    async def _run_open_hooks(self, ctx: ExecutionContext) -> None:
        # The close hooks of the extensions this opening reaches: an extension added
        # later (use_extension) is not told of the close of a context it never saw open.
        ctx._extra().opened = (self._close_hooks,)
        for hook in self._open_hooks:
            result = hook(ctx)
            if inspect.isawaitable(result):
                await result

    async def _context_closed(self, ctx: ExecutionContext) -> None:
        hooks = self._close_hooks
        x = ctx._x
        if x is not None and x.opened and x.opened[0] is not hooks:
            then = x.opened[0]
            hooks = [hook for hook in hooks if hook in then]
        for hook in hooks:
            result = hook(ctx)
            if inspect.isawaitable(result):
                await result

    # -- atoms -----------------------------------------------------------------------

    def _check_open(self, operation: str) -> None:
        if self._disposed:
            raise ScopeDisposedError(operation)

    def _check_preset_cycles(self) -> None:
        self._resolver.check_preset_cycles()

    async def release(self, atom: Atom[Any]) -> None:
        """Run ``atom``'s cleanups (after releasing the atoms that depend on it) and
        forget it: the next resolve runs its factory again.

        Raises:
            ExceptionGroup: cleanups failed (all of them still ran).
        """
        self._check_open(f"release atom {atom.name!r}")
        await self._resolver.release(atom)

    async def resolve(self, atom: Atom[T]) -> T:
        """The atom's value: resolved once per scope and cached.

        Concurrent first resolves share one factory run; a failing factory is not cached.

        Raises:
            ResolveError: the factory (or a dependency's) raised; the original is
                ``__cause__``.
            DependencyCycleError, MissingTagError, ScopeDisposedError: as themselves.
        """
        try:
            return self._cache[atom]  # type: ignore[return-value]
        except KeyError:
            return await self._resolver.atom(atom, ())  # type: ignore[return-value]
        except TypeError:
            msg = f"scope.resolve() takes an atom (got {shown(atom)})"
            raise TypeError(msg) from None

    # -- contexts and executions -----------------------------------------------------

    def create_context(
        self,
        *,
        tags: Iterable[Tagged[Any]] = (),
        name: str | None = None,
        id: str | None = None,
        parent: ExecutionContext | None = None,
    ) -> ExecutionContext:
        """Open an execution boundary: a root context, or (``parent=``) a nested boundary
        in the parent's tree that inherits its tags and cancellation.

        ``async with scope.create_context() as ctx:`` closes it on exit. ``id=`` (roots
        only) names the tree: with a durable store its journal persists under that id.
        """
        if self._ending:
            raise ScopeDisposedError("create a context")
        if parent is None and id is None and name is None and not tags:
            # The common request/job boundary: built inline (this is on the hot path).
            ctx = _new_context()
            ctx.name = "root"
            ctx.parent = None
            ctx.scope = self
            ctx.input = None
            ctx._status = "running"
            ctx._started_at = _time()
            ctx._task = None
            ctx._boundary = None
            ctx._root = None
            ctx._x = None
            ctx._loop = self._loop
            ctx._running = None
            ctx._tags = self._tag_view
            ctx._depth = 0
            ctx._cancelled = False
            self._roots[ctx] = None
            return ctx
        if parent is not None:
            if id is not None:
                msg = (
                    "create_context(id=...) is for roots only; a nested boundary shares "
                    "its parent's tree"
                )
                raise TypeError(msg)
            if not isinstance(parent, ExecutionContext) or parent.scope is not self:
                msg = (
                    "create_context(parent=...) takes an open context of this scope "
                    f"(got {shown(parent)})"
                )
                raise TypeError(msg)
            if parent.closed:
                parent._refuse("create a nested context")
        else:
            self._check_root_id(id, "create_context")
        checked = checked_tags(tags) if tags else ()
        ctx = boundary_context(self, name or ("root" if parent is None else "boundary"), id, parent)
        if checked:
            ctx._bind_tags(checked)
        if parent is None:
            self._roots[ctx] = None
        return ctx

    async def recover(self, flows: Iterable[Flow[Any, Any]]) -> list[Execution[Any]]:
        """Resume every recorded run left ``running`` by a dead process whose flow is one
        of ``flows`` (see :mod:`runtree.runs`); returns their executions. A run is
        claimed before it is resumed, so many processes may recover at once."""
        from .runs import recover

        if self._ending:
            raise ScopeDisposedError("recover runs")
        return await recover(self, flows)

    def _forget_root(self, ctx: ExecutionContext) -> None:
        self._roots.pop(ctx, None)

    # A streaming flow's execution gives the list of its items (DESIGN §8).
    @overload
    def exec(
        self,
        flow: Flow[In, AsyncIterator[Y]],
        input: object = None,
        *,
        tags: Iterable[Tagged[Any]] = (),
        timeout: float | None = None,
        details: Literal[False] = False,
        id: str | None = None,
    ) -> Execution[list[Y]]: ...
    @overload
    def exec(
        self,
        flow: Flow[In, AsyncIterator[Y]],
        input: object = None,
        *,
        tags: Iterable[Tagged[Any]] = (),
        timeout: float | None = None,
        details: Literal[True],
        id: str | None = None,
    ) -> Execution[ExecutionDetails[list[Y]]]: ...
    @overload
    def exec(  # type: ignore[overload-overlap]
        self,
        flow: Flow[In, Out],
        input: object = None,
        *,
        tags: Iterable[Tagged[Any]] = (),
        timeout: float | None = None,
        details: Literal[False] = False,
        id: str | None = None,
    ) -> Execution[Out]: ...
    @overload
    def exec(  # type: ignore[overload-overlap]
        self,
        flow: Flow[In, Out],
        input: object = None,
        *,
        tags: Iterable[Tagged[Any]] = (),
        timeout: float | None = None,
        details: Literal[True],
        id: str | None = None,
    ) -> Execution[ExecutionDetails[Out]]: ...
    @overload
    def exec(
        self,
        flow: Flow[In, AsyncIterator[Y]],
        input: object = None,
        *,
        tags: Iterable[Tagged[Any]] = (),
        timeout: float | None = None,
        details: bool,
        id: str | None = None,
    ) -> Execution[list[Y]] | Execution[ExecutionDetails[list[Y]]]: ...
    @overload
    def exec(
        self,
        flow: Flow[In, Out],
        input: object = None,
        *,
        tags: Iterable[Tagged[Any]] = (),
        timeout: float | None = None,
        details: bool,
        id: str | None = None,
    ) -> Execution[Out] | Execution[ExecutionDetails[Out]]: ...
    def exec(
        self,
        flow: Flow[In, Out],
        input: object = None,
        *,
        tags: Iterable[Tagged[Any]] = (),
        timeout: float | None = None,
        details: bool = False,
        id: str | None = None,
    ) -> Execution[Any]:
        """Run ``flow`` as a task in a new root context; returns at once an
        :class:`Execution` (status ``pending``) to await, watch or cancel.

        ``details=True``: awaiting gives :class:`ExecutionDetails` and never raises.
        """
        if self._ending:  # (the message is built only then)
            raise ScopeDisposedError(f"exec flow {shown(getattr(flow, 'name', flow))}")
        if not isinstance(flow, Flow):
            msg = (
                f"scope.exec() takes a flow (got {shown(flow)}); use ctx.run() for plain callables"
            )
            raise TypeError(msg)
        self._check_root_id(id, "scope.exec")
        return Execution(self, flow, input, tags=tags, timeout=timeout, details=details, id=id)

    def _check_root_id(self, id: object, what: str) -> None:
        """One rule for root ids, whichever call names the root: a non-empty ``str``
        (and, with a store, one the store can keep: no NUL, no lone surrogate)."""
        if id is None:
            return
        if not isinstance(id, str) or not id:
            msg = f"{what}(id=...) takes a non-empty str (got {shown(id)})"
            raise TypeError(msg)
        if self.store is not None:
            check_name(id, "root id")
        elif not self._warned_id:
            self._warned_id = True
            msg = (
                f"{what}(id={id!r}) on a scope without a store: the tree's journal lives "
                "only as long as this root, so a second root with this id runs its keyed "
                "steps again. Pass store= to create_scope (InMemoryStore within one "
                "process, SqliteStore to survive a restart) to replay them."
            )
            warnings.warn(msg, UserWarning, stacklevel=3)

    def _journal_of(self, root: ExecutionContext) -> Journal:
        x = root._extra()
        if x.journal is None:
            backend: JournalBackend | None = None
            if self.store is not None and has_given_id(root):
                backend = getattr(self.store, "journal_backend", lambda: None)()
            if not self._journal_owner:
                from ._context import _PREFIX

                self._journal_owner = f"{_PREFIX}-{id(self):x}"
            # One owner per root: two roots with the same id open at once (two concurrent
            # commands of one session) must not both believe they hold the tree's claim.
            owner = f"{self._journal_owner}-{next(_root_owner_ids)}"
            x.journal = Journal(root.id, backend, owner)
            if backend is not None:
                journal = x.journal
                journal.keep_text = self._recorder is not None
                root.on_close(journal.release)
        return x.journal

    # -- dispose ---------------------------------------------------------------------

    async def dispose(self) -> None:
        """Close open contexts, then run atom cleanups in reverse resolution order.

        Every cleanup runs even if others fail; failures are raised together as one
        ``ExceptionGroup``. Afterwards every call raises :class:`ScopeDisposedError`.
        Idempotent; a call made while another dispose is under way waits for it. From the
        moment dispose starts, new contexts and executions are refused
        (:class:`ScopeDisposedError`); atoms resolve until the contexts are closed (their
        cleanups may need them), not after.
        """
        await self._dispose(None)

    async def _dispose(self, error: BaseException | None) -> None:
        """``dispose``; ``error``: what left the scope's ``async with`` block (atom
        generators see it at their ``yield``, as a resource sees its owner's error)."""
        running = self._closing
        if running is not None:
            await asyncio.shield(running)
            return
        if self._disposed:
            return
        self._ending = True
        done = self._closing = asyncio.get_running_loop().create_future()
        try:
            failures: list[Exception] = []
            for ctx in reversed(list(self._roots)):
                try:
                    await ctx.close()
                except ExceptionGroup as group:
                    failures.extend(group.exceptions)
                except Exception as exc:
                    failures.append(exc)
            self._disposed = True
            interrupted: asyncio.CancelledError | None = None
            try:
                failures.extend(await self._resolver.dispose(error))
            except asyncio.CancelledError as exc:  # every cleanup ran; raised below
                interrupted = exc
            for ext in reversed(self._extensions):
                if overrides(ext, "dispose"):
                    try:
                        result = ext.dispose(self)
                        if inspect.isawaitable(result):
                            await result
                    except Exception as exc:
                        failures.append(exc)
            if interrupted is not None:
                raise interrupted
        finally:
            self._closing = None
            done.set_result(None)
        if failures:
            raise ExceptionGroup("scope dispose: cleanups failed", failures)

    @property
    def disposed(self) -> bool:
        return self._disposed

    async def __aenter__(self) -> Scope:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.dispose()
        else:
            await self._dispose_after(exc)

    async def _dispose_after(self, error: BaseException) -> None:
        """Dispose after ``error`` left the scope's block: that error is what the caller
        gets; cleanup failures are logged and attached to it as notes (as a boundary's
        are), never raised in its place."""
        try:
            await self._dispose(error)
        except Exception as failure:
            failures = failure.exceptions if isinstance(failure, ExceptionGroup) else (failure,)
            for one in failures:
                log.error(
                    "disposing the scope failed while it closed with %s",
                    shown(error),
                    exc_info=one,
                )
                error.add_note(f"disposing the scope also failed: {shown(one)}")

    def __repr__(self) -> str:
        state = "disposed" if self._disposed else f"{len(self._cache)} atoms"
        return f"<Scope {state}>"

    def __del__(self) -> None:
        # Like an unclosed file: a scope dropped with cleanups still owed never runs them.
        if getattr(self, "_disposed", True):
            return
        owed = self._resolver.owed()
        if owed:
            msg = (
                f"Scope was never disposed; cleanups of {', '.join(map(repr, owed[:5]))} "
                "never ran. Use `async with create_scope() as scope:` or await "
                "scope.dispose()."
            )
            warnings.warn(msg, ResourceWarning, stacklevel=2, source=self)

    def override(
        self,
        target: Atom[T] | Resource[T] | Flow[In, T],
        replacement: T | Atom[T] | Resource[T] | Flow[In, T],
    ) -> Override:
        """``async with scope.override(target, replacement):`` — a preset on this live
        scope for the block: the target's cached value and its dependents are released
        on entry and again on exit (their cleanups run), so resolves inside see the
        replacement and resolves after see the real factory again. ``with`` works too
        (where nothing can be awaited): the cached values are forgotten the same way,
        and their cleanups run when the scope is disposed."""
        from ._override import Override

        return Override(self, target, replacement)


def create_scope(
    *,
    tags: Iterable[Tagged[Any]] = (),
    extensions: Iterable[Extension] = (),
    presets: Iterable[Preset[Any]] = (),
    store: Store | None = None,
    record: RecordMode = "durable",
    record_limit: int = 4096,
    record_values: bool = True,
) -> Scope:
    """Create a :class:`Scope` (the composition root).

    Args:
        tags: Scope-level tag values (the farthest, after every context).
        extensions: Wrap resolution and execution; the first is the outermost.
        presets: ``preset(target, replacement)`` seams; targets never run.
        store: A store from :mod:`runtree.stores` for durable journals.
        record: Which run trees the store records (:mod:`runtree.runs`): ``"durable"``
            (roots with an ``id=`` and session commands), ``"all"`` or ``"none"``.
        record_limit: Bytes of JSON kept of a node's input and output (longer values
            are cut, with a marker).
        record_values: ``False`` records no node input or output at all.
    """
    return Scope(
        tags=tags,
        extensions=extensions,
        presets=presets,
        store=store,
        record=record,
        record_limit=record_limit,
        record_values=record_values,
    )
