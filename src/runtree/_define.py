"""``atom``, ``resource`` and ``flow``: plain calls and decorators, precisely typed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

from ._defs import Atom, Flow, Ownership, Resource

__all__ = ["atom", "flow", "resource"]

T = TypeVar("T")
In = TypeVar("In")
Out = TypeVar("Out")

Deps = Mapping[str, object]


# -- atom -------------------------------------------------------------------------------


@overload
def atom(
    factory: Callable[..., AsyncIterator[T]],
    *,
    deps: Deps | None = None,
    name: str | None = None,
) -> Atom[T]: ...
@overload
def atom(
    factory: Callable[..., Iterator[T]],
    *,
    deps: Deps | None = None,
    name: str | None = None,
) -> Atom[T]: ...
@overload
def atom(
    factory: Callable[..., Coroutine[Any, Any, T]],
    *,
    deps: Deps | None = None,
    name: str | None = None,
) -> Atom[T]: ...
@overload
def atom(
    factory: Callable[..., T], *, deps: Deps | None = None, name: str | None = None
) -> Atom[T]: ...
@overload
def atom(
    factory: None = None, *, deps: Deps | None = None, name: str | None = None
) -> _AtomDecorator: ...
def atom(
    factory: Callable[..., Any] | None = None,
    *,
    deps: Deps | None = None,
    name: str | None = None,
) -> Atom[Any] | _AtomDecorator:
    """Define an atom: a value the scope resolves once, caches and cleans up.

    ``factory(ctx, **deps)`` may be sync, async, a generator or an async generator (the
    code after ``yield`` is its cleanup). Use as ``atom(fn)``, ``@atom`` or
    ``@atom(deps={...})``. ``deps`` values are atoms and tag dependencies; they are
    checked against the factory's signature here (``TypeError`` naming the parameter).
    """
    if factory is None:
        return _AtomDecorator(deps, name)
    return Atom(factory, deps, name)


class _AtomDecorator:
    __slots__ = ("deps", "name")

    def __init__(self, deps: Deps | None, name: str | None) -> None:
        self.deps = deps
        self.name = name

    @overload
    def __call__(self, factory: Callable[..., AsyncIterator[T]]) -> Atom[T]: ...
    @overload
    def __call__(self, factory: Callable[..., Iterator[T]]) -> Atom[T]: ...
    @overload
    def __call__(self, factory: Callable[..., Coroutine[Any, Any, T]]) -> Atom[T]: ...
    @overload
    def __call__(self, factory: Callable[..., T]) -> Atom[T]: ...
    def __call__(self, factory: Callable[..., Any]) -> Atom[Any]:
        return Atom(factory, self.deps, self.name)


# -- resource ---------------------------------------------------------------------------


@overload
def resource(
    factory: Callable[..., AsyncIterator[T]],
    *,
    deps: Deps | None = None,
    name: str | None = None,
    ownership: Ownership = "boundary",
) -> Resource[T]: ...
@overload
def resource(
    factory: Callable[..., Iterator[T]],
    *,
    deps: Deps | None = None,
    name: str | None = None,
    ownership: Ownership = "boundary",
) -> Resource[T]: ...
@overload
def resource(
    factory: Callable[..., Coroutine[Any, Any, T]],
    *,
    deps: Deps | None = None,
    name: str | None = None,
    ownership: Ownership = "boundary",
) -> Resource[T]: ...
@overload
def resource(
    factory: Callable[..., T],
    *,
    deps: Deps | None = None,
    name: str | None = None,
    ownership: Ownership = "boundary",
) -> Resource[T]: ...
@overload
def resource(
    factory: None = None,
    *,
    deps: Deps | None = None,
    name: str | None = None,
    ownership: Ownership = "boundary",
) -> _ResourceDecorator: ...
def resource(
    factory: Callable[..., Any] | None = None,
    *,
    deps: Deps | None = None,
    name: str | None = None,
    ownership: Ownership = "boundary",
) -> Resource[Any] | _ResourceDecorator:
    """Define a resource: a value owned by an execution context (a DB transaction ...).

    ``ownership="boundary"``: one per execution boundary (``create_context`` /
    ``scope.exec``), shared by nested execs. ``"current"``: private to the exec that first
    asks and its descendants. Cleanup runs when the owner closes; a generator factory sees
    the owner's error thrown in at ``yield`` (commit/rollback), which never suppresses it.
    """
    if factory is None:
        return _ResourceDecorator(deps, name, ownership)
    return Resource(factory, deps, name, ownership)


class _ResourceDecorator:
    __slots__ = ("deps", "name", "ownership")

    def __init__(self, deps: Deps | None, name: str | None, ownership: Ownership) -> None:
        self.deps = deps
        self.name = name
        self.ownership: Ownership = ownership

    @overload
    def __call__(self, factory: Callable[..., AsyncIterator[T]]) -> Resource[T]: ...
    @overload
    def __call__(self, factory: Callable[..., Iterator[T]]) -> Resource[T]: ...
    @overload
    def __call__(self, factory: Callable[..., Coroutine[Any, Any, T]]) -> Resource[T]: ...
    @overload
    def __call__(self, factory: Callable[..., T]) -> Resource[T]: ...
    def __call__(self, factory: Callable[..., Any]) -> Resource[Any]:
        return Resource(factory, self.deps, self.name, self.ownership)


# -- flow -------------------------------------------------------------------------------


@overload
def flow(
    factory: Callable[..., AsyncIterator[Out]],
    *,
    deps: Deps | None = None,
    parse: None = None,
    name: str | None = None,
) -> Flow[Any, AsyncIterator[Out]]: ...
@overload
def flow(
    factory: Callable[..., Coroutine[Any, Any, Out]],
    *,
    deps: Deps | None = None,
    parse: None = None,
    name: str | None = None,
) -> Flow[Any, Out]: ...
@overload
def flow(
    factory: Callable[..., Out],
    *,
    deps: Deps | None = None,
    parse: None = None,
    name: str | None = None,
) -> Flow[Any, Out]: ...
@overload
def flow(
    factory: Callable[..., Coroutine[Any, Any, Out]],
    *,
    deps: Deps | None = None,
    parse: Callable[[Any], In] | type[In],
    name: str | None = None,
) -> Flow[In, Out]: ...
@overload
def flow(
    factory: Callable[..., Out],
    *,
    deps: Deps | None = None,
    parse: Callable[[Any], In] | type[In],
    name: str | None = None,
) -> Flow[In, Out]: ...
@overload
def flow(
    factory: None = None,
    *,
    deps: Deps | None = None,
    parse: None = None,
    name: str | None = None,
) -> _FlowDecorator[Any]: ...
@overload
def flow(
    factory: None = None,
    *,
    deps: Deps | None = None,
    parse: Callable[[Any], In] | type[In],
    name: str | None = None,
) -> _FlowDecorator[In]: ...
def flow(
    factory: Callable[..., Any] | None = None,
    *,
    deps: Deps | None = None,
    parse: Callable[[Any], Any] | None = None,
    name: str | None = None,
) -> Flow[Any, Any] | _FlowDecorator[Any]:
    """Define a flow: a unit of work run with ``await ctx.exec(flow, input)``.

    ``factory(ctx, **deps)`` receives the child context (``ctx.input`` is the parsed
    input); deps may be atoms, flows (as handles: ``await handle(input)``), resources and
    tag dependencies. ``parse`` is a callable or a pydantic model class; a failure raises
    :class:`ParseError` naming the flow before the factory runs.
    """
    if factory is None:
        return _FlowDecorator(deps, parse, name)
    return Flow(factory, deps, parse, name)


class _FlowDecorator(Generic[In]):
    __slots__ = ("deps", "name", "parse")

    def __init__(
        self, deps: Deps | None, parse: Callable[[Any], In] | type[In] | None, name: str | None
    ) -> None:
        self.deps = deps
        self.parse = parse
        self.name = name

    @overload
    def __call__(self, factory: Callable[..., Coroutine[Any, Any, Out]]) -> Flow[In, Out]: ...
    @overload
    def __call__(self, factory: Callable[..., Out]) -> Flow[In, Out]: ...
    def __call__(self, factory: Callable[..., Any]) -> Flow[In, Any]:
        return Flow(factory, self.deps, self.parse, self.name)
