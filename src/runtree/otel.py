"""OpenTelemetry tracing: a span for every exec, run, parallel and resolution.

Install the extra (``pip install 'runtree[otel]'``) and add the extension to a scope::

    from runtree.otel import TracingExtension

    async with runtree.create_scope(extensions=[TracingExtension()]) as scope: ...

Only the OpenTelemetry *API* is used here; configure an SDK (or any other implementation)
in the application. ``import runtree`` never imports this module or OpenTelemetry.
See docs/otel.md for the spans, attributes and the decisions behind them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Final

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Span, Status, StatusCode, Tracer, TracerProvider
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    msg = "runtree.otel needs the 'otel' extra: pip install 'runtree[otel]'"
    raise ImportError(msg, name=exc.name) from exc

from . import __version__
from ._extensions import ExecOp, Extension, ResolveOp
from .errors import Cancelled, ExecTimeoutError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.util.types import AttributeValue

    from ._context import ExecutionContext

__all__ = ["TracingExtension"]

_get_current = otel_context.get_current

#: The instrumentation scope name of every span this module makes.
TRACER_NAME: Final = "runtree"
#: ``record_input=True`` records inputs that are not str/bool/int/float as their
#: ``repr``, cut to this many characters.
MAX_INPUT_CHARS: Final = 1024
#: The event added to a span for each journal replay its context saw.
REPLAY_EVENT: Final = "runtree.journal_replay"
#: The event added to a stream's span for each item (``stream_events=True``).
STREAM_ITEM_EVENT: Final = "runtree.stream_item"


class TracingExtension(Extension):
    """Trace a scope with OpenTelemetry.

    Every ``scope.exec`` (kind ``execute``), ``ctx.exec`` (``subflow``), ``ctx.run``
    (``fn``) and ``ctx.parallel``/``parallel_settled`` (``parallel``) gets a span named
    after its context (``parallel <caller>`` for parallel); every actual resolution of an
    atom or resource gets a span ``resolve <name>`` (cache hits make none).

    A span's parent is the span of the nearest traced ancestor in the *runtree* context
    tree, whichever task the work runs in; work with no traced ancestor (a ``scope.exec``
    root, or an exec on a ``create_context()`` boundary) takes the current OpenTelemetry
    context as parent, e.g. an HTTP server span. While the body runs the span is the current
    span, so spans started by user code nest under it.

    Args:
        tracer_provider: Where spans go; ``None`` means the global provider
            (``opentelemetry.trace.set_tracer_provider``).
        record_input: Add the input as the attribute ``runtree.input`` (off by default:
            inputs may hold personal data or secrets).
        stream_events: Add an event ``runtree.stream_item`` (with the item's index) to a
            stream's span for each item it delivers (off by default: a long stream makes
            a large span).

    A stream (``ctx.exec_stream``, kind ``stream``) gets one span from its opening to the
    close of its context, whichever way it ends; while its generator runs (at every
    resumption, whichever task iterates) that span is the current span.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        record_input: bool = False,
        stream_events: bool = False,
    ) -> None:
        self.tracer: Tracer = trace.get_tracer(
            TRACER_NAME, __version__, tracer_provider=tracer_provider
        )
        self.record_input = record_input
        self.stream_events = stream_events
        # The span of each context whose exec is running, as the OpenTelemetry context
        # that holds it (built once per span: it is both what the body runs under and the
        # parent of the context's children), keyed by the context object (contexts have
        # no __weakref__ slot, and root ids may repeat: two runs of one session's root).
        # An entry lives exactly as long as its wrap_exec call, which outlives the
        # context's children: a context closes (joining every child) before its exec
        # returns.
        self._spans: dict[ExecutionContext, Context] = {}

    # -- hooks -----------------------------------------------------------------------

    async def wrap_exec(self, next: Callable[[], Awaitable[object]], op: ExecOp) -> object:
        kind = op.kind
        if kind == "stream":
            return await self._wrap_stream(next, op)
        if kind == "parallel":
            return await self._wrap_parallel(next, op)
        ctx = op.context
        spans = self._spans
        parent = ctx.parent
        # Common case: the parent is traced and its context is still the current one
        # (the child runs in the parent's task, under nothing the user attached).
        above = spans.get(parent) if parent is not None else None
        if above is None:
            if parent is not None and parent.parent is not None:
                above = self._parent_of(parent.parent)  # past an untraced boundary
        elif above is not _get_current():
            above = self._parent_of(parent)
        attributes: dict[str, AttributeValue] = {
            "runtree.kind": kind,
            "runtree.context_id": ctx.id,
            "runtree.root_id": ctx.root.id,
        }
        # Attributes that would repeat the common case are left out (each one costs the
        # SDK a validation): no runtree.attempt on a first attempt, no runtree.status on
        # work that completed. docs/otel.md states both rules.
        attempt = op.attempt
        if attempt != 1:
            attributes["runtree.attempt"] = attempt
        if op.key is not None:
            attributes["runtree.key"] = op.key
        if self.record_input and op.input is not None:
            attributes["runtree.input"] = _attribute(op.input)
        span = self.tracer.start_span(ctx.name, above, attributes=attributes)
        here = trace.set_span_in_context(span)
        spans[ctx] = here
        token = otel_context.attach(here)
        detach = True
        outcome = "completed"
        try:
            return await next()
        except GeneratorExit:
            # The exec's coroutine was closed without finishing. Whoever closes it may run
            # in another contextvars context, where detaching our token would fail; in
            # ours (``coro.close()`` in the same task) the span must stop being current.
            detach = otel_context.get_current() is here
            outcome = "cancelled"
            span.set_status(Status(StatusCode.ERROR, "cancelled"))
            raise
        except BaseException as exc:
            outcome = _record_failure(span, exc)
            raise
        finally:
            if detach:
                otel_context.detach(token)
            if spans.get(ctx) is here:
                del spans[ctx]
            # A closed context reports its own final status (a timeout ends "failed").
            status = ctx._status if ctx.closed else outcome
            if status != "completed":
                span.set_attribute("runtree.status", status)
            x = ctx._x  # read, not ctx.details.metadata: that would allocate per exec
            if x is not None and x.metadata:
                _add_replays(span, x.metadata)
            span.end()

    async def _wrap_parallel(self, next: Callable[[], Awaitable[object]], op: ExecOp) -> object:
        """For parallel, ``op.context`` is the caller: the span hangs under the caller's
        span and marks the interval the caller waited."""
        ctx = op.context
        span = self.tracer.start_span(
            f"parallel {ctx.name}",
            self._parent_of(ctx),
            attributes={
                "runtree.kind": "parallel",
                "runtree.context_id": ctx.id,
                "runtree.root_id": ctx.root.id,
            },
        )
        here = trace.set_span_in_context(span)
        token = otel_context.attach(here)
        detach = True
        outcome = "completed"
        try:
            return await next()
        except GeneratorExit:
            detach = otel_context.get_current() is here  # (see _wrap)
            outcome = "cancelled"
            span.set_status(Status(StatusCode.ERROR, "cancelled"))
            raise
        except BaseException as exc:
            outcome = _record_failure(span, exc)
            raise
        finally:
            if detach:
                otel_context.detach(token)
            if outcome != "completed":
                span.set_attribute("runtree.status", outcome)
            span.end()

    async def wrap_resolve(self, next: Callable[[], Awaitable[object]], op: ResolveOp) -> object:
        target = op.atom
        attributes: dict[str, AttributeValue] = {
            "runtree.kind": "resolve",
            "runtree.target": type(target).__name__.lower(),
        }
        ownership = getattr(target, "ownership", None)
        if isinstance(ownership, str):
            attributes["runtree.ownership"] = ownership
        if op.context is not None:
            attributes["runtree.context_id"] = op.context.id
            attributes["runtree.root_id"] = op.context.root.id
        # A factory runs in the task of the first caller that needed it: the current
        # context there is that caller's span (or the user's span inside it).
        span = self.tracer.start_span(f"resolve {target.name}", attributes=attributes)
        here = trace.set_span_in_context(span)
        token = otel_context.attach(here)
        detach = True
        try:
            return await next()
        except GeneratorExit:
            detach = otel_context.get_current() is here  # (see _wrap)
            raise
        except BaseException as exc:
            _record_failure(span, exc)
            raise
        finally:
            if detach:
                otel_context.detach(token)
            span.end()

    async def _wrap_stream(self, next: Callable[[], Awaitable[object]], op: ExecOp) -> object:
        """A stream's ``next()`` only opens it (its items come later, as the consumer asks):
        the span starts here and ends when the stream's context closes."""
        ctx = op.context
        attributes: dict[str, AttributeValue] = {
            "runtree.kind": "stream",
            "runtree.context_id": ctx.id,
            "runtree.root_id": ctx.root.id,
        }
        if op.key is not None:
            attributes["runtree.key"] = op.key
        if self.record_input and op.input is not None:
            attributes["runtree.input"] = _attribute(op.input)
        span = self.tracer.start_span(ctx.name, self._parent_of(ctx.parent), attributes=attributes)
        here = trace.set_span_in_context(span)
        spans = self._spans
        spans[ctx] = here

        def end() -> None:
            if spans.get(ctx) is here:
                del spans[ctx]
            details = ctx.details
            error = details.error
            if error is not None:
                _record_failure(span, error)
            status = details.status
            if status != "completed":
                span.set_attribute("runtree.status", status)
            metadata = details.metadata
            items = metadata.get("stream_items")
            if isinstance(items, int):
                span.set_attribute("runtree.stream.items", items)
            _add_replays(span, metadata)
            span.end()

        ctx.on_close(end)
        token = otel_context.attach(here)
        try:
            source = await next()
        finally:
            otel_context.detach(token)
        return _traced(source, here, span if self.stream_events else None)

    # -- helpers ---------------------------------------------------------------------

    def _parent_of(self, ctx: ExecutionContext | None) -> Context | None:
        """The current OpenTelemetry context with the span of ``ctx`` or its nearest traced
        ancestor in it (the caller's baggage and other values kept); ``None`` (the current
        context as it is) when none is traced."""
        spans = self._spans
        while ctx is not None:
            here = spans.get(ctx)
            if here is not None:
                if here is _get_current():
                    return here
                return trace.set_span_in_context(trace.get_current_span(here))
            ctx = ctx.parent
        return None


