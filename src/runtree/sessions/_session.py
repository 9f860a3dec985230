"""Sessions: one persisted context tree across commands and processes.

A session is rows in a store: the session, its loaded context and memory, its shared data,
counters, and one row per command (plus one per context/memory/skill a command used). Every
method writes its own rows in its own transaction before it returns, so several processes
may work on one session without losing each other's updates. Reads go to the store too
(another process may have written since); the attributes are the snapshot as of the last
call.
"""

from __future__ import annotations

import logging
import secrets
import warnings
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, final, overload

from .._json import check_name, error_text, problem, readable, shown, user_stacklevel
from ..errors import (
    CommandNotRunningError,
    SerializationWarning,
    SessionNotFoundError,
    StoreError,
)
from ..stores._base import (
    CommandRecord,
    CommandStatus,
    SessionBackend,
    SessionRecord,
    Store,
    dumps,
    loads,
)

if TYPE_CHECKING:
    from .._defs import Flow
    from .._scope import Scope
    from ._providers import ContextProvider, MemoryProvider

__all__ = ["CommandExecution", "Session", "Sessions", "current_session"]

log = logging.getLogger("runtree")

In = TypeVar("In")
Out = TypeVar("Out")
Y = TypeVar("Y")

_FINAL_STATUSES = ("success", "partial", "failed")

_current: ContextVar[Session | None] = ContextVar("runtree.current_session", default=None)
# The command a session.exec runs, so loads inside the flow land in that command.
_command: ContextVar[tuple[Session, int] | None] = ContextVar(
    "runtree.current_command", default=None
)


def current_session() -> Session | None:
    """The session whose :meth:`Session.exec` runs the current flow, or ``None``."""
    return _current.get()


def _running_command() -> tuple[str, str, int] | None:
    """``(session_id, command, command_id)`` of the command ``Session.exec`` runs here
    (run trees record it as a run of its own)."""
    found = _command.get()
    if found is None:
        return None
    session, command_id = found
    return session.session_id, session._started.get(command_id, ""), command_id


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _new_id() -> str:
    # Sortable by creation time, short enough to type, random enough not to collide.
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        msg = f"{what} must be a non-empty str (got {shown(value)})"
        raise TypeError(msg)
    return value


def _pair(first: str, second: str, what: tuple[str, str]) -> str:
    _name(first, what[0])
    _name(second, what[1])
    if ":" in first:
        msg = (
            f"{what[0]} must not contain ':' (got {shown(first)}): it separates {what[0]}:{what[1]}"
        )
        raise ValueError(msg)
    return f"{first}:{second}"


@final
@dataclass(frozen=True, slots=True)
class CommandExecution:
    """One command of a session: what ran, when, how it ended, and what it used.

    ``status`` is ``"running"``, ``"success"``, ``"partial"`` or ``"failed"``; times are
    ISO 8601 strings with a UTC offset. ``context_loaded`` / ``memory_updated`` /
    ``skills_invoked`` list each name once, in first-use order.
    """

    command: str
    started_at: str
    completed_at: str | None
    status: CommandStatus
    inputs: dict[str, object]
    outputs: dict[str, object]
    context_loaded: list[str] = field(default_factory=list)
    memory_updated: list[str] = field(default_factory=list)
    skills_invoked: list[str] = field(default_factory=list)
    id: int = 0

    @classmethod
    def _from(cls, r: CommandRecord) -> CommandExecution:
        return cls(
            command=r["command"],
            started_at=r["started_at"],
            completed_at=r["completed_at"],
            status=r["status"],
            inputs=r["inputs"],
            outputs=r["outputs"],
            context_loaded=r["context_loaded"],
            memory_updated=r["memory_updated"],
            skills_invoked=r["skills_invoked"],
            id=r["id"],
        )

    def to_dict(self) -> dict[str, object]:
        """The command as JSON-ready data."""
        return {
            "id": self.id,
            "command": self.command,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "status": self.status,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "context_loaded": list(self.context_loaded),
            "memory_updated": list(self.memory_updated),
            "skills_invoked": list(self.skills_invoked),
        }


def _backend_of(store: object) -> SessionBackend:
    get = getattr(store, "session_backend", None)
    if get is None:
        msg = (
            f"Sessions needs a store from runtree.stores (got {shown(store)}); e.g. "
            "Sessions(runtree.stores.from_url()) or Sessions(SqliteStore('.runtree/runtree.db'))"
        )
        raise TypeError(msg)
    backend: SessionBackend = get()
    return backend


