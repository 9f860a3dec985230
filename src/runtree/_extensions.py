"""Extensions: wrap resolution and execution (tracing, logging, metrics, policy)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, TypeAlias, final

if TYPE_CHECKING:
    from ._context import ExecutionContext
    from ._defs import Atom, Resource
    from ._scope import Scope

__all__ = ["ExecOp", "Extension", "ResolveOp"]

# ``new_op(ExecOp)`` and six attribute stores: an ExecOp without the ``__init__`` call,
# for the exec paths that build one per wrapped exec (about half the cost).
new_op = object.__new__

ExecKind: TypeAlias = Literal["execute", "subflow", "fn", "parallel", "stream"]


@final
class ExecOp:
    """What ``wrap_exec`` is wrapping.

    Attributes:
        kind: ``"execute"`` (``scope.exec``), ``"subflow"`` (``ctx.exec``), ``"fn"``
            (``ctx.run``), ``"parallel"`` or ``"stream"`` (``ctx.exec_stream``: ``next()``
            opens the stream and returns its items as an async iterator, which the wrapper
            returns or wraps; the stream's end is ``context.on_close``).
        target: The :class:`Flow` (the callable for ``"fn"``; ``None`` for
            ``"parallel"``).
        input: The input as passed (before ``parse``); the positional args for ``"fn"``.
        key: The journal key, or ``None``.
        context: The **child** context the work runs in (for ``"parallel"``, the context
            that called ``parallel``); walk ``context.parent`` for the tree.
        attempt: 1 for the first attempt, 2 for the first retry ...
    """

    __slots__ = ("attempt", "context", "input", "key", "kind", "target")

    def __init__(
        self,
        kind: ExecKind,
        target: object,
        input: object,
        key: str | None,
        context: ExecutionContext,
        attempt: int = 1,
    ) -> None:
        self.kind: ExecKind = kind
        self.target = target
        self.input = input
        self.key = key
        self.context = context
        self.attempt = attempt

    def __repr__(self) -> str:
        name = getattr(self.target, "name", None) or getattr(self.target, "__name__", "")
        return f"ExecOp({self.kind}, {name!r}, key={self.key!r})"


@final
class ResolveOp:
    """What ``wrap_resolve`` is wrapping: the actual resolution of an atom or resource
    (never a cache hit)."""

    __slots__ = ("atom", "context", "scope")

    def __init__(
        self,
        atom: Atom[object] | Resource[object],
        scope: Scope,
        context: ExecutionContext | None = None,
    ) -> None:
        self.atom = atom
        self.scope = scope
        self.context = context

    def __repr__(self) -> str:
        return f"ResolveOp({self.atom.name!r})"


class Extension:
    """Base class for extensions; override only the hooks you need.

    ``init``/``dispose``/``on_context_open``/``on_context_close`` may be sync or async.
    An async ``init`` runs before the scope's first resolve or exec. ``wrap_resolve`` and
    ``wrap_exec`` receive ``next`` (call it, once, and await the result) and the
    operation; what they return is the result. The first registered extension is the
    outermost wrapper. An error raised by a hook reaches the caller as itself.
    """

    def init(self, scope: Scope) -> Awaitable[None] | None:
        return None

    def dispose(self, scope: Scope) -> Awaitable[None] | None:
        return None

    async def wrap_resolve(self, next: Callable[[], Awaitable[object]], op: ResolveOp) -> object:
        return await next()

    async def wrap_exec(self, next: Callable[[], Awaitable[object]], op: ExecOp) -> object:
        return await next()

    def on_context_open(self, ctx: ExecutionContext) -> Awaitable[None] | None:
        return None

    def on_context_close(self, ctx: ExecutionContext) -> Awaitable[None] | None:
        return None


def wrapped(
    wrappers: list[Callable[..., Awaitable[object]]],
    inner: Callable[[], Awaitable[object]],
    op: object,
) -> Callable[[], Awaitable[object]]:
    """``inner`` wrapped by ``wrappers`` (the first one outermost): the one place that
    builds extension chains, for execs, streams, parallel and resolution alike."""
    call = inner
    for wrap in reversed(wrappers):
        call = _bind(wrap, call, op)
    return call


def run_wrapped(
    wrappers: list[Callable[..., Awaitable[object]]],
    inner: Callable[[], Awaitable[object]],
    op: object,
) -> Awaitable[object]:
    """``wrapped(wrappers, inner, op)()``: what every caller awaits. One wrapper (the
    common case: a tracer, the recorder) is called directly, with no chain to build."""
    if len(wrappers) == 1:
        return wrappers[0](inner, op)
    return wrapped(wrappers, inner, op)()


def _bind(
    wrap: Callable[..., Awaitable[object]], nxt: Callable[[], Awaitable[object]], op: object
) -> Callable[[], Awaitable[object]]:
    return lambda: wrap(nxt, op)


def overrides(ext: object, hook: str) -> bool:
    """Whether ``ext`` implements ``hook`` (beyond :class:`Extension`'s pass-through)."""
    fn = getattr(type(ext), hook, None)
    if fn is None:
        return False
    return fn is not getattr(Extension, hook)
