"""Streaming flows: ``ctx.exec_stream(flow, input)`` for async-generator flows.

A stream runs its flow in a child context, in the consumer's task: each ``async for``
step resumes the flow's generator once, with :func:`runtree.current_context` set to the
child for that resumption only (a generator's frame runs in the contextvars context of
whoever resumes it, so the variable is set and reset around every step).

Life of a stream::

    exec_stream()  -> child made (status running), parent checked, nothing runs yet
    first item     -> open hooks, journal replay check, wrap_exec(op.kind == "stream")
                      opens the source: parse, deps, the factory's generator
    each item      -> cancellation checked (the ancestors walked only when a cancel
                      happened since the last item), one generator step under the child
    end            -> completed (items journaled under key=), failed, or cancelled

Leaving early: ``FlowStream.__aiter__`` hands out a fresh async generator (the *pump*)
that the stream itself holds only weakly, with a finalizer of our own. When the consumer
leaves the ``async for`` (``break``, an exception in the body), CPython frees the pump at
once and the finalizer marks the child cancelled right there and schedules the rest of
the cleanup (the generator's ``finally``, ``on_close`` callbacks, resources) as a task
that starts on the loop's next turn. ``async with`` / ``aclose()`` do the whole cleanup
before they return. See docs/streaming.md for the reasons.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar, final

from . import _cancel, _context
from ._context import _OPEN, ExecutionContext, _child, _task_of, check_timeout, checked_tags
from ._defs import Flow
from ._extensions import ExecOp, run_wrapped
from ._journal import CLAIMED, check_key
from ._json import shown
from ._tags import MISSING
from .errors import Cancelled, ExecTimeoutError

_current = _context._current  # assigned, not imported: a method call (see _run)

if TYPE_CHECKING:
    from ._details import StreamOptions
    from ._journal import Journal

__all__ = ["FlowStream", "collect", "exec_stream"]

log = logging.getLogger("runtree")

Y = TypeVar("Y")

_NEW, _RUNNING, _CLOSING, _DONE = range(4)
_OPTIONS = frozenset(("key", "timeout", "tags", "name"))
_RETRY_OPTIONS = frozenset(("retry", "retry_delay", "retry_backoff", "retry_jitter", "retry_on"))
# Frames one stream step costs between the consumer and the generator's body.
_STREAM_FRAMES = 4


async def collect(gen: AsyncIterator[Y]) -> list[Y]:
    """``await ctx.exec(stream_flow)``: every item of the flow's generator, in a list.

    Called where the exec engine awaits the factory's result, with the child already the
    current context (no per-item work beyond the append)."""
    items: list[Y] = []
    try:
        async for item in gen:
            items.append(item)
    except BaseException:
        aclose = getattr(gen, "aclose", None)
        if aclose is not None:
            await aclose()  # a finished generator: nothing to do; else its finally runs
        raise
    return items


def exec_stream(
    parent: ExecutionContext, flow: Flow[Any, Any], input: object, options: StreamOptions
) -> FlowStream[Any]:
    """Check the call and make the stream with its child context (nothing runs yet)."""
    if not isinstance(flow, Flow):
        msg = f"ctx.exec_stream() takes a streaming flow (got {shown(flow)})"
        raise TypeError(msg)
    if not flow.is_stream:
        msg = (
            f"ctx.exec_stream(): flow {flow.name!r} does not stream (its factory is not an "
            "async generator); use ctx.exec() for it, or make its factory 'async def' with "
            "'yield'"
        )
        raise TypeError(msg)
    for option, value in options.items():
        if option in _RETRY_OPTIONS:
            if option == "retry" and value == 0 and type(value) is int:
                continue
            msg = (
                f"ctx.exec_stream() of flow {flow.name!r} takes no {option}=: items already "
                "delivered cannot be taken back. Retry inside the generator, or start a new "
                "stream; ctx.exec() of the flow (which collects the items) takes retry="
            )
            raise TypeError(msg)
        if option not in _OPTIONS:
            msg = (
                f"exec_stream() got an unexpected keyword argument {option!r}; options are "
                f"{', '.join(sorted(_OPTIONS))}"
            )
            raise TypeError(msg)
    if parent._status is not _OPEN:
        parent._refuse("exec_stream")
    name = options.get("name") or flow.name
    timeout = options.get("timeout")
    check_timeout(timeout, name)
    key = options.get("key")
    if key is not None:
        check_key(key, name)
    cur = _current.get()
    depth = max(parent._depth, 0 if cur is None else cur._depth) + _STREAM_FRAMES
    tags = options.get("tags")
    checked = checked_tags(tags) if tags else ()
    child = _child(parent, name, input, depth, None)
    if checked:
        child._bind_tags(checked)
    return FlowStream(child, flow, input, key, timeout)


@final
class FlowStream(Generic[Y]):
    """The items of a streaming flow, produced as the consumer asks for them.

    ``async for item in ctx.exec_stream(flow, input)`` runs the flow's generator in the
    child context :attr:`context`, in the consumer's task. A stream is iterated once.
    Leaving the loop early (``break``, an exception, :meth:`aclose`) cancels the child:
    status ``cancelled``, the generator's ``finally``, ``on_close`` callbacks and resources
    run. ``async with ctx.exec_stream(...) as stream:`` closes it when the block ends.

    .. versionadded:: 0.2
    """

    __slots__ = (
        "_done",
        "_flow",
        "_gen",
        "_input",
        "_items",
        "_journal",
        "_key",
        "_pump",
        "_source",
        "_state",
        "_timeout",
        "_timer",
        "_unregister",
        "context",
    )

    def __init__(
        self,
        child: ExecutionContext,
        flow: Flow[Any, Any],
        input: object,
        key: str | None,
        timeout: float | None,
    ) -> None:
        #: The child context the flow runs in (status ``running`` until the stream ends).
        self.context = child
        self._flow = flow
        self._input = input
        self._key = key
        self._timeout = timeout
        self._state = _NEW
        self._gen: AsyncIterator[Any] | None = None  # the factory's generator
        self._source: AsyncIterator[Any] | None = None  # what the pump iterates
        self._pump: weakref.ref[AsyncIterator[Y]] | None = None
        self._items: list[Any] | None = [] if key is not None else None
        self._journal: Journal | None = None  # the journal whose key this stream holds
        self._timer: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[None] | None = None
        assert child.parent is not None
        # The parent's close stops a stream still open (never iterated, or held after the
        # consumer stopped asking): its own cleanups run before the parent's.
        self._unregister: Callable[[], None] | None = child.parent.on_close(self._parent_closing)

    def __repr__(self) -> str:
        return f"<FlowStream {self._flow.name} in {self.context.parent!r}>"

    # -- iteration -------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Y]:
        if self._pump is not None:
            msg = (
                f"the stream of flow {self._flow.name!r} was iterated already; a FlowStream "
                "is iterated once: call ctx.exec_stream() again for a new run"
            )
            raise RuntimeError(msg)
        pump = self._run()
        # Install our finalizer on the pump (hooks are read at its first __anext__, which
        # makes an asend object without running anything): when the consumer drops it, we
        # cancel the child at once instead of waiting for the loop's generic finalizer.
        hooks = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=_finalize)
        try:
            pump.__anext__()
        finally:
            sys.set_asyncgen_hooks(*hooks)
        self._pump = weakref.ref(pump)
        return pump

    async def _run(self) -> AsyncIterator[Y]:
        """The pump: what ``async for`` iterates. Per item: one step of the source with the
        child as the current context, one yield; between items a cancellation check that
        walks the ancestors only when some context was cancelled since the last item."""
        child = self.context
        parent = child.parent
        assert parent is not None
        if self._state != _NEW:  # closed before it started (aclose, or its parent closed)
            x = child._x
            raise (x.error if x is not None and x.error else Cancelled(child.name, "closed"))
        source = await self._start()
        task_of = _task_of
        loop = asyncio.get_running_loop()
        set_current = _current.set
        reset_current = _current.reset
        generation = _cancel.generation
        seen = -1  # the generation of cancellations checked (-1: check before the first)
        items = self._items
        count = 0
        attached = False
        task: asyncio.Task[Any] | None = None
        token: contextvars.Token[ExecutionContext | None] | None = None  # set: in a step
        try:
            while True:
                if generation[0] != seen:
                    # Something was cancelled since the last check: the child, or an
                    # ancestor whose cancel (same task) flags only itself.
                    seen = generation[0]
                    node: ExecutionContext | None = child
                    while node is not None and not node._cancelled:
                        node = node.parent
                    if node is not None:
                        raise await self._stop_cancelled(node)
                task = task_of(loop)
                # While the step runs, the child's work is this task: a cancel or timeout
                # is delivered into the generator; between steps it only flags the child.
                child._task = task
                if task is parent._task:
                    attached = False
                elif parent._running is None:  # (parent._attach, inlined: per item)
                    parent._running = child
                    attached = True
                else:
                    parent._attach(child)
                    attached = True
                token = set_current(child)
                async for item in source:  # noqa: B007 - one step (cheaper than await __anext__())
                    break
                else:
                    reset_current(token)
                    token = None
                    self._count(count)
                    await self._complete()
                    return
                reset_current(token)
                token = None
                child._task = None
                if attached:
                    if parent._running is child:  # (parent._detach, inlined: per item)
                        parent._running = None
                        px = parent._x  # (set on every parent: the stream's on_close)
                        if px is not None and px.drained is not None:
                            parent._drained()  # someone waits for the parent's children
                    else:
                        parent._detach(child)
                if child._cancelled:
                    # The step swallowed its cancellation: take the request back; the
                    # check above stops the stream at the next item.
                    _cancel.discard(task, child)
                count += 1
                if items is not None:
                    items.append(item)
                yield item
        except BaseException as exc:
            self._count(count)
            if token is not None:  # the source raised (or its step was cancelled)
                reset_current(token)
                raise await self._failed(exc)  # noqa: B904 - exc itself, or its conversion
            if self._state < _CLOSING:  # GeneratorExit at ``yield`` (aclose, a dropped
                # pump) or anything thrown in by athrow(): an early stop
                await self._stop_early("the consumer left the stream")
            raise

    def _count(self, count: int) -> None:
        if count or self._state == _RUNNING:
            self.context.details.metadata["stream_items"] = count

    async def _start(self) -> AsyncIterator[Any]:
        """Open the stream: checks, journal replay, open hooks, wrappers, the source."""
        child = self.context
        parent = child.parent
        assert parent is not None
        scope = child.scope
        self._state = _RUNNING
        loop = asyncio.get_running_loop()
        task = _task_of(loop)
        child._task = task
        foreign = task is not parent._task
        if foreign:
            parent._attach(child)
        token = _current.set(child)
        try:
            if parent._status is not _OPEN:
                parent._refuse("exec_stream")
            node: ExecutionContext | None = child
            while node is not None:
                if node._cancelled:
                    x = node._x
                    raise Cancelled(child.name, None if x is None else x.cancel_reason)
                node = node.parent
            if scope._init_pending:
                await scope._run_init()
            if self._timeout is not None:
                self._timer = loop.call_later(self._timeout, self._time_out)
            recorded: object = MISSING
            key = self._key
            if key is not None:
                journal = scope._journal_of(parent.root)
                if not journal.loaded:
                    await journal._load()
                replaying = key in journal.entries
                # Claimed now, as any keyed step: a concurrent stream (or exec) with this
                # key waits for this one's items instead of running too; a recorded key
                # replays (name and input checked by the journal).
                claimed = await journal.claim(key, self._flow.name, parent, self._input)
                if claimed is CLAIMED:
                    self._journal = journal
                    journal.running[key] = child
                else:
                    recorded = claimed
                    if replaying:
                        replays = parent.details.metadata.setdefault("journal_replays", [])
                        assert isinstance(replays, list)
                        replays.append(key)
                    recorder = scope._recorder
                    if recorder is not None:  # run trees: a replayed stream's node
                        replay = recorder.note_replay(
                            parent,
                            "stream",
                            self._flow.name,
                            self._input,
                            key,
                            journal.entries.get(key),
                            self._input,
                        )
                        if replay is not None:  # left early: the node ends as the child
                            child.on_close(partial(recorder.replay_closed, replay, child))
                    child.details.metadata["replayed"] = True
                    self._items = None  # nothing to record again
            if scope._lifecycle:
                await scope._context_opened(child)
            if recorded is not MISSING:
                source = _iterate(recorded)  # type: ignore[arg-type]
            elif scope._wrap_exec:
                op = ExecOp("stream", self._flow, self._input, key, child)
                opened = await run_wrapped(scope._wrap_exec, self._open_source, op)
                source = _as_source(opened, self._flow.name)
            else:
                source = await self._open_source()
        except BaseException as exc:
            _current.reset(token)
            self._count(0)
            raise await self._failed(exc)  # noqa: B904
        _current.reset(token)
        child._task = None
        if foreign:
            parent._detach(child)
        self._source = source
        return source

    async def _open_source(self) -> AsyncIterator[Any]:
        """What ``next()`` does for a stream's ``wrap_exec``: parse the input, resolve the
        deps and start the factory's generator (no item is produced yet)."""
        child = self.context
        scope = child.scope
        flow: Flow[Any, Any] = self._flow
        if scope._flow_presets:
            replacement = scope._flow_presets.get(flow, MISSING)
            if replacement is not MISSING:
                if not isinstance(replacement, Flow):
                    # a preset value: the items themselves
                    return _iterate(replacement)  # type: ignore[arg-type]
                if not replacement.is_stream:
                    msg = (
                        f"preset for streaming flow {flow.name!r}: {replacement.name!r} does "
                        "not stream; replace a streaming flow by a streaming flow or a list"
                    )
                    raise TypeError(msg)
                flow = replacement
        if flow.parse is not None:
            child.input = flow.parse_input(self._input)
        if flow.deps:
            deps = await scope._resolver.context_deps(child, flow.deps, ())
            gen = flow.factory(child, **deps)
        else:
            gen = flow.factory(child)
        self._gen = gen  # type: ignore[assignment]
        return gen  # type: ignore[return-value]

    # -- ending ----------------------------------------------------------------------

    async def _complete(self) -> None:
        """The source finished: close the child ``completed``, then journal the items."""
        child = self.context
        self._end(completed=True)
        try:
            await child._succeed()
        except BaseException:
            if self._journal is not None and self._key is not None:
                self._journal.unclaim(self._key)  # its cleanup failed: nothing recorded
                self._journal = None
            raise
        finally:
            self._finish()
        journal, key, items = self._journal, self._key, self._items
        if journal is not None and key is not None and items is not None:
            self._journal = None
            try:
                # A stream's items exist only once it completed: recorded now.
                await journal.record(key, self._flow.name, items, self._input)
            finally:
                journal.unclaim(key)

    async def _failed(self, exc: BaseException) -> BaseException:
        """The source (or the opening) raised: close the child failed (or cancelled, or
        timed out); return the error for the consumer."""
        child = self.context
        self._end()
        try:
            await self._close_sources(child, exc)
            err = await child._fail(exc)
        finally:
            self._finish()
        return err

    async def _stop_cancelled(self, node: ExecutionContext) -> BaseException:
        """The child (or ``node``, an ancestor) was cancelled between two items."""
        child = self.context
        x = node._x
        err: BaseException
        if node is child and x is not None and x.timed_out is not None:
            err = ExecTimeoutError(child.name, x.timed_out)
        else:
            err = Cancelled(child.name, None if x is None else x.cancel_reason)
        self._end()
        try:
            await self._close_sources(child, err)
            await child._fail(err)
        finally:
            self._finish()
        return err

    async def _stop_early(self, reason: str) -> None:
        """The consumer stopped asking (or the parent closes): cancel the child, close the
        generator, run the child's cleanups. Idempotent; concurrent calls wait."""
        if self._state >= _CLOSING:
            if self._state == _CLOSING:
                await self._wait_done()
            return
        child = self.context
        self._end()
        try:
            if child._status is _OPEN and not child._cancelled:
                child._mark_cancelled(reason)
            err = Cancelled(child.name, reason)
            await self._close_sources(child, err)
            if child._status is _OPEN:
                await child._fail(err)
        finally:
            self._finish()

    async def _close_sources(self, child: ExecutionContext, err: BaseException) -> None:
        """``aclose()`` the source and the factory's generator, with the child current:
        their ``finally`` blocks run. A failure there is logged and noted on ``err``."""
        token = _current.set(child)
        try:
            for gen in (self._source, self._gen):
                aclose = getattr(gen, "aclose", None)
                if aclose is None:
                    continue
                try:
                    await aclose()
                except Exception as exc:
                    if exc is err:
                        continue
                    log.error("closing the generator of stream %r failed", child.name, exc_info=exc)
                    err.add_note(
                        f"closing the generator of stream {child.name!r} failed: {shown(exc)}"
                    )
        finally:
            _current.reset(token)

    def _end(self, completed: bool = False) -> None:
        journal = self._journal
        if journal is not None and not completed and self._key is not None:
            # Failed, cancelled or stopped early: nothing recorded, the key is free again.
            self._journal = None
            journal.unclaim(self._key)
        self._state = _CLOSING
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._unregister is not None:
            self._unregister()
            self._unregister = None

    def _finish(self) -> None:
        self._state = _DONE
        self._source = self._gen = None
        done = self._done
        if done is not None and not done.done():
            done.set_result(None)

    async def _wait_done(self) -> None:
        if self._state == _DONE:
            return
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._done)

    def _time_out(self) -> None:
        child = self.context
        if child._status is _OPEN and self._timeout is not None:
            child._mark_cancelled(f"timed out after {self._timeout:g}s", timed_out=self._timeout)

    async def _parent_closing(self) -> None:
        self._unregister = None
        if self._state < _CLOSING:
            await self._stop_early("its parent closed")
        elif self._state == _CLOSING:
            await self._wait_done()

    def _abandoned(self, count: object) -> None:
        """The pump was freed with the stream still open (the consumer left the loop):
        the child is cancelled at once; the cleanup runs in a task of the loop."""
        child = self.context
        if self._state >= _CLOSING:
            return
        if isinstance(count, int):
            self._count(count)
        if child._status is _OPEN and not child._cancelled:
            child._mark_cancelled("the consumer left the stream")

    # -- closing ---------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the stream: the child ends ``cancelled`` (unless it finished already) and
        every cleanup has run when this returns. Idempotent."""
        if self._state == _DONE:
            return
        pump = self._pump() if self._pump is not None else None
        if pump is not None and self._state == _RUNNING:
            if getattr(pump, "ag_running", False):
                # Another task is inside a step right now: cancel the child there.
                self.context.cancel("the stream was closed")
                await self._wait_done()
                return
            await pump.aclose()  # type: ignore[attr-defined]
        await self._stop_early("the stream was closed")

    async def __aenter__(self) -> FlowStream[Y]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _finalize(pump: Any) -> None:
    """Async-generator finalizer of a pump dropped by its consumer (CPython calls it as
    soon as the last reference goes, e.g. at ``break``)."""
    frame = pump.ag_frame
    if frame is not None:
        # (weak references to the pump are already cleared here: read its frame)
        local = frame.f_locals
        stream = local.get("self")
        if isinstance(stream, FlowStream):
            stream._abandoned(local.get("count"))
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop any more: nothing can run the async cleanup
        log.warning("a stream was dropped after its event loop stopped; its cleanup is lost")
        return
    _closing.add(task := loop.create_task(pump.aclose()))
    task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()  # cleanups of dropped streams, until done


async def _iterate(items: Iterable[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


def _as_source(result: object, name: str) -> AsyncIterator[Any]:
    """What a stream's ``wrap_exec`` chain returned, as an async iterator: the opened
    source (or a wrapping iterator), or the items of an extension answering itself."""
    if result is None:
        return _iterate(())
    if hasattr(result, "__anext__"):
        return result  # type: ignore[return-value]
    if hasattr(result, "__aiter__"):
        return result.__aiter__()  # type: ignore[no-any-return]
    if isinstance(result, Iterable):
        return _iterate(result)
    msg = (
        f"a wrap_exec for stream {name!r} returned {result!r}; return what next() gave "
        "(an async iterator), a wrapping async iterator, or the items"
    )
    raise TypeError(msg)
