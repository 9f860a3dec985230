"""What every store provides: the :class:`Store` protocol, the session backend protocol and
its records, and the process identity used by leases."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal, Protocol, Self, TypeAlias, TypedDict, runtime_checkable

from .. import _json
from .._journal import JournalBackend

__all__ = [
    "CommandRecord",
    "CommandStatus",
    "ItemKind",
    "SessionBackend",
    "SessionRecord",
    "Store",
    "dumps",
    "loads",
]

CommandStatus: TypeAlias = Literal["running", "success", "partial", "failed"]
ItemKind: TypeAlias = Literal["context", "memory", "data"]
CommandItemKind: TypeAlias = Literal["context", "memory", "skill"]

DEFAULT_LEASE = 30.0


class CommandRecord(TypedDict):
    """One command of a session, as a store returns it (JSON fields decoded)."""

    id: int
    command: str
    status: CommandStatus
    started_at: str
    completed_at: str | None
    inputs: dict[str, object]
    outputs: dict[str, object]
    context_loaded: list[str]
    memory_updated: list[str]
    skills_invoked: list[str]


class SessionRecord(TypedDict):
    """A session's persisted state, as a store returns it (JSON fields decoded)."""

    session_id: str
    project_name: str
    project_type: str | None
    started_at: str
    ended_at: str | None
    active: bool
    loaded_context: dict[str, object]
    loaded_memory: dict[str, object]
    shared_data: dict[str, object]
    counters: dict[str, int]
    command_history: list[CommandRecord]


class SessionBackend(Protocol):
    """What :class:`runtree.sessions.Sessions` needs from a store.

    Every write is one row in one transaction: concurrent writers (other processes on
    the same session) never lose each other's updates.
    """

    async def session_create(
        self, session_id: str, project_name: str, project_type: str | None, started_at: str
    ) -> SessionRecord:
        """Insert a session that becomes the project's active one."""
        ...

    async def session_get_or_create(
        self, session_id: str, project_name: str, project_type: str | None, started_at: str
    ) -> SessionRecord:
        """The project's active session, or insert this one (one winner under races)."""
        ...

    async def session_load(self, session_id: str) -> SessionRecord | None: ...

    async def session_list(self, project_name: str | None, limit: int | None) -> list[str]:
        """Session ids, newest first."""
        ...

    async def session_end(self, session_id: str, ended_at: str) -> None: ...

    async def session_put(
        self, session_id: str, kind: ItemKind, name: str, value_json: str, at: str
    ) -> None: ...

    async def session_item(self, session_id: str, kind: ItemKind, name: str) -> str | None:
        """The JSON text stored under ``name``, or ``None``."""
        ...

    async def session_count(self, session_id: str, name: str) -> int:
        """Add one to the counter ``name``; return its new value."""
        ...

    async def command_start(
        self, session_id: str, command: str, inputs_json: str, started_at: str
    ) -> tuple[int, list[int]]:
        """Insert a running command; first mark commands left running by dead processes
        failed. Returns the new command's id and the ids marked interrupted."""
        ...

    async def command_complete(
        self,
        session_id: str,
        command: str,
        command_id: int | None,
        status: CommandStatus,
        outputs_json: str,
        completed_at: str,
    ) -> CommandRecord | str:
        """Complete the command (by id, else the newest running one of that name).

        Returns the record, or a text saying why nothing was running to complete."""
        ...

    async def command_add(self, command_id: int, kind: CommandItemKind, item: str) -> None: ...

    async def command_previous(self, session_id: str, command: str | None) -> CommandRecord | None:
        """The newest command (of that name) that is not running."""
        ...

    async def command_page(
        self, session_id: str, before: int | None, limit: int | None
    ) -> list[CommandRecord]:
        """Up to ``limit`` commands with an id below ``before`` (all when ``None``), oldest
        first."""
        ...


@runtime_checkable
class Store(Protocol):
    """A durable store: the journal and sessions keep their rows in it.

    Stores are async context managers; :meth:`aclose` releases held claims and closes
    connections.
    """

    @property
    def url(self) -> str:
        """A URL that :func:`runtree.stores.from_url` opens to the same store."""
        ...

    def journal_backend(self) -> JournalBackend: ...

    def session_backend(self) -> SessionBackend: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


# -- JSON -----------------------------------------------------------------------------


def dumps(value: object, what: str) -> str:
    """Strict JSON text (no NaN, str keys only, no int too long to print), or
    :class:`SerializationError` naming ``what``."""
    return _json.dumps(value, what)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# -- process identity and liveness --------------------------------------------------


def _proc_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (Linux), so a reused pid is told apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces or parentheses: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields and fields[0] == b"Z":
        return "zombie"
    return fields[19].decode() if len(fields) > 19 else ""


def _host_key() -> str:
    """Names this machine and pid namespace: pids are comparable only within one."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            parts.append(f.read().strip())
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass
    return "|".join(parts)


HOST_KEY = _host_key()


class ProcInfo:
    """This process as a lease holder: host key, pid and the pid's start time."""

    __slots__ = ("host", "pid", "start")

    def __init__(self) -> None:
        self.host = HOST_KEY
        self.pid = os.getpid()
        self.start = _proc_start(self.pid)


def proc_alive(row: Sequence[Any] | None, now: float | None = None) -> bool:
    """Is the holder described by ``(host, pid, pid_start, expires_at)`` alive?

    Everywhere the holder is alive only while its lease runs (a live process whose store
    stopped renewing — closed without releasing — holds nothing); on this machine a holder
    whose process is gone (or whose pid was reused) is dead at once.
    """
    if row is None or row[0] is None:
        return False
    host, pid, start, expires_at = row[0], int(row[1]), str(row[2]), float(row[3])
    if not expires_at > (time.time() if now is None else now):
        return False
    if host == HOST_KEY:
        if start and start != "zombie":
            return _proc_start(pid) == start
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return True