@final
class Sessions:
    """The sessions kept in a store.

    Args:
        store: A store (:mod:`runtree.stores`). The caller opens and closes it.

    .. versionadded:: 0.1
    """

    __slots__ = ("_backend", "store")

    def __init__(self, store: Store) -> None:
        self._backend = _backend_of(store)
        self.store = store

    async def create(self, project_name: str, project_type: str | None = None) -> Session:
        """Start a new session; it becomes the project's active session (an earlier
        active one keeps its data and can still be opened by id)."""
        _name(project_name, "project_name")
        record = await self._backend.session_create(_new_id(), project_name, project_type, _now())
        return Session(self, record)

    async def get_or_create(self, project_name: str, project_type: str | None = None) -> Session:
        """The project's active session, else a new one. Processes racing here get the
        same session (the store allows one active session per project)."""
        _name(project_name, "project_name")
        record = await self._backend.session_get_or_create(
            _new_id(), project_name, project_type, _now()
        )
        return Session(self, record)

    async def get(self, session_id: str) -> Session:
        """The session with this id.

        Raises:
            SessionNotFoundError: no such session in this store — also for an id no
                session can have (empty, not a str, a NUL, a lone surrogate, too long),
                as ``Runs.get`` answers for runs.
        """
        try:
            check_name(session_id, "session id")
        except StoreError as exc:
            raise SessionNotFoundError(session_id, str(exc)) from None
        record = await self._backend.session_load(session_id)
        if record is None:
            raise SessionNotFoundError(session_id)
        return Session(self, record)

    async def list(
        self, *, project_name: str | None = None, limit: int | None = None
    ) -> list[Session]:
        """Sessions, newest first (of one project when ``project_name`` is given)."""
        ids = await self._backend.session_list(project_name, limit)
        out: list[Session] = []
        for session_id in ids:
            record = await self._backend.session_load(session_id)
            if record is not None:
                out.append(Session(self, record))
        return out

    def __repr__(self) -> str:
        return f"Sessions({self.store!r})"


