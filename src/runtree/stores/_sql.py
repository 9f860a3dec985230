"""The SQL behind every store: journal rows, tree leases and session rows.

Each operation is written once, as a coroutine over a small :class:`Tx` interface; the
SQLite store drives it synchronously (its calls never suspend), the PostgreSQL store awaits
it on an async connection. SQL is written with ``?`` placeholders and ``{t}`` for the table
prefix; a dialect rewrites both once, when the store is built. Every value is a bound
parameter; every stored value is JSON text.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Concatenate, ParamSpec, Protocol, TypeAlias, TypeVar, cast

from .._journal import StepRecord
from .._json import check_name, compact, readable, shown
from ..errors import StoreError
from ._base import (
    DEFAULT_LEASE,
    HOST_KEY,
    CommandItemKind,
    CommandRecord,
    CommandStatus,
    ItemKind,
    ProcInfo,
    SessionRecord,
    dumps,
    loads,
    proc_alive,
)
from ._runs_sql import RUNS_CHUNKS_MIGRATION, RUNS_MIGRATION, RUNS_QUERIES, RunsSql

__all__ = ["MIGRATIONS", "Batch", "SqlStore", "Tx", "schema_version", "settle"]

log = logging.getLogger("runtree")

T = TypeVar("T")
P = ParamSpec("P")

APPLICATION = "runtree"

# Forward migrations: MIGRATIONS[n] brings a database from version n - 1 to n.
# Placeholders: {t} table prefix, {i} index prefix, {serial} an auto-increment primary
# key, {real} a double, {bigint} a 64-bit int.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE {t}meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE {t}procs (proc TEXT PRIMARY KEY, host TEXT NOT NULL, "
        "pid INTEGER NOT NULL, pid_start TEXT NOT NULL, expires_at {real} NOT NULL)",
        "CREATE TABLE {t}leases (tree_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
        "proc TEXT NOT NULL, acquired_at {real} NOT NULL)",
        "CREATE TABLE {t}journal (tree_id TEXT NOT NULL, key TEXT NOT NULL, "
        "name TEXT NOT NULL, ok INTEGER NOT NULL, value TEXT, error_type TEXT, "
        "error_message TEXT, owner TEXT NOT NULL, recorded_at {real} NOT NULL, "
        "PRIMARY KEY (tree_id, key))",
        "CREATE TABLE {t}sessions (seq {serial}, session_id TEXT NOT NULL UNIQUE, "
        "project_name TEXT NOT NULL, project_type TEXT, started_at TEXT NOT NULL, "
        "ended_at TEXT, active INTEGER NOT NULL)",
        # One active session per project, enforced by the database (get_or_create races).
        "CREATE UNIQUE INDEX {i}sessions_active ON {t}sessions (project_name) WHERE active = 1",
        "CREATE TABLE {t}session_items (session_id TEXT NOT NULL, kind TEXT NOT NULL, "
        "name TEXT NOT NULL, value TEXT NOT NULL, updated_at TEXT NOT NULL, "
        "PRIMARY KEY (session_id, kind, name))",
        "CREATE TABLE {t}session_counters (session_id TEXT NOT NULL, name TEXT NOT NULL, "
        "n {bigint} NOT NULL, PRIMARY KEY (session_id, name))",
        "CREATE TABLE {t}commands (id {serial}, session_id TEXT NOT NULL, "
        "command TEXT NOT NULL, status TEXT NOT NULL, started_at TEXT NOT NULL, "
        "completed_at TEXT, inputs TEXT NOT NULL, outputs TEXT NOT NULL, proc TEXT NOT NULL)",
        "CREATE INDEX {i}commands_session ON {t}commands (session_id, id)",
        "CREATE TABLE {t}command_items (command_id {bigint} NOT NULL, kind TEXT NOT NULL, "
        "item TEXT NOT NULL, n {bigint} NOT NULL, PRIMARY KEY (command_id, kind, item))",
    ),
    # (2: run trees)
    3: (
        # Growth: starting or completing a command never scans the session's history.
        "CREATE INDEX {i}commands_running ON {t}commands (session_id) WHERE status = 'running'",
        "CREATE INDEX {i}commands_name ON {t}commands (session_id, command, id)",
        # The digest of a step's input (DESIGN §6 "Journal identity"); NULL: not checked.
        "ALTER TABLE {t}journal ADD COLUMN input_digest TEXT",
        # Session trees are claimed per key (concurrent commands of one session).
        "CREATE TABLE {t}key_claims (tree_id TEXT NOT NULL, key TEXT NOT NULL, "
        "owner TEXT NOT NULL, proc TEXT NOT NULL, acquired_at {real} NOT NULL, "
        "PRIMARY KEY (tree_id, key))",
        "CREATE INDEX {i}key_claims_owner ON {t}key_claims (tree_id, owner)",
    ),
}
MIGRATIONS[2] = RUNS_MIGRATION  # run trees (see _runs_sql)
MIGRATIONS[4] = RUNS_CHUNKS_MIGRATION  # node rows written in chunks (see _runs_sql)


def schema_version() -> int:
    """The schema version this runtree writes: the last migration's."""
    return max(MIGRATIONS)


_JOURNAL_COLS = "name, ok, value, error_type, error_message, input_digest"
_CMD_COLS = "id, command, status, started_at, completed_at, inputs, outputs"

_HOLDER = "SELECT l.owner, l.proc, p.host, p.pid, p.pid_start, p.expires_at FROM "
_L_HOLDER = f"{_HOLDER}{{t}}leases l LEFT JOIN {{t}}procs p ON p.proc = l.proc WHERE l.tree_id = ?"
_K_HOLDER = (
    f"{_HOLDER}{{t}}key_claims l LEFT JOIN {{t}}procs p ON p.proc = l.proc "
    "WHERE l.tree_id = ? AND l.key = ?"
)