async def _traced(source: object, here: Context, span: Span | None) -> AsyncIterator[object]:
    """The stream's items, with its span current at every resumption of the generator
    (attached and detached within one step: the consumer may change tasks between
    steps), and an event per item when ``span`` is given."""
    nxt = source.__anext__  # type: ignore[attr-defined]
    index = 0
    while True:
        token = otel_context.attach(here)
        try:
            item = await nxt()
        except StopAsyncIteration:
            return
        finally:
            otel_context.detach(token)
        if span is not None:
            span.add_event(STREAM_ITEM_EVENT, {"runtree.index": index})
        index += 1
        yield item


def _record_failure(span: Span, exc: BaseException) -> str:
    """Mark ``span`` as failed by ``exc``; return the runtree status it stands for."""
    if isinstance(exc, asyncio.CancelledError):
        span.set_status(Status(StatusCode.ERROR, "cancelled"))
        return "cancelled"
    if isinstance(exc, Exception):
        span.record_exception(exc)
    if isinstance(exc, Cancelled):
        why = f"cancelled: {exc.reason}" if exc.reason else "cancelled"
        span.set_status(Status(StatusCode.ERROR, why))
        return "cancelled"
    if isinstance(exc, ExecTimeoutError):
        span.set_status(Status(StatusCode.ERROR, f"timed out after {exc.timeout:g}s"))
        return "failed"
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    return "failed"


def _add_replays(span: Span, metadata: dict[str, object]) -> None:
    """One event per journal replay a context saw (the core records them, by key, in the
    caller's ``details.metadata``; there is no hook at the moment of the replay, so the
    events carry the span's end time)."""
    replays = metadata.get("journal_replays")
    if isinstance(replays, list):
        for key in replays:
            span.add_event(REPLAY_EVENT, {"runtree.key": str(key)})


def _attribute(value: object) -> AttributeValue:
    if isinstance(value, (str, bool, int, float)):
        return value
    text = repr(value)
    return text if len(text) <= MAX_INPUT_CHARS else text[: MAX_INPUT_CHARS - 1] + "…"
