"""SqliteStore: the embedded default (one file, WAL, many processes on one machine).

Where the calls run (measured; see docs/stores.md): a step's write is one ``INSERT`` that
commits in ≈ 30-45 µs with ``synchronous=NORMAL``, while a hop to a thread costs ≈ 63 µs.
So operations run directly on the event loop's thread, on a connection whose busy timeout
is 0: it never waits for a lock held by another connection. When the database is locked,
the operation is rolled back and re-run on a dedicated thread with its own connection,
which waits up to ``timeout`` seconds. The loop connection never checkpoints the WAL
itself (that fsyncs the database, milliseconds): checkpoints run on the thread. A chain
of direct calls hands the loop to other tasks at least every millisecond.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from time import perf_counter
from types import TracebackType
from typing import Any, ClassVar, Literal, Self, TypeAlias, TypeVar, cast
from urllib.parse import quote

from .._journal import StepRecord
from .._json import shown
from ..errors import StoreError
from ._base import DEFAULT_LEASE
from ._sql import (
    MIGRATIONS,
    QUERIES,
    Batch,
    SqlStore,
    Tx,
    prepare,
    schema_version,
    settle,
)
from ._sql import _record as _stored

__all__ = ["Durability", "SqliteStore"]

log = logging.getLogger("runtree")

T = TypeVar("T")
Durability: TypeAlias = Literal["normal", "full"]

_HEADER = b"SQLite format 3\x00"
# PRAGMA application_id of a runtree database ("RTre"): stamped when runtree creates the
# file; any other non-zero id is another application's file.
APPLICATION_ID = 0x52547265
# Existing files up to this size get a full PRAGMA quick_check when opened (≈ 10 ms per
# MiB); larger ones only the cheap checks (header, size, schema).
QUICK_CHECK_MAX_BYTES = 16 * 1024 * 1024
_PREFIX = "runtree_"
# Loop-connection writes between two checkpoints run on the thread (SQLite's own
# auto-checkpoint would run one inside a commit on the loop every ~1000 pages).
_CHECKPOINT_EVERY = 500
# A checkpoint copies frames while the loop goes on writing (at most this many passes),
# until at most _CHECKPOINT_REST frames are left; only those are copied with writes held.
_CHECKPOINT_PASSES = 3
_CHECKPOINT_REST = 64
_BUSY = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (primary codes)
_PERM, _READONLY, _IOERR, _FULL, _CANTOPEN = 3, 8, 10, 13, 14
# Direct calls on the loop hand it back to other tasks at least this often (seconds).
_YIELD_AFTER = 0.001


class _SqliteTx:
    """:class:`Tx` over a ``sqlite3`` connection: each call finishes before it returns, so
    an operation written as a coroutine never suspends (see :func:`_drive`)."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    async def one(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        rows = self.conn.execute(sql, params).fetchall()
        return rows[0] if rows else None

    async def all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()


def _drive(conn: sqlite3.Connection, fn: Callable[[Tx], Awaitable[T]], write: bool, tx: bool) -> T:
    """Run ``fn`` to completion synchronously, in a transaction when ``tx``."""
    if tx:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        coro = cast("Coroutine[object, None, T]", fn(_SqliteTx(conn)))
        try:
            coro.send(None)
        except StopIteration as stop:
            result: T = stop.value
        else:
            coro.close()
            msg = "a SQLite store operation awaited something other than its connection"
            raise RuntimeError(msg)
        if tx:
            conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _ok_args(params: tuple[object, ...]) -> tuple[object, ...] | None:
    """A successful record's parameters for ``j_insert_ok`` (its constant columns left
    out), or ``None`` for a failure's."""
    if params[3] == 1 and params[5] is None and params[6] is None:
        return (params[0], params[1], params[2], params[4], params[7], params[8], params[9])
    return None


_Queued: TypeAlias = "tuple[Callable[[Tx], Awaitable[Any]], object, asyncio.Future[Any]]"


async def _each(fns: list[Callable[[Tx], Awaitable[Any]]], tx: Tx) -> list[Any]:
    """Run queued writes one after the other in one transaction."""
    return [await fn(tx) for fn in fns]


