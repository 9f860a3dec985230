"""Delivering a context's cancellation to the task that runs it.

A context's work runs in its caller's task (no task per exec), so cancelling a context
means cancelling that task and turning the ``CancelledError`` back into
:class:`~runtree.Cancelled` at the exec that owns the cancelled context. Only that exec
converts it; every exec between it and the innermost ``await`` re-raises the
``CancelledError`` unchanged, and a cancellation that came from outside (the caller's own
task was cancelled) always reaches the caller as ``CancelledError``.

The bookkeeping is a map *task → contexts whose cancellation was requested in that task*.
At most one ``Task.cancel()`` is outstanding per task: CPython 3.11's ``Task.uncancel()``
does not clear a cancellation requested but not yet delivered, so a second ``cancel()``
would surface later, outside the context, as a stray ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._context import ExecutionContext

__all__ = ["consume", "discard", "request", "task_of"]

try:  # CPython 3.11: asyncio.current_task() costs ~200 ns through get_running_loop()
    from _asyncio import _current_tasks  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other interpreters / newer CPythons
    _current_tasks = None


def _task_getter() -> Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]:
    """The fastest ``loop -> running task`` function this interpreter offers."""
    if _current_tasks is not None and sys.version_info < (3, 12):
        return _current_tasks.get  # type: ignore[no-any-return]
    return asyncio.current_task  # pragma: no cover - C-accelerated from 3.12


task_of = _task_getter()


# How many cancellations were requested in this process so far (``[n]``: a list, so a hot
# loop holds it in a local). A streaming flow re-walks its ancestors for a cancellation
# only when this changed since its last item, instead of at every item.
generation = [0]

# task -> targets whose cancellation is pending or being delivered in that task
_pending: dict[asyncio.Task[object], list[ExecutionContext]] = {}


def request(task: asyncio.Task[object], target: ExecutionContext) -> None:
    """Ask ``task`` to stop the work of ``target`` (which runs in it)."""
    if task.done():
        return
    loop = task.get_loop()
    if task_of(loop) is task:
        # Never cancel the running task from inside itself: deliver on the next loop turn,
        # when the task is suspended at an await inside ``target`` (or target is done).
        loop.call_soon(_deliver_later, task, target)
        return
    targets = _pending.get(task)
    if targets is None:
        _pending[task] = [target]
        task.cancel()
    elif target not in targets:
        targets.append(target)


def _deliver_later(task: asyncio.Task[object], target: ExecutionContext) -> None:
    if not target.closed:
        request(task, target)


def consume(task: asyncio.Task[object] | None, target: ExecutionContext) -> bool:
    """At ``target``'s exec, take back the cancellation requested for it.

    Returns ``True`` when the ``CancelledError`` seen there came from ``target``'s own
    cancellation (and nothing else cancelled the task): the exec should then raise
    ``Cancelled`` (or ``ExecTimeoutError``) to its caller instead.
    """
    if task is None:
        return False
    targets = _pending.get(task)
    if targets is None or target not in targets:
        return False
    targets.remove(target)
    if targets:
        # An ancestor's cancellation is still on its way out: keep unwinding.
        return False
    del _pending[task]
    task.uncancel()
    return task.cancelling() == 0


def forget(task: asyncio.Task[object] | None, target: ExecutionContext) -> bool:
    """Drop ``target``'s request (its coroutine was closed); ``True`` when that was the
    task's last one."""
    if task is None:
        return False
    targets = _pending.get(task)
    if targets is None or target not in targets:
        return False
    targets.remove(target)
    if targets:
        return False
    del _pending[task]
    return True


def discard(task: asyncio.Task[object] | None, target: ExecutionContext) -> None:
    """``target`` finished without seeing its cancellation (it returned first)."""
    if forget(task, target):
        # The request was delivered inside target (a suspended task resumes there) and
        # the body swallowed the CancelledError: take the request back so the task does
        # not stay marked as cancelling.
        task.uncancel()  # type: ignore[union-attr]
