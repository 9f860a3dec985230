"""PostgresStore: a store shared by many machines (psycopg 3, async).

psycopg is imported when a PostgresStore is built, never by ``import runtree`` or
``import runtree.stores``; without it the constructor raises a :class:`StoreError` that
says what to install.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import select
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from .._journal import StepRecord
from .._json import compact, shown
from ..errors import StoreError
from ._base import DEFAULT_LEASE
from ._secrets import passwords, redact, unencoded_userinfo, without_passwords
from ._sql import MIGRATIONS, QUERIES, Batch, SqlStore, Tx, prepare, schema_version, settle
from ._sql import _record as _stored

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.pq.abc import PGresult

__all__ = ["PostgresStore"]

log = logging.getLogger("runtree")

T = TypeVar("T")

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_INSTALL = "pip install 'runtree[postgres]'"


class _PgTx:
    """:class:`Tx` over a psycopg async connection."""

    __slots__ = ("conn", "hot")

    def __init__(self, conn: AsyncConnection[Any], hot: dict[str, _Statement]) -> None:
        self.conn = conn
        self.hot = hot  # statements every step or root runs: see _Statement

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        statement = self.hot.get(sql)
        if statement is not None:
            return (await statement.run(self.conn, params)).command_tuples or 0
        cur = await self.conn.execute(sql, params)
        return cur.rowcount

    async def inserted(self, sql: str, params: Sequence[object]) -> tuple[int, PGresult]:
        """A hot ``INSERT … RETURNING``: its row count and its result, whose rows are
        read only when some row was not inserted."""
        res = await self.hot[sql].run(self.conn, params)
        return res.command_tuples or 0, res

    async def one(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        cur = await self.conn.execute(sql, params)
        row = await cur.fetchone()
        return None if row is None else tuple(row)

    async def all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        statement = self.hot.get(sql)
        if statement is not None:
            res = await statement.run(self.conn, params)
            rows = []
            for i in range(res.ntuples):
                values = (res.get_value(i, j) for j in range(res.nfields))
                rows.append(tuple(None if v is None else v.decode() for v in values))
            return rows
        cur = await self.conn.execute(sql, params)
        return [tuple(r) for r in await cur.fetchall()]


# Connection -> names of the statements prepared on it (a connection dies with its names).
_PREPARED: weakref.WeakKeyDictionary[AsyncConnection[Any], set[bytes]] = weakref.WeakKeyDictionary()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _ready(conn: AsyncConnection[Any], write: bool) -> None:
    loop = asyncio.get_running_loop()
    fd = conn.pgconn.socket
    fut = loop.create_future()
    if write:
        loop.add_writer(fd, _wake, fut)
        try:
            await fut
        finally:
            loop.remove_writer(fd)
    else:
        loop.add_reader(fd, _wake, fut)
        try:
            await fut
        finally:
            loop.remove_reader(fd)


class _Statement:
    """A statement every step or every root runs (``_HOT``), run through psycopg's libpq
    binding (``psycopg.pq``) instead of a cursor: prepared once per connection,
    parameters sent as text, one wait for the answer. A cursor's ``execute`` costs ≈ 2x
    the CPU of this on the loop (its lock, query conversion, adapters and generic waits).
    Errors are psycopg's own exceptions, so the store handles them exactly as a
    cursor's."""

    __slots__ = ("_psycopg", "name", "sql", "text")

    def __init__(self, psycopg: Any, text: str) -> None:
        self._psycopg = psycopg
        self.text = text  # with psycopg's placeholders, for the cursor's way
        parts = text.split("%s")
        numbered = parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))
        self.sql = numbered.encode()
        self.name = b"runtree_" + hashlib.sha1(self.sql).hexdigest()[:16].encode()

    def encode(self, params: Sequence[object]) -> list[bytes | None] | None:
        """The parameters as libpq text; ``None`` when one cannot go that way (libpq
        would cut a text parameter at a NUL byte: the cursor path rejects it instead)."""
        out: list[bytes | None] = []
        for value in params:
            if value is None:
                out.append(None)
                continue
            if isinstance(value, str):  # (an AutoId id too)
                data = value.encode()
            elif type(value) is int:
                data = b"%d" % value
            elif type(value) is float:
                data = repr(value).encode()
            else:
                return None
            if b"\0" in data:
                return None
            out.append(data)
        return out

    async def run(self, conn: AsyncConnection[Any], params: Sequence[object]) -> PGresult:
        data = self.encode(params)
        if data is None:
            # The cursor's way, with its adapters and their errors.
            cur = await conn.execute(self.text, params)
            assert cur.pgresult is not None
            return cur.pgresult
        # Sent before the first await, as a cursor does: a cancellation that lands
        # while the answer is awaited finds the statement on its way (it commits).
        prepared = _PREPARED.get(conn)
        if prepared is not None and self.name in prepared:
            conn.pgconn.send_query_prepared(self.name, data)
            return (await self._results(conn))[-1]
        conn.pgconn.send_query_params(self.sql, data)
        result = (await self._results(conn))[-1]
        # First use on this connection: prepare it for the next (one more round trip).
        conn.pgconn.send_prepare(self.name, self.sql)
        await self._results(conn)
        _PREPARED.setdefault(conn, set()).add(self.name)
        return result

    async def _results(self, conn: AsyncConnection[Any]) -> list[PGresult]:
        pg = conn.pgconn
        e = self._psycopg.errors
        try:
            while pg.flush():
                await _ready(conn, True)
            results: list[PGresult] = []
            while True:
                while pg.is_busy():
                    await _ready(conn, False)
                    pg.consume_input()
                res = pg.get_result()
                if res is None:
                    break
                results.append(res)
        except OSError as exc:
            raise e.OperationalError("connection socket closed") from exc
        ok = self._psycopg.pq.ExecStatus
        for res in results:
            if res.status not in (ok.COMMAND_OK, ok.TUPLES_OK):
                raise e.error_from_result(res, encoding=conn.info.encoding)
        if not results:
            raise e.OperationalError("no result from the server")
        return results


DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_RECONNECT = 15.0
WRITERS = 2  # journal records (or batches of them) on their way at once


def _alive(conn: AsyncConnection[Any]) -> bool:
    """Is an idle connection still usable? A server that restarted or terminated the
    backend has closed the socket (or sent a final error): it reads as ready."""
    if conn.closed:
        return False
    try:
        fd = conn.pgconn.socket
        ready, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError, Exception):
        return False
    return not ready


# Run by every step (the journal record, alone or batched) or every root (its claim, its
# run row, its node chunks, its release), each for its row count or text columns.
_HOT = (
    "j_insert", "j_insert_json", "p_upsert", "l_claim", "l_release", "k_release",
    "r_start_new", "r_chunk_put", "r_finish", "r_chunks_json", "r_close_json",
)  # fmt: skip

# Node chunks of several runs in one statement (a JSON array of [root_id, text] in write
# order, which their ids keep), and with them a run's final state (a root's close): one
# round trip instead of one per chunk and one for the state.
_CHUNKS_JSON = (
    "INSERT INTO {t}run_chunks (root_id, nodes) SELECT r->>0, r->>1 "
    "FROM jsonb_array_elements(?::jsonb) WITH ORDINALITY AS e(r, n) ORDER BY n"
)
_PG_QUERIES = {
    "r_chunks_json": _CHUNKS_JSON,
    "r_close_json": f"WITH c AS ({_CHUNKS_JSON}) {QUERIES['r_finish']}",
}