QUERIES: dict[str, str] = {
    "meta_all": "SELECT name, value FROM {t}meta",
    "meta_put": "INSERT INTO {t}meta (name, value) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    # journal
    "j_load": f"SELECT key, {_JOURNAL_COLS} FROM {{t}}journal WHERE tree_id = ?",
    "j_get": f"SELECT {_JOURNAL_COLS} FROM {{t}}journal WHERE tree_id = ? AND key = ?",
    # ... and who recorded it, when (a batch tells its own rows from another owner's)
    "j_get_owned": f"SELECT {_JOURNAL_COLS}, owner, recorded_at FROM {{t}}journal "
    "WHERE tree_id = ? AND key = ?",
    "j_insert": "INSERT INTO {t}journal (tree_id, key, name, ok, value, error_type, "
    "error_message, owner, recorded_at, input_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING",
    # A success: the same row with its constants in the text (SQLite's module adapts each
    # None parameter through a failed attribute lookup, ≈ 0.3 µs apiece).
    "j_insert_ok": "INSERT INTO {t}journal (tree_id, key, name, ok, value, error_type, "
    "error_message, owner, recorded_at, input_digest) VALUES (?, ?, ?, 1, ?, NULL, NULL, ?, ?, "
    "?) ON CONFLICT DO NOTHING",
    # PostgreSQL: a batch of records as one JSON parameter (one statement text for any
    # batch); the keys it inserted come back, the others were recorded already.
    # (Each record is a JSON array of the ten columns: no field names to encode. jsonb:
    # parsed once; json's ->> parses the element again for each column, ≈ 2x the time.)
    "j_insert_json": "INSERT INTO {t}journal (tree_id, key, name, ok, value, error_type, "
    "error_message, owner, recorded_at, input_digest) SELECT r->>0, r->>1, r->>2, "
    "(r->>3)::INTEGER, r->>4, r->>5, r->>6, r->>7, (r->>8)::DOUBLE PRECISION, r->>9 "
    "FROM jsonb_array_elements(?::jsonb) AS r ON CONFLICT DO NOTHING RETURNING tree_id, key",
    "j_keys": "SELECT key FROM {t}journal WHERE tree_id = ?",
    "j_del_key": "DELETE FROM {t}journal WHERE tree_id = ? AND key = ?",
    "j_del_all": "DELETE FROM {t}journal WHERE tree_id = ?",
    # lease holders (one row per store instance) and tree leases
    "p_upsert": "INSERT INTO {t}procs (proc, host, pid, pid_start, expires_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (proc) DO UPDATE SET expires_at = excluded.expires_at",
    "p_delete": "DELETE FROM {t}procs WHERE proc = ?",
    "p_purge": "DELETE FROM {t}procs WHERE expires_at < ?",
    "l_claim": "INSERT INTO {t}leases (tree_id, owner, proc, acquired_at) "
    "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
    # A claim's holder, locked ({lock}), and read again after a lock wait ("_now").
    "l_holder": f"{_L_HOLDER}{{lock}}",
    "l_holder_now": _L_HOLDER,
    "l_take": "UPDATE {t}leases SET owner = ?, proc = ?, acquired_at = ? "
    "WHERE tree_id = ? AND owner = ? AND proc = ?",
    "l_release": "DELETE FROM {t}leases WHERE tree_id = ? AND owner = ? AND proc = ?",
    "l_mine": "SELECT tree_id, owner FROM {t}leases WHERE proc = ?",
    "l_release_all": "DELETE FROM {t}leases WHERE proc = ?",
    # per-key claims (session trees)
    "k_claim": "INSERT INTO {t}key_claims (tree_id, key, owner, proc, acquired_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    "k_holder": f"{_K_HOLDER}{{lock}}",
    "k_holder_now": _K_HOLDER,
    "k_take": "UPDATE {t}key_claims SET owner = ?, proc = ?, acquired_at = ? "
    "WHERE tree_id = ? AND key = ? AND owner = ? AND proc = ?",
    "k_release": "DELETE FROM {t}key_claims WHERE tree_id = ? AND owner = ? AND proc = ?",
    "k_release_all": "DELETE FROM {t}key_claims WHERE proc = ?",
    # sessions
    "s_insert": "INSERT INTO {t}sessions (session_id, project_name, project_type, "
    "started_at, active) VALUES (?, ?, ?, ?, 1) ON CONFLICT DO NOTHING",
    "s_deactivate": "UPDATE {t}sessions SET active = 0 WHERE project_name = ? AND active = 1",
    "s_active": "SELECT session_id FROM {t}sessions WHERE project_name = ? AND active = 1",
    "s_row": "SELECT session_id, project_name, project_type, started_at, ended_at, active "
    "FROM {t}sessions WHERE session_id = ?",
    "s_list": "SELECT session_id FROM {t}sessions ORDER BY seq DESC LIMIT ?",
    "s_list_project": "SELECT session_id FROM {t}sessions WHERE project_name = ? "
    "ORDER BY seq DESC LIMIT ?",
    "s_end": "UPDATE {t}sessions SET ended_at = COALESCE(ended_at, ?), active = 0 "
    "WHERE session_id = ?",
    "i_put": "INSERT INTO {t}session_items (session_id, kind, name, value, updated_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id, kind, name) "
    "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    "i_get": "SELECT value FROM {t}session_items WHERE session_id = ? AND kind = ? AND name = ?",
    "i_all": "SELECT kind, name, value FROM {t}session_items WHERE session_id = ? "
    "ORDER BY updated_at, name",
    "n_add": "INSERT INTO {t}session_counters AS c (session_id, name, n) VALUES (?, ?, 1) "
    "ON CONFLICT (session_id, name) DO UPDATE SET n = c.n + 1 RETURNING n",
    "n_all": "SELECT name, n FROM {t}session_counters WHERE session_id = ? ORDER BY name",
    # commands
    "c_running": "SELECT c.id, p.host, p.pid, p.pid_start, p.expires_at FROM {t}commands c "
    "LEFT JOIN {t}procs p ON p.proc = c.proc WHERE c.session_id = ? AND c.status = 'running'",
    "c_interrupt": "UPDATE {t}commands SET status = 'failed', completed_at = ?, outputs = ? "
    "WHERE id = ? AND status = 'running'",
    "c_insert": "INSERT INTO {t}commands (session_id, command, status, started_at, inputs, "
    "outputs, proc) VALUES (?, ?, 'running', ?, ?, ?, ?) RETURNING id",
    "c_find_running": "SELECT id FROM {t}commands WHERE session_id = ? AND command = ? "
    "AND status = 'running' ORDER BY id DESC LIMIT 1",
    "c_last": "SELECT id, status FROM {t}commands WHERE session_id = ? AND command = ? "
    "ORDER BY id DESC LIMIT 1",
    "c_complete": "UPDATE {t}commands SET status = ?, completed_at = ?, outputs = ? "
    "WHERE id = ? AND session_id = ? AND status = 'running'",
    "c_row": f"SELECT {_CMD_COLS} FROM {{t}}commands WHERE id = ?",
    "c_all": f"SELECT {_CMD_COLS} FROM {{t}}commands WHERE session_id = ? ORDER BY id",
    # A page of the history, newest first (by the (session_id, id) index).
    "c_page": f"SELECT {_CMD_COLS} FROM {{t}}commands WHERE session_id = ? AND id < ? "
    "ORDER BY id DESC LIMIT ?",
    "ci_range": "SELECT i.command_id, i.kind, i.item FROM {t}command_items i "
    "WHERE i.command_id >= ? AND i.command_id <= ? ORDER BY i.n",
    "c_prev": f"SELECT {_CMD_COLS} FROM {{t}}commands WHERE session_id = ? "
    "AND status <> 'running' ORDER BY id DESC LIMIT 1",
    "c_prev_named": f"SELECT {_CMD_COLS} FROM {{t}}commands WHERE session_id = ? "
    "AND command = ? AND status <> 'running' ORDER BY id DESC LIMIT 1",
    "ci_add": "INSERT INTO {t}command_items (command_id, kind, item, n) VALUES (?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING",
    "ci_of": "SELECT command_id, kind, item FROM {t}command_items WHERE command_id = ? ORDER BY n",
    "ci_all": "SELECT i.command_id, i.kind, i.item FROM {t}command_items i "
    "JOIN {t}commands c ON c.id = i.command_id WHERE c.session_id = ? ORDER BY i.n",
}
QUERIES.update(RUNS_QUERIES)

