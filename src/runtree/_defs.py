"""Definitions: atoms, resources, flows and presets, and their dependency checks.

Everything a definition needs at run time is worked out here, once, when it is defined:
the kind of factory (sync, async, generator, async generator), the dependencies as a tuple,
and whether they match the factory's signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Generic, Literal, TypeAlias, TypeVar, final

from ._json import describe_error, shown
from ._tags import Tag, TagDep
from .errors import ParseError

__all__ = ["Atom", "Flow", "Preset", "Resource", "preset"]

T = TypeVar("T")
In = TypeVar("In")
Out = TypeVar("Out")
# A flow only produces its output and only hands its (parsed) input to its own factory:
# Flow[In, str] is usable wherever Flow[In, object] is asked for.
In_co = TypeVar("In_co", covariant=True)
Out_co = TypeVar("Out_co", covariant=True)

FactoryKind: TypeAlias = Literal["sync", "async", "gen", "agen"]
Ownership: TypeAlias = Literal["boundary", "current"]
Dep: TypeAlias = (
    "Atom[object] | Resource[object] | Flow[object, object] | TagDep[object] | Tag[object]"
)


def factory_kind(fn: Callable[..., object]) -> FactoryKind:
    target = inspect.unwrap(fn)
    if inspect.isasyncgenfunction(target):
        return "agen"
    if inspect.isgeneratorfunction(target):
        return "gen"
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - callable objects with async __call__
    ):
        return "async"
    return "sync"


def default_name(fn: object) -> str:
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__


def check_deps(
    what: str,
    name: str,
    factory: Callable[..., object],
    deps: Mapping[str, object] | None,
    *,
    allow_context_deps: bool,
) -> tuple[tuple[str, Dep], ...]:
    """Validate ``deps`` against ``factory``'s signature; return them as a tuple."""
    if not callable(factory):
        msg = f"{what} {name!r}: the factory must be callable (got {shown(factory)})"
        raise TypeError(msg)
    items: list[tuple[str, Dep]] = []
    for key, dep in (deps or {}).items():
        if not isinstance(key, str) or not key.isidentifier():
            msg = f"{what} {name!r}: deps key {key!r} must be a valid parameter name"
            raise TypeError(msg)
        if isinstance(dep, (Flow, Resource)) and not allow_context_deps:
            kind = "flow" if isinstance(dep, Flow) else "resource"
            msg = (
                f"{what} {name!r}: dependency {key!r} is a {kind} ({dep.name!r}); an atom lives "
                f"in the scope and cannot depend on a {kind}, which needs an execution context. "
                "Depend on it from a flow or a resource instead."
            )
            raise TypeError(msg)
        if not isinstance(dep, (Atom, Resource, Flow, TagDep, Tag)):
            msg = (
                f"{what} {name!r}: dependency {key!r} must be an atom, flow, resource or "
                f"tag dependency (tags.required/optional/all), got {shown(dep)}"
            )
            raise TypeError(msg)
        items.append((key, dep))
    _check_signature(what, name, factory, [k for k, _ in items])
    return tuple(items)


