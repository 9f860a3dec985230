"""The Execution handle returned by ``scope.exec`` and the one-call ``execute``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeAlias, TypeVar, final, overload

from . import _run
from ._context import ExecutionContext, boundary_context
from ._extensions import ExecOp, Extension
from ._tags import Tagged
from .errors import Cancelled

if TYPE_CHECKING:
    from ._defs import Flow, Preset
    from ._scope import Scope

__all__ = ["Execution", "ExecutionDetails", "ExecutionStatus", "execute"]

T = TypeVar("T")
In = TypeVar("In")
Out = TypeVar("Out")

ExecutionStatus: TypeAlias = Literal["pending", "running", "completed", "failed", "cancelled"]
StatusCallback: TypeAlias = "Callable[[ExecutionStatus, Execution[Any]], object]"


@final
class ExecutionDetails(Generic[T]):
    """The outcome of an execution awaited with ``details=True`` (never raises)."""

    __slots__ = ("context", "error", "ok", "value")

    def __init__(
        self, ok: bool, value: T | None, error: BaseException | None, context: ExecutionContext
    ) -> None:
        self.ok = ok
        self.value = value
        self.error = error
        self.context = context

    def __repr__(self) -> str:
        if self.ok:
            return f"ExecutionDetails(ok=True, value={self.value!r})"
        return f"ExecutionDetails(ok=False, error={self.error!r})"


@final
class Execution(Generic[T]):
    """A flow running as a task in its own root context. Await it for the result.

    Status goes ``pending`` → ``running`` → ``completed`` | ``failed`` | ``cancelled``
    (a timeout ends ``failed``).
    """

    __slots__ = (
        "_callbacks",
        "_details",
        "_flow",
        "_input",
        "_status",
        "_task",
        "_timeout",
        "context",
        "status_callback_errors",
    )

    def __init__(
        self,
        scope: Scope,
        flow: Flow[Any, Any],
        input: object,
        *,
        tags: Iterable[Tagged[Any]],
        timeout: float | None,
        details: bool,
        id: str | None,
    ) -> None:
        if timeout is not None and not timeout > 0:
            msg = (
                f"timeout= must be a positive number of seconds (got {timeout!r}) for {flow.name!r}"
            )
            raise ValueError(msg)
        ctx = boundary_context(scope, flow.name, id, None, input)
        if tags:
            ctx._bind_tags(tags)
        scope._roots[ctx] = None
        self.context = ctx
        self._flow = flow
        self._input = input
        self._timeout = timeout
        self._details = details
        self._status: ExecutionStatus = "pending"
        self._callbacks: list[StatusCallback] = []
        self.status_callback_errors: list[BaseException] = []
        self._task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(
            self._run(), name=f"runtree:{flow.name}"
        )

    @property
    def id(self) -> str:
        return self.context.id

    @property
    def flow_name(self) -> str:
        return self._flow.name

    @property
    def status(self) -> ExecutionStatus:
        return self._status

    def on_status_change(self, cb: StatusCallback) -> Callable[[], None]:
        """Call ``cb(status, execution)`` (sync or async) on every status change.

        Errors raised by callbacks are collected in :attr:`status_callback_errors`; they
        never break the execution. Returns a function that unsubscribes ``cb``.
        """
        self._callbacks.append(cb)

        def unsubscribe() -> None:
            if cb in self._callbacks:
                self._callbacks.remove(cb)

        return unsubscribe

    def cancel(self, reason: str | None = None) -> None:
        """Cancel the execution: awaiting it raises :class:`Cancelled` (or gives failed
        details with ``details=True``); its status ends ``cancelled``."""
        self.context.cancel(reason or "execution cancelled")

    def __await__(self) -> Generator[Any, None, T]:
        return self._task.__await__()

    def done(self) -> bool:
        return self._task.done()

    def __repr__(self) -> str:
        return f"<Execution {self.flow_name!r} id={self.id} status={self._status}>"

    async def _set_status(self, status: ExecutionStatus) -> None:
        self._status = status
        for cb in list(self._callbacks):
            try:
                result = cb(status, self)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                self.status_callback_errors.append(exc)

    async def _run(self) -> object:
        ctx = self.context
        scope = ctx.scope
        loop = asyncio.get_running_loop()
        ctx._task = asyncio.current_task()
        ctx._loop = loop
        try:
            await self._set_status("running")
            if ctx.closed:
                raise Cancelled(ctx.name, "its scope closed it before it started")
            if scope._init_pending:
                await scope._run_init()
            value = await self._invoke(ctx)
        except asyncio.CancelledError as exc:
            converted: BaseException = exc
            if ctx._status == "running":
                # ctx.cancel() delivered before the body ran: _fail converts it to Cancelled
                converted = await ctx._fail(exc)
            if converted is exc:
                # The execution's own task was cancelled (e.g. the awaiting caller was).
                await self._set_status("cancelled")
                raise
            await self._set_status("cancelled")
            if self._details:
                return ExecutionDetails(False, None, converted, ctx)
            raise converted from None
        except BaseException as exc:
            if ctx._status == "running":  # failed before its body ran
                await ctx._fail(exc)
            status: ExecutionStatus = "cancelled" if isinstance(exc, Cancelled) else "failed"
            await self._set_status(status)
            if self._details:
                return ExecutionDetails(False, None, exc, ctx)
            raise
        await self._set_status("completed")
        if self._details:
            return ExecutionDetails(True, value, None, ctx)
        return value

    async def _invoke(self, ctx: ExecutionContext) -> object:
        scope = ctx.scope
        if scope._lifecycle:
            await scope._context_opened(ctx)
        if ctx._cancelled:
            ctx.raise_if_cancelled()
        flow, input, timeout = self._flow, self._input, self._timeout

        def inner() -> Any:
            return _run.run_body(ctx, "subflow", flow, input, (), None, timeout)

        if not scope._wrap_exec:
            return await inner()
        op = ExecOp("execute", flow, input, None, ctx)
        call = inner
        for wrap in reversed(scope._wrap_exec):
            call = _run._bind(wrap, call, op)
        return await call()


@overload
async def execute(
    flow: Flow[In, Out],
    input: object = None,
    *,
    scope: Scope,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: Literal[False] = False,
) -> Out: ...
@overload
async def execute(
    flow: Flow[In, Out],
    input: object = None,
    *,
    scope: Scope,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: Literal[True],
) -> ExecutionDetails[Out]: ...
@overload
async def execute(
    flow: Flow[In, Out],
    input: object = None,
    *,
    scope: None = None,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: Literal[False] = False,
    extensions: Iterable[Extension] = (),
    presets: Iterable[Preset[Any]] = (),
    scope_tags: Iterable[Tagged[Any]] = (),
) -> Out: ...
@overload
async def execute(
    flow: Flow[In, Out],
    input: object = None,
    *,
    scope: None = None,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: Literal[True],
    extensions: Iterable[Extension] = (),
    presets: Iterable[Preset[Any]] = (),
    scope_tags: Iterable[Tagged[Any]] = (),
) -> ExecutionDetails[Out]: ...
async def execute(
    flow: Flow[In, Out],
    input: object = None,
    *,
    scope: Scope | None = None,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: bool = False,
    extensions: Iterable[Extension] = (),
    presets: Iterable[Preset[Any]] = (),
    scope_tags: Iterable[Tagged[Any]] = (),
) -> Out | ExecutionDetails[Out]:
    """Run ``flow`` once: in ``scope`` if given, else in a temporary scope that is
    disposed afterwards (also on failure).

    ``tags=`` (like ``scope.exec``'s) and ``execution_tags=`` are the same thing: tags of
    this execution's root context; ``scope_tags=`` configure the temporary scope.

    Raises:
        TypeError: ``scope`` together with ``extensions``, ``presets`` or ``scope_tags``
            (configure the scope itself instead); both ``tags`` and ``execution_tags``.
    """
    from ._scope import create_scope

    if tags:
        if execution_tags:
            msg = (
                "execute() takes tags= or execution_tags= (the same thing: tags of this "
                "execution), not both"
            )
            raise TypeError(msg)
        execution_tags = tags

    if scope is not None:
        extras = [
            n
            for n, v in (
                ("extensions", extensions),
                ("presets", presets),
                ("scope_tags", scope_tags),
            )
            if v
        ]
        if extras:
            msg = (
                f"execute(scope=...) cannot take {', '.join(extras)}: they configure a new "
                "scope. Pass them to create_scope() instead, or drop scope= to use a "
                "temporary scope."
            )
            raise TypeError(msg)
        return await scope.exec(flow, input, tags=execution_tags, details=details)
    async with create_scope(tags=scope_tags, extensions=extensions, presets=presets) as temp:
        return await temp.exec(flow, input, tags=execution_tags, details=details)