_NO_LIMIT = 2**62
# Commands a loaded session carries in ``command_history`` (the newest ones); older ones
# are read page by page (Session.get_command_history), so loading costs the same at any
# history length.
HISTORY_PAGE = 100
# Trees whose ids start with this are claimed per key, not whole (session roots: commands of
# one session run at once in several processes). Other roots are claimed whole: one lease
# row per root, and each step records with one commit.
KEYED_TREE_PREFIX = "session:"
# Lease holders (store instances) open in this process: a claim whose holder is this
# process but not an open store is an orphan (a release that failed), taken over at once.
_OPEN_PROCS: set[str] = set()
_ITEM_FIELD: dict[str, str] = {
    "context": "context_loaded",
    "memory": "memory_updated",
    "skill": "skills_invoked",
}


class Tx(Protocol):
    """One connection inside one transaction (or one autocommitted statement)."""

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    async def one(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None: ...

    async def all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...


def prepare(
    sql: dict[str, str], *, prefix: str, index_prefix: str, placeholder: str, lock: str
) -> dict[str, str]:
    """The queries of one dialect: table prefix, placeholder style, row-lock clause."""
    out: dict[str, str] = {}
    for name, text in sql.items():
        text = text.format(t=prefix, i=index_prefix, lock=lock)
        if placeholder != "?":
            text = text.replace("?", placeholder)
        out[name] = text
    return out


# Journal records waiting for one commit: (row parameters, the future its step awaits).
Batch: TypeAlias = "list[tuple[tuple[object, ...], asyncio.Future[StepRecord | None]]]"


def settle(
    batch: Batch,
    results: list[StepRecord | None] | None = None,
    error: BaseException | None = None,
) -> None:
    """Hand each waiting step its record's outcome (or the error)."""
    for i, (_, done) in enumerate(batch):
        if done.done():
            continue  # its step was cancelled while waiting: the row is written anyway
        if error is not None:
            done.set_exception(error)
        else:
            assert results is not None
            done.set_result(results[i])


def _record(row: Sequence[Any]) -> StepRecord:
    """A journal row (name, ok, value, error_type, error_message, input_digest) as a
    StepRecord."""
    record: StepRecord
    if row[1]:
        record = {"name": row[0], "ok": True, "value": loads(row[2])}
    else:
        record = {
            "name": row[0],
            "ok": False,
            "error_type": row[3] or "Exception",
            "error_message": row[4] or "",
        }
    if row[5]:
        record["input_digest"] = row[5]
    return record


def _command(row: Sequence[Any]) -> CommandRecord:
    return {
        "id": int(row[0]),
        "command": row[1],
        "status": row[2],
        "started_at": row[3],
        "completed_at": row[4],
        "inputs": loads(row[5]) or {},
        "outputs": loads(row[6]) or {},
        "context_loaded": [],
        "memory_updated": [],
        "skills_invoked": [],
    }


def _add_items(commands: dict[int, CommandRecord], rows: list[tuple[Any, ...]]) -> None:
    for command_id, kind, item in rows:
        record = commands.get(int(command_id))
        if record is not None:
            cast("list[str]", record[_ITEM_FIELD[kind]]).append(item)  # type: ignore[literal-required]


class SqlStore(RunsSql):
    """The journal and session backends over SQL; dialects subclass it.

    A subclass provides :meth:`_execute` (run ``fn(tx)`` in a transaction, or as one
    autocommitted statement when ``tx`` is false) and the DDL substitutions.
    """

    _q: dict[str, str]
    _where: str  # names the database in errors (a file, a schema)
    _relock = False  # claim rows locked after a wait are read again (see RunsSql._fresh)

    def __init__(self, *, lease: float = DEFAULT_LEASE) -> None:
        if not lease > 0:
            msg = f"lease= must be a positive number of seconds (got {shown(lease)})"
            raise ValueError(msg)
        self._lease = float(lease)
        self._info = ProcInfo()
        # This store instance as a lease holder: unique per process and per instance.
        self._proc = f"{self._info.pid:x}-{secrets.token_hex(6)}"
        # (tree_id, owner) -> the tree's records when this owner took the lease.
        self._held: dict[tuple[str, str], dict[str, StepRecord]] = {}
        # The last root id and key that passed check_name (a step checks its key when it
        # claims it and again when it records: the same str object needs no second look).
        self._checked_tree: object = None
        self._checked_key: object = None
        # Claims being taken right now (not in _held yet) and claims whose release failed
        # (the renewer releases them).
        self._claiming: set[tuple[str, str]] = set()
        self._orphans: set[tuple[str, str]] = set()
        # Owners holding per-key claims (session trees) -> how many acquires are open.
        self._key_owners: dict[tuple[str, str], int] = {}
        self._running_commands: set[int] = set()
        _OPEN_PROCS.add(self._proc)
        weakref.finalize(self, _OPEN_PROCS.discard, self._proc)
        self._renewer: asyncio.Task[None] | None = None
        self._closed = False
        # Until when this store's procs row stands without another upsert (written less
        # than half a lease ago; any failed write resets it: its upsert may have rolled
        # back). Claims skip the upsert until then; renewals always write it.
        self._proc_fresh = 0.0

    @property
    def lease(self) -> float:
        """Seconds a claim on a tree lives without renewal before another owner may
        take it over (owners on this machine are checked by pid at once)."""
        return self._lease

    # -- to be provided by a dialect ---------------------------------------------------

    async def _execute(
        self, fn: Callable[[Tx], Awaitable[T]], write: bool, tx: bool, what: object = None
    ) -> T:
        """Run ``fn``; ``what`` is the operation (an ``_op_*`` function, or the SQL text of
        a one-statement operation), described by :meth:`_describe` only when it fails."""
        raise NotImplementedError

    def _describe(self, what: object) -> tuple[str, bool]:
        """What an operation does, for messages, and whether running it again after a
        lost connection is safe (it changes nothing a second time)."""
        if isinstance(what, str):
            name = next((k for k, v in self._q.items() if v == what), "")
            return _QUERY_TEXT.get(name, "a query"), name not in _NOT_RETRYABLE
        name = getattr(what, "__name__", "")
        return _OP_TEXT.get(name, name.removeprefix("_op_").replace("_", " ") or "an operation"), (
            name not in _NOT_RETRYABLE
        )

    # -- running operations ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            msg = f"The store {self._where} is closed; open a new one (runtree.stores.from_url)"
            raise StoreError(msg)

    async def _read(
        self, op: Callable[Concatenate[Tx, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        self._check_open()
        what = args[0] if op in _GENERIC else op
        return await self._execute(lambda tx: op(tx, *args, **kwargs), False, True, what)

    async def _write(
        self, op: Callable[Concatenate[Tx, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """A write in one transaction."""
        return await self._write_as(True, op, args, kwargs)

    async def _write1(
        self, op: Callable[Concatenate[Tx, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """A write whose statements need no common transaction (each commits alone). The
        journal record's way (one statement; it writes no procs row, so a failure leaves
        ``_proc_fresh`` as it is): no frame between it and ``_execute``."""
        self._check_open()
        what = args[0] if op in _GENERIC else op
        return await self._execute(lambda tx: op(tx, *args, **kwargs), True, False, what)

    # How a write of statements that need not commit together runs: in one transaction
    # where a commit is what costs (SQLite), one by one where a round trip is (PostgreSQL:
    # a transaction adds two, BEGIN and COMMIT).
    _each_in_one = True

    async def _write_each(
        self, op: Callable[Concatenate[Tx, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """A write whose statements need not commit together: a crash between two of them
        leaves nothing the next writer does not handle (see ``_each_in_one``)."""
        return await self._write_as(self._each_in_one, op, args, kwargs)

    async def _write_as(
        self,
        in_tx: bool,
        op: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        self._check_open()
        what = args[0] if op in _GENERIC else op
        try:
            return await self._execute(lambda tx: op(tx, *args, **kwargs), True, in_tx, what)
        except BaseException:
            self._proc_fresh = 0.0  # its upsert of the procs row may have rolled back
            raise

    async def _read1(
        self, op: Callable[Concatenate[Tx, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        self._check_open()
        what = args[0] if op in _GENERIC else op
        return await self._execute(lambda tx: op(tx, *args, **kwargs), False, False, what)

    def journal_backend(self) -> SqlStore:
        """The journal's view of this store (this object)."""
        return self

    def session_backend(self) -> SqlStore:
        """The sessions' view of this store (this object)."""
        return self

    # -- schema ------------------------------------------------------------------------

    def _ddl(self, version: int) -> list[str]:
        raise NotImplementedError

    async def _op_migrate(self, tx: Tx, found: int) -> None:
        target = schema_version()
        for version in sorted(v for v in MIGRATIONS if found < v <= target):
            for statement in self._ddl(version):
                await tx.execute(statement)
        await tx.execute(self._q["meta_put"], ("application", APPLICATION))
        await tx.execute(self._q["meta_put"], ("schema_version", str(target)))

    def _check_meta(self, meta: dict[str, str]) -> int:
        """The schema version of a runtree database, or a StoreError."""
        if meta.get("application") != APPLICATION:
            msg = (
                f"{self._where} is not a runtree database (its meta table belongs to "
                f"{meta.get('application')!r}); runtree will not change it. "
                "Point the store at another file or schema."
            )
            raise StoreError(msg)
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            version = -1
        if version > schema_version():
            msg = (
                f"{self._where} has runtree schema version {version}, newer than this "
                f"runtree understands ({schema_version()}); upgrade runtree to open it"
            )
            raise StoreError(msg)
        if version < 1:
            msg = f"{self._where} has no valid runtree schema version ({meta!r})"
            raise StoreError(msg)
        return version

    # -- journal backend ---------------------------------------------------------------

    async def journal_load(self, tree_id: str) -> dict[str, StepRecord]:
        check_name(tree_id, "root id")
        rows = await self._read1(_op_all, self._q["j_load"], (tree_id,))
        return {row[0]: _record(row[1:]) for row in rows}

    def journal_held(self, tree_id: str, key: str, owner: str) -> dict[str, StepRecord] | None:
        """The records of a tree ``owner`` holds here (its claim's snapshot), with ``key``
        checked as :meth:`journal_acquire` checks it; ``None`` when not held."""
        snapshot = self._held.get((tree_id, owner))
        if snapshot is not None:
            self._checked_key = check_name(key, "journal key")
            self._checked_tree = tree_id  # (checked when it was claimed)
        return snapshot

    async def journal_acquire(self, tree_id: str, key: str, owner: str) -> StepRecord | None:
        """The recorded outcome of ``key``, or ``None`` once ``owner`` holds the tree.

        The first call of an owner claims the tree (one lease row); later calls cost no
        I/O. While another live owner holds the tree, poll until the key is recorded or
        the tree is free (released, or its holder's lease expired / process died).
        """
        # Checked before anything is written or run: the same rule on every store.
        self._checked_key = check_name(key, "journal key")
        snapshot = self._held.get((tree_id, owner))
        if snapshot is not None:
            return snapshot.get(key)
        check_name(tree_id, "root id")
        if tree_id.startswith(KEYED_TREE_PREFIX):
            return await self._acquire_key(tree_id, key, owner)
        delay = 0.005
        claim = (tree_id, owner)
        self._claiming.add(claim)
        try:
            return await self._acquire_loop(tree_id, key, owner, delay)
        finally:
            self._claiming.discard(claim)

    async def _acquire_loop(
        self, tree_id: str, key: str, owner: str, delay: float
    ) -> StepRecord | None:
        # Most trees are free: a lease row inserted is the claim, and the tree's records
        # are read after it (one statement each; on PostgreSQL without BEGIN/COMMIT).
        state, payload = await self._write_each(self._op_claim_free, tree_id, owner)
        while True:
            if state == "taken":  # a lease row stands: the locked look decides
                state, payload = await self._write(self._op_acquire, tree_id, key, owner)
            if state == "recorded":
                return cast(StepRecord, payload)
            if state == "again":
                state = "taken"  # the holder let go between our claim and our look
                continue
            if state == "owned":
                snapshot = cast("dict[str, StepRecord]", payload)
                self._held[(tree_id, owner)] = snapshot
                self._ensure_renewer()
                return snapshot.get(key)
            if delay == 0.005:
                log.debug("journal %r: key %r waits for owner %s", tree_id, key, payload)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1, self._lease / 4)
            state = "taken"

    async def _op_claim_free(self, tx: Tx, tree_id: str, owner: str) -> tuple[str, object]:
        """Claim a tree no lease row holds: ``("owned", records)``, else ``("taken",
        None)``. The records are read after the claim is in, so none that a former holder
        committed before letting go is missed."""
        q = self._q
        now = time.time()
        await self._upsert_proc(tx, now, renew=False)
        if not await tx.execute(q["l_claim"], (tree_id, owner, self._proc, now)):
            return "taken", None
        rows = await tx.all(q["j_load"], (tree_id,))
        return "owned", {r[0]: _record(r[1:]) for r in rows}

    async def _op_acquire(self, tx: Tx, tree_id: str, key: str, owner: str) -> tuple[str, object]:
        q = self._q
        now = time.time()
        await self._upsert_proc(tx, now, renew=False)
        await tx.execute(q["l_claim"], (tree_id, owner, self._proc, now))
        holder = await tx.one(q["l_holder"], (tree_id,))
        if holder is not None and (holder[0] != owner or holder[1] != self._proc):
            holder = await self._fresh(tx, q["l_holder_now"], (tree_id,), holder)
        if holder is None:
            # PostgreSQL (READ COMMITTED): the holder released between our INSERT … ON
            # CONFLICT DO NOTHING and this SELECT … FOR UPDATE. Try again at once.
            return "again", None
        if holder[0] != owner or holder[1] != self._proc:
            # Held by another owner: a key it recorded already replays without waiting.
            row = await tx.one(q["j_get"], (tree_id, key))
            if row is not None:
                return "recorded", _record(row)
            if self._holder_alive(tree_id, holder, now):
                return "held", holder[0]
            log.info(
                "journal %r: taking over from owner %s (its process is gone or its lease expired)",
                tree_id,
                holder[0],
            )
            await tx.execute(q["l_take"], (owner, self._proc, now, tree_id, holder[0], holder[1]))
        rows = await tx.all(q["j_load"], (tree_id,))
        return "owned", {r[0]: _record(r[1:]) for r in rows}

    async def _acquire_key(self, tree_id: str, key: str, owner: str) -> StepRecord | None:
        """Session trees: claim just ``key`` (one row per key), so commands of one session
        running at once with distinct keys never wait on each other; the same key still
        runs once (the second owner waits for its outcome)."""
        claim = (tree_id, owner)
        self._key_owners[claim] = self._key_owners.get(claim, 0) + 1
        delay = 0.005
        try:
            while True:
                state, payload = await self._write(self._op_acquire_key, tree_id, key, owner)
                if state == "recorded":
                    return cast(StepRecord, payload)
                if state == "owned":
                    self._ensure_renewer()
                    return None
                if state != "again":
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.1, self._lease / 4)
        except BaseException:
            self._drop_key_owner(claim)
            raise

    def _drop_key_owner(self, claim: tuple[str, str]) -> None:
        left = self._key_owners.get(claim, 0) - 1
        if left > 0:
            self._key_owners[claim] = left
        else:
            self._key_owners.pop(claim, None)

    async def _op_acquire_key(
        self, tx: Tx, tree_id: str, key: str, owner: str
    ) -> tuple[str, object]:
        q = self._q
        row = await tx.one(q["j_get"], (tree_id, key))
        if row is not None:
            return "recorded", _record(row)
        now = time.time()
        await self._upsert_proc(tx, now, renew=False)
        await tx.execute(q["k_claim"], (tree_id, key, owner, self._proc, now))
        holder = await tx.one(q["k_holder"], (tree_id, key))
        if holder is not None and (holder[0] != owner or holder[1] != self._proc):
            holder = await self._fresh(tx, q["k_holder_now"], (tree_id, key), holder)
        if holder is None:
            return "again", None  # released between our insert and our look
        if holder[0] == owner and holder[1] == self._proc:
            return "owned", None
        if holder[1] == self._proc:
            alive = (tree_id, holder[0]) in self._key_owners
        else:
            alive = self._holder_alive(tree_id, holder, now)
        if alive:
            return "held", holder[0]
        await tx.execute(q["k_take"], (owner, self._proc, now, tree_id, key, holder[0], holder[1]))
        return "owned", None

    def _holder_alive(self, tree_id: str, holder: Sequence[Any], now: float) -> bool:
        """Is the claim's holder a live owner? This store's own claims are alive while a
        root of this process holds them (not once their release failed: orphans); other
        stores of this process while they are open; others by :func:`proc_alive`."""
        owner, proc = holder[0], holder[1]
        if proc == self._proc:
            return (tree_id, owner) in self._held or (tree_id, owner) in self._claiming
        if holder[2] == HOST_KEY and holder[3] is not None and int(holder[3]) == os.getpid():
            return proc in _OPEN_PROCS
        return proc_alive(holder[2:], now)

    async def _upsert_proc(self, tx: Tx, now: float, *, renew: bool = True) -> None:
        """Write this store's procs row (its liveness for other processes); a claim
        (``renew=False``) skips it while the row written half a lease ago stands."""
        if not renew and now < self._proc_fresh:
            return
        info = self._info
        await tx.execute(
            self._q["p_upsert"], (self._proc, info.host, info.pid, info.start, now + self._lease)
        )
        self._proc_fresh = now + self._lease / 2

    async def journal_record(
        self, tree_id: str, key: str, owner: str, record: StepRecord
    ) -> StepRecord:
        """Insert the outcome unless the key is recorded; return the record that stands.

        Raises:
            StoreError: the root id or key is not a valid name (nothing is written).
            SerializationError: the value is not strict JSON (nothing is written).
        """
        digest = record.get("input_digest") or None
        if record.get("ok"):
            value: str | None = record.get("value_json")  # the journal's text of it
            if value is None:
                try:
                    # The journal checked the value is strict JSON before calling.
                    value = compact(record.get("value"))
                except (TypeError, ValueError, RecursionError):
                    value = dumps(record.get("value"), f"The value of journal key {key!r}")
            name = record.get("name", "")
            stored = await self.journal_record_ok(tree_id, key, owner, name, value, digest)
            return record if stored is None else stored
        # What is recorded must be storable on every store, whatever the error held (a
        # lone surrogate, a NUL): the step's own exception is what its caller gets.
        self._check_ids(tree_id, key, owner)
        params = (
            tree_id,
            key,
            _text(record.get("name", "")),
            0,
            None,
            _text(record.get("error_type", "Exception")) or "Exception",
            _text(record.get("error_message", "")),
            owner,
            time.time(),
            None if digest is None else _text(digest),
        )
        stored = await self._insert_record(params)
        return record if stored is None else stored

    def journal_record_ok(
        self, tree_id: str, key: str, owner: str, name: str, value: str, digest: str | None
    ) -> Awaitable[StepRecord | None]:
        """Insert a success (its value as compact JSON text) unless the key is recorded:
        awaited, ``None`` when inserted, else the record that stands. Raises as
        :meth:`journal_record` does (bad ids before anything is awaited). Not a
        coroutine of its own: the hot path of a journaled step awaits the insert
        directly, one frame less on the way there and back."""
        if tree_id is not self._checked_tree or key is not self._checked_key:
            self._check_ids(tree_id, key, owner)
        # _text(digest) and _text(name), inline for their common case
        if digest is not None and not (digest.isascii() and "\x00" not in digest):
            digest = _text(digest)
        if not (type(name) is str and name.isascii() and "\x00" not in name):
            name = _text(name)
        return self._insert_record(
            (tree_id, key, name, 1, value, None, None, owner, time.time(), digest)
        )

    def _check_ids(self, tree_id: str, key: str, owner: str) -> None:
        """A record's root id and key are valid names (``StoreError`` naming them)."""
        if tree_id is not self._checked_tree:
            # A tree this owner holds was checked when it was claimed (concurrent roots
            # take turns here: the last id checked is rarely this one).
            if (tree_id, owner) not in self._held:
                check_name(tree_id, "root id")
            self._checked_tree = tree_id
        if key is not self._checked_key:
            self._checked_key = check_name(key, "journal key")

    def _insert_record(self, params: tuple[object, ...]) -> Awaitable[StepRecord | None]:
        """Awaited: ``None`` when inserted, else the record that stands."""
        return self._write1(self._op_record, params)

    def _record_args(self, params: tuple[object, ...]) -> tuple[str, tuple[object, ...]]:
        """The statement and parameters that insert a journal record (a dialect may
        write some as constants)."""
        return self._q["j_insert"], params

    async def _op_record(self, tx: Tx, params: tuple[object, ...]) -> StepRecord | None:
        sql, args = self._record_args(params)
        if await tx.execute(sql, args):
            return None
        row = await tx.one(self._q["j_get"], params[:2])
        return None if row is None else _record(row)

    async def _op_records(self, tx: Tx, rows: list[tuple[object, ...]]) -> list[StepRecord | None]:
        """Several records in one transaction (group commit): for each, ``None`` when
        inserted, else the record that stands."""
        return [await self._op_record(tx, params) for params in rows]

    async def journal_release(self, tree_id: str, owner: str) -> None:
        self._held.pop((tree_id, owner), None)
        self._idle_renewer()
        if self._closed or not _valid(tree_id):
            return  # nothing was ever written under an invalid id
        self._key_owners.pop((tree_id, owner), None)
        try:
            await self._write1(self._op_release, tree_id, owner)
        except StoreError:
            # Every step is recorded already; only the claim is left. Never wait on it:
            # this store takes it over for a new root, and its renewer releases it.
            log.warning(
                "journal %r: releasing the claim of owner %s failed; retrying in the background",
                tree_id,
                owner,
                exc_info=True,
            )
            self._orphans.add((tree_id, owner))
            self._ensure_renewer()

    async def journal_delete(self, tree_id: str, pattern: str | None) -> int:
        check_name(tree_id, "root id")
        for (tree, _), snapshot in self._held.items():
            if tree == tree_id:
                for k in [
                    k for k in snapshot if pattern is None or fnmatch.fnmatchcase(k, pattern)
                ]:
                    del snapshot[k]
        return await self._write(self._op_delete, tree_id, pattern)

    async def _op_delete(self, tx: Tx, tree_id: str, pattern: str | None) -> int:
        if pattern is None:
            return await tx.execute(self._q["j_del_all"], (tree_id,))
        keys = [row[0] for row in await tx.all(self._q["j_keys"], (tree_id,))]
        count = 0
        for k in keys:
            if fnmatch.fnmatchcase(k, pattern):
                count += await tx.execute(self._q["j_del_key"], (tree_id, k))
        return count

    # -- keeping claims alive ----------------------------------------------------------

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_loop(), name="runtree:store-lease"
            )

    def _idle_renewer(self) -> None:
        """Nothing left to keep alive: stop renewing now (not a lease/3 later)."""
        task = self._renewer
        busy = self._held or self._running_commands or self._orphans or self._key_owners
        if task is not None and not busy and not task.done():
            try:
                same_loop = task.get_loop() is asyncio.get_running_loop()
            except RuntimeError:
                same_loop = False
            if same_loop:
                task.cancel()
            self._renewer = None

    async def _renew_loop(self) -> None:
        while self._renewing() and not self._closed:
            await asyncio.sleep(self._lease / 3)
            if not self._renewing() or self._closed:
                return
            try:
                mine = await self._write(self._op_renew)
            except Exception:
                log.warning("renewing the lease in %s failed; retrying", self._where, exc_info=True)
                continue
            # Claims in the store that no root of this process holds (a release failed):
            # release them now, so no other owner waits on them.
            for orphan in [m for m in mine if m not in self._held and m not in self._claiming]:
                try:
                    await self._write(self._op_release, *orphan)
                except Exception:
                    log.warning("journal %r: releasing owner %s failed; retrying", *orphan)
                    continue
                log.info("journal %r: released the claim of owner %s", *orphan)
                self._orphans.discard(orphan)
            self._orphans.intersection_update(mine)
            for held in [h for h in self._held if h not in mine]:
                # Our lease lapsed and another owner took the tree: the next keyed step
                # claims it again (and waits while that owner is alive).
                log.warning("journal %r: the claim of owner %s was taken over", *held)
                self._held.pop(held, None)

    def _renewing(self) -> bool:
        return bool(self._held or self._running_commands or self._orphans or self._key_owners)

    async def _op_renew(self, tx: Tx) -> set[tuple[str, str]]:
        await self._upsert_proc(tx, time.time())
        return {(r[0], r[1]) for r in await tx.all(self._q["l_mine"], (self._proc,))}

    async def _op_release(self, tx: Tx, tree_id: str, owner: str) -> None:
        # A session tree holds per-key claims, any other tree one lease (journal_acquire).
        keyed = tree_id.startswith(KEYED_TREE_PREFIX)
        await tx.execute(
            self._q["k_release" if keyed else "l_release"], (tree_id, owner, self._proc)
        )

    async def _op_goodbye(self, tx: Tx) -> None:
        await tx.execute(self._q["l_release_all"], (self._proc,))
        await tx.execute(self._q["k_release_all"], (self._proc,))
        await tx.execute(self._q["p_delete"], (self._proc,))

    async def _stop_renewer(self) -> None:
        task, self._renewer = self._renewer, None
        if task is None or task.done():
            return
        if task.get_loop() is not asyncio.get_running_loop():
            return  # a loop that is gone (a previous asyncio.run) cancelled it already
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def _release_all(self) -> None:
        """On close: drop this instance's claims so other owners go on at once."""
        await self._stop_renewer()
        self._held.clear()
        self._orphans.clear()
        self._key_owners.clear()
        self._running_commands.clear()
        _OPEN_PROCS.discard(self._proc)
        try:
            await self._write(self._op_goodbye)
        except Exception:
            log.warning("releasing claims in %s failed", self._where, exc_info=True)

    # -- session backend ---------------------------------------------------------------

    async def session_create(
        self, session_id: str, project_name: str, project_type: str | None, started_at: str
    ) -> SessionRecord:
        _check_session(session_id, project_name, project_type)
        await self._write(self._op_create, session_id, project_name, project_type, started_at)
        return await self._loaded(session_id)

    async def _op_create(
        self, tx: Tx, session_id: str, project: str, ptype: str | None, started_at: str
    ) -> None:
        for _ in range(10):
            await tx.execute(self._q["s_deactivate"], (project,))
            if await tx.execute(self._q["s_insert"], (session_id, project, ptype, started_at)):
                return
            if await tx.one(self._q["s_row"], (session_id,)) is not None:
                msg = f"session id {session_id!r} exists already in {self._where}"
                raise StoreError(msg)
            # PostgreSQL: a concurrent create won the project's active slot; retire it too.
        msg = f"cannot make a new active session for project {project!r} in {self._where}"
        raise StoreError(msg)

    async def session_get_or_create(
        self, session_id: str, project_name: str, project_type: str | None, started_at: str
    ) -> SessionRecord:
        _check_session(session_id, project_name, project_type)
        found = await self._write(
            self._op_get_or_create, session_id, project_name, project_type, started_at
        )
        return await self._loaded(found)

    async def _op_get_or_create(
        self, tx: Tx, session_id: str, project: str, ptype: str | None, started_at: str
    ) -> str:
        row = await tx.one(self._q["s_active"], (project,))
        if row is not None:
            return str(row[0])
        if await tx.execute(self._q["s_insert"], (session_id, project, ptype, started_at)):
            return session_id
        # Another process created the project's active session meanwhile: use it.
        row = await tx.one(self._q["s_active"], (project,))
        if row is None:  # pragma: no cover - the unique index makes this unreachable
            msg = f"no active session for project {project!r} after a conflicting insert"
            raise StoreError(msg)
        return str(row[0])

    async def _loaded(self, session_id: str) -> SessionRecord:
        record = await self.session_load(session_id)
        if record is None:  # pragma: no cover - just written
            msg = f"session {session_id!r} vanished from {self._where}"
            raise StoreError(msg)
        return record

    async def session_load(self, session_id: str) -> SessionRecord | None:
        check_name(session_id, "session id")
        return await self._read(self._op_load, session_id)

    async def _op_load(self, tx: Tx, session_id: str) -> SessionRecord | None:
        q = self._q
        row = await tx.one(q["s_row"], (session_id,))
        if row is None:
            return None
        record: SessionRecord = {
            "session_id": row[0],
            "project_name": row[1],
            "project_type": row[2],
            "started_at": row[3],
            "ended_at": row[4],
            "active": bool(row[5]),
            "loaded_context": {},
            "loaded_memory": {},
            "shared_data": {},
            "counters": {},
            "command_history": [],
        }
        fields = {"context": "loaded_context", "memory": "loaded_memory", "data": "shared_data"}
        for kind, name, value in await tx.all(q["i_all"], (session_id,)):
            cast("dict[str, object]", record[fields[kind]])[name] = loads(value)  # type: ignore[literal-required]
        for name, n in await tx.all(q["n_all"], (session_id,)):
            record["counters"][name] = int(n)
        record["command_history"] = await self._op_page(tx, session_id, None, HISTORY_PAGE)
        return record

    async def _op_page(
        self, tx: Tx, session_id: str, before: int | None, limit: int | None
    ) -> list[CommandRecord]:
        """Up to ``limit`` commands older than id ``before`` (oldest first)."""
        q = self._q
        rows = await tx.all(
            q["c_page"],
            (session_id, _NO_LIMIT if before is None else before, limit or _NO_LIMIT),
        )
        commands = {c["id"]: c for c in map(_command, reversed(rows))}
        if commands:
            # Items of exactly these commands: command_items is keyed by command id.
            items = await tx.all(q["ci_range"], (min(commands), max(commands)))
            _add_items(commands, items)
        return list(commands.values())

    async def command_page(
        self, session_id: str, before: int | None, limit: int | None
    ) -> list[CommandRecord]:
        """A page of the session's commands older than id ``before`` (oldest first)."""
        check_name(session_id, "session id")
        return await self._read(self._op_page, session_id, before, limit)

    async def session_list(self, project_name: str | None, limit: int | None) -> list[str]:
        n = _NO_LIMIT if limit is None else limit
        if project_name is not None:
            check_name(project_name, "project name")
        if project_name is None:
            rows = await self._read1(_op_all, self._q["s_list"], (n,))
        else:
            rows = await self._read1(_op_all, self._q["s_list_project"], (project_name, n))
        return [str(r[0]) for r in rows]

    async def session_end(self, session_id: str, ended_at: str) -> None:
        check_name(session_id, "session id")
        await self._write1(_op_exec, self._q["s_end"], (ended_at, session_id))

    async def session_put(
        self, session_id: str, kind: ItemKind, name: str, value_json: str, at: str
    ) -> None:
        check_name(session_id, "session id")
        check_name(name, _ITEM_WHAT[kind])
        await self._write1(_op_exec, self._q["i_put"], (session_id, kind, name, value_json, at))

    async def session_item(self, session_id: str, kind: ItemKind, name: str) -> str | None:
        check_name(session_id, "session id")
        check_name(name, _ITEM_WHAT[kind])
        row = await self._read1(_op_one, self._q["i_get"], (session_id, kind, name))
        return None if row is None else str(row[0])

    async def session_count(self, session_id: str, name: str) -> int:
        check_name(session_id, "session id")
        check_name(name, "counter name")
        row = await self._write1(_op_one, self._q["n_add"], (session_id, name))
        return 0 if row is None else int(row[0])

    async def command_start(
        self, session_id: str, command: str, inputs_json: str, started_at: str
    ) -> tuple[int, list[int]]:
        check_name(session_id, "session id")
        check_name(command, "command name")
        result = await self._write(self._op_start, session_id, command, inputs_json, started_at)
        self._running_commands.add(result[0])
        self._ensure_renewer()
        return result

    async def _op_start(
        self, tx: Tx, session_id: str, command: str, inputs_json: str, started_at: str
    ) -> tuple[int, list[int]]:
        q = self._q
        now = time.time()
        interrupted: list[int] = []
        outputs = dumps(
            {
                "error": {
                    "type": "Interrupted",
                    "message": "interrupted: the process running this command died "
                    "before completing it",
                }
            },
            "outputs",
        )
        for row in await tx.all(q["c_running"], (session_id,)):
            if not proc_alive(row[1:], now) and await tx.execute(
                q["c_interrupt"], (started_at, outputs, row[0])
            ):
                interrupted.append(int(row[0]))
        await self._upsert_proc(tx, now, renew=False)
        new = await tx.one(
            q["c_insert"], (session_id, command, started_at, inputs_json, "{}", self._proc)
        )
        assert new is not None
        return int(new[0]), interrupted

    async def command_complete(
        self,
        session_id: str,
        command: str,
        command_id: int | None,
        status: CommandStatus,
        outputs_json: str,
        completed_at: str,
    ) -> CommandRecord | str:
        check_name(session_id, "session id")
        check_name(command, "command name")
        result = await self._write(
            self._op_complete, session_id, command, command_id, status, outputs_json, completed_at
        )
        if not isinstance(result, str):
            self._running_commands.discard(result["id"])
            self._idle_renewer()
        return result

    async def _op_complete(
        self,
        tx: Tx,
        session_id: str,
        command: str,
        command_id: int | None,
        status: CommandStatus,
        outputs_json: str,
        completed_at: str,
    ) -> CommandRecord | str:
        q = self._q
        if command_id is None:
            row = await tx.one(q["c_find_running"], (session_id, command))
            if row is not None:
                command_id = int(row[0])
        if command_id is not None and await tx.execute(
            q["c_complete"], (status, completed_at, outputs_json, command_id, session_id)
        ):
            found = await tx.one(q["c_row"], (command_id,))
            assert found is not None
            record = _command(found)
            _add_items({record["id"]: record}, await tx.all(q["ci_of"], (command_id,)))
            return record
        if command_id is not None:
            # Run again after a lost connection whose first attempt did commit: the same
            # outcome, not "it is not running".
            found = await tx.one(q["c_row"], (command_id,))
            if found is not None and found[2] == status and found[4] == completed_at:
                record = _command(found)
                _add_items({record["id"]: record}, await tx.all(q["ci_of"], (command_id,)))
                return record
        last = await tx.one(q["c_last"], (session_id, command))
        if last is None:
            return "it was never started"
        return f"it is not running (its last run ended with status {last[1]!r})"

    async def command_add(self, command_id: int, kind: CommandItemKind, item: str) -> None:
        check_name(item, f"{kind} name")
        await self._write1(_op_exec, self._q["ci_add"], (command_id, kind, item, time.time_ns()))

    async def command_previous(self, session_id: str, command: str | None) -> CommandRecord | None:
        check_name(session_id, "session id")
        if command is not None:
            check_name(command, "command name")
        return await self._read(self._op_previous, session_id, command)

    async def _op_previous(
        self, tx: Tx, session_id: str, command: str | None
    ) -> CommandRecord | None:
        q = self._q
        if command is None:
            row = await tx.one(q["c_prev"], (session_id,))
        else:
            row = await tx.one(q["c_prev_named"], (session_id, command))
        if row is None:
            return None
        record = _command(row)
        _add_items({record["id"]: record}, await tx.all(q["ci_of"], (record["id"],)))
        return record


async def _op_exec(tx: Tx, sql: str, params: Sequence[object]) -> int:
    return await tx.execute(sql, params)


async def _op_one(tx: Tx, sql: str, params: Sequence[object]) -> tuple[Any, ...] | None:
    return await tx.one(sql, params)


async def _op_all(tx: Tx, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
    return await tx.all(sql, params)


def _text(value: object) -> str:
    """Recorded text every store accepts (see :func:`runtree._json.readable`)."""
    if type(value) is str and value.isascii() and "\x00" not in value:
        return value  # the common case, per journal record: as it is
    return readable(value if isinstance(value, str) else str(value))


def _valid(name: object) -> bool:
    try:
        check_name(name, "name")
    except StoreError:
        return False
    return True


_ITEM_WHAT: dict[str, str] = {
    "context": "context name",
    "memory": "memory name",
    "data": "shared data key",
}


def _check_session(session_id: str, project_name: str, project_type: str | None) -> None:
    check_name(session_id, "session id")
    check_name(project_name, "project name")
    if project_type is not None:
        check_name(project_type, "project type")


_GENERIC = frozenset((_op_exec, _op_one, _op_all))
# Operations that must not run twice when a connection is lost mid-way (the outcome of the
# first attempt is unknown): each inserts a row or counts.
_NOT_RETRYABLE = frozenset(("_op_start", "_op_create", "n_add", "c_insert"))
_OP_TEXT: dict[str, str] = {
    "_op_acquire": "claiming a journal key",
    "_op_claim_free": "claiming a journal key",
    "_op_acquire_key": "claiming a journal key",
    "_op_release": "releasing a tree's claims",
    "_op_record": "recording a journal entry",
    "_op_records": "recording journal entries",
    "_op_delete": "deleting journal entries",
    "_op_renew": "renewing the lease",
    "_op_goodbye": "releasing claims on close",
    "_op_create": "creating a session",
    "_op_get_or_create": "getting or creating a session",
    "_op_load": "loading a session",
    "_op_start": "starting a command",
    "_op_complete": "completing a command",
    "_op_previous": "reading the previous command",
}
_QUERY_TEXT: dict[str, str] = {
    "j_load": "loading a journal",
    "l_release": "releasing a tree's lease",
    "s_list": "listing sessions",
    "s_list_project": "listing sessions",
    "s_end": "ending a session",
    "i_put": "storing a session item",
    "i_get": "reading a session item",
    "n_add": "counting a cache hit or miss",
    "ci_add": "noting what a command used",
}
