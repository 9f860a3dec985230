"""Logging that knows its context: ids on every record, and a log line per exec.

- :class:`ContextFilter` (a ``logging.Filter``; add it to a handler) sets
  ``runtree_context_id``, ``runtree_root_id``, ``runtree_flow`` and the tags you choose on
  every record, from :func:`runtree.current_context` where the record is made.
- :class:`LoggingExtension` logs each exec's start and end with its duration, failures at
  WARNING.
- :data:`structlog_processor` adds the same keys to structlog event dicts (structlog is
  not imported here: the processor is a plain callable).

See docs/logging.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from time import perf_counter
from typing import Any, Final

from . import _context
from ._context import ExecutionContext
from ._extensions import ExecOp, Extension
from ._json import describe_error, shown
from ._tags import Tag
from .errors import Cancelled

_current = _context._current  # assigned, not imported: a method call (see _run)

__all__ = [
    "CONTEXT_ID",
    "FLOW",
    "ROOT_ID",
    "ContextFilter",
    "LoggingExtension",
    "StructlogProcessor",
    "structlog_processor",
]

#: The record attribute / event key of the current context's id.
CONTEXT_ID: Final = "runtree_context_id"
#: The record attribute / event key of the current tree's root id.
ROOT_ID: Final = "runtree_root_id"
#: The record attribute / event key of the current context's name (its flow's name).
FLOW: Final = "runtree_flow"

# Attributes every LogRecord has: a tag written under one of these names would corrupt it.
_RESERVED: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime"}


def _tag_names(
    tags: Iterable[Tag[Any]] | Mapping[str, Tag[Any]],
) -> tuple[tuple[str, Tag[Any]], ...]:
    pairs = list(tags.items()) if isinstance(tags, Mapping) else [(t.label, t) for t in tags]
    for name, t in pairs:
        if not isinstance(t, Tag):
            msg = f"tags= takes runtree tags (got {shown(t)} for {name!r})"
            raise TypeError(msg)
        if not isinstance(name, str) or not name:
            msg = f"tags=: the key of tag {t.label!r} must be a non-empty str (got {name!r})"
            raise TypeError(msg)
        if name in _RESERVED or name in (CONTEXT_ID, ROOT_ID, FLOW):
            msg = (
                f"tags=: {name!r} is already a LogRecord attribute; pass a mapping to name "
                f"the tag's key, e.g. tags={{'tag_{name}': {t.label}}}"
            )
            raise ValueError(msg)
    return tuple(pairs)


def _fields(
    ctx: ExecutionContext | None, tags: tuple[tuple[str, Tag[Any]], ...]
) -> dict[str, object]:
    if ctx is None:
        out: dict[str, object] = {CONTEXT_ID: None, ROOT_ID: None, FLOW: None}
        for name, _ in tags:
            out[name] = None
        return out
    out = {CONTEXT_ID: ctx.id, ROOT_ID: ctx.root.id, FLOW: ctx.name}
    for name, t in tags:
        out[name] = ctx.find(t)
    return out


class ContextFilter(logging.Filter):
    """Add the current context's ids (and chosen tags) to every record it sees.

    Attributes set: ``runtree_context_id``, ``runtree_root_id``, ``runtree_flow`` (the
    context's name) and one per tag (``None`` when there is no context or no value).
    Attributes a record already has are kept. ``LoggingExtension`` logs its lines about
    an exec with that exec's context current, so they carry its ids and its tags. The
    filter never drops a record.

    Args:
        tags: Tags to add, under their labels (``[request_id]`` → ``record.request_id``),
            or a mapping from attribute name to tag.
    """

    def __init__(self, tags: Iterable[Tag[Any]] | Mapping[str, Tag[Any]] = ()) -> None:
        super().__init__()
        self.tags = _tag_names(tags)

    def filter(self, record: logging.LogRecord) -> bool:
        attrs = record.__dict__
        for name, value in _fields(_current.get(), self.tags).items():
            attrs.setdefault(name, value)
        return True


def _log(
    logger: logging.Logger,
    level: int,
    ctx: ExecutionContext,
    extra: dict[str, object],
    msg: str,
    *args: object,
) -> None:
    """Log a line about the exec of ``ctx`` with ``ctx`` current (for the length of the
    call): filters and processors see the exec's context, its tags included, as they
    do for lines its body logs."""
    token = _current.set(ctx)
    try:
        logger.log(level, msg, *args, extra=extra)
    finally:
        _current.reset(token)


class StructlogProcessor:
    """A structlog processor adding the same keys as :class:`ContextFilter` to the event
    dict (keys already there are kept). ``structlog_processor`` is one without tags."""

    __slots__ = ("tags",)

    def __init__(self, tags: Iterable[Tag[Any]] | Mapping[str, Tag[Any]] = ()) -> None:
        self.tags = _tag_names(tags)

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in _fields(_current.get(), self.tags).items():
            event_dict.setdefault(key, value)
        return event_dict


#: Add ``runtree_context_id``, ``runtree_root_id`` and ``runtree_flow`` to structlog events.
structlog_processor: Final = StructlogProcessor()


class LoggingExtension(Extension):
    """Log every exec (``scope.exec``, ``ctx.exec``, ``ctx.run``, ``parallel``): a line
    when it starts and one when it ends, with its duration.

    Each record carries the exec's own context in ``runtree_context_id``,
    ``runtree_root_id`` and ``runtree_flow`` (whatever context is current where the line
    is written), plus ``runtree_kind``, ``runtree_key``, ``runtree_attempt``,
    ``runtree_status`` (end lines) and ``runtree_duration_ms`` (end lines).

    Args:
        logger: A logger or its name (default ``"runtree.exec"``).
        start_level: Level of the start line (default DEBUG).
        end_level: Level of the end line of a completed exec (default INFO).
        failure_level: Level of a failed or timed-out exec (default WARNING).
        cancel_level: Level of a cancelled exec (default INFO: a cancel is asked for).
    """

    def __init__(
        self,
        logger: logging.Logger | str | None = None,
        *,
        start_level: int = logging.DEBUG,
        end_level: int = logging.INFO,
        failure_level: int = logging.WARNING,
        cancel_level: int = logging.INFO,
    ) -> None:
        if logger is None or isinstance(logger, str):
            logger = logging.getLogger(logger or "runtree.exec")
        self.logger = logger
        self.start_level = start_level
        self.end_level = end_level
        self.failure_level = failure_level
        self.cancel_level = cancel_level

    async def wrap_exec(self, next: Callable[[], Awaitable[object]], op: ExecOp) -> object:
        logger = self.logger
        ctx = op.context
        what = f"parallel in {ctx.name}" if op.kind == "parallel" else ctx.name
        extra: dict[str, object] = {
            CONTEXT_ID: ctx.id,
            ROOT_ID: ctx.root.id,
            FLOW: ctx.name,
            "runtree_kind": op.kind,
            "runtree_key": op.key,
            "runtree_attempt": op.attempt,
        }
        if logger.isEnabledFor(self.start_level):
            _log(logger, self.start_level, ctx, extra, "%s %s started", op.kind, what)
        started = perf_counter()
        try:
            result = await next()
        except GeneratorExit:
            raise  # the exec was abandoned: nothing ran to an end worth a line
        except BaseException as exc:
            # A closed context knows its final status (a timeout ends "failed").
            if op.kind != "parallel" and ctx.closed:
                status = ctx.details.status
            else:
                cancelled = isinstance(exc, (asyncio.CancelledError, Cancelled))
                status = "cancelled" if cancelled else "failed"
            self._end_line(op.kind, ctx, what, extra, started, status, exc)
            raise
        if op.kind == "stream":
            # next() only opened the stream; it ends when its context closes.
            ctx.on_close(
                lambda: self._end_line(
                    "stream", ctx, what, extra, started, ctx.details.status, ctx.details.error
                )
            )
        else:
            self._end_line(op.kind, ctx, what, extra, started, "completed", None)
        return result

    def _end_line(
        self,
        kind: str,
        ctx: ExecutionContext,
        what: str,
        extra: dict[str, object],
        started: float,
        status: str,
        error: BaseException | None,
    ) -> None:
        """An exec's end line: its status, at the level that status takes (completed,
        cancelled, else failed), its duration, and its error if any."""
        if status == "completed":
            level = self.end_level
        else:
            level = self.cancel_level if status == "cancelled" else self.failure_level
        logger = self.logger
        if not logger.isEnabledFor(level):
            return
        extra["runtree_status"] = status
        extra["runtree_duration_ms"] = ms = (perf_counter() - started) * 1000
        if error is None:
            _log(logger, level, ctx, extra, "%s %s %s in %.1f ms", kind, what, status, ms)
        else:
            line = "%s %s %s after %.1f ms: %s"
            _log(logger, level, ctx, extra, line, kind, what, status, ms, describe_error(error))
