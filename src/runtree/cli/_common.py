"""What every command shares: one-line errors, JSON output, the store, timestamps."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

from .._json import jsonable

if TYPE_CHECKING:
    from rich.console import Console
from urllib.parse import quote, unquote

__all__ = [
    "STORE_ENV",
    "CliError",
    "StoreRef",
    "error_line",
    "find_store",
    "store_ref",
    "json_error_document",
    "json_written",
    "last_error",
    "human_time",
    "iso_time",
    "json_text",
    "message_of",
    "one_line",
    "one_line_diagnostics",
    "out_console",
    "print_error",
    "program",
    "require_text",
    "session_dict",
    "usage_error",
]

STORE_ENV = "RUNTREE_STORE"
STORE_DIR = ".runtree"
STORE_FILE = "runtree.db"


class CliError(Exception):
    """A failure reported as one line on stderr.

    ``code`` is the exit status: 1 when something failed, 2 when the command line is
    wrong. ``kind`` names the error in ``--json`` output.
    """

    def __init__(self, message: str, *, code: int = 1, kind: str = "Error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.kind = kind


def usage_error(message: str) -> CliError:
    return CliError(message, code=2, kind="UsageError")


def require_text(value: str | None, what: str) -> None:
    """Empty strings are never ids, keys or names: say so before anything runs."""
    if value is not None and not value.strip():
        raise usage_error(f"{what} must not be empty")


# C0 and C1 control characters and DEL, written as escapes: user data printed to a
# terminal must not move its cursor, recolour it or set its title (ANSI sequences).
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}


def printable(text: str) -> str:
    """``text`` with control characters (ESC, BEL, CR...) written as ``\\xNN``."""
    return text.translate(_CONTROLS)


def one_line(text: str) -> str:
    """Text on one line: line breaks become spaces (the full text stays in ``--json``),
    control characters escapes."""
    parts = [p.strip() for p in text.splitlines()]
    return printable(" ".join(p for p in parts if p)) or "(no message)"


def message_of(exc: BaseException) -> str:
    """The message of any exception on one line, even one whose ``__str__`` raises."""
    try:
        return one_line(str(exc))
    except Exception:
        return "(its message cannot be printed)"


def error_line(exc: BaseException) -> str:
    """``Type: message`` on one line."""
    return f"{type(exc).__name__}: {message_of(exc)}"


def error_object(exc: BaseException) -> dict[str, str]:
    try:
        message = str(exc)
    except Exception:
        message = "(its message cannot be printed)"
    return {"type": type(exc).__name__, "message": message}


_last_error = [""]


def print_error(message: str) -> None:
    """One line on stderr; never wrapped, never read as markup."""
    _last_error[0] = one_line(message)
    sys.stderr.write(f"error: {_last_error[0]}\n")
    sys.stderr.flush()


def last_error() -> str:
    """The last line :func:`print_error` wrote (empty: none)."""
    return _last_error[0]


# Whether this process wrote its JSON document to stdout (``--json``: exactly one).
_json_written = [False]


def json_written() -> None:
    """Note that the ``--json`` document went to stdout."""
    _json_written[0] = True


def json_error_document(kind: str, message: str) -> None:
    """Under ``--json``, a failure that reached no command's own document (a usage error,
    a missing session or run) still writes one: ``{"ok": false, "error": {...}}``."""
    if _json_written[0]:
        return
    sys.stdout.write(json_text({"ok": False, "error": {"type": kind, "message": message}}))
    sys.stdout.write("\n")
    sys.stdout.flush()
    _json_written[0] = True


def json_text(value: object, *, indent: int | None = 2) -> str:
    """Strict JSON for any value: what is not JSON is shown as its ``str``."""
    try:
        return json.dumps(value, indent=indent, default=str, allow_nan=False)
    except ValueError:
        pass
    except (TypeError, RecursionError):
        return json.dumps(f"<{type(value).__name__}>", indent=indent)
    try:
        return json.dumps(jsonable(value), indent=indent, default=str, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return json.dumps(f"<{type(value).__name__}>", indent=indent)


class _OneLineFormatter(logging.Formatter):
    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug = debug

    said: ClassVar[set[str]] = set()  # runtree logs what it also warns: say it once

    def format(self, record: logging.LogRecord) -> str:
        message = one_line(record.getMessage())
        self.said.add(message)
        line = f"{record.levelname.lower()}: {message}"
        if self.debug and record.exc_info:
            return line + "\n" + self.formatException(record.exc_info)
        return line


def one_line_diagnostics(*, debug: bool) -> None:
    """runtree's log records and warnings on stderr as one line each (``warning: ...``);
    tracebacks only with ``--debug``. The command line owns its process, so it decides."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter(debug))
    logger = logging.getLogger("runtree")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    logger.propagate = False

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        text = one_line(str(message))
        if text not in _OneLineFormatter.said:
            (file or sys.stderr).write(f"warning: {category.__name__}: {text}\n")

    warnings.showwarning = show


