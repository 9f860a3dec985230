"""The journal: keyed step outcomes, recorded once per context tree.

In memory the journal keeps the step's value (or exception object) as is, so an
in-process replay returns the same object (or re-raises the same exception). With a
durable backend (a store, for a root created with an explicit ``id=`` or a session's root)
each outcome is also written as JSON, and a re-run after a crash replays it.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypedDict, TypeVar

from ._tags import _json_problem
from .errors import (
    Cancelled,
    ExecTimeoutError,
    JournalMismatchError,
    JournalReentryError,
    SerializationWarning,
    StepFailedError,
)

if TYPE_CHECKING:
    from ._context import ExecutionContext

__all__ = ["Journal", "JournalBackend", "StepRecord"]

log = logging.getLogger("runtree")
T = TypeVar("T")


class StepRecord(TypedDict, total=False):
    """A step outcome as a durable store keeps it (JSON)."""

    name: str
    ok: bool
    value: object
    error_type: str
    error_message: str


class JournalBackend(Protocol):
    """What a durable store provides to the journal (see :mod:`runtree.stores`).

    ``owner`` identifies this process's run of the tree. A backend guarantees that a key
    is recorded at most once, and that while one owner holds a live claim on a tree, other
    owners wait in :meth:`journal_acquire` for the key's outcome instead of running it.
    """

    async def journal_load(self, tree_id: str) -> dict[str, StepRecord]: ...

    async def journal_acquire(self, tree_id: str, key: str, owner: str) -> StepRecord | None:
        """The recorded outcome of ``key``, or ``None`` once ``owner`` may run it."""
        ...

    async def journal_record(
        self, tree_id: str, key: str, owner: str, record: StepRecord
    ) -> StepRecord:
        """Record ``key`` unless recorded already; return the record that stands."""
        ...

    async def journal_release(self, tree_id: str, owner: str) -> None:
        """``owner`` is done with the tree: other owners may take it over at once."""
        ...

    async def journal_delete(self, tree_id: str, pattern: str | None) -> int: ...


class Entry:
    __slots__ = ("error", "name", "ok", "value")

    def __init__(self, name: str, ok: bool, value: object, error: BaseException | None) -> None:
        self.name = name
        self.ok = ok
        self.value = value
        self.error = error

    @classmethod
    def from_record(cls, key: str, record: StepRecord) -> Entry:
        if record.get("ok"):
            return cls(record.get("name", ""), True, record.get("value"), None)
        error = StepFailedError(
            key, record.get("error_type", "Exception"), record.get("error_message", "")
        )
        return cls(record.get("name", ""), False, None, error)

    def replay(self, key: str, name: str) -> object:
        if self.name and name and self.name != name:
            raise JournalMismatchError(key, self.name, name)
        if self.ok:
            return self.value
        assert self.error is not None
        raise self.error


class Journal:
    """The journal of one context tree (owned by its root)."""

    __slots__ = ("backend", "entries", "loaded", "owner", "pending", "running", "tree_id")

    def __init__(self, tree_id: str, backend: JournalBackend | None, owner: str) -> None:
        self.tree_id = tree_id
        self.backend = backend
        self.owner = owner
        self.entries: dict[str, Entry] = {}
        # keys being run in this tree -> a future for waiters (made on demand)
        self.pending: dict[str, asyncio.Future[None] | None] = {}
        # keys being run -> the context of the attempt running them (to refuse re-entry)
        self.running: dict[str, ExecutionContext] = {}
        self.loaded = backend is None

    @property
    def durable(self) -> bool:
        return self.backend is not None

    async def _load(self) -> None:
        if self.loaded or self.backend is None:
            return
        records = await self.backend.journal_load(self.tree_id)
        for key, record in records.items():
            self.entries.setdefault(key, Entry.from_record(key, record))
        self.loaded = True

    async def run(
        self,
        key: str,
        name: str,
        step: Callable[[], Awaitable[T]],
        caller: ExecutionContext | None = None,
    ) -> T:
        """Replay ``key`` if recorded, else run ``step`` once and record its outcome."""
        if not isinstance(key, str) or not key:
            msg = f"journal key for {name!r} must be a non-empty str (got {key!r})"
            raise TypeError(msg)
        if not self.loaded:
            await self._load()
        pending = self.pending
        while True:
            entry = self.entries.get(key)
            if entry is not None:
                return entry.replay(key, name)  # type: ignore[return-value]
            if key not in pending:
                break
            # Another exec of this tree is running the step: wait for its outcome. The
            # future is made only when someone waits (most keys never have a waiter).
            runner = self.running.get(key)
            node = caller
            while runner is not None and node is not None:
                if node is runner:  # we are inside that very step: waiting never ends
                    raise JournalReentryError(key, runner.name)
                node = node.parent
            waiting = pending[key]
            if waiting is None:
                waiting = pending[key] = asyncio.get_running_loop().create_future()
            await asyncio.shield(waiting)
        # This exec owns the key in this tree from here on, the backend's claim included:
        # a concurrent exec with the same key waits above instead of claiming it too.
        pending[key] = None
        try:
            if self.backend is not None:
                record = await self.backend.journal_acquire(self.tree_id, key, self.owner)
                if record is not None:
                    entry = self.entries[key] = Entry.from_record(key, record)
                    return entry.replay(key, name)  # type: ignore[return-value]
            try:
                value = await step()
            except (asyncio.CancelledError, Cancelled, ExecTimeoutError):
                raise  # never journaled: the next exec with this key runs the step again
            except Exception as exc:
                await self._record(key, Entry(name, False, None, exc))
                raise
            await self._record(key, Entry(name, True, value, None))
            return value
        finally:
            self.running.pop(key, None)
            done = pending.pop(key)
            if done is not None:
                done.set_result(None)

    async def _record(self, key: str, entry: Entry) -> None:
        if self.backend is None:
            self.entries[key] = entry
            return
        if entry.ok:
            problem = _json_problem(entry.value, 0)
            if problem is not None:
                message = (
                    f"journal key {key!r} ({entry.name!r}): the value is not JSON ({problem}); "
                    "it was returned but not recorded, so the step runs again on a re-run"
                )
                log.warning("%s", message)
                warnings.warn(message, SerializationWarning, stacklevel=2)
                return
            record: StepRecord = {"name": entry.name, "ok": True, "value": entry.value}
        else:
            assert entry.error is not None
            err = entry.error
            if isinstance(err, StepFailedError):
                type_name, text = err.type_name, err.message
            else:
                type_name, text = type(err).__qualname__, str(err)
            record = {
                "name": entry.name,
                "ok": False,
                "error_type": type_name,
                "error_message": text,
            }
        stored = await self.backend.journal_record(self.tree_id, key, self.owner, record)
        if stored is record or stored == record:
            self.entries[key] = entry
        else:  # another owner recorded first: its outcome stands
            self.entries[key] = Entry.from_record(key, stored)

    async def reset(self, pattern: str | None) -> int:
        if pattern is None:
            keys = list(self.entries)
        else:
            keys = [k for k in self.entries if fnmatch.fnmatchcase(k, pattern)]
        for k in keys:
            del self.entries[k]
        if self.backend is not None:
            return max(len(keys), await self.backend.journal_delete(self.tree_id, pattern))
        return len(keys)

    async def release(self) -> None:
        if self.backend is not None:
            await self.backend.journal_release(self.tree_id, self.owner)