def _chain(done: asyncio.Future[Any], job: asyncio.Future[Any]) -> None:
    if done.done():
        return
    if job.cancelled():
        done.set_exception(StoreError(_CLOSED_WHILE_WAITING))
    elif (exc := job.exception()) is not None:
        done.set_exception(exc)
    else:
        done.set_result(job.result())


def _is_busy(exc: sqlite3.Error) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _BUSY


def _others_ready() -> bool:
    """Whether other callbacks wait to run in this loop turn (they may add records to
    a batch). Unknown loops (no ``_ready`` queue) say yes: the batch then costs a turn."""
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    return ready is None or len(ready) > 0


_CLOSED_WHILE_WAITING = (
    "the store was closed while steps waited for their records; those steps run again on "
    "a re-run (close the store after the roots that use it)"
)


def _settle_from(batch: Batch, job: asyncio.Future[list[StepRecord | None]]) -> None:
    if job.cancelled():
        settle(batch, error=StoreError(_CLOSED_WHILE_WAITING))
    elif (exc := job.exception()) is not None:
        settle(batch, error=exc)
    else:
        settle(batch, job.result())


class _SqliteEngine(SqlStore):
    """The parts shared by :class:`SqliteStore` and the in-memory store."""

    _ddl_types: ClassVar[dict[str, str]] = {
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "real": "REAL",
        "bigint": "INTEGER",
    }

    def __init__(self, *, lease: float, durability: Durability, timeout: float) -> None:
        super().__init__(lease=lease)
        if durability not in ("normal", "full"):
            msg = f"durability= must be 'normal' or 'full' (got {durability!r})"
            raise ValueError(msg)
        if not timeout >= 0:
            msg = f"timeout= must be a number of seconds >= 0 (got {shown(timeout)})"
            raise ValueError(msg)
        self._durability: Durability = durability
        self._timeout = float(timeout)
        self._q = prepare(QUERIES, prefix=_PREFIX, index_prefix=_PREFIX, placeholder="?", lock="")
        self._insert_sql = self._q["j_insert"]
        self._insert_ok_sql = self._q["j_insert_ok"]
        self._conn: sqlite3.Connection | None = None
        self._offload = False
        self._executor: ThreadPoolExecutor | None = None
        self._tconn: sqlite3.Connection | None = None
        self._writes = 0
        self._checkpoint: Future[None] | None = None  # the last checkpoint (done: over)
        self._checkpointing = False  # its last pass: loop writes queue on the thread
        self._yielded = 0.0
        self._batch: Batch | None = None
        self._writes_queued: list[_Queued] | None = None

    @property
    def durability(self) -> Durability:
        """``"normal"``: survives a crash of the process, a power loss may drop the last
        commits. ``"full"``: every commit is on disk before it returns."""
        return self._durability

    def _ddl(self, version: int) -> list[str]:
        return [s.format(t=_PREFIX, i=_PREFIX, **self._ddl_types) for s in MIGRATIONS[version]]

    def _connect(self, target: str) -> sqlite3.Connection:
        return sqlite3.connect(
            target, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )

    def _pragmas(self, conn: sqlite3.Connection, *, loop: bool) -> None:
        conn.execute(f"PRAGMA synchronous = {self._durability.upper()}")
        if loop:
            # Never block the loop: no waiting for locks (the thread waits instead), and
            # no checkpoint inside a loop commit.
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA wal_autocheckpoint = 0")

    def _open_schema(self, conn: sqlite3.Connection) -> int:
        """The runtree schema version of the database (0: empty), or a StoreError when it
        belongs to another application or a newer runtree. Reads only."""
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        user_version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        objects = {
            (str(row[0]), str(row[1]))
            for row in conn.execute("SELECT type, name FROM sqlite_master")
            if not str(row[1]).startswith("sqlite_")
        }
        foreign = sorted(name for kind, name in objects if not name.startswith(_PREFIX))
        if app_id not in (0, APPLICATION_ID) or user_version or foreign:
            shown = f"application_id {app_id:#x}" if app_id not in (0, APPLICATION_ID) else ""
            if user_version:
                shown += f"{', ' if shown else ''}user_version {user_version}"
            if foreign:
                shown += f"{', ' if shown else ''}objects: {', '.join(foreign[:5])}"
            msg = (
                f"{self._where} is a SQLite database of another application ({shown}); "
                "runtree will not change it. Use another file for the store."
            )
            raise StoreError(msg)
        if not objects:
            if app_id == APPLICATION_ID:
                msg = (
                    f"{self._where} is stamped as a runtree database but holds none of its "
                    "tables; runtree will not change it. Move it away to start afresh."
                )
                raise StoreError(msg)
            return 0
        tables = {name for kind, name in objects if kind == "table"}
        if f"{_PREFIX}meta" not in tables:
            msg = (
                f"{self._where} holds runtree-named objects but no {_PREFIX}meta table; "
                "runtree will not change it. Move it away to start afresh."
            )
            raise StoreError(msg)
        version = self._check_meta(dict(conn.execute(self._q["meta_all"]).fetchall()))
        missing = sorted(_v1_tables() - tables)
        if missing:
            msg = (
                f"{self._where} claims runtree schema version {version} but lacks the "
                f"table(s) {', '.join(missing)}; runtree will not change it. Move it away "
                "to start afresh."
            )
            raise StoreError(msg)
        return version

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Create or migrate the schema under the write lock (another process may be
        doing the same: look again once the lock is held)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = self._open_schema(conn)
            if found < schema_version():
                _drive(conn, lambda tx: self._op_migrate(tx, found), True, False)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- running operations ------------------------------------------------------------

    def _error(self, exc: sqlite3.Error, what: object = None) -> StoreError:
        doing = f" while {self._describe(what)[0]}" if what is not None else ""
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code in _BUSY:
            msg = (
                f"{self._where} stayed locked by another connection for more than "
                f"{self._timeout:g}s{doing} ({exc}); raise SqliteStore(timeout=...) or find "
                "the process holding a long write transaction"
            )
        elif code in (_READONLY, _PERM):
            msg = (
                f"{self._where} cannot be written{doing} ({exc}): the file, its -wal/-shm "
                "files or its folder are read-only for this process, or the file system is "
                "mounted read-only. Give this user write access to the file and its folder, "
                "or point RUNTREE_STORE at a writable place."
            )
        elif code == _FULL:
            msg = (
                f"{self._where}: the disk is full{doing} ({exc}); nothing was half-written "
                "(the transaction rolled back). Free space on that file system, then run "
                "again: recorded steps replay."
            )
        elif code in (_IOERR, _CANTOPEN):
            msg = (
                f"{self._where}: the operating system refused a read or write{doing} "
                f"({exc}); check the disk, the file's permissions and free space."
            )
        else:
            msg = (
                f"{self._where}: {exc}{doing}. The file may be corrupt or not a runtree "
                "database; runtree does not repair or overwrite it: move it away to start "
                "afresh."
            )
        return StoreError(msg)

    async def _execute(
        self, fn: Callable[[Tx], Awaitable[T]], write: bool, tx: bool, what: object = None
    ) -> T:
        if write and self._checkpointing and not self._offload:
            # The checkpoint's last pass (a few frames, ≈ 1-5 ms): wait for it here and
            # write on the loop after it. Sent to the thread instead, writes queue behind
            # it one hop each, and the loop's direct writes then meet the thread's write
            # lock (SQLITE_BUSY), go to the thread too, and so on while writes keep coming.
            await self._checkpoint_done()
        conn = self._conn
        if conn is None:
            self._check_open()
            raise StoreError(f"{self._where} is not open")
        if not (write and (self._offload or self._checkpointing)):
            if write and (self._writes_queued is not None or _others_ready()):
                # Other tasks run in this loop turn: the write joins theirs in one
                # transaction, committed once they had their turn (group commit, as
                # journal records do: see ``_insert_record``).
                loop = asyncio.get_running_loop()
                queued = self._writes_queued
                if queued is None:
                    queued = self._writes_queued = []
                    loop.call_soon(self._commit_writes)
                done: asyncio.Future[Any] = loop.create_future()
                queued.append((fn, what, done))
                return cast(T, await done)
            try:
                result = _drive(conn, fn, write, tx)
            except sqlite3.Error as exc:
                if not (_is_busy(exc) and self._can_thread()):
                    raise self._error(exc, what) from exc
                # Locked by another connection: wait for it on the thread, not here.
            else:
                if write:
                    self._wrote()
                now = perf_counter()
                if now - self._yielded > _YIELD_AFTER:
                    # A chain of direct calls never suspends: let other tasks run.
                    await asyncio.sleep(0)
                    self._yielded = perf_counter()
                return result
        return await asyncio.get_running_loop().run_in_executor(
            self._thread(), self._in_thread, fn, write, tx, what
        )

    def _insert_record(self, params: tuple[object, ...]) -> Awaitable[StepRecord | None]:
        # The hot path of a journaled step. Alone on the loop: one autocommitted INSERT,
        # right here. When other tasks are ready to run in this loop turn, the record
        # joins a batch that commits once, after they had their turn (group commit:
        # SQLite's cost is the commit, not the row); each step still waits for its own
        # record to be committed before it returns: the future handed back, awaited by
        # the step with no coroutine of ours in between.
        conn = self._conn
        if conn is None or self._offload:
            return super()._insert_record(params)
        batch = self._batch
        if batch is None and not self._checkpointing and not _others_ready():
            return self._insert_now(conn, params)
        loop = asyncio.get_running_loop()
        if batch is None:
            batch = self._batch = []
            loop.call_soon(self._commit_batch)
        done: asyncio.Future[StepRecord | None] = loop.create_future()
        batch.append((params, done))
        return done

    async def _insert_now(
        self, conn: sqlite3.Connection, params: tuple[object, ...]
    ) -> StepRecord | None:
        """The record inserted and committed at once (nothing else to share a commit)."""
        sql, args = self._record_args(params)
        try:
            inserted = conn.execute(sql, args).rowcount
        except sqlite3.Error as exc:
            if not (_is_busy(exc) and self._can_thread()):
                raise self._error(exc, sql) from exc
            return await super()._insert_record(params)
        self._wrote()
        now = perf_counter()
        if now - self._yielded > _YIELD_AFTER:
            # A chain of direct calls never suspends: let other tasks run.
            await asyncio.sleep(0)
            self._yielded = perf_counter()
        if inserted:
            return None
        return await super()._insert_record(params)

    def _record_args(self, params: tuple[object, ...]) -> tuple[str, tuple[object, ...]]:
        """The insert of a journal record: a success's without its constant columns (no
        None parameters: see ``j_insert_ok``)."""
        ok = _ok_args(params)
        return (self._insert_sql, params) if ok is None else (self._insert_ok_sql, ok)

    async def _op_records(self, tx: Tx, rows: list[tuple[object, ...]]) -> list[StepRecord | None]:
        # A batch of successes (the common case): one executemany, no statement, cursor
        # or frame per row. A row not inserted (its key was recorded by another owner)
        # is told from ours by its owner and time: our owner records a key once.
        if len(rows) > 1 and type(tx) is _SqliteTx:
            args = [_ok_args(p) for p in rows]
            if None not in args:
                ok = cast("list[tuple[object, ...]]", args)
                if tx.conn.executemany(self._insert_ok_sql, ok).rowcount == len(rows):
                    return [None] * len(rows)
                out: list[StepRecord | None] = []
                for p in rows:
                    got = await tx.one(self._q["j_get_owned"], p[:2])
                    assert got is not None  # inserted just now, or recorded before
                    out.append(None if (got[-2], got[-1]) == (p[7], p[8]) else _stored(got))
                return out
        return await super()._op_records(tx, rows)

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes >= _CHECKPOINT_EVERY:
            self._schedule_checkpoint()

    def _commit_batch(self) -> None:
        """Commit the records gathered in one loop turn in one transaction."""
        batch, self._batch = self._batch, None
        if batch is not None:  # None: committed already (by ``aclose``)
            self._commit(batch)

    def _commit(self, batch: Batch) -> None:
        rows = [params for params, _ in batch]
        conn = self._conn
        if conn is None:
            # Closed meanwhile (``aclose`` commits what is queued when it starts): fail
            # the steps, never open a connection again on a closed store.
            settle(batch, error=StoreError(_CLOSED_WHILE_WAITING))
            return
        if self._checkpointing and not self._offload:
            # The checkpoint's last pass: commit on the loop once it is over (see _execute).
            self._after_checkpoint(partial(self._commit, batch))
            return
        if not self._offload:
            try:
                stood = _drive(conn, lambda tx: self._op_records(tx, rows), True, True)
            except sqlite3.Error as exc:
                if not (_is_busy(exc) and self._can_thread()):
                    if len(batch) > 1:
                        # One row the database refuses must not fail the others: each
                        # on its own, so the error reaches the step that caused it.
                        for one in batch:
                            self._commit([one])
                        return
                    settle(batch, error=self._error(exc, self._insert_sql))
                    return
                # Locked by another connection: wait for it on the thread, not here.
            except Exception as exc:  # anything else reaches the waiting steps: none hangs
                settle(batch, error=exc)
                return
            else:
                self._wrote()
                self._yielded = perf_counter()
                settle(batch, stood)
                return
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(
            self._thread(),
            self._in_thread,
            lambda tx: self._op_records(tx, rows),
            True,
            True,
            self._insert_sql,
        )
        job.add_done_callback(partial(_settle_from, batch))

    def _commit_writes(self) -> None:
        """Commit the writes queued in one loop turn in one transaction."""
        queued, self._writes_queued = self._writes_queued, None
        if queued:  # None: committed already (by ``aclose``)
            self._run_writes(queued)

    def _run_writes(self, queued: list[_Queued]) -> None:
        queued = [item for item in queued if not item[2].done()]  # cancelled: never run
        conn = self._conn
        if conn is None:
            for _, _, done in queued:
                done.set_exception(StoreError(_CLOSED_WHILE_WAITING))
            return
        if self._checkpointing:
            # The checkpoint's last pass: write on the loop once it is over (see _execute).
            self._after_checkpoint(partial(self._run_writes, queued))
            return
        if len(queued) > 1:
            try:
                results = _drive(conn, partial(_each, [fn for fn, _, _ in queued]), True, True)
            except Exception:
                # Rolled back: each on its own, so an error reaches the write that caused
                # it (and a lock held by another connection sends each to the thread).
                pass
            else:
                self._wrote()
                self._yielded = perf_counter()
                for (_, _, done), value in zip(queued, results, strict=True):
                    if not done.done():
                        done.set_result(value)
                return
        for fn, what, done in queued:
            self._run_write(conn, fn, what, done)

    def _run_write(
        self,
        conn: sqlite3.Connection,
        fn: Callable[[Tx], Awaitable[Any]],
        what: object,
        done: asyncio.Future[Any],
    ) -> None:
        try:
            result = _drive(conn, fn, True, True)
        except sqlite3.Error as exc:
            if _is_busy(exc) and self._can_thread():
                job = asyncio.get_running_loop().run_in_executor(
                    self._thread(), self._in_thread, fn, True, True, what
                )
                job.add_done_callback(partial(_chain, done))
                return
            error = self._error(exc, what)
            error.__cause__ = exc
            if not done.done():
                done.set_exception(error)
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
        else:
            self._wrote()
            self._yielded = perf_counter()
            if not done.done():
                done.set_result(result)

    def _can_thread(self) -> bool:
        return False

    async def _commit_waiting(self) -> None:
        """Commit the records waiting for this loop turn's commit, after the writes held
        for a checkpoint's last pass (they run on the loop once it is over)."""
        await self._checkpoint_done()
        self._commit_batch()
        self._commit_writes()

    async def _checkpoint_done(self) -> None:
        """Wait until the checkpoint's last pass is over (loop writes are held for it)."""
        while self._checkpointing and self._checkpoint is not None:
            await asyncio.wrap_future(self._checkpoint)

    def _after_checkpoint(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the loop once the checkpoint's last pass is over."""
        done = self._checkpoint
        assert done is not None  # _checkpointing implies a checkpoint
        loop = asyncio.get_running_loop()

        def over(_: Future[None]) -> None:
            try:
                loop.call_soon_threadsafe(callback)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        done.add_done_callback(over)

    def _thread(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="runtree-sqlite")
        return self._executor

    def _in_thread(
        self, fn: Callable[[Tx], Awaitable[T]], write: bool, tx: bool, what: object = None
    ) -> T:
        conn = self._thread_conn()
        try:
            return _drive(conn, fn, write, tx)
        except sqlite3.Error as exc:
            raise self._error(exc, what) from exc

    def _thread_conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _schedule_checkpoint(self) -> None:
        """Checkpoint the WAL on the thread, in two phases. First, passes copy frames while
        the loop goes on writing (SQLite's PASSIVE mode never blocks a writer). A
        checkpoint racing with writes never copies the frames written meanwhile, and the
        WAL restarts from its beginning only after a checkpoint that copied every frame:
        so the last pass, once few frames are left, runs with the loop's writes held
        (they wait on the loop and run there after it: see ``_execute`` and
        ``_commit``). The loop waits for that short pass only."""
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        self._writes = 0
        done: Future[None] = Future()
        self._checkpoint = done
        loop = asyncio.get_running_loop()
        try:
            self._thread().submit(self._catch_up, loop, done)
        except RuntimeError:  # pragma: no cover - the executor is shut down: closing
            self._checkpoint_over(done)

    def _catch_up(self, loop: asyncio.AbstractEventLoop, done: Future[None]) -> None:
        """The first phase, on the thread: copy frames while the loop writes."""
        try:
            conn = self._thread_conn()
            for _ in range(_CHECKPOINT_PASSES):
                _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if frames - copied <= _CHECKPOINT_REST:
                    break
        except sqlite3.Error:
            log.warning("checkpoint of %s failed", self._where, exc_info=True)
            self._checkpoint_over(done)
            return
        try:
            # Hold the loop's writes from the loop itself: no loop write is half done.
            loop.call_soon_threadsafe(self._hold_writes, done)
        except RuntimeError:  # the loop is closed: nobody writes any more
            self._checkpoint_over(done)

    def _hold_writes(self, done: Future[None]) -> None:
        executor = self._executor
        if self._conn is None or executor is None:
            self._checkpoint_over(done)
            return
        self._checkpointing = True
        try:
            executor.submit(self._last_pass, done)
        except RuntimeError:  # pragma: no cover - the executor is shut down: closing
            self._checkpoint_over(done)

    def _last_pass(self, done: Future[None]) -> None:
        try:
            self._thread_conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            log.warning("checkpoint of %s failed", self._where, exc_info=True)
        finally:
            self._checkpoint_over(done)

    def _checkpoint_over(self, done: Future[None]) -> None:
        self._checkpointing = False
        if not done.done():
            done.set_result(None)

    # -- lifecycle ---------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release this store's claims and close its connections. Idempotent."""
        if self._closed or self._conn is None:
            self._closed = True
            return
        await self._commit_waiting()
        await self._release_all()
        await self._commit_waiting()  # records that came meanwhile
        self._closed = True
        key = getattr(self, "_file", None)
        if key is not None:
            left = _OPEN_FILES.get(key, 1) - 1
            if left:
                _OPEN_FILES[key] = left
            else:
                _OPEN_FILES.pop(key, None)
        conn, self._conn = self._conn, None
        executor, self._executor = self._executor, None
        if executor is None:
            conn.close()
            return
        loop = asyncio.get_running_loop()
        # Closing the last connection checkpoints the WAL (an fsync): do it off the loop.
        await loop.run_in_executor(executor, self._close_conns, conn)
        executor.shutdown(wait=False)

    def _close_conns(self, conn: sqlite3.Connection) -> None:
        tconn, self._tconn = self._tconn, None
        if tconn is not None:
            tconn.close()
        conn.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class SqliteStore(_SqliteEngine):
    """A store in one SQLite file: the embedded default.

    Args:
        path: The database file; missing parent folders are created (mode 0700). A new
            file and its ``-wal``/``-shm`` files get mode 0600.
        durability: ``"normal"`` (default; WAL with ``synchronous=NORMAL``): a commit
            survives a crash of the process, but a power loss or OS crash may drop the
            last commits. ``"full"`` (``synchronous=FULL``): every commit is on disk.
        lease: Seconds a claim on a context tree lives without renewal. A claim is
            renewed every ``lease / 3`` while its root is open; a holder on this machine
            whose process died is taken over at once, one elsewhere after the lease.
        timeout: Seconds to wait for a lock held by another connection (on the store's
            thread; the event loop never waits for a lock).
        offload: Run writes on the store's thread instead of the event loop: the loop
            never waits for a commit, at the price of a thread hop per write (≈ 0.1 ms
            here). Worth it with ``durability="full"`` on a disk whose fsync is slow.
        create: ``False``: open only an existing runtree store (a reader's way): a
            missing file, or one without runtree's tables, is a ``StoreError`` and is
            left as it is.

    Raises:
        StoreError: the file is not SQLite, is corrupt, or belongs to another
            application (it is never overwritten), or it is newer than this runtree.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "normal",
        lease: float = DEFAULT_LEASE,
        timeout: float = 10.0,
        offload: bool = False,
        create: bool = True,
    ) -> None:
        super().__init__(lease=lease, durability=durability, timeout=timeout)
        raw = os.fspath(path)
        if not raw or raw == ":memory:":
            msg = "SqliteStore needs a file path; use InMemoryStore() for a store in memory"
            raise StoreError(msg)
        self.path = Path(raw).expanduser().absolute()
        self._where = f"SQLite database {str(self.path)!r}"
        self._offload = bool(offload)
        if not create and not self.path.is_file():
            msg = f"{self._where} does not exist (nothing recorded there yet)"
            raise StoreError(msg)
        created = _prepare_file(self.path, self._where)
        self._create = create
        try:
            self._open(created)
        except BaseException:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            raise
        self._file = _file_key(self.path)
        _OPEN_FILES[self._file] = _OPEN_FILES.get(self._file, 0) + 1

    @property
    def url(self) -> str:
        params = []
        if self._durability != "normal":
            params.append(f"durability={self._durability}")
        if self._lease != DEFAULT_LEASE:
            params.append(f"lease={self._lease:g}")
        query = ("?" + "&".join(params)) if params else ""
        return f"sqlite:///{quote(str(self.path))}{query}"

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r}, durability={self._durability!r})"

    def _open(self, created: bool) -> None:
        head = b""
        shared = False
        if not created:
            shared = _file_key(self.path) in _OPEN_FILES
        if not created and not shared:
            # (Skipped when another store of this process has the file open: its checks
            # passed, and opening the file here would drop that store's locks on close.)
            _check_header(self.path, self._where)
            # Read before connecting: closing any descriptor of the database file drops
            # every POSIX lock this process holds on it, the connection's too (another
            # process would then take the WAL away from under it).
            with open(self.path, "rb") as f:
                head = f.read(100)
        try:
            conn = self._conn = self._connect(str(self.path))
            # Look before changing anything: a foreign or corrupt file stays as it is (no
            # WAL switch, no table, no stamp before every check passed).
            conn.execute("BEGIN")
            try:
                found = self._open_schema(conn)
                if not created and found and not shared:
                    self._check_integrity(conn, head)
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            if not found and not self._create:
                msg = f"{self._where} holds no runtree store yet (nothing recorded there)"
                raise StoreError(msg)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if not mode or str(mode[0]).lower() != "wal":
                msg = (
                    f"{self._where}: cannot switch to WAL mode (got {mode!r}); "
                    "put the store on a local file system"
                )
                raise StoreError(msg)
            self._pragmas(conn, loop=False)
            conn.execute("PRAGMA journal_size_limit = 67108864")
            if found < schema_version():  # only then take the write lock
                self._migrate(conn)
            elif not conn.execute("PRAGMA application_id").fetchone()[0]:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")  # made by 0.1
            self._pragmas(conn, loop=True)
            self._purge()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        _fix_side_files(self.path)

    def _check_integrity(self, conn: sqlite3.Connection, head: bytes) -> None:
        """A bounded integrity check of an existing file: the size the header (``head``,
        its first 100 bytes) announces is there, and small files (≤
        QUICK_CHECK_MAX_BYTES) pass ``PRAGMA quick_check``."""
        size = os.path.getsize(self.path)
        page_size = int.from_bytes(head[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        # The header's page count is valid when its "valid-for" counter matches the change
        # counter; in WAL mode it is the file as of the last checkpoint.
        pages = int.from_bytes(head[28:32], "big")
        valid = len(head) == 100 and head[92:96] == head[24:28]
        try:
            # A process killed mid-checkpoint can leave the header ahead of the file; the
            # WAL still holds those pages and SQLite finishes the checkpoint: not damage.
            if os.path.getsize(f"{self.path}-wal") > 0:
                valid = False
        except OSError:
            pass
        problem = ""
        if valid and size < page_size * pages:
            problem = f"it is {size} bytes, shorter than its {pages} pages of {page_size}"
        elif size <= QUICK_CHECK_MAX_BYTES:
            try:
                rows = conn.execute("PRAGMA quick_check(3)").fetchall()
            except sqlite3.DatabaseError as exc:
                if _is_busy(exc):
                    raise
                rows = [(str(exc),)]
            if rows != [("ok",)]:
                problem = "; ".join(str(r[0]) for r in rows)
        if problem:
            msg = (
                f"{self._where} is corrupt ({problem}); runtree did not change it. Restore "
                "it from a backup, or move it away to start afresh (recorded steps would "
                "run again)."
            )
            raise StoreError(msg)

    def _purge(self) -> None:
        """Forget lease holders gone for a day (their claims were taken over long ago)."""
        assert self._conn is not None
        try:
            self._conn.execute(self._q["p_purge"], (time.time() - 86400.0,))
        except sqlite3.Error as exc:
            if not _is_busy(exc):
                raise

    def _can_thread(self) -> bool:
        return True

    def _thread_conn(self) -> sqlite3.Connection:
        conn = self._tconn
        if conn is None:
            conn = self._tconn = self._connect(str(self.path))
            self._pragmas(conn, loop=False)
        return conn


def _v1_tables() -> set[str]:
    return {f"{_PREFIX}{t}" for t in ("meta", "procs", "leases", "journal", "sessions", "commands")}


def _make_dirs(folder: Path) -> None:
    """Create ``folder`` and missing parents with mode 0700 (existing ones untouched)."""
    missing: list[Path] = []
    p = folder
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask


def _prepare_file(path: Path, where: str) -> bool:
    """Create the database file with mode 0600 before SQLite opens it; ``True`` when it
    was created here."""
    try:
        _make_dirs(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.is_dir():
            msg = f"{where} is a folder; give the path of a file"
            raise StoreError(msg) from None
        return False
    except OSError as exc:
        msg = f"{where}: cannot create the file ({exc}); check the folder and its permissions"
        raise StoreError(msg) from exc
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        try:
            side = os.open(f"{path}{suffix}", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue  # left by an earlier database of that name; fixed after opening
        os.fchmod(side, 0o600)
        os.close(side)
    return True


# Database files this process has open through a store, by (device, inode), with how many
# stores: opening and closing any descriptor of a file drops every POSIX lock the process
# holds on it, SQLite's too, so a second store of the same file must not read it directly.
_OPEN_FILES: dict[tuple[int, int], int] = {}


def _file_key(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, hash(str(path)))
    return (st.st_dev, st.st_ino)


def _check_header(path: Path, where: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(len(_HEADER))
    except OSError as exc:
        msg = f"{where}: cannot read the file ({exc})"
        raise StoreError(msg) from exc
    if head and head != _HEADER:
        msg = (
            f"{where} is not a SQLite database (it does not start with the SQLite header); "
            "runtree will not overwrite it. Point the store at another file, or move this "
            "one away."
        )
        raise StoreError(msg)


def _fix_side_files(path: Path) -> None:
    """Give the ``-wal``/``-shm`` files the database's owner-only mode (SQLite derives
    theirs from the database file, but a file left by another tool may differ)."""
    try:
        if stat.S_IMODE(os.stat(path).st_mode) & 0o077:
            return  # the user shares the database on purpose: leave the side files alone
        for suffix in ("-wal", "-shm"):
            side = f"{path}{suffix}"
            try:
                if stat.S_IMODE(os.stat(side).st_mode) != 0o600:
                    os.chmod(side, 0o600)
            except FileNotFoundError:
                continue
    except OSError:
        log.debug("cannot set the mode of %s side files", path, exc_info=True)