def out_console() -> Console:
    """The console for stdout, made at print time (``--json`` runs swap ``sys.stdout``
    while a flow runs). rich loads only when something is printed for people: error and
    ``--json`` paths start faster."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def session_dict(session: Any) -> dict[str, Any]:
    """A session for ``--json``: times stay ISO 8601."""
    return {
        "session_id": session.session_id,
        "project_name": session.project_name,
        "project_type": session.project_type,
        "started_at": session.started_at,
        "ended_at": getattr(session, "ended_at", None),
        "active": getattr(session, "active", None),
        "loaded_context": sorted(session.loaded_context),
        "loaded_memory": sorted(session.loaded_memory),
        "shared_data": session.shared_data,
        "command_history": [c.to_dict() for c in session.command_history],
    }


# -- timestamps ----------------------------------------------------------------------------


def human_time(value: str | float | None) -> str:
    """One format for people: local time, ``2026-12-02 14:03:07``."""
    if value is None or value == "":
        return "-"
    try:
        if isinstance(value, str):
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is not None:
                moment = moment.astimezone()
        else:
            moment = datetime.fromtimestamp(value)
    except (ValueError, OverflowError, OSError):
        return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def iso_time(epoch: float | None) -> str | None:
    """ISO 8601 with a UTC offset, for ``--json``."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat()


# -- the store -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreRef:
    """The store a command uses, before it is opened."""

    url: str
    path: Path | None  # the SQLite file, when the store is one
    how: str  # "RUNTREE_STORE", "found", "default"

    @property
    def shown(self) -> str:
        """For messages: the file, or the URL without its password."""
        if self.path is not None:
            return str(self.path)
        from ..stores._secrets import redact

        return redact(self.url)

    @property
    def missing(self) -> bool:
        """A SQLite file that does not exist yet (reading commands must not create it)."""
        return self.path is not None and not self.path.exists()


def _sqlite_path(url: str) -> Path | None:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.strip().lower() not in ("sqlite", "sqlite3", "sqlite+pysqlite"):
        return None
    body = rest.partition("?")[0]
    if not body.startswith("/"):
        return None  # malformed: from_url explains
    raw = unquote(body[1:])
    if raw in ("", ":memory:"):
        return None
    return Path(raw).expanduser().absolute()


def store_ref(store: str | None) -> StoreRef:
    """The store a command with a ``--store`` option uses: that URL, else
    :func:`find_store`'s."""
    if store is None:
        return find_store()
    return StoreRef(store, _sqlite_path(store), "--store")


def find_store(start: Path | None = None) -> StoreRef:
    """``$RUNTREE_STORE``; else the nearest ``.runtree/runtree.db`` in the working
    directory or a parent (as git finds ``.git``); else ``.runtree/runtree.db`` here."""
    env = os.environ.get(STORE_ENV)
    if env:
        return StoreRef(env, _sqlite_path(env), STORE_ENV)
    here = (start or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        candidate = folder / STORE_DIR / STORE_FILE
        if candidate.is_file():
            return StoreRef("sqlite:///" + quote(str(candidate)), candidate, "found")
    default = here / STORE_DIR / STORE_FILE
    return StoreRef("sqlite:///" + quote(str(default)), default, "default")


# -- how to call us ------------------------------------------------------------------------


def program() -> tuple[str, str | None]:
    """How a person runs this command line from here, and how to put it on the PATH.

    ``("runtree", None)`` when ``runtree`` on the PATH is this one; otherwise
    ``("runtree", ". .venv/bin/activate")`` for a virtualenv that is not active, or the
    path of the script.
    """
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    on_path = shutil.which("runtree")
    if script is None or script.name != "runtree":
        return ("runtree" if on_path else f"{Path(sys.executable).name} -m runtree"), None
    if on_path and Path(on_path).resolve() == script.resolve():
        return "runtree", None
    activate = script.parent / "activate"
    if activate.is_file():
        shown = str(activate.absolute())
        with contextlib.suppress(ValueError):
            relative = os.path.relpath(activate)
            if not relative.startswith(".."):
                shown = relative if relative.startswith(".") else "./" + relative
        return "runtree", f". {shown}"
    return str(script), None
