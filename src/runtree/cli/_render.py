"""Execution trees for people (rich) and for programs (JSON-ready dicts)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from rich.tree import Tree

from .._context import ExecutionContext
from .._extensions import Extension

__all__ = ["TreeRecorder", "render_tree", "tree_data"]

_STATUS_STYLE = {
    "completed": "green",
    "running": "yellow",
    "failed": "red",
    "cancelled": "magenta",
}


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


def _ms(ctx: ExecutionContext) -> float | None:
    took = ctx.details.duration
    return None if took is None else round(took * 1000, 2)


def _label(ctx: ExecutionContext) -> Text:
    d = ctx.details
    text = Text(d.name, style="bold")
    text.append("  ")
    text.append(d.status, style=_STATUS_STYLE.get(d.status, ""))
    took = _ms(ctx)
    if took is not None:
        text.append(f"  {took:.1f} ms", style="dim")
    meta = d.metadata if ctx._x is not None and ctx._x.metadata else {}
    for key, value in meta.items():
        if key == "journal_replays":
            text.append(f"  replayed {', '.join(map(str, value))}", style="cyan")  # type: ignore[call-overload]
        else:
            text.append(f"  {key}={value}", style="blue")
    if d.error is not None:
        text.append(f"  {type(d.error).__name__}: {d.error}", style="red")
    return text


def render_tree(recorder: TreeRecorder, title: str | None = None) -> Tree:
    """A rich Tree of every context the recorder saw, parents before children."""
    kids = recorder.children()
    top = Tree(Text(title, style="bold underline") if title else Text("execution"))

    def add(branch: Tree, ctx: ExecutionContext) -> None:
        node = branch.add(_label(ctx))
        for child in kids.get(id(ctx), []):
            add(node, child)

    for root in recorder.roots():
        add(top, root)
    return top


def tree_data(recorder: TreeRecorder) -> list[dict[str, Any]]:
    """The same tree as plain data (for ``--json``)."""
    kids = recorder.children()

    def node(ctx: ExecutionContext) -> dict[str, Any]:
        d = ctx.details
        meta = dict(d.metadata) if ctx._x is not None and ctx._x.metadata else {}
        return {
            "id": ctx.id,
            "name": d.name,
            "status": d.status,
            "duration_ms": _ms(ctx),
            "metadata": meta,
            "error": None if d.error is None else f"{type(d.error).__name__}: {d.error}",
            "children": [node(c) for c in kids.get(id(ctx), [])],
        }

    return [node(r) for r in recorder.roots()]