class PostgresStore(SqlStore):
    """A store in a PostgreSQL database, shared by processes on many machines.

    Args:
        dsn: A libpq connection string or ``postgresql://`` URL.
        schema: The schema holding runtree's tables (created and migrated on first use).
        lease: Seconds a claim on a context tree lives without renewal; a holder on
            another machine that died is taken over after it.
        pool_size: Connections this store opens at most, kept open for reuse; an
            operation that finds them all in use waits for one (default 8).
        connect_timeout: Seconds to wait for one connection attempt (default 10).
        timeout: Seconds one store operation (one transaction: a claim, a record, a
            session write) may take, waiting for row locks included (default 30). Past it
            the connection is dropped and a :class:`StoreError` names the operation; a
            frozen server never hangs a step.
        reconnect: Seconds to keep trying to connect (with backoff: 0.1 s doubling to 2 s)
            when the server refuses connections, e.g. while it restarts (default 15; 0:
            one attempt). Idle connections the server closed are replaced first.
        create: ``False``: use only an existing runtree schema (a reader's way): a schema
            without runtree's tables is a ``StoreError``, and nothing is created.

    The password is never shown: ``repr``, :attr:`dsn`, :attr:`url`, errors and logs
    mask it in every form a DSN takes (URL, ``?password=``, ``password=`` conninfo).

    Raises:
        StoreError: psycopg is missing (``pip install 'runtree[postgres]'``), the schema
            name is invalid, or (on first use) the server cannot be reached or the
            schema holds another application's tables.

    .. versionadded:: 0.1
    """

    _relock = True  # see RunsSql._fresh
    _each_in_one = False  # see SqlStore._write_each
    _ddl_types: ClassVar[dict[str, str]] = {
        "serial": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        "real": "DOUBLE PRECISION",
        "bigint": "BIGINT",
    }

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "runtree",
        lease: float = DEFAULT_LEASE,
        pool_size: int = 8,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
        reconnect: float = DEFAULT_RECONNECT,
        create: bool = True,
    ) -> None:
        super().__init__(lease=lease)
        self._create = create
        for name, value, low in (
            ("connect_timeout", connect_timeout, 0.0),
            ("timeout", timeout, 0.0),
            ("reconnect", reconnect, -1.0),
        ):
            if not isinstance(value, (int, float)) or not value > low:
                bound = ">= 0" if low < 0 else "> 0"
                msg = (
                    f"PostgresStore {name}= must be a number of seconds {bound} "
                    f"(got {shown(value)})"
                )
                raise StoreError(msg)
        if type(pool_size) is not int or pool_size < 1:
            msg = f"PostgresStore pool_size= must be an int >= 1 (got {shown(pool_size)})"
            raise StoreError(msg)
        try:
            import psycopg
        except ImportError as exc:
            msg = f"PostgresStore needs psycopg 3, which is not installed: {_INSTALL}"
            raise StoreError(msg) from exc
        self._psycopg = psycopg
        if not _SCHEMA_NAME.match(schema):
            msg = (
                f"PostgresStore schema must be a plain identifier (letters, digits, _; "
                f"got {shown(schema)})"
            )
            raise StoreError(msg)
        if unencoded_userinfo(dsn):
            msg = (
                f"PostgresStore: the user info of {redact(dsn)!r} holds a '/', '?', '#' or "
                "space: percent-encode the password in the URL "
                "(urllib.parse.quote(password, safe='')), or pass it in PGPASSWORD"
            )
            raise StoreError(msg)
        self._dsn = dsn
        self._secrets = passwords(dsn)
        self.schema = schema
        self._where = f"PostgreSQL schema {schema!r} at {redact(dsn)}"
        self._q = prepare(
            {**QUERIES, **_PG_QUERIES},
            prefix=f'"{schema}".',
            index_prefix="",
            placeholder="%s",
            lock=" FOR UPDATE OF l",
        )
        # The statements of every step and every root skip the cursor (see _Statement);
        # what they return is read as text, so only statements returning text columns
        # (or run for their row count) belong here.
        self._hot = {self._q[name]: _Statement(psycopg, self._q[name]) for name in _HOT}
        self._pool_size = pool_size
        self._connect_timeout = float(connect_timeout)
        self._timeout = float(timeout)
        self._reconnect = float(reconnect)
        self._idle: list[AsyncConnection[Any]] = []
        self._busy: set[AsyncConnection[Any]] = set()  # taken by an operation
        self._connecting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = False
        # Group commit: while WRITERS journal records (or batches) are on their way, the
        # records of other steps queue and are written together, in one statement, by
        # the next writer that comes free.
        self._writing = 0
        self._queued: Batch = []
        self._batchers: set[asyncio.Task[None]] = set()  # (the loop keeps weak references)
        self._drained: asyncio.Future[None] | None = None  # aclose waits: no record left

    @property
    def dsn(self) -> str:
        """The connection string with its password masked."""
        return redact(self._dsn)

    @property
    def timeout(self) -> float:
        """Seconds one store operation may take (see the class docs)."""
        return self._timeout

    @property
    def url(self) -> str:
        """A URL for :func:`runtree.stores.from_url`, without the password (supply it
        with ``PGPASSWORD`` or ``~/.pgpass``)."""
        base = without_passwords(self._dsn)
        extra = []
        if self.schema != "runtree":
            extra.append(f"schema={self.schema}")
        if self._lease != DEFAULT_LEASE:
            extra.append(f"lease={self._lease:g}")
        if self._timeout != DEFAULT_TIMEOUT:
            extra.append(f"timeout={self._timeout:g}")
        if extra and "://" in base:
            base += ("&" if "?" in base else "?") + "&".join(extra)
        return base

    def __repr__(self) -> str:
        return f"PostgresStore({redact(self._dsn)!r}, schema={self.schema!r})"

    def _ddl(self, version: int) -> list[str]:
        prefix = f'"{self.schema}".'
        return [s.format(t=prefix, i="", **self._ddl_types) for s in MIGRATIONS[version]]

    # -- connections -------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        text = redact(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def _connect(self) -> AsyncConnection[Any]:
        """A new connection; while the server refuses (a restart), try again with backoff
        for up to ``reconnect`` seconds."""
        deadline = time.monotonic() + self._reconnect
        delay = 0.1
        while True:
            msg = ""
            try:
                async with asyncio.timeout(self._connect_timeout):
                    return await self._psycopg.AsyncConnection.connect(
                        self._dsn,
                        autocommit=True,
                        connect_timeout=max(1, int(self._connect_timeout + 0.999)),
                    )
            except (self._psycopg.Error, TimeoutError) as exc:
                left = deadline - time.monotonic()
                if left <= 0 or not _transient(exc, self._psycopg):
                    detail = (
                        f"no answer within {self._connect_timeout:g}s (connect_timeout=)"
                        if isinstance(exc, TimeoutError)
                        else self._scrub(str(exc).strip())
                    )
                    tried = (
                        f" (tried for {self._reconnect:g}s, reconnect=)" if self._reconnect else ""
                    )
                    msg = (
                        f"Cannot connect to PostgreSQL at {redact(self._dsn)}: {detail}{tried}. "
                        "Check the DSN (host, port, user, database) and that the server is "
                        "running."
                    )
            if msg:
                # Raised outside the except block: the driver's error (its message may
                # hold the DSN) is not even kept as __context__.
                raise StoreError(msg)
            log.warning(
                "PostgreSQL at %s refused a connection; retrying in %.1fs",
                redact(self._dsn),
                min(delay, left),
            )
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)

    async def _take(self) -> AsyncConnection[Any]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Connections belong to the loop that made them: drop those of an old loop.
            for conn in self._idle:
                conn.pgconn.finish()
            self._idle.clear()
            self._busy.clear()
            self._waiters.clear()
            self._connecting = 0
            self._loop = loop
        while True:
            while self._idle:
                conn = self._idle.pop()
                if _alive(conn):
                    self._busy.add(conn)
                    return conn
                conn.pgconn.finish()  # the server closed it (a restart, a terminated backend)
            if len(self._busy) + self._connecting < self._pool_size:
                break
            # Every connection is in use: wait for one rather than open more (a burst of
            # roots must neither exhaust the server's connections nor pay a connect each).
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken, then cancelled: the turn goes to the next one
                else:
                    self._waiters.remove(waiter)
                raise
            self._check_open()
        self._connecting += 1
        try:
            conn = await self._connect()
            if not self._ready:
                await self._migrate(conn)
                self._ready = True
        except BaseException:
            self._wake()  # the slot is free again
            raise
        finally:
            self._connecting -= 1
        self._busy.add(conn)
        return conn

    def _give(self, conn: AsyncConnection[Any]) -> None:
        self._busy.discard(conn)
        if conn.closed or conn.pgconn.transaction_status != self._psycopg.pq.TransactionStatus.IDLE:
            conn.pgconn.finish()
        elif not self._closed:
            self._idle.append(conn)
        else:
            conn.pgconn.finish()
        self._wake()

    def _drop(self, conn: AsyncConnection[Any]) -> None:
        """Close a connection that was in use (broken, or in an unknown state)."""
        self._busy.discard(conn)
        conn.pgconn.finish()
        self._wake()

    def _wake(self) -> None:
        """A connection came free (or a slot to open one): the first waiter takes it."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _execute(
        self, fn: Callable[[Tx], Awaitable[T]], write: bool, tx: bool, what: object = None
    ) -> T:
        deadline = time.monotonic() + self._reconnect
        while True:
            conn = await self._take()
            try:
                return await self._attempt(conn, fn, tx, what)
            except _Lost as lost:
                # The connection broke under the operation. Run it again on a new one
                # when that is safe (it changes nothing twice) and time remains.
                doing, safe = self._describe(what)
                if not safe or time.monotonic() > deadline:
                    outcome = "" if safe else " Its outcome is unknown (it may have committed)."
                    msg = (
                        f"{self._where}: the connection was lost while {doing} "
                        f"({lost.detail}).{outcome} Check the server; the step runs again "
                        "on a re-run unless it was recorded."
                    )
                    raise StoreError(msg) from None
                log.warning("%s: connection lost while %s; retrying", self._where, doing)

    async def _attempt(
        self, conn: AsyncConnection[Any], fn: Callable[[Tx], Awaitable[T]], tx: bool, what: object
    ) -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        expired = False

        def expire() -> None:
            # Close the socket first: psycopg then sees a dead connection at once instead
            # of waiting for a cancel request a frozen server never answers.
            nonlocal expired
            expired = True
            conn.pgconn.finish()
            if task is not None:
                task.cancel()

        timer = loop.call_later(self._timeout, expire)
        try:
            if tx:
                async with conn.transaction():
                    result = await fn(_PgTx(conn, self._hot))
            else:
                result = await fn(_PgTx(conn, self._hot))
        except BaseException as exc:
            timer.cancel()
            if expired:
                self._drop(conn)
                if (
                    task is not None
                    and task.uncancel() > 0
                    and isinstance(exc, asyncio.CancelledError)
                ):
                    raise  # cancelled from outside as well: that wins
                doing = self._describe(what)[0]
                msg = (
                    f"{self._where}: no answer within {self._timeout:g}s while {doing} "
                    "(timeout=); the connection was dropped. The server may be frozen or "
                    "overloaded, or a lock is held too long; raise PostgresStore(timeout=...) "
                    "if the operation is legitimately slow."
                )
                raise StoreError(msg) from None
            if isinstance(exc, self._psycopg.OperationalError) and (
                conn.closed or conn.pgconn.status != self._psycopg.pq.ConnStatus.OK
            ):
                self._drop(conn)
                raise _Lost(self._scrub(str(exc).strip())) from None
            if isinstance(exc, self._psycopg.Error):
                self._drop(conn)
                msg = f"{self._where}: {type(exc).__name__}: {self._scrub(str(exc))}"
                raise StoreError(msg) from None
            if isinstance(exc, Exception):
                self._give(conn)  # the operation's own error: the transaction rolled back
            else:
                self._drop(conn)  # cancelled mid-statement: the state is unknown
            raise
        timer.cancel()
        self._give(conn)
        return result

    async def _insert_record(self, params: tuple[object, ...]) -> StepRecord | None:
        # A writer free: one round trip, in the step's own task. Else queue: the records
        # that gather go together in one statement and one commit (group commit), and
        # each step waits for its own. Two writers, so that the server commits one
        # batch while the steps the other released run on the client (with one, each
        # side waits for the other: one batch of every root in turn).
        if self._writing < WRITERS:
            self._writing += 1
            try:
                return await super()._insert_record(params)
            finally:
                self._writer_done()
        done: asyncio.Future[StepRecord | None] = asyncio.get_running_loop().create_future()
        self._queued.append((params, done))
        return await done

    def _writer_done(self) -> None:
        """A writer is free: it takes the queue on in a task of its own, or, when no
        record is left anywhere, a closing store may go on."""
        self._writing -= 1
        if self._queued:
            self._start_batcher()  # (this writer's place)
        elif not self._writing and self._drained is not None:
            if not self._drained.done():
                self._drained.set_result(None)
            self._drained = None

    def _start_batcher(self) -> None:
        self._writing += 1
        task = asyncio.get_running_loop().create_task(
            self._write_queued(), name="runtree: journal records"
        )
        self._batchers.add(task)
        task.add_done_callback(self._batchers.discard)

    async def _write_queued(self) -> None:
        """Write what queued, batch after batch, until nothing waits. A task of its own,
        so that no waiting step's cancellation stops the others' records."""
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                rows = [params for params, _ in batch]
                try:
                    # One statement: atomic without a transaction (one round trip).
                    stood = await self._write1(self._op_records, rows)
                except Exception as exc:
                    if len(batch) == 1:
                        settle(batch, error=exc)
                        continue
                    # One row the server refuses must not fail the others.
                    for params, done in batch:
                        try:
                            one = await SqlStore._insert_record(self, params)
                        except Exception as each:
                            settle([(params, done)], error=each)
                        else:
                            settle([(params, done)], [one])
                else:
                    settle(batch, stood)
                # One loop turn: the steps just settled run on to their next record,
                # which joins the next batch instead of going alone.
                await asyncio.sleep(0)
        except BaseException as exc:
            # Cancelled (the loop is closing): nobody may wait forever.
            left, self._queued = self._queued, []
            msg = (
                f"{self._where}: the store closed while steps waited for their records; "
                "those steps run again on a re-run (close the store after the roots that "
                "use it)"
            )
            settle(left, error=StoreError(msg))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._writer_done()

    async def _op_records(self, tx: Tx, rows: list[tuple[object, ...]]) -> list[StepRecord | None]:
        if len(rows) == 1:
            return [await self._op_record(tx, rows[0])]
        text = compact(rows)  # an array of rows, each an array of the ten columns
        assert isinstance(tx, _PgTx)
        count, res = await tx.inserted(self._q["j_insert_json"], (text,))
        if count == len(rows):
            return [None] * count  # all inserted: the common case, nothing to read
        inserted = {
            (res.get_value(i, 0).decode(), res.get_value(i, 1).decode())  # type: ignore[union-attr]
            for i in range(res.ntuples)
        }
        out: list[StepRecord | None] = []
        for row in rows:
            if row[:2] in inserted:
                out.append(None)
                continue
            got = await tx.one(self._q["j_get"], row[:2])
            out.append(None if got is None else _stored(got))
        return out

    async def _put_chunks(
        self, tx: Tx, chunks: list[tuple[object, str]], finished: Sequence[Sequence[object]]
    ) -> None:
        if len(finished) > 1 or len(chunks) + len(finished) < 2:
            await super()._put_chunks(tx, chunks, finished)  # one statement at most
            return
        text = compact([[root_id, nodes] for root_id, nodes in chunks])
        if not finished:
            await tx.execute(self._q["r_chunks_json"], (text,))
            return
        await tx.execute(
            self._q["r_close_json"], (text, *self._finish_args(finished[0], time.time()))
        )

    async def _migrate(self, conn: AsyncConnection[Any]) -> None:
        lock_id = int.from_bytes(
            hashlib.sha256(f"runtree:{self.schema}".encode()).digest()[:8], "big", signed=True
        )
        try:
            async with conn.transaction():
                # Serialize creators: two processes may open a new schema at once.
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id,))
                if self._create:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                cur = await conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (self.schema,),
                )
                tables = {str(r[0]) for r in await cur.fetchall()}
                if not tables and not self._create:
                    msg = f"{self._where} holds no runtree store yet (nothing recorded there)"
                    raise StoreError(msg)
                found = 0
                if tables:
                    if "meta" not in tables:
                        shown = ", ".join(sorted(tables)[:5])
                        msg = (
                            f"{self._where} holds tables of another application ({shown}); "
                            "runtree will not change them. Pass PostgresStore(schema=...) "
                            "with a schema of its own."
                        )
                        raise StoreError(msg)
                    cur = await conn.execute(self._q["meta_all"])
                    found = self._check_meta({str(k): str(v) for k, v in await cur.fetchall()})
                if found < schema_version():
                    await self._op_migrate(_PgTx(conn, {}), found)
        except self._psycopg.Error as exc:
            conn.pgconn.finish()
            msg = f"{self._where}: cannot create or check runtree's tables: {self._scrub(str(exc))}"
            raise StoreError(msg) from None
        except BaseException:
            conn.pgconn.finish()
            raise

    async def open(self) -> Self:
        """Connect and create or migrate the schema now (otherwise on first use)."""
        self._check_open()
        self._give(await self._take())
        return self

    async def aclose(self) -> None:
        """Release this store's claims and close its connections. Idempotent."""
        if self._closed:
            return
        if self._writing or self._queued:
            # Records on their way or queued: every one is committed first (a record
            # written alone hands the queue to a batcher only when it is done).
            if self._drained is None:
                self._drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drained)  # (shared by a concurrent aclose)
        if self._ready:
            await self._release_all()
        self._closed = True
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:  # they find the store closed
            if not waiter.done():
                waiter.set_result(None)
        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                await conn.close()
            except Exception:  # pragma: no cover - closing a broken connection
                conn.pgconn.finish()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _Lost(Exception):
    """The connection broke under an operation (internal)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _transient(exc: BaseException, psycopg: Any) -> bool:
    """A connection failure worth retrying (refused, reset, timed out, the server starting
    or shutting down), not a wrong password, database or DSN."""
    if isinstance(exc, TimeoutError):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    text = str(exc).lower()
    permanent = (
        "password authentication failed",
        "authentication",
        "does not exist",
        "no pg_hba.conf entry",
        "invalid connection option",
        "could not translate host name",
        "role ",
    )
    return not any(p in text for p in permanent)
