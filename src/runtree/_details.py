"""The small value types around a context: exec options, details, settled outcomes and
flow dependency handles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Literal,
    TypeAlias,
    TypedDict,
    TypeVar,
    Unpack,
    final,
    overload,
)

from ._defs import Flow
from ._tags import Tagged

if TYPE_CHECKING:
    from ._context import ExecutionContext
    from ._stream import FlowStream

__all__ = [
    "ContextDetails",
    "ContextStatus",
    "ExecOptions",
    "FlowHandle",
    "Settled",
    "StreamOptions",
]

T = TypeVar("T")
In = TypeVar("In")
Out = TypeVar("Out")
Y = TypeVar("Y")

ContextStatus: TypeAlias = Literal["running", "completed", "failed", "cancelled"]


class ExecOptions(TypedDict, total=False):
    """Keyword options of :meth:`ExecutionContext.exec` (see its docstring)."""

    key: str | None
    timeout: float | None
    retry: int
    tags: Iterable[Tagged[Any]]
    name: str | None
    retry_delay: float
    retry_backoff: float
    retry_jitter: float
    retry_on: type[BaseException] | tuple[type[BaseException], ...]


class StreamOptions(TypedDict, total=False):
    """Keyword options of :meth:`ExecutionContext.exec_stream` (no retries: items already
    delivered cannot be taken back)."""

    key: str | None
    timeout: float | None
    tags: Iterable[Tagged[Any]]
    name: str | None


@final
class Settled(Generic[T]):
    """The outcome of one awaitable in :meth:`ExecutionContext.parallel_settled`."""

    __slots__ = ("error", "ok", "value")

    def __init__(self, ok: bool, value: T | None, error: BaseException | None) -> None:
        self.ok = ok
        self.value = value
        self.error = error

    def __repr__(self) -> str:
        if self.ok:
            return f"Settled(ok=True, value={self.value!r})"
        return f"Settled(ok=False, error={self.error!r})"


@final
class ContextDetails:
    """A live view of a context's details (name, times, status, error, metadata)."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: ExecutionContext) -> None:
        self._ctx = ctx

    @property
    def name(self) -> str:
        return self._ctx.name

    @property
    def started_at(self) -> float:
        """Epoch seconds (``time.time()``) when the context opened."""
        return self._ctx._started_at

    @property
    def completed_at(self) -> float | None:
        """Epoch seconds when the context closed, ``None`` while open."""
        return self._ctx._closed_at()

    @property
    def status(self) -> ContextStatus:
        return self._ctx._status

    @property
    def error(self) -> BaseException | None:
        x = self._ctx._x
        return None if x is None else x.error

    @property
    def metadata(self) -> dict[str, object]:
        """A dict the code may fill (tracing attributes, counters ...)."""
        x = self._ctx._extra()
        if x.metadata is None:
            x.metadata = {}
        return x.metadata

    @property
    def duration(self) -> float | None:
        end = self._ctx._closed_at()
        return None if end is None else end - self._ctx._started_at

    def __repr__(self) -> str:
        return f"ContextDetails(name={self.name!r}, status={self.status!r}, error={self.error!r})"


@final
class FlowHandle(Generic[In, Out]):
    """A flow dependency bound to the calling context: ``await handle(input)`` execs it
    as a child of that context."""

    __slots__ = ("_ctx", "flow")

    def __init__(self, ctx: ExecutionContext, flow: Flow[In, Out]) -> None:
        self._ctx = ctx
        self.flow = flow

    @overload
    def __call__(
        self: FlowHandle[In, AsyncIterator[Y]],
        input: object = None,
        **options: Unpack[ExecOptions],
    ) -> Awaitable[list[Y]]: ...
    @overload
    def __call__(self, input: object = None, **options: Unpack[ExecOptions]) -> Awaitable[Out]: ...
    def __call__(self, input: object = None, **options: Unpack[ExecOptions]) -> Awaitable[Any]:
        return self._ctx.exec(self.flow, input, **options)

    def stream(
        self: FlowHandle[In, AsyncIterator[Y]],
        input: object = None,
        **options: Unpack[StreamOptions],
    ) -> FlowStream[Y]:
        """Stream a streaming flow dependency as a child of the calling context
        (:meth:`ExecutionContext.exec_stream`)."""
        return self._ctx.exec_stream(self.flow, input, **options)

    def __repr__(self) -> str:
        return f"<FlowHandle {self.flow.name} in {self._ctx.name}>"
