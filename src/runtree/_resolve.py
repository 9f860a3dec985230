"""Dependency resolution for a scope: atoms (resolved once, shared first resolves, released
dependents first), resources (per owning context), tag dependencies and presets.

:class:`Resolver` owns the caches and the presets; :class:`runtree.Scope` holds one and
delegates to it (the hot ``scope.resolve`` reads the same cache dict directly).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, final

from ._context import ExecutionContext, FlowHandle, _Callback
from ._defs import Atom, Dep, Flow, Preset, Resource
from ._extensions import ResolveOp, run_wrapped
from ._json import shown
from ._tags import MISSING, Tag, TagDep
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
    from ._scope import Scope

__all__ = ["ResolveContext", "Resolver"]

T = TypeVar("T")

log = logging.getLogger("runtree")
_RETRY = object()  # a shared first resolve was cancelled: resolve again
# The atoms and resources being resolved, outermost first (a cycle is one of them
# again: compared by identity, since distinct definitions may share a name).
Path = tuple["Atom[Any] | Resource[Any]", ...]


def _names(path: Path) -> tuple[str, ...]:
    return tuple(node.name for node in path)


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
class Resolver:
    """The dependency graph of one scope, resolved on demand."""

    __slots__ = (
        "cache",
        "dependents",
        "flow_presets",
        "forgotten",
        "pending",
        "presets",
        "resolved",
        "scope",
        "stale",
    )

    def __init__(self, scope: Scope, presets: Iterable[Preset[Any]]) -> None:
        self.scope = scope
        self.presets: dict[object, object] = {}
        self.flow_presets: dict[Flow[Any, Any], object] = {}
        for p in presets:
            if not isinstance(p, Preset):
                msg = (
                    f"create_scope(presets=...) takes preset(target, replacement) (got {shown(p)})"
                )
                raise TypeError(msg)
            if p.replacement is p.target:
                name = getattr(p.target, "name", repr(p.target))
                raise DependencyCycleError((name, name))
            if isinstance(p.target, Flow):
                self.flow_presets[p.target] = p.replacement
            else:
                self.presets[p.target] = p.replacement
        self.check_preset_cycles()
        self.cache: dict[Atom[Any], object] = {}
        # Atoms being produced: the future their waiters share, and the task producing.
        self.pending: dict[Atom[Any], tuple[asyncio.Future[object], asyncio.Task[Any] | None]] = {}
        self.resolved: dict[Atom[Any], _Resolved] = {}  # insertion = resolution order
        self.dependents: dict[Atom[Any], set[Atom[Any]]] = {}
        self.stale: set[Atom[Any]] = set()  # pending atoms whose dependency was released
        # Values forgotten by a sync ``scope.override`` whose cleanups are still owed (run
        # at dispose), a list per forget, dependents first.
        self.forgotten: list[list[_Resolved]] = []

    def check_preset_cycles(self) -> None:
        """Presets are the only way to build a cycle (deps exist before their users):
        find any when the scope is built."""

        def visit(node: object, path: tuple[object, ...]) -> None:
            if node in path:
                names = [getattr(n, "name", repr(n)) for n in (*path[path.index(node) :], node)]
                raise DependencyCycleError(tuple(names))
            real = self.presets.get(node, node)
            if real is not node:
                if isinstance(real, (Atom, Resource)):
                    visit(real, (*path, node))
                return
            for _, dep in getattr(node, "deps", ()):
                if isinstance(dep, (Atom, Resource)):
                    visit(dep, (*path, node))

        for target in self.presets:
            visit(target, ())
        for flow in self.flow_presets:
            # A flow preset replaces once; a chain that comes back is a mistake.
            seen = [flow]
            nxt = self.flow_presets.get(flow)
            while isinstance(nxt, Flow):
                if nxt in seen:
                    raise DependencyCycleError((*(f.name for f in seen), nxt.name))
                seen.append(nxt)
                nxt = self.flow_presets.get(nxt)

    async def atom(self, atom: Atom[Any], path: Path) -> object:
        if self.scope._disposed:  # (the message is built only then)
            self.scope._check_open(f"resolve atom {shown(getattr(atom, 'name', atom))}")
        if not isinstance(atom, Atom):
            if isinstance(atom, Resource):
                msg = (
                    f"resource {atom.name!r} needs an execution context: resolve it with "
                    "await ctx.resolve(resource) inside a flow"
                )
            else:
                msg = f"scope.resolve() takes an atom (got {shown(atom)})"
            raise TypeError(msg)
        if self.scope._init_pending:
            await self.scope._run_init()
        while True:
            if atom in self.cache:
                return self.cache[atom]
            if atom in path:  # (by identity: distinct atoms may share a name)
                raise DependencyCycleError(_names((*path[path.index(atom) :], atom)))
            found = self.pending.get(atom)
            if found is None:
                break
            waiting, producer = found
            if producer is asyncio.current_task():
                # Its factory (or a dependency's) resolves it again in the task that
                # produces it: it would wait for itself forever.
                raise DependencyCycleError(_names((*path, atom)) if path else (atom.name,) * 2)
            result = await asyncio.shield(waiting)
            if result is not _RETRY:
                return result
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.pending[atom] = (fut, asyncio.current_task())
        try:
            value = await self._produce_atom(atom, (*path, atom))
        except asyncio.CancelledError:
            fut.set_result(_RETRY)
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it; no "never retrieved" log
            raise
        finally:
            del self.pending[atom]
        fut.set_result(value)
        return value

    async def _produce_atom(self, atom: Atom[Any], path: Path) -> object:
        replacement = self.presets.get(atom, MISSING)
        if replacement is not MISSING:
            if isinstance(replacement, Atom):
                value = await self.atom(replacement, path)
                self.dependents.setdefault(replacement, set()).add(atom)
            else:
                value = replacement
            self.resolved[atom] = _Resolved(atom)
            self.cache[atom] = value
            return value
        rctx = ResolveContext(self.scope, atom.name)
        kwargs: dict[str, object] = {}
        for key, dep in atom.deps:
            if isinstance(dep, Atom):
                kwargs[key] = await self.atom(dep, path)
                self.dependents.setdefault(dep, set()).add(atom)
            else:
                kwargs[key] = self.tag_dep(None, dep)

        async def produce() -> object:
            return await _call_factory(
                atom.kind, atom.factory, rctx, kwargs, record, atom.name, path
            )

        record = _Resolved(atom)
        op = ResolveOp(atom, self.scope) if self.scope._wrap_resolve else None
        value = await _produce(self.scope._wrap_resolve, produce, op, record, rctx)
        if self.scope._disposed:  # disposed while the factory ran: clean up at once
            await _run_cleanups(record, None)
            raise ScopeDisposedError(f"resolve atom {atom.name!r}")
        if self.stale and atom in self.stale:
            # A dependency was released while the factory ran: this value holds the old
            # one. Clean it up and build it again on the new one.
            self.stale.discard(atom)
            for failure in await _run_cleanups(record, None):
                log.error("cleanup of atom %r failed", atom.name, exc_info=failure)
            return await self._produce_atom(atom, path)
        self.resolved[atom] = record
        self.cache[atom] = value
        return value

    def tag_dep(self, ctx: ExecutionContext | None, dep: Dep) -> object:
        if isinstance(dep, Tag):
            return ctx.get(dep) if ctx is not None else self.scope._get_tag(dep)
        assert isinstance(dep, TagDep)
        t = dep.tag
        if dep.mode == "required":
            return ctx.get(t) if ctx is not None else self.scope._get_tag(t)
        if dep.mode == "optional":
            if ctx is not None:
                return ctx.find(t)
            try:
                return self.scope._get_tag(t)
            except MissingTagError:
                return None
        if ctx is not None:
            return ctx.get_all(t)
        value = self.scope._tag_view.get(t, MISSING)
        return [] if value is MISSING else [value]

    async def release(self, atom: Atom[Any]) -> None:
        """Run ``atom``'s cleanups (after releasing the atoms that depend on it) and
        forget it; an ``ExceptionGroup`` of the cleanups that failed (all of them ran)."""
        failures = await _run_all(self._drop(atom))
        if failures:
            raise ExceptionGroup(f"cleanup of atom {atom.name!r} failed", failures)

    def forget(self, atom: Atom[Any]) -> None:
        """``release`` without awaiting: ``atom`` and the atoms that depend on it are
        forgotten at once (the next resolve runs their factories); the cleanups of their
        values run at dispose."""
        owed = [r for r in self._drop(atom) if r.cleanups or r.finish is not None]
        if owed:
            self.forgotten.append(owed)

    def _drop(self, atom: Atom[Any]) -> list[_Resolved]:
        """Forget ``atom`` and every resolved atom that depends on it; their records,
        dependents first (the order their cleanups run in)."""
        doomed: set[Atom[Any]] = set()
        stack = [atom]
        while stack:
            a = stack.pop()
            if a in doomed:
                continue
            doomed.add(a)
            stack.extend(self.dependents.get(a, ()))
        # A dependent whose factory runs now builds on the value being dropped: it runs
        # again once it returns (see _produce_atom).
        self.stale.update(a for a in doomed if a in self.pending)
        records: list[_Resolved] = []
        for a in reversed([a for a in self.resolved if a in doomed]):
            records.append(self.resolved.pop(a))
            self.cache.pop(a, None)
            for deps in self.dependents.values():
                deps.discard(a)
        return records

    # -- resources and flow dependencies ---------------------------------------------

    async def resource(self, ctx: ExecutionContext, resource: Resource[Any], path: Path) -> object:
        if self.scope._disposed:
            self.scope._check_open(f"resolve resource {resource.name!r}")
        if self.scope._init_pending:
            await self.scope._run_init()
        replacement = self.presets.get(resource, MISSING)
        if replacement is not MISSING and not isinstance(replacement, Resource):
            # A value resolved on this context before an override came keeps it (the
            # override is for new boundaries).
            found = _find_resource(ctx, resource)
            if found is not MISSING and not isinstance(found, asyncio.Future):
                return found
            if isinstance(replacement, Atom):  # resolved instead (in the scope)
                return await self.atom(replacement, path)
            return replacement
        real = replacement if isinstance(replacement, Resource) else resource
        if resource in path:
            raise DependencyCycleError(_names((*path[path.index(resource) :], resource)))
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
            value = await self._produce_resource(owner, real, (*path, resource))
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
        self, owner: ExecutionContext, resource: Resource[Any], path: Path
    ) -> object:
        rctx = ResolveContext(self.scope, resource.name, owner)
        kwargs = await self.context_deps(owner, resource.deps, path)
        record = _Resolved(resource)  # type: ignore[arg-type]

        async def produce() -> object:
            return await _call_factory(
                resource.kind, resource.factory, rctx, kwargs, record, resource.name, path
            )

        op = ResolveOp(resource, self.scope, owner) if self.scope._wrap_resolve else None
        value = await _produce(self.scope._wrap_resolve, produce, op, record, rctx)
        ox = owner._extra()
        if ox.sealed or owner._closed_at() is not None:
            # The owner closed while the value was being produced: its cleanups have run
            # already, so clean this value up now (as cancelled) instead of leaking it.
            reason = ContextClosedError(owner.name, f"resolve resource {resource.name!r}")
            try:
                await _finish(record, Cancelled(owner.name, "closed while resolving"))
            except Exception as exc:
                reason.add_note(f"cleanup of resource {resource.name!r} failed: {shown(exc)}")
            raise reason
        if ox.callbacks is None:
            ox.callbacks = []
        ox.callbacks.append(_Callback(None, lambda error: _finish(record, error)))
        return value

    async def context_deps(
        self, ctx: ExecutionContext, deps: tuple[tuple[str, Dep], ...], path: Path
    ) -> dict[str, object]:
        kwargs: dict[str, object] = {}
        for key, dep in deps:
            if isinstance(dep, Atom):
                value = self.cache.get(dep, MISSING)
                kwargs[key] = value if value is not MISSING else await self.atom(dep, path)
            elif isinstance(dep, Resource):
                kwargs[key] = await self.resource(ctx, dep, path)
            elif isinstance(dep, Flow):
                kwargs[key] = FlowHandle(ctx, dep)
            else:
                kwargs[key] = self.tag_dep(ctx, dep)
        return kwargs

    async def dispose(self, error: BaseException | None = None) -> list[Exception]:
        """Run every atom's cleanups in reverse resolution order; what failed. A cleanup
        that raises ``CancelledError`` does not stop the others: it is raised once they
        all ran."""
        # The cache first: a resolve meanwhile must not return a value being cleaned up.
        self.cache.clear()
        records = [self.resolved.pop(atom) for atom in reversed(list(self.resolved))]
        while self.forgotten:  # the newest forgotten first
            records += self.forgotten.pop()
        self.dependents.clear()
        return await _run_all(records, error)

    def owed(self) -> list[str]:
        """Names of resolved atoms whose cleanups have not run."""
        live = [r for r in self.resolved.values() if r.cleanups or r.finish]
        return [r.atom.name for r in (*live, *(r for f in self.forgotten for r in f))]


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
    path: Path,
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
        raise ResolveError(name, _names(path)) from err
    except StopAsyncIteration:
        err = RuntimeError(f"async generator factory of {name!r} did not yield a value")
        raise ResolveError(name, _names(path)) from err
    except Exception as exc:
        raise ResolveError(name, _names(path)) from exc


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


async def _produce(
    wrappers: list[Callable[..., Awaitable[object]]],
    produce: Callable[[], Awaitable[object]],
    op: ResolveOp | None,
    record: _Resolved,
    rctx: ResolveContext,
) -> object:
    """Run a factory (through the ``wrap_resolve`` hooks, if any) and keep its cleanups
    in ``record``. When it fails, what it had opened is cleaned up at once: cleanups it
    registered before raising, or the whole value when a wrapper raised after the factory
    returned (a generator sees the error at its ``yield``). Their failures become notes."""
    try:
        value = await (run_wrapped(wrappers, produce, op) if op is not None else produce())
    except BaseException as exc:
        record.cleanups = rctx._cleanups
        if record.cleanups or record.finish is not None:
            for failure in await _run_cleanups(record, exc):
                exc.add_note(f"cleanup of {rctx.name!r} also failed: {shown(failure)}")
        raise
    record.cleanups = rctx._cleanups
    return value


async def _run_all(records: list[_Resolved], error: BaseException | None = None) -> list[Exception]:
    """Run the cleanups of each record in order; what failed. A ``CancelledError`` does
    not stop the others: it is raised once they all ran."""
    failures: list[Exception] = []
    interrupted: asyncio.CancelledError | None = None
    for record in records:
        try:
            failures.extend(await _run_cleanups(record, error))
        except asyncio.CancelledError as exc:
            interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted
    return failures


async def _run_cleanups(record: _Resolved, error: BaseException | None) -> list[Exception]:
    """Run a value's cleanups in reverse order; return what failed. A ``CancelledError``
    (its task cancelled, or a cleanup's ``task.cancel(); await task``) does not stop the
    others: it is raised once they all ran."""
    failures: list[Exception] = []
    interrupted: asyncio.CancelledError | None = None
    cleanups, record.cleanups = record.cleanups, []
    for fn in reversed(cleanups):
        try:
            result = fn()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            failures.append(exc)
        except asyncio.CancelledError as exc:
            interrupted = interrupted or exc
    if record.finish is not None:
        finish, record.finish = record.finish, None
        try:
            await finish(error)
        except Exception as exc:
            failures.append(exc)
        except asyncio.CancelledError as exc:
            interrupted = interrupted or exc
    if failures:
        target = record.atom  # the group's message is generic: each failure names its value
        what = f"in the cleanup of {type(target).__name__.lower()} {target.name!r}"
        for failure in failures:
            failure.add_note(what)
    if interrupted is not None:
        raise interrupted
    return failures
