"""Execution trees and sessions for people (rich, 80 columns) and programs (JSON-ready).

Everything a user wrote (names, results, errors, keys) goes into ``rich.text.Text``
objects, never into markup strings: ``"[/b]"`` prints as itself.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group, RenderableType
from rich.text import Text
from rich.tree import Tree

from .._context import ExecutionContext
from ._common import error_line, human_time, json_text, out_console, printable, session_dict
from ._tree import TreeRecorder, _metadata, _ms, failing_context

__all__ = [
    "out_console",
    "print_to",
    "render_session",
    "render_session_list",
    "render_tree",
    "session_dict",
]

_STATUS_STYLE = {
    "completed": "green",
    "success": "green",
    "running": "yellow",
    "failed": "red",
    "cancelled": "magenta",
    "partial": "yellow",
}


def _label(ctx: ExecutionContext, failing: ExecutionContext | None) -> Text:
    """``name  status  1.2 ms``, then one line per detail (context loads, replays,
    metadata, the error of the failing node): short lines that fit in 80 columns."""
    d = ctx.details
    text = Text(printable(d.name), style="bold")
    text.append("  ")
    text.append(d.status, style=_STATUS_STYLE.get(d.status, ""))
    took = _ms(ctx)
    if took is not None:
        text.append(f"  {took:.1f} ms", style="dim")
    for key, value in _metadata(ctx).items():
        if key == "journal_replays" and isinstance(value, list):
            text.append(f"\nreplayed {printable(', '.join(map(str, value)))}", style="cyan")
        elif key == "context" and isinstance(value, list):
            text.append(f"\ncontext {printable(', '.join(map(str, value)))}", style="blue")
        else:
            shown = value if isinstance(value, str) else json_text(value, indent=None)
            text.append(f"\n{printable(f'{key} {shown}')}", style="blue")
    if ctx is failing and d.error is not None:
        text.append("\n✗ ", style="bold red")
        text.append(error_line(d.error), style="red")
    return text


def render_tree(recorder: TreeRecorder, title: str | None = None) -> Tree:
    """A rich Tree of every context the recorder saw; the failing one marked with ✗."""
    kids = recorder.children()
    failing = failing_context(recorder)
    top = Tree(Text(printable(title or "execution"), style="bold underline"))

    def add(branch: Tree, ctx: ExecutionContext) -> None:
        node = branch.add(_label(ctx, failing))
        for child in kids.get(id(ctx), []):
            add(node, child)

    for root in recorder.roots():
        add(top, root)
    return top


# -- sessions --------------------------------------------------------------------------


def _state(session: Any) -> Text:
    if getattr(session, "active", True):
        return Text("active", style="green")
    ended = getattr(session, "ended_at", None)
    if ended:
        return Text(f"ended {human_time(ended)}", style="magenta")
    return Text("inactive (a newer session of its project is active)", style="yellow")


def _cut(text: str, width: int) -> str:
    text = printable(text)
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def render_session(session: Any, *, width: int, store: str | None = None) -> RenderableType:
    """A session for people: designed for ``width`` columns (80 when piped)."""
    lines: list[Text] = []
    title = Text("session ", style="bold")
    title.append(printable(str(session.session_id)), style="bold cyan")
    lines.append(title)

    def field(name: str, value: Text | str) -> None:
        row = Text(f"  {name:<10}", style="dim")
        row.append(value if isinstance(value, Text) else Text(value))
        lines.append(row)

    project = Text(printable(str(session.project_name)), style="bold")
    if session.project_type:
        project.append(printable(f" ({session.project_type})"))
    field("project", project)
    field("started", human_time(session.started_at))
    field("state", _state(session))
    if store is not None:
        field("store", store)
    field("context", printable(", ".join(sorted(session.loaded_context))) or "-")
    field("memory", printable(", ".join(sorted(session.loaded_memory))) or "-")

    history = list(session.command_history)
    lines.append(Text(f"\ncommands ({len(history)})", style="bold"))
    if not history:
        lines.append(Text("  none yet", style="dim"))
    name_width = min(max((len(c.command) for c in history), default=0), 20)
    for i, c in enumerate(history, start=1):
        row = Text(f"  {i:>2}  ")
        row.append(f"{_cut(c.command, 20):<{name_width}}", style="bold")
        row.append("  ")
        row.append(f"{c.status:<7}", style=_STATUS_STYLE.get(c.status, ""))
        row.append(f"  {human_time(c.started_at)}", style="dim")
        lines.append(row)
        detail = "      "
        if c.context_loaded:
            loaded = printable(", ".join(c.context_loaded))
            lines.append(Text(f"{detail}context {loaded}", style="blue"))
        outputs = dict(c.outputs)
        if "error" in outputs:
            error = outputs["error"]
            shown = (
                f"{error.get('type')}: {error.get('message')}"
                if isinstance(error, dict)
                else json_text(error, indent=None)
            )
            lines.append(Text(_cut(f"{detail}error  {shown}", width), style="red"))
        elif "result" in outputs:
            shown = json_text(outputs["result"], indent=None)
            lines.append(Text(_cut(f"{detail}result {shown}", width)))

    shared = dict(session.shared_data)
    lines.append(Text(f"\nshared data ({len(shared)})", style="bold"))
    if not shared:
        lines.append(Text("  none", style="dim"))
    key_width = min(max((len(k) for k in shared), default=0), 24)
    for key, value in shared.items():
        row = Text(f"  {_cut(key, 24):<{key_width}}  ", style="bold")
        room = width - len(row)
        row.append(_cut(json_text(value, indent=None), max(room, 16)))
        lines.append(row)
    return Group(*lines)


def render_session_list(sessions: list[Any], *, width: int) -> RenderableType:
    """One line per session: id, state, started, commands, project (last: it may be long;
    ``session show`` has the whole of it and the project type)."""
    if not sessions:
        return Text("no sessions")
    id_width = max(len(str(s.session_id)) for s in sessions)
    header = Text(f"{'session':<{id_width}}  {'state':<8}  {'started':<19}  cmds  project")
    header.stylize("bold")
    lines = [header]
    for s in sessions:
        state = "active" if s.active else ("ended" if s.ended_at else "inactive")
        row = Text(f"{s.session_id:<{id_width}}  ", style="cyan")
        row.append(f"{state:<8}", style=_STATUS_STYLE.get("success" if s.active else "", ""))
        row.append(f"  {human_time(s.started_at):<19}  {len(s.command_history):>4}  ")
        row.append(_cut(str(s.project_name), max(width - len(row), 12)), style="bold")
        lines.append(row)
    return Group(*lines)


def print_to(console: Console, renderable: RenderableType, *, soft_wrap: bool = False) -> None:
    """Print without reading markup; ``soft_wrap`` leaves long lines to the terminal
    (a path or an id is never broken in two)."""
    console.print(renderable, highlight=False, markup=False, soft_wrap=soft_wrap)
