"""The Execution handle returned by ``scope.exec``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeAlias, TypeVar, final

from . import _run
from ._context import ExecutionContext, boundary_context, check_timeout, checked_tags
from ._extensions import ExecOp, run_wrapped
from ._tags import Tagged
from .errors import Cancelled

if TYPE_CHECKING:
    from ._defs import Flow
    from ._scope import Scope

__all__ = ["Execution", "ExecutionDetails", "ExecutionStatus"]

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
        check_timeout(timeout, flow.name)
        tags = checked_tags(tags) if tags else ()
        ctx = boundary_context(scope, flow.name, id, None, input)
        if tags:
            ctx._bind_tags(tags)
        scope._roots[ctx] = None
        ctx._extra().unstarted = self  # closed before its task starts: cancelled
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

    def _closed_unstarted(self) -> None:
        """Its root was closed before its task ran (its scope was disposed, say): it is
        ``cancelled`` from now on; the status callbacks hear it when the task runs (it
        never was ``running``)."""
        self._status = "cancelled"

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
            if not ctx.closed:
                await self._set_status("running")
            if ctx.closed:  # (before its task started, or by a status callback)
                raise Cancelled(ctx.name, "its scope closed it before it started")
            ctx._extra().unstarted = None
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
            self._task.add_done_callback(_retrieved)  # see _retrieved
            raise converted from None
        except BaseException as exc:
            if ctx._status == "running":  # failed before its body ran
                await ctx._fail(exc)
            status: ExecutionStatus = "cancelled" if isinstance(exc, Cancelled) else "failed"
            await self._set_status(status)
            if status == "cancelled":
                self._task.add_done_callback(_retrieved)  # see _retrieved
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
        value = await run_wrapped(scope._wrap_exec, inner, op)
        if ctx._status == "running":
            # An extension answered without running the body (a cache, say): the root
            # closes completed, as an exec child does.
            await ctx._succeed()
        return value


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark a cancelled execution's exception as seen: one nobody awaits (its scope closed
    first, say) is not reported as "Task exception was never retrieved", as a cancelled
    asyncio task is not. Awaiting it still raises ``Cancelled``; a failed execution nobody
    awaits is still reported."""
    if not task.cancelled():
        task.exception()