@final
class Session:
    """A persisted root context with its command history, caches and shared data.

    Plain attributes: ``session_id``, ``project_name``, ``project_type``, ``started_at``
    (ISO 8601). Snapshots as of the last call: ``loaded_context`` ("domain:topic" →
    content), ``loaded_memory`` ("layer:key" → content), ``command_history`` (the newest
    100 commands, oldest first; :meth:`get_command_history` reads any page),
    ``shared_data``, ``stats`` (cache hit/miss counters), ``ended_at``, ``active``.
    Every method is a coroutine and persists before it returns.
    """

    __slots__ = (
        "_backend",
        "_started",
        "active",
        "command_history",
        "ended_at",
        "loaded_context",
        "loaded_memory",
        "project_name",
        "project_type",
        "session_id",
        "sessions",
        "shared_data",
        "started_at",
        "stats",
    )

    def __init__(self, sessions: Sessions, record: SessionRecord) -> None:
        self.sessions = sessions
        self._backend = sessions._backend
        self.session_id = record["session_id"]
        self.project_name = record["project_name"]
        self.project_type = record["project_type"]
        self.started_at = record["started_at"]
        # Commands this object started and has not completed: id -> name.
        self._started: dict[int, str] = {}
        self._load(record)

    def _load(self, record: SessionRecord) -> None:
        self.ended_at: str | None = record["ended_at"]
        self.active: bool = record["active"]
        self.loaded_context: dict[str, object] = record["loaded_context"]
        self.loaded_memory: dict[str, object] = record["loaded_memory"]
        self.shared_data: dict[str, object] = record["shared_data"]
        self.stats: dict[str, int] = record["counters"]
        self.command_history: list[CommandExecution] = [
            CommandExecution._from(c) for c in record["command_history"]
        ]

    @property
    def root_id(self) -> str:
        """The id of the session's root context: its journal lives under it."""
        return f"session:{self.session_id}"

    def __repr__(self) -> str:
        state = "active" if self.active else "ended" if self.ended_at else "inactive"
        return (
            f"<Session {self.session_id} project={self.project_name!r} {state} "
            f"commands={len(self.command_history)}>"
        )

    async def refresh(self) -> Session:
        """Reload every snapshot from the store."""
        record = await self._backend.session_load(self.session_id)
        if record is None:
            raise SessionNotFoundError(self.session_id)
        self._load(record)
        return self

    # -- the running command -------------------------------------------------------------

    def _running_id(self) -> int | None:
        current = _command.get()
        if current is not None and current[0] is self:
            return current[1]
        if self._started:
            return next(reversed(self._started))
        return None

    async def _note(self, kind: Any, item: str) -> bool:
        command_id = self._running_id()
        if command_id is None:
            return False
        await self._backend.command_add(command_id, kind, item)
        for i, c in enumerate(self.command_history):
            if c.id == command_id:
                items = {"context": c.context_loaded, "memory": c.memory_updated}.get(
                    kind, c.skills_invoked
                )
                if item not in items:
                    items = [*items, item]
                    field_name = {"context": "context_loaded", "memory": "memory_updated"}.get(
                        kind, "skills_invoked"
                    )
                    self.command_history[i] = _replace(c, **{field_name: items})
                break
        return True

    # -- context and memory --------------------------------------------------------------

    async def record_context_load(self, domain: str, topic: str, content: object) -> None:
        """Cache ``content`` as ``domain:topic`` and add it to the running command's
        ``context_loaded``.

        Raises:
            SerializationError: ``content`` is not JSON (nothing is stored).
        """
        name = _pair(domain, topic, ("domain", "topic"))
        text = dumps(content, f"Context {name!r} of session {self.session_id!r}")
        await self._backend.session_put(self.session_id, "context", name, text, _now())
        self.loaded_context[name] = loads(text)
        await self._note("context", name)

    async def get_cached_context(self, domain: str, topic: str) -> object:
        """The cached content of ``domain:topic``, or ``None``."""
        name = _pair(domain, topic, ("domain", "topic"))
        text = await self._backend.session_item(self.session_id, "context", name)
        if text is None:
            self.loaded_context.pop(name, None)
            return None
        value = self.loaded_context[name] = loads(text)
        return value

    async def load_context(self, domain: str, topic: str, provider: ContextProvider) -> object:
        """Cache-first: the cached content (a hit), else ``provider``'s, cached (a miss).

        Hits and misses are counted in ``stats`` (``context_hits``, ``context_misses``);
        either way ``domain:topic`` is added to the running command's ``context_loaded``
        when there is content. Returns ``None`` when the provider has none.
        """
        name = _pair(domain, topic, ("domain", "topic"))
        cached = await self.get_cached_context(domain, topic)
        if cached is not None:
            self.stats["context_hits"] = await self._backend.session_count(
                self.session_id, "context_hits"
            )
            await self._note("context", name)
            return cached
        self.stats["context_misses"] = await self._backend.session_count(
            self.session_id, "context_misses"
        )
        content = await provider.get_conditional_context(domain, topic)
        if content is None:
            return None
        await self.record_context_load(domain, topic, content)
        return content

    async def record_memory_load(self, layer: str, key: str, content: object) -> None:
        """Cache memory ``layer:key``.

        Raises:
            SerializationError: ``content`` is not JSON (nothing is stored).
        """
        name = _pair(layer, key, ("layer", "key"))
        text = dumps(content, f"Memory {name!r} of session {self.session_id!r}")
        await self._backend.session_put(self.session_id, "memory", name, text, _now())
        self.loaded_memory[name] = loads(text)

    async def get_cached_memory(self, layer: str, key: str) -> object:
        """The cached memory ``layer:key``, or ``None``."""
        name = _pair(layer, key, ("layer", "key"))
        text = await self._backend.session_item(self.session_id, "memory", name)
        if text is None:
            self.loaded_memory.pop(name, None)
            return None
        value = self.loaded_memory[name] = loads(text)
        return value

    async def get_memory(self, layer: str, key: str, provider: MemoryProvider) -> object:
        """Cache-first memory read (counted as ``memory_hits`` / ``memory_misses``)."""
        cached = await self.get_cached_memory(layer, key)
        if cached is not None:
            self.stats["memory_hits"] = await self._backend.session_count(
                self.session_id, "memory_hits"
            )
            return cached
        self.stats["memory_misses"] = await self._backend.session_count(
            self.session_id, "memory_misses"
        )
        content = await provider.get(layer, key)
        if content is not None:
            await self.record_memory_load(layer, key, content)
        return content

    async def put_memory(
        self, layer: str, key: str, content: object, provider: MemoryProvider
    ) -> None:
        """Write memory through ``provider``, cache it, and add ``layer:key`` to the
        running command's ``memory_updated``."""
        name = _pair(layer, key, ("layer", "key"))
        dumps(content, f"Memory {name!r} of session {self.session_id!r}")
        await provider.put(layer, key, content)
        await self.record_memory_load(layer, key, content)
        await self._note("memory", name)

    async def record_skill(self, name: str) -> bool:
        """Add skill ``name`` to the running command's ``skills_invoked`` (what a
        :class:`SkillInvoker` calls). ``False`` when no command is running here."""
        return await self._note("skill", _name(name, "skill name"))

    # -- shared data ---------------------------------------------------------------------

    async def set_shared_data(self, key: str, value: object) -> None:
        """Store ``value`` (JSON) under ``key``: one row, one transaction.

        Raises:
            SerializationError: ``value`` is not JSON; the previous value stays.
        """
        _name(key, "shared data key")
        text = dumps(value, f"Shared data {key!r} of session {self.session_id!r}")
        await self._backend.session_put(self.session_id, "data", key, text, _now())
        self.shared_data[key] = loads(text)

    async def get_shared_data(self, key: str, default: object = None) -> object:
        """The value under ``key`` as stored now, or ``default``."""
        _name(key, "shared data key")
        text = await self._backend.session_item(self.session_id, "data", key)
        if text is None:
            self.shared_data.pop(key, None)
            return default
        value = self.shared_data[key] = loads(text)
        return value

    # -- commands ------------------------------------------------------------------------

    async def start_command(
        self, command: str, inputs: Mapping[str, object] | None = None
    ) -> CommandExecution:
        """Record ``command`` as running. Commands of this session left ``running`` by a
        process that died are marked ``failed`` ("interrupted") first.

        Raises:
            SerializationError: ``inputs`` is not JSON (nothing is recorded).
        """
        _name(command, "command")
        data = dict(inputs or {})
        text = dumps(data, f"Inputs of command {command!r}")
        started_at = _now()
        command_id, interrupted = await self._backend.command_start(
            self.session_id, command, text, started_at
        )
        self._started[command_id] = command
        if interrupted:
            log.warning(
                "session %s: marked command(s) %s failed: their process died while running",
                self.session_id,
                interrupted,
            )
            await self.refresh()
        else:
            self.command_history.append(
                CommandExecution(
                    command, started_at, None, "running", loads(text), {}, id=command_id
                )
            )
        return next(c for c in self.command_history if c.id == command_id)

    async def complete_command(
        self,
        command: str,
        status: CommandStatus = "success",
        outputs: Mapping[str, object] | None = None,
    ) -> CommandExecution:
        """Record how the running ``command`` ended (the newest running one of that name;
        the one this object started first).

        Raises:
            ValueError: ``status`` is not ``success``, ``partial`` or ``failed``.
            SerializationError: ``outputs`` is not JSON (the command stays running).
            CommandNotRunningError: no command of that name is running in this session
                (a ``RuntimeError``).
        """
        _name(command, "command")
        if status not in _FINAL_STATUSES:
            msg = (
                f"complete_command({command!r}) status must be one of "
                f"{', '.join(_FINAL_STATUSES)} (got {status!r})"
            )
            raise ValueError(msg)
        text = dumps(dict(outputs or {}), f"Outputs of command {command!r}")
        mine = [i for i, name in self._started.items() if name == command]
        result = await self._backend.command_complete(
            self.session_id, command, mine[-1] if mine else None, status, text, _now()
        )
        if isinstance(result, str):
            raise CommandNotRunningError(self.session_id, command, result)
        self._started.pop(result["id"], None)
        done = CommandExecution._from(result)
        for i, c in enumerate(self.command_history):
            if c.id == done.id:
                self.command_history[i] = done
                break
        else:
            self.command_history.append(done)
        return done

    async def get_command_history(
        self, *, limit: int | None = None, before: CommandExecution | int | None = None
    ) -> list[CommandExecution]:
        """Commands of this session as stored now, oldest first: all of them, or the
        ``limit`` newest ones older than ``before`` (a command or its ``id``) — a page.

        :attr:`command_history` holds only the newest 100 commands (loading a session
        costs the same however long its history is); page back from its first one::

            older = await session.get_command_history(limit=100, before=session.command_history[0])
        """
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            msg = f"get_command_history(limit=) must be a positive int or None (got {shown(limit)})"
            raise ValueError(msg)
        before_id = before.id if isinstance(before, CommandExecution) else before
        records = await self._backend.command_page(self.session_id, before_id, limit)
        return [CommandExecution._from(r) for r in records]

    async def get_previous_command(self, command: str | None = None) -> CommandExecution | None:
        """The newest finished command (of that name), skipping any still running."""
        if command is not None:
            _name(command, "command")
        record = await self._backend.command_previous(self.session_id, command)
        return None if record is None else CommandExecution._from(record)

    async def end(self) -> None:
        """End the session: it is no longer its project's active session."""
        ended_at = _now()
        await self._backend.session_end(self.session_id, ended_at)
        self.ended_at = self.ended_at or ended_at
        self.active = False

    # -- running flows as commands -------------------------------------------------------

    @overload
    async def exec(
        self,
        flow: Flow[In, AsyncIterator[Y]],
        input: In | None = None,
        *,
        command: str,
        scope: Scope | None = None,
    ) -> list[Y]: ...
    @overload
    async def exec(
        self,
        flow: Flow[In, Out],
        input: In | None = None,
        *,
        command: str,
        scope: Scope | None = None,
    ) -> Out: ...
    async def exec(
        self,
        flow: Flow[In, Out],
        input: In | None = None,
        *,
        command: str,
        scope: Scope | None = None,
    ) -> Any:
        """Run ``flow`` as ``command`` in the session's persisted root context.

        The command is recorded (inputs ``{"input": input}``, outputs
        ``{"result": value}``, status ``success`` or ``failed``); keyed steps
        (``ctx.exec(..., key=...)``) are journaled under :attr:`root_id`, so a re-run
        after a crash replays them; inside the flow :func:`current_session` returns this
        session.

        Args:
            scope: A scope whose ``store`` is durable (normally this session's store);
                default: a temporary scope on the session's store.

        Raises:
            ValueError: ``scope`` has no store (its journal would not persist).
            SerializationError: ``input`` is not JSON (the command is not started).
        """
        from .._scope import create_scope

        own = scope is None
        if scope is None:
            scope = create_scope(store=self.sessions.store)
        elif scope.store is None:
            msg = (
                f"session.exec(command={command!r}) needs a scope with a store "
                "(create_scope(store=...)), or no scope to use the session's store"
            )
            raise ValueError(msg)
        try:
            record = await self.start_command(command, {"input": input})
            token = _current.set(self)
            marker = _command.set((self, record.id))
            try:
                async with scope.create_context(
                    id=self.root_id, name=f"session {self.project_name}"
                ) as root:
                    value: Out = await root.exec(flow, input)
            except BaseException as exc:
                # Never raises (a broken __str__, a lone surrogate): the flow's own
                # exception is what the caller gets.
                error = {"type": readable(type(exc).__qualname__), "message": error_text(exc)}
                try:
                    await self._finish(record, "failed", {"error": error})
                except Exception:
                    log.exception("session %s: recording the failure failed", self.session_id)
                raise
            finally:
                _command.reset(marker)
                _current.reset(token)
            reason = problem(value)
            if reason is None:
                outputs: dict[str, object] = {"result": value}
            else:
                message = (
                    f"command {command!r} of session {self.session_id!r}: the result is not "
                    f"JSON ({reason}); it was returned but recorded as null"
                )
                log.warning("%s", message)
                warnings.warn(message, SerializationWarning, stacklevel=user_stacklevel())
                outputs = {"result": None, "unserializable": type(value).__qualname__}
            await self._finish(record, "success", outputs)
            return value
        finally:
            if own:
                await scope.dispose()

    async def _finish(
        self, record: CommandExecution, status: CommandStatus, outputs: dict[str, object]
    ) -> None:
        self._started.pop(record.id, None)
        self._started[record.id] = record.command  # complete this very command
        await self.complete_command(record.command, status, outputs)


def _replace(c: CommandExecution, **changes: Any) -> CommandExecution:
    from dataclasses import replace

    return replace(c, **changes)
