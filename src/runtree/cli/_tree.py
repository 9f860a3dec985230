"""The execution tree a ``runtree run`` saw, as plain data (no rich: ``--json`` and error
paths never import it)."""

from __future__ import annotations

import asyncio
from typing import Any

from .._context import ExecutionContext
from .._extensions import Extension
from ._common import error_object, iso_time

__all__ = ["TreeRecorder", "failing_context", "tree_data"]


class TreeRecorder(Extension):
    """Remembers every context that starts work, to print the tree afterwards."""

    def __init__(self) -> None:
        self.contexts: list[ExecutionContext] = []

    def on_context_open(self, ctx: ExecutionContext) -> None:
        self.contexts.append(ctx)

    def roots(self) -> list[ExecutionContext]:
        seen: dict[int, ExecutionContext] = {}
        for ctx in self.contexts:
            top = ctx
            while top.parent is not None:
                top = top.parent
            seen.setdefault(id(top), top)
        return list(seen.values())

    def children(self) -> dict[int, list[ExecutionContext]]:
        out: dict[int, list[ExecutionContext]] = {}
        for ctx in self.contexts:
            if ctx.parent is not None:
                out.setdefault(id(ctx.parent), []).append(ctx)
        return out


def failing_context(recorder: TreeRecorder) -> ExecutionContext | None:
    """Where the failure started: the deepest failed (or cancelled) context, first found."""
    kids = recorder.children()

    def find(ctx: ExecutionContext) -> ExecutionContext | None:
        if ctx.details.status not in ("failed", "cancelled"):
            return None
        for child in kids.get(id(ctx), []):
            if isinstance(child.details.error, asyncio.CancelledError):
                continue  # an ancestor's cancellation passing through: it started above
            deeper = find(child)
            if deeper is not None:
                return deeper
        return ctx

    for root in recorder.roots():
        found = find(root)
        if found is not None:
            return found
    return None


def _ms(ctx: ExecutionContext) -> float | None:
    took = ctx.details.duration
    return None if took is None else round(took * 1000, 2)


def _metadata(ctx: ExecutionContext) -> dict[str, object]:
    return dict(ctx.details.metadata) if ctx._x is not None and ctx._x.metadata else {}


def tree_data(recorder: TreeRecorder) -> list[dict[str, Any]]:
    """The same tree as plain data (for ``--json``); times are ISO 8601."""
    kids = recorder.children()
    failing = failing_context(recorder)

    def node(ctx: ExecutionContext) -> dict[str, Any]:
        d = ctx.details
        return {
            "id": ctx.id,
            "name": d.name,
            "status": d.status,
            "started_at": iso_time(d.started_at),
            "completed_at": iso_time(d.completed_at),
            "duration_ms": _ms(ctx),
            "metadata": _metadata(ctx),
            "error": None if d.error is None else error_object(d.error),
            "failed_here": ctx is failing,
            "children": [node(c) for c in kids.get(id(ctx), [])],
        }

    return [node(r) for r in recorder.roots()]
