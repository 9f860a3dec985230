"""Scope: owns atoms (resolved once, cleaned up in reverse order), extensions, presets and
the roots of execution trees."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import sys
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable
from time import time as _time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, final, overload

from . import _run  # noqa: F401  (loads the exec engine the contexts delegate to)
from ._context import (
    ExecutionContext,
    FlowHandle,
    _Callback,
    _new_context,
    boundary_context,
)
from ._defs import Atom, Dep, Flow, Preset, Resource
from ._execution import Execution, ExecutionDetails
from ._extensions import Extension, ResolveOp, overrides, wrapped
from ._journal import Journal, JournalBackend
from ._json import check_name
from ._recorder import RecordMode, make_recorder
from ._tags import ALL_VALUES, MISSING, Tag, TagDep, Tagged
from .errors import (
    Cancelled,
    ContextClosedError,
    DependencyCycleError,
    MissingTagError,
    ResolveError,
    RuntreeError,
    ScopeDisposedError,
)

if TYPE_CHECKING:
    from ._override import Override

__all__ = ["ResolveContext", "Scope", "create_scope"]

T = TypeVar("T")
In = TypeVar("In")
Out = TypeVar("Out")

_RETRY = object()
_root_owner_ids = itertools.count(1)  # a shared first resolve was cancelled: resolve again


@final
class ResolveContext:
    """The ``ctx`` an atom's or resource's factory receives.

    ``cleanup(fn)`` registers cleanup (run in reverse order when the atom is released or
    the scope disposed, or when the resource's owner closes); ``get``/``find`` read tags
    (the scope's for an atom, the owning context's for a resource).
    """

    __slots__ = ("_cleanups", "context", "name", "scope")

    def __init__(self, scope: Scope, name: str, context: ExecutionContext | None = None) -> None:
        self.scope = scope
        self.name = name
        self.context = context
        self._cleanups: list[Callable[[], object]] = []

    def cleanup(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` (sync or async) when this value is cleaned up."""
        self._cleanups.append(fn)

    def get(self, tag: Tag[T]) -> T:
        if self.context is not None:
            return self.context.get(tag)
        return self.scope._get_tag(tag)

    def find(self, tag: Tag[T]) -> T | None:
        if self.context is not None:
            return self.context.find(tag)
        try:
            return self.scope._get_tag(tag)
        except MissingTagError:
            return None


class _Resolved:
    """A resolved atom: its value and how to clean it up."""

    __slots__ = ("atom", "cleanups", "finish")

    def __init__(self, atom: Atom[Any]) -> None:
        self.atom = atom
        self.cleanups: list[Callable[[], object]] = []
        self.finish: Callable[[BaseException | None], Awaitable[None]] | None = None


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
        store: object = None,
        record: RecordMode = "durable",
        record_limit: int = 4096,
        record_values: bool = True,
    ) -> None:
        self._recorder = make_recorder(store, record, record_limit, record_values)
        self._tag_view: dict[object, object] = {}
        for item in tags:
            if not isinstance(item, Tagged):
                msg = f"create_scope(tags=...) takes bound tags like tenant('acme') (got {item!r})"
                raise TypeError(msg)
            self._tag_view[item.tag] = item.value
            self._tag_view[(ALL_VALUES, item.tag)] = (item.value,)
        self._presets: dict[object, object] = {}
        self._flow_presets: dict[Flow[Any, Any], object] = {}
        for p in presets:
            if not isinstance(p, Preset):
                msg = f"create_scope(presets=...) takes preset(target, replacement) (got {p!r})"
                raise TypeError(msg)
            if p.replacement is p.target:
                name = getattr(p.target, "name", repr(p.target))
                raise DependencyCycleError((name, name))
            if isinstance(p.target, Flow):
                self._flow_presets[p.target] = p.replacement
            else:
                self._presets[p.target] = p.replacement
        self._check_preset_cycles()
        self.store = store
        self._cache: dict[Atom[Any], object] = {}
        self._pending: dict[Atom[Any], asyncio.Future[object]] = {}
        self._resolved: dict[Atom[Any], _Resolved] = {}  # insertion = resolution order
        self._dependents: dict[Atom[Any], set[Atom[Any]]] = {}
        self._roots: dict[ExecutionContext, None] = {}
        self._disposed = False
        self._extensions: list[Extension] = []
        self._init_pending: list[Extension] = []
        self._wrap_exec: list[Callable[..., Awaitable[object]]] = []
        self._wrap_resolve: list[Callable[..., Awaitable[object]]] = []
        self._open_hooks: list[Callable[[ExecutionContext], object]] = []
        self._close_hooks: list[Callable[[ExecutionContext], object]] = []
        # Some extension watches context lifecycles: every context is then reported to
        # the open and the close hooks, in pairs, whichever of the two exist.
        self._lifecycle = False
        self._exec_slow = bool(self._flow_presets)
        self._wrap_only = False
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
        while self._init_pending:
            ext = self._init_pending.pop(0)
            await ext.init(self)  # type: ignore[misc]
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
        ctx._extra().opened = True
        for hook in self._open_hooks:
            result = hook(ctx)
            if inspect.isawaitable(result):
                await result

    async def _context_closed(self, ctx: ExecutionContext) -> None:
        for hook in self._close_hooks:
            result = hook(ctx)
            if inspect.isawaitable(result):
                await result

    # -- atoms -----------------------------------------------------------------------

    def _check_open(self, operation: str) -> None:
        if self._disposed:
            raise ScopeDisposedError(operation)

    def _check_preset_cycles(self) -> None:
        """Presets are the only way to build a cycle (deps exist before their users):
        find any when the scope is built."""

        def visit(node: object, path: tuple[object, ...]) -> None:
            if node in path:
                names = [getattr(n, "name", repr(n)) for n in (*path[path.index(node) :], node)]
                raise DependencyCycleError(tuple(names))
            real = self._presets.get(node, node)
            if real is not node:
                if isinstance(real, (Atom, Resource)):
                    visit(real, (*path, node))
                return
            for _, dep in getattr(node, "deps", ()):
                if isinstance(dep, (Atom, Resource)):
                    visit(dep, (*path, node))

        for target in self._presets:
            visit(target, ())
        for flow in self._flow_presets:
            # A flow preset replaces once; a chain that comes back is a mistake.
            seen = [flow]
            nxt = self._flow_presets.get(flow)
            while isinstance(nxt, Flow):
                if nxt in seen:
                    raise DependencyCycleError((*(f.name for f in seen), nxt.name))
                seen.append(nxt)
                nxt = self._flow_presets.get(nxt)

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
            return await self._resolve_atom(atom, ())  # type: ignore[return-value]
        except TypeError:
            msg = f"scope.resolve() takes an atom (got {atom!r})"
            raise TypeError(msg) from None

    async def _resolve_atom(self, atom: Atom[Any], path: tuple[str, ...]) -> object:
        self._check_open(f"resolve atom {getattr(atom, 'name', atom)!r}")
        if not isinstance(atom, Atom):
            if isinstance(atom, Resource):
                msg = (
                    f"resource {atom.name!r} needs an execution context: resolve it with "
                    "await ctx.resolve(resource) inside a flow"
                )
            else:
                msg = f"scope.resolve() takes an atom (got {atom!r})"
            raise TypeError(msg)
        if self._init_pending:
            await self._run_init()
        while True:
            if atom in self._cache:
                return self._cache[atom]
            name = atom.name
            if name in path and atom in self._pending:
                raise DependencyCycleError((*path[path.index(name) :], name))
            waiting = self._pending.get(atom)
            if waiting is None:
                break
            result = await asyncio.shield(waiting)
            if result is not _RETRY:
                return result
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._pending[atom] = fut
        try:
            value = await self._produce_atom(atom, (*path, atom.name))
        except asyncio.CancelledError:
            fut.set_result(_RETRY)
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it; no "never retrieved" log
            raise
        finally:
            del self._pending[atom]
        fut.set_result(value)
        return value

    async def _produce_atom(self, atom: Atom[Any], path: tuple[str, ...]) -> object:
        replacement = self._presets.get(atom, MISSING)
        if replacement is not MISSING:
            if isinstance(replacement, Atom):
                value = await self._resolve_atom(replacement, path)
                self._dependents.setdefault(replacement, set()).add(atom)
            else:
                value = replacement
            self._resolved[atom] = _Resolved(atom)
            self._cache[atom] = value
            return value
        rctx = ResolveContext(self, atom.name)
        kwargs: dict[str, object] = {}
        for key, dep in atom.deps:
            if isinstance(dep, Atom):
                kwargs[key] = await self._resolve_atom(dep, path)
                self._dependents.setdefault(dep, set()).add(atom)
            else:
                kwargs[key] = self._tag_dep(None, dep)

        async def produce() -> object:
            return await _call_factory(
                atom.kind, atom.factory, rctx, kwargs, record, atom.name, path
            )

        record = _Resolved(atom)
        if self._wrap_resolve:
            value = await wrapped(self._wrap_resolve, produce, ResolveOp(atom, self))()
        else:
            value = await produce()
        record.cleanups = rctx._cleanups
        if self._disposed:  # disposed while the factory ran: clean up at once
            await _run_cleanups(record, None)
            raise ScopeDisposedError(f"resolve atom {atom.name!r}")
        self._resolved[atom] = record
        self._cache[atom] = value
        return value

    def _tag_dep(self, ctx: ExecutionContext | None, dep: Dep) -> object:
        if isinstance(dep, Tag):
            return ctx.get(dep) if ctx is not None else self._get_tag(dep)
        assert isinstance(dep, TagDep)
        t = dep.tag
        if dep.mode == "required":
            return ctx.get(t) if ctx is not None else self._get_tag(t)
        if dep.mode == "optional":
            if ctx is not None:
                return ctx.find(t)
            try:
                return self._get_tag(t)
            except MissingTagError:
                return None
        if ctx is not None:
            return ctx.get_all(t)
        value = self._tag_view.get(t, MISSING)
        return [] if value is MISSING else [value]

    async def release(self, atom: Atom[Any]) -> None:
        """Run ``atom``'s cleanups (after releasing the atoms that depend on it) and
        forget it: the next resolve runs its factory again.

        Raises:
            ExceptionGroup: cleanups failed (all of them still ran).
        """
        self._check_open(f"release atom {atom.name!r}")
        doomed: set[Atom[Any]] = set()
        stack = [atom]
        while stack:
            a = stack.pop()
            if a in doomed:
                continue
            doomed.add(a)
            stack.extend(self._dependents.get(a, ()))
        order = [a for a in self._resolved if a in doomed]
        failures: list[Exception] = []
        for a in reversed(order):
            record = self._resolved.pop(a)
            self._cache.pop(a, None)
            for deps in self._dependents.values():
                deps.discard(a)
            failures.extend(await _run_cleanups(record, None))
        if failures:
            raise ExceptionGroup(f"cleanup of atom {atom.name!r} failed", failures)

    # -- resources and flow dependencies ---------------------------------------------

    async def _resolve_resource(
        self, ctx: ExecutionContext, resource: Resource[Any], path: tuple[str, ...]
    ) -> object:
        self._check_open(f"resolve resource {resource.name!r}")
        replacement = self._presets.get(resource, MISSING)
        if replacement is not MISSING and not isinstance(replacement, Resource):
            return replacement
        real = replacement if isinstance(replacement, Resource) else resource
        if resource.name in path:
            raise DependencyCycleError((*path[path.index(resource.name) :], resource.name))
        owner = (ctx._boundary or ctx) if resource.ownership == "boundary" else ctx
        while True:
            found = _find_resource(ctx, resource)
            if not isinstance(found, asyncio.Future):
                break
            # Another exec is producing it: share its value. If that producer was
            # cancelled, look again (and produce it here if nobody else does).
            result = await asyncio.shield(found)
            if result is not _RETRY:
                return result
        if found is not MISSING:
            return found
        if owner.closed:
            owner._refuse(f"resolve resource {resource.name!r}")
        x = owner._extra()
        if x.resources is None:
            x.resources = {}
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        x.resources[resource] = fut
        try:
            value = await self._produce_resource(owner, real, (*path, resource.name))
        except BaseException as exc:
            del x.resources[resource]
            if isinstance(exc, asyncio.CancelledError):
                fut.set_result(_RETRY)
            else:
                fut.set_exception(exc)
                fut.exception()
            raise
        x.resources[resource] = value
        fut.set_result(value)
        return value

    async def _produce_resource(
        self, owner: ExecutionContext, resource: Resource[Any], path: tuple[str, ...]
    ) -> object:
        rctx = ResolveContext(self, resource.name, owner)
        kwargs = await self._context_deps(owner, resource.deps, path)
        record = _Resolved(resource)  # type: ignore[arg-type]

        async def produce() -> object:
            return await _call_factory(
                resource.kind, resource.factory, rctx, kwargs, record, resource.name, path
            )

        if self._wrap_resolve:
            op = ResolveOp(resource, self, owner)
            value = await wrapped(self._wrap_resolve, produce, op)()
        else:
            value = await produce()
        record.cleanups = rctx._cleanups
        ox = owner._extra()
        if ox.sealed or owner._closed_at() is not None:
            # The owner closed while the value was being produced: its cleanups have run
            # already, so clean this value up now (as cancelled) instead of leaking it.
            reason = ContextClosedError(owner.name, f"resolve resource {resource.name!r}")
            try:
                await _finish(record, Cancelled(owner.name, "closed while resolving"))
            except Exception as exc:
                reason.add_note(f"cleanup of resource {resource.name!r} failed: {exc!r}")
            raise reason
        if ox.callbacks is None:
            ox.callbacks = []
        ox.callbacks.append(_Callback(None, lambda error: _finish(record, error)))
        return value

    async def _context_deps(
        self, ctx: ExecutionContext, deps: tuple[tuple[str, Dep], ...], path: tuple[str, ...]
    ) -> dict[str, object]:
        kwargs: dict[str, object] = {}
        for key, dep in deps:
            if isinstance(dep, Atom):
                value = self._cache.get(dep, MISSING)
                kwargs[key] = value if value is not MISSING else await self._resolve_atom(dep, path)
            elif isinstance(dep, Resource):
                kwargs[key] = await self._resolve_resource(ctx, dep, path)
            elif isinstance(dep, Flow):
                kwargs[key] = FlowHandle(ctx, dep)
            else:
                kwargs[key] = self._tag_dep(ctx, dep)
        return kwargs

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
        if self._disposed:
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
                    f"(got {parent!r})"
                )
                raise TypeError(msg)
            if parent.closed:
                parent._refuse("create a nested context")
        else:
            self._check_root_id(id, "create_context")
        ctx = boundary_context(self, name or ("root" if parent is None else "boundary"), id, parent)
        if tags:
            ctx._bind_tags(tags)
        if parent is None:
            self._roots[ctx] = None
        return ctx

    async def recover(self, flows: Iterable[Flow[Any, Any]]) -> list[Execution[Any]]:
        """Resume every recorded run left ``running`` by a dead process whose flow is one
        of ``flows`` (see :mod:`runtree.runs`); returns their executions. A run is
        claimed before it is resumed, so many processes may recover at once."""
        from .runs import recover

        return await recover(self, flows)

    def _forget_root(self, ctx: ExecutionContext) -> None:
        self._roots.pop(ctx, None)

    @overload
    def exec(
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
    def exec(
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
        self._check_open(f"exec flow {getattr(flow, 'name', flow)!r}")
        if not isinstance(flow, Flow):
            msg = f"scope.exec() takes a flow (got {flow!r}); use ctx.run() for plain callables"
            raise TypeError(msg)
        self._check_root_id(id, "scope.exec")
        return Execution(self, flow, input, tags=tags, timeout=timeout, details=details, id=id)

    def _check_root_id(self, id: object, what: str) -> None:
        """One rule for root ids, whichever call names the root: a non-empty ``str``
        (and, with a store, one the store can keep: no NUL, no lone surrogate)."""
        if id is None:
            return
        if not isinstance(id, str) or not id:
            msg = f"{what}(id=...) takes a non-empty str (got {id!r})"
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
            if type(getattr(root, "_id", None)) is str and self.store is not None:
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
                root.on_close(journal.release)
        return x.journal

    # -- dispose ---------------------------------------------------------------------

    async def dispose(self) -> None:
        """Close open contexts, then run atom cleanups in reverse resolution order.

        Every cleanup runs even if others fail; failures are raised together as one
        ``ExceptionGroup``. Afterwards every call raises :class:`ScopeDisposedError`.
        Idempotent.
        """
        if self._disposed:
            return
        failures: list[Exception] = []
        for ctx in reversed(list(self._roots)):
            try:
                await ctx.close()
            except ExceptionGroup as group:
                failures.extend(group.exceptions)
            except Exception as exc:
                failures.append(exc)
        self._disposed = True
        for atom in reversed(list(self._resolved)):
            record = self._resolved.pop(atom)
            failures.extend(await _run_cleanups(record, None))
        self._cache.clear()
        self._dependents.clear()
        for ext in reversed(self._extensions):
            if overrides(ext, "dispose"):
                try:
                    result = ext.dispose(self)
                    if inspect.isawaitable(result):
                        await result
                except Exception as exc:
                    failures.append(exc)
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
        await self.dispose()

    def __repr__(self) -> str:
        state = "disposed" if self._disposed else f"{len(self._cache)} atoms"
        return f"<Scope {state}>"

    def __del__(self) -> None:
        # Like an unclosed file: a scope dropped with cleanups still owed never runs them.
        if getattr(self, "_disposed", True):
            return
        owed = [r.atom.name for r in self._resolved.values() if r.cleanups or r.finish]
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
        replacement and resolves after see the real factory again."""
        from ._override import Override

        return Override(self, target, replacement)


def _find_resource(ctx: ExecutionContext, resource: Resource[Any]) -> object:
    """The value (or the pending future) of ``resource`` visible from ``ctx``: on its
    boundary for ``boundary`` ownership; on ``ctx`` or an ancestor up to the boundary for
    ``current`` ownership."""
    if resource.ownership == "boundary":
        return _lookup_resource(ctx._boundary or ctx, resource)
    node: ExecutionContext | None = ctx
    while node is not None:
        found = _lookup_resource(node, resource)
        if found is not MISSING or node._boundary is None:
            return found
        node = node.parent
    return MISSING


def _lookup_resource(ctx: ExecutionContext, resource: Resource[Any]) -> object:
    x = ctx._x
    if x is None or x.resources is None:
        return MISSING
    return x.resources.get(resource, MISSING)


async def _call_factory(
    kind: str,
    factory: Callable[..., Any],
    rctx: ResolveContext,
    kwargs: dict[str, object],
    record: _Resolved,
    name: str,
    path: tuple[str, ...],
) -> object:
    """Run an atom/resource factory; wrap what it raises in :class:`ResolveError`."""
    try:
        if kind == "async":
            return await factory(rctx, **kwargs)
        if kind == "sync":
            value = factory(rctx, **kwargs)
            if inspect.isawaitable(value):
                value = await value
            return value
        if kind == "gen":
            gen: Generator[object, None, None] = factory(rctx, **kwargs)
            value = next(gen)
            record.finish = _gen_finisher(gen, name)
            return value
        agen: AsyncGenerator[object, None] = factory(rctx, **kwargs)
        value = await agen.__anext__()
        record.finish = _agen_finisher(agen, name)
        return value
    except (RuntreeError, asyncio.CancelledError):
        raise
    except StopIteration:
        err = RuntimeError(f"generator factory of {name!r} did not yield a value")
        raise ResolveError(name, path) from err
    except StopAsyncIteration:
        err = RuntimeError(f"async generator factory of {name!r} did not yield a value")
        raise ResolveError(name, path) from err
    except Exception as exc:
        raise ResolveError(name, path) from exc


def _gen_finisher(
    gen: Generator[object, None, None], name: str
) -> Callable[[BaseException | None], Awaitable[None]]:
    async def finish(error: BaseException | None) -> None:
        try:
            if error is None:
                next(gen)
            else:
                gen.throw(error)
        except StopIteration:
            return
        except BaseException as exc:
            if exc is error:
                return  # re-raised the owner's error: not a cleanup failure
            raise
        gen.close()
        msg = f"generator factory of {name!r} yielded more than once"
        raise RuntimeError(msg)

    return finish


def _agen_finisher(
    agen: AsyncGenerator[object, None], name: str
) -> Callable[[BaseException | None], Awaitable[None]]:
    async def finish(error: BaseException | None) -> None:
        try:
            if error is None:
                await agen.__anext__()
            else:
                await agen.athrow(error)
        except StopAsyncIteration:
            return
        except BaseException as exc:
            if exc is error:
                return
            raise
        await agen.aclose()
        msg = f"async generator factory of {name!r} yielded more than once"
        raise RuntimeError(msg)

    return finish


async def _finish(record: _Resolved, error: BaseException | None) -> None:
    failures = await _run_cleanups(record, error)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise ExceptionGroup(f"cleanup of {record.atom.name!r} failed", failures)


async def _run_cleanups(record: _Resolved, error: BaseException | None) -> list[Exception]:
    """Run a value's cleanups in reverse order; return what failed."""
    failures: list[Exception] = []
    for fn in reversed(record.cleanups):
        try:
            result = fn()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            failures.append(exc)
    record.cleanups = []
    if record.finish is not None:
        finish, record.finish = record.finish, None
        try:
            await finish(error)
        except Exception as exc:
            failures.append(exc)
    return failures


def create_scope(
    *,
    tags: Iterable[Tagged[Any]] = (),
    extensions: Iterable[Extension] = (),
    presets: Iterable[Preset[Any]] = (),
    store: object = None,
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
