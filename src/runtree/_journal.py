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
from collections.abc import Awaitable, Callable, Mapping
from hashlib import sha256
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypedDict, TypeVar

from ._json import (
    canonical,
    compact,
    error_text,
    problem,
    quote,
    shown,
    type_name,
    user_stacklevel,
)
from .errors import (
    Cancelled,
    ExecTimeoutError,
    JournalInputWarning,
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
    input_digest: str
    # The value as compact JSON text, when the journal has it (it encodes the value once,
    # for the store and the run tree alike); a backend may store it instead of encoding
    # ``value``, or ignore it. Records read back from a store need not carry it.
    value_json: str


class JournalBackend(Protocol):
    """What a durable store provides to the journal (see :mod:`runtree.stores`).

    ``owner`` identifies this process's run of the tree. A backend guarantees that a key
    is recorded at most once, and that while one owner holds a live claim on a tree, other
    owners wait in :meth:`journal_acquire` for the key's outcome instead of running it.

    Optional: ``journal_held(tree_id, key, owner)`` returns the records of a tree the
    backend already holds for ``owner`` (checking ``key`` as ``journal_acquire`` does), or
    ``None`` when only ``journal_acquire`` can tell; a key missing from them is then
    ``owner``'s to run without an awaited call. ``journal_record_ok(tree_id, key, owner,
    name, value_json, input_digest)`` records a success given as its JSON text (what
    ``journal_record`` does for ``{"name", "ok": True, "value", ...}``, without the
    dict): ``None`` when recorded, else the record that stands. The journal calls it only
    when the class that defines it is the one that defines ``journal_record`` or a
    subclass of it: a subclass that wraps ``journal_record`` alone still sees every record.
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


def input_digest(value: object) -> str | None:
    """A short digest of a step's input when it is JSON (``None`` otherwise: not checked).

    An input whose canonical JSON has at most 16 characters (a number, a short str, a
    small list) is its own digest, written ``=`` + that text: it costs no hash, and a
    :class:`JournalInputWarning` then shows the two inputs themselves. A longer one is
    the first 16 hex digits of the SHA-256 of its text. Both forms fit in 17 ASCII
    characters; records of earlier versions (a hash for every input) still compare right
    (:meth:`Entry.changed`)."""
    t = type(value)
    # The common inputs without the encoder: the same text canonical() gives them.
    if t is int and -_BIG_INT < value < _BIG_INT:  # type: ignore[operator]
        return "=" + int.__repr__(value)
    if t is str:
        text = quote(value)  # type: ignore[arg-type]
    else:
        try:
            text = canonical(value)
        except (TypeError, ValueError, RecursionError):
            return None
    return "=" + text if len(text) <= _SHORT_INPUT else _hashed(text)


def _hashed(text: str) -> str:
    """The digest of an input's canonical text as a hash (what earlier versions wrote for
    every input)."""
    return sha256(text.encode()).hexdigest()[:16]


_SHORT_INPUT = 16
_BIG_INT = 10**15  # 16 characters at most ("-999999999999999")


def check_key(key: object, name: str) -> None:
    """A journal key is a non-empty str (``TypeError`` naming the step otherwise)."""
    if not isinstance(key, str) or not key:
        msg = f"journal key for {name!r} must be a non-empty str (got {shown(key)})"
        raise TypeError(msg)


UNCHECKED: object = object()  # no input to compare (a record without one, or none given)


class Entry:
    """A step outcome in the tree. ``input`` is the step's input as given (in-process
    entries: compared on replay, hashed only when it differs or is written durably);
    ``digest`` the recorded input digest (entries loaded from a store)."""

    __slots__ = ("digest", "error", "input", "name", "ok", "text", "value")

    def __init__(
        self,
        name: str,
        ok: bool,
        value: object,
        error: BaseException | None,
        input: object = UNCHECKED,
        digest: str | None = None,
    ) -> None:
        self.name = name
        self.ok = ok
        self.value = value
        self.error = error
        self.input = input
        self.digest = digest
        self.text: str | None = None  # the value's JSON text, for a recorder (keep_text)

    def recorded_digest(self) -> str | None:
        if self.digest is None and self.input is not UNCHECKED:
            self.digest = input_digest(self.input)
        return self.digest

    def changed(self, given: object) -> tuple[str, str] | None:
        """``(recorded, now)`` digests when ``given`` differs from the recorded input."""
        if given is UNCHECKED or given is self.input:
            return None
        # Digests, as after a restart (True and 1 are equal but are other JSON): the same
        # answer in the process that recorded the step and in the next one.
        old = self.recorded_digest()
        if old is None:
            return None  # not JSON: not checked (DESIGN §6)
        new = input_digest(given)
        if new is None or new == old:
            return None
        if new[0] == "=" and old[0] != "=":
            # Recorded by an earlier version, which hashed every input.
            new = _hashed(new[1:])
            if new == old:
                return None
        return old, new

    @classmethod
    def from_record(cls, key: str, record: StepRecord) -> Entry:
        digest = record.get("input_digest") or None
        if record.get("ok"):
            return cls(record.get("name", ""), True, record.get("value"), None, UNCHECKED, digest)
        error = StepFailedError(
            key, record.get("error_type", "Exception"), record.get("error_message", "")
        )
        return cls(record.get("name", ""), False, None, error, UNCHECKED, digest)

    def replay(self, key: str, name: str, given: object = UNCHECKED) -> object:
        if self.name and name and self.name != name:
            raise JournalMismatchError(key, self.name, name)
        changed = self.changed(given) if given is not UNCHECKED else None
        if changed is not None:
            message = (
                f"journal key {key!r} ({name!r}) replays the outcome recorded for an input "
                f"with digest {changed[0]}, but the input now has digest {changed[1]}. The "
                "key is the step's identity: put what varies into the key, or call "
                f"ctx.reset_journal({key!r}) to run the step again."
            )
            log.warning("%s", message)
            warnings.warn(message, JournalInputWarning, stacklevel=user_stacklevel())
        if self.ok:
            return self.value
        assert self.error is not None
        raise self.error


RecordOk: TypeAlias = Callable[
    [str, str, str, str, str, "str | None"], Awaitable["StepRecord | None"]
]


def _record_ok(backend: object) -> RecordOk | None:
    """The backend's ``journal_record_ok``, unless a class below the one defining it
    overrides ``journal_record`` (see :class:`JournalBackend`)."""
    fast: RecordOk | None = getattr(backend, "journal_record_ok", None)
    if fast is None:
        return None
    for klass in type(backend).__mro__:
        if "journal_record_ok" in vars(klass):
            return fast
        if "journal_record" in vars(klass):
            return None
    return fast  # pragma: no cover - an instance attribute: trust it


class Journal:
    """The journal of one context tree (owned by its root)."""

    __slots__ = (
        "_held",
        "_record_ok",
        "backend",
        "entries",
        "keep_text",
        "loaded",
        "owner",
        "pending",
        "running",
        "streams",
        "tree_id",
    )

    def __init__(self, tree_id: str, backend: JournalBackend | None, owner: str) -> None:
        self.tree_id = tree_id
        self.backend = backend
        # The backend's look at a tree it already holds for an owner (optional).
        self._held: Callable[[str, str, str], Mapping[str, StepRecord] | None] | None = getattr(
            backend, "journal_held", None
        )
        # ... and its way to record a success from its JSON text (optional).
        self._record_ok = _record_ok(backend)
        self.owner = owner
        # Keep each durable value's JSON text on its entry (a run-tree recorder reads it
        # for the step's node, then lets it go); off, the text is not kept.
        self.keep_text = False
        self.entries: dict[str, Entry] = {}
        # keys being run in this tree -> a future for waiters (made on demand)
        self.pending: dict[str, asyncio.Future[None] | None] = {}
        # keys being run -> the context of the attempt running them (to refuse re-entry)
        self.running: dict[str, ExecutionContext] = {}
        # keys claimed by a stream -> the task that advances it, and the stream's name
        self.streams: dict[str, tuple[asyncio.Task[Any] | None, str]] = {}
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
        timeout: float | None = None,
        given: object = UNCHECKED,
    ) -> T:
        """Run ``step`` once for ``key`` and record its outcome, or return the outcome
        recorded meanwhile (another exec of the tree, or another worker, ran it).

        For a key checked with :func:`check_key` that this loaded journal had no entry for
        when the caller looked (a keyed exec looks first, to note the replay).
        ``timeout`` bounds the wait for a key that another exec (or worker) holds;
        ``given`` is the step's input, checked against the recorded one on replay.
        """
        if timeout is None:
            if self.backend is None and key not in self.pending:
                # Nobody runs the key in this tree and no store to claim it in: it is ours.
                self.pending[key] = None
                return await self._run_claimed(key, name, step, given)
            claimed = await self._claim_in(key, name, caller, given)
            if claimed is not _CLAIMED:
                return claimed  # type: ignore[return-value]
            return await self._run_claimed(key, name, step, given)
        try:
            async with asyncio.timeout(timeout):
                claimed = await self._claim_in(key, name, caller, given)
        except TimeoutError:
            raise ExecTimeoutError(name, timeout) from None
        if claimed is not _CLAIMED:
            return claimed  # type: ignore[return-value]
        return await self._run_claimed(key, name, step, given)

    def claim_now(self, key: str) -> bool:
        """Claim ``key`` (checked) without waiting, when nothing is to wait for: no exec
        of this tree runs it, and the backend (if any) holds the tree for this owner
        already and has no record of the key. ``False``: nothing claimed (use
        :meth:`run`). The caller records the outcome and calls :meth:`unclaim`."""
        if key in self.pending:
            return False
        if self.backend is not None:
            held = self._held
            if held is None:
                return False
            records = held(self.tree_id, key, self.owner)
            if records is None or key in records:
                return False
        self.pending[key] = None
        return True

    def _claim_in(
        self, key: str, name: str, caller: ExecutionContext | None, given: object
    ) -> Awaitable[object]:
        """:meth:`_claim`, awaited in ``caller`` (when given): a wait for a key another
        exec or worker holds has no child context of its own, and ``caller``'s
        cancellation and close must still reach it."""
        claiming = self._claim(key, name, caller, given)
        return claiming if caller is None else caller._wait_here(claiming)

    async def _claim(
        self, key: str, name: str, caller: ExecutionContext | None, given: object
    ) -> object:
        """Wait until ``key`` is free in this tree and claimed (in the backend too):
        ``_CLAIMED``, or the recorded outcome (replayed) when it was recorded meanwhile."""
        pending = self.pending
        while True:
            entry = self.entries.get(key)
            if entry is not None:
                return entry.replay(key, name, given)
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
            streamer = self.streams.get(key) if self.streams else None
            if streamer is not None and streamer[0] is asyncio.current_task():
                # A stream holds the key, and only this task advances it (its consumer's
                # loop body, or another stream interleaved in the same task).
                raise JournalReentryError(key, streamer[1])
            waiting = pending[key]
            if waiting is None:
                waiting = pending[key] = asyncio.get_running_loop().create_future()
            await asyncio.shield(waiting)
        # This exec owns the key in this tree from here on, the backend's claim included:
        # a concurrent exec with the same key waits above instead of claiming it too.
        pending[key] = None
        if self.backend is None:
            return _CLAIMED
        try:
            record = await self.backend.journal_acquire(self.tree_id, key, self.owner)
        except BaseException:
            self._unclaim(key)
            raise
        if record is None:
            return _CLAIMED
        entry = self.entries[key] = Entry.from_record(key, record)
        self._unclaim(key)
        return entry.replay(key, name, given)

    async def claim(
        self, key: str, name: str, caller: ExecutionContext | None, given: object = UNCHECKED
    ) -> object:
        """Claim ``key`` for a step that records later (a stream): :data:`CLAIMED`, or the
        recorded outcome (replayed) when the key is recorded. The caller then calls
        :meth:`record` and/or :meth:`unclaim`."""
        check_key(key, name)
        if not self.loaded:
            await self._load()
        claimed = await self._claim_in(key, name, caller, given)
        if claimed is _CLAIMED:
            self.streams[key] = (asyncio.current_task(), name)
        return claimed

    async def record(self, key: str, name: str, value: object, given: object = UNCHECKED) -> object:
        """Record the value of a claimed key; returns the outcome that stands."""
        mine = Entry(name, True, value, None, given)
        stands = await self._record(key, mine)
        return value if stands is mine else stands.replay(key, name)

    def unclaim(self, key: str) -> None:
        """Let go of a claimed key (after :meth:`record`, or without recording)."""
        self._unclaim(key)

    def _unclaim(self, key: str) -> None:
        self.running.pop(key, None)
        if self.streams:
            self.streams.pop(key, None)
        done = self.pending.pop(key, None)
        if done is not None and not done.done():
            done.set_result(None)

    async def _run_claimed(
        self, key: str, name: str, step: Callable[[], Awaitable[T]], given: object
    ) -> T:
        try:
            try:
                value = await step()
            except (asyncio.CancelledError, Cancelled, ExecTimeoutError):
                raise  # never journaled: the next exec with this key runs the step again
            except Exception as exc:
                mine = Entry(name, False, None, exc, given)
                if await self._record(key, mine) is mine:
                    raise
            else:
                mine = Entry(name, True, value, None, given)
                if await self._record(key, mine) is mine:
                    return value
            # Another worker recorded this key first: its outcome is the step's outcome.
            return self.entries[key].replay(key, name)  # type: ignore[return-value]
        finally:
            self._unclaim(key)

    async def _record(self, key: str, entry: Entry) -> Entry:
        """Record ``entry`` under ``key``; return the entry that stands (``entry`` itself,
        or the one another owner recorded first)."""
        if self.backend is None:
            self.entries[key] = entry
            return entry
        record: StepRecord | None = None  # None: a success the store takes as JSON text
        fast = self._record_ok
        text = ""
        if entry.ok:
            why = problem(entry.value)
            if why is not None:
                message = (
                    f"journal key {key!r} ({entry.name!r}): the value is not JSON ({why}); "
                    "it was returned but not recorded, so the step runs again on a re-run"
                )
                log.warning("%s", message)
                warnings.warn(message, SerializationWarning, stacklevel=user_stacklevel())
                # Not stored, but known to this tree: the same key replays it while the
                # tree lives (two concurrent execs run the step once), as in memory.
                self.entries[key] = entry
                return entry
            try:
                text = compact(entry.value)
            except (TypeError, ValueError, RecursionError):  # pragma: no cover - checked
                fast = None  # by problem() above; the store says what is wrong, if anything
            else:
                if self.keep_text:
                    entry.text = text
            if fast is None:
                record = {"name": entry.name, "ok": True, "value": entry.value}
                if text:
                    record["value_json"] = text
        else:
            assert entry.error is not None
            err = entry.error
            if isinstance(err, StepFailedError):
                kind, message = err.type_name, err.message
            else:
                kind, message = type_name(err), error_text(err)
            record = {
                "name": entry.name,
                "ok": False,
                "error_type": kind,
                "error_message": message,
            }
        digest = entry.digest
        if digest is None:  # entry.recorded_digest(), inline for its common case
            given = entry.input
            if type(given) is int and -_BIG_INT < given < _BIG_INT:  # input_digest's first way
                digest = entry.digest = "=" + int.__repr__(given)
            elif given is not UNCHECKED:
                digest = entry.digest = input_digest(given)
        if record is not None and digest is not None:
            record["input_digest"] = digest
        # The tree learns the outcome before the write is awaited: the step ran, so a
        # cancellation landing while (or right after) the store commits must not let it
        # run again in this tree. If the write fails, the entry is taken back; if the task
        # is cancelled before the commit, the entry stays for this tree (the step did run)
        # and the store simply lacks it: a re-run after a crash runs the step again, which
        # is the at-least-once rule for steps whose record was never committed.
        self.entries[key] = entry
        try:
            if record is not None:
                stored = await self.backend.journal_record(self.tree_id, key, self.owner, record)
            else:
                assert fast is not None  # no record dict: a success the store takes as text
                got = await fast(self.tree_id, key, self.owner, entry.name, text, digest)
                if got is None:
                    return entry  # recorded: the common case
                record = {"name": entry.name, "ok": True, "value": entry.value}
                stored = got
        except asyncio.CancelledError:
            raise
        except BaseException:
            if self.entries.get(key) is entry:
                del self.entries[key]
            raise
        return self._learn(key, entry, record, stored)

    def _learn(self, key: str, entry: Entry, record: StepRecord, stored: StepRecord) -> Entry:
        if stored is record or _same_outcome(stored, record):
            self.entries[key] = entry
            return entry
        # another owner recorded first: its outcome stands
        winner = self.entries[key] = Entry.from_record(key, stored)
        return winner

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


_CLAIMED = object()
CLAIMED = _CLAIMED  # what Journal.claim returns when the caller holds the key


def _same_outcome(a: StepRecord, b: StepRecord) -> bool:
    return all(a.get(f) == b.get(f) for f in ("name", "ok", "value", "error_type"))