def _check_signature(what: str, name: str, factory: Callable[..., object], keys: list[str]) -> None:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: trust the caller
        return
    params = list(sig.parameters.values())
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if not positional:
        msg = (
            f"{what} {name!r}: the factory must take the context as its first positional "
            f"parameter, e.g. def {getattr(factory, '__name__', 'factory')}(ctx, ...)"
        )
        raise TypeError(msg)
    rest = params[1:] if params[0].kind is not params[0].VAR_POSITIONAL else params
    first = params[0]
    if first.kind is not first.VAR_POSITIONAL and first.name in keys:
        msg = (
            f"{what} {name!r}: dependency {first.name!r} has the name of the factory's "
            "context parameter (its first); rename the dependency or the parameter"
        )
        raise TypeError(msg)
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in rest)
    by_name = {p.name: p for p in rest if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for key in keys:
        if key not in by_name and not has_var_kw:
            msg = (
                f"{what} {name!r}: dependency {key!r} has no parameter in the factory; "
                f"add a parameter named {key!r} or remove it from deps"
            )
            raise TypeError(msg)
    for pname, p in by_name.items():
        if pname not in keys and p.default is p.empty:
            msg = (
                f"{what} {name!r}: factory parameter {pname!r} has no dependency; "
                f"add {pname!r} to deps or give the parameter a default"
            )
            raise TypeError(msg)
    for p in rest:
        if p.kind is p.POSITIONAL_ONLY and p.default is p.empty:
            msg = (
                f"{what} {name!r}: factory parameter {p.name!r} is positional-only; "
                "dependencies arrive as keyword arguments"
            )
            raise TypeError(msg)


class _Value:
    """Atoms and resources are values, not flows: calling one, or passing one to
    ``ctx.exec``, says how to get the value instead."""

    __slots__ = ()
    name: str

    if not TYPE_CHECKING:

        def __call__(self, *args: object, **kwargs: object) -> None:
            raise TypeError(self._not_a_flow("called"))

        @property
        def plain(self) -> bool:  # read by ctx.exec() when given an atom or a resource
            raise TypeError(self._not_a_flow("executed"))

    def _not_a_flow(self, done: str) -> str:
        kind, where = ("atom", "scope") if isinstance(self, Atom) else ("resource", "ctx")
        return (
            f"{kind} {self.name!r} is not {done}: it is a value, not a flow — get it with "
            f"await {where}.resolve({self.name}) or name it in a flow's deps=; ctx.exec() "
            "and scope.exec() take flows"
        )


@final
class Atom(_Value, Generic[T]):
    """A scope-owned value: resolved once per scope, cached, cleaned up on dispose."""

    __slots__ = ("deps", "factory", "kind", "name")

    def __init__(
        self,
        factory: Callable[..., object],
        deps: Mapping[str, object] | None = None,
        name: str | None = None,
    ) -> None:
        self.name: str = name or default_name(factory)
        self.factory = factory
        self.kind: FactoryKind = factory_kind(factory)
        self.deps = check_deps("atom", self.name, factory, deps, allow_context_deps=False)

    def __repr__(self) -> str:
        return f"<Atom {self.name}>"


@final
class Resource(_Value, Generic[T]):
    """A context-owned value: resolved per execution boundary (or per exec), cleaned up
    when its owner closes."""

    __slots__ = ("deps", "factory", "kind", "name", "ownership")

    def __init__(
        self,
        factory: Callable[..., object],
        deps: Mapping[str, object] | None = None,
        name: str | None = None,
        ownership: Ownership = "boundary",
    ) -> None:
        self.name: str = name or default_name(factory)
        if ownership not in ("boundary", "current"):
            msg = (
                f"resource {self.name!r}: ownership must be 'boundary' or 'current' "
                f"(got {shown(ownership)})"
            )
            raise ValueError(msg)
        self.factory = factory
        self.kind: FactoryKind = factory_kind(factory)
        self.ownership: Ownership = ownership
        # A flow dependency arrives as a handle bound to the resource's owner context.
        self.deps = check_deps("resource", self.name, factory, deps, allow_context_deps=True)

    def __repr__(self) -> str:
        return f"<Resource {self.name} ({self.ownership})>"


@final
class Flow(Generic[In_co, Out_co]):
    """A unit of work. ``await ctx.exec(flow, input)`` runs it in a new child context."""

    __slots__ = ("deps", "factory", "is_async", "is_stream", "name", "parse", "plain")

    def __init__(
        self,
        factory: Callable[..., object],
        deps: Mapping[str, object] | None = None,
        parse: Callable[[object], In_co] | type | None = None,
        name: str | None = None,
    ) -> None:
        self.name: str = name or default_name(factory)
        self.factory = factory
        kind = factory_kind(factory)
        if kind == "gen":
            msg = (
                f"flow {self.name!r}: the factory is a generator; a flow returns its result "
                "(or, as an async generator, streams its items). "
                "Use a resource or an atom for values with cleanup."
            )
            raise TypeError(msg)
        self.is_async = kind == "async"
        # An async generator factory streams: ctx.exec_stream() yields its items and
        # ctx.exec() collects them into a list (never on the plain exec path).
        self.is_stream = kind == "agen"
        self.deps = check_deps("flow", self.name, factory, deps, allow_context_deps=True)
        self.parse: Callable[[object], object] | None = _input_parser(parse)
        # async, no deps, no parse: the exec hot path just awaits factory(ctx)
        self.plain = self.is_async and not self.deps and self.parse is None

    def parse_input(self, value: object) -> object:
        assert self.parse is not None
        try:
            return self.parse(value)
        except ParseError:
            raise
        except Exception as exc:
            raise ParseError("input of flow", self.name, describe_error(exc)) from exc

    if not TYPE_CHECKING:  # type checkers report the call itself: a Flow is not callable

        def __call__(self, *args: object, **kwargs: object) -> None:
            msg = (
                f"flow {self.name!r} is not called directly: run it with "
                f"await ctx.exec({self.name}, input) inside a flow, await scope.exec("
                f"{self.name}, input) or await runtree.execute({self.name}, input)"
            )
            raise TypeError(msg)

    def __repr__(self) -> str:
        return f"<Flow {self.name}>"


def _input_parser(parse: object) -> Callable[[object], object] | None:
    if parse is None:
        return None
    validate = getattr(parse, "model_validate", None)
    if isinstance(parse, type) and callable(validate):  # a pydantic model class
        return validate  # type: ignore[no-any-return]
    if not callable(parse):
        msg = f"parse must be a callable or a pydantic model class (got {shown(parse)})"
        raise TypeError(msg)
    return parse


@final
class Preset(Generic[T]):
    """Replace an atom, resource or flow in one scope (a test or composition seam)."""

    __slots__ = ("replacement", "target")

    def __init__(self, target: object, replacement: object) -> None:
        self.target = target
        self.replacement = replacement

    def __repr__(self) -> str:
        return f"preset({self.target!r}, {self.replacement!r})"


def preset(
    target: Atom[T] | Resource[T] | Flow[In, T],
    replacement: T | Atom[T] | Resource[T] | Flow[In, T],
) -> Preset[T]:
    """Replace ``target`` in a scope: pass the result to ``create_scope(presets=[...])``.

    ``replacement`` is a value (returned as is) or another atom/resource/flow (resolved or
    executed instead). The target's factory never runs.
    """
    if not isinstance(target, (Atom, Resource, Flow)):
        msg = f"preset() target must be an atom, resource or flow (got {shown(target)})"
        raise TypeError(msg)
    if isinstance(target, Flow) and isinstance(replacement, (Atom, Resource)):
        msg = f"preset({target.name!r}): a flow can be replaced by a flow or a value"
        raise TypeError(msg)
    if isinstance(target, (Atom, Resource)) and isinstance(replacement, Flow):
        msg = f"preset({target.name!r}): an atom or resource cannot be replaced by a flow"
        raise TypeError(msg)
    if isinstance(target, Atom) and isinstance(replacement, Resource):
        msg = (
            f"preset({target.name!r}): an atom cannot be replaced by a resource (a resource "
            "needs an execution context; an atom lives in the scope): use an atom or a value"
        )
        raise TypeError(msg)
    return Preset(target, replacement)
