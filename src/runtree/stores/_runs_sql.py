"""The SQL behind run trees (DESIGN §7): one ``runs`` row per recorded root, and its
nodes (one per recorded context) written in chunks: one ``run_chunks`` row per root per
flush, holding that flush's node rows as a JSON array. A row in SQLite or PostgreSQL costs
far more than its bytes (≈ 47,000 instructions for an 18-column node row on SQLite, a
fifth of a millisecond on a busy host), and a recorded tree writes a node per exec; a chunk
costs one row per flush. A node written twice (running, then finished) is read from its
last chunk. Databases from before chunks keep their ``run_nodes`` rows, read as well.

Written like :mod:`runtree.stores._sql` (``?`` placeholders, ``{t}``/``{i}`` prefixes, one
coroutine per operation over a :class:`Tx`); :class:`RunsSql` is mixed into every SQL store.
A run's owner is the store instance that runs it (its row in ``procs``): the owner is alive
while that process lives (same machine, checked by pid) or while its lease is renewed
(elsewhere). A ``running`` run whose owner is dead reads as ``interrupted``.
"""

from __future__ import annotations

import binascii
import json
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias, TypeVar

from .._context import _PREFIX
from .._json import compact, quote, readable
from ._base import loads, proc_alive

if TYPE_CHECKING:
    from ._sql import Tx

__all__ = [
    "RUNS_CHUNKS_MIGRATION",
    "RUNS_MIGRATION",
    "RUNS_QUERIES",
    "NodeRow",
    "RunRow",
    "RunsSql",
]

T = TypeVar("T")

RUNS_MIGRATION: tuple[str, ...] = (
    "CREATE TABLE {t}runs (root_id TEXT PRIMARY KEY, tree_id TEXT NOT NULL, "
    "name TEXT NOT NULL, flow TEXT, input TEXT, input_ok INTEGER NOT NULL, "
    "status TEXT NOT NULL, error_type TEXT, error_message TEXT, output TEXT, owner TEXT, "
    "created_at {real} NOT NULL, updated_at {real} NOT NULL, completed_at {real}, "
    "session_id TEXT, command TEXT, cancel_reason TEXT)",
    "CREATE INDEX {i}runs_created ON {t}runs (created_at)",
    "CREATE INDEX {i}runs_status ON {t}runs (status, created_at)",
    "CREATE INDEX {i}runs_flow ON {t}runs (flow, created_at)",
    "CREATE INDEX {i}runs_owner ON {t}runs (owner, status)",
    "CREATE INDEX {i}runs_session ON {t}runs (session_id)",
    "CREATE TABLE {t}run_nodes (root_id TEXT NOT NULL, node_id TEXT NOT NULL, "
    "seq {bigint} NOT NULL, parent_id TEXT, name TEXT NOT NULL, kind TEXT NOT NULL, "
    "key TEXT, attempt INTEGER NOT NULL, status TEXT NOT NULL, started_at {real} NOT NULL, "
    "completed_at {real}, error_type TEXT, error_message TEXT, replayed INTEGER NOT NULL, "
    "input TEXT, output TEXT, tags TEXT, metadata TEXT, PRIMARY KEY (root_id, node_id))",
    "CREATE INDEX {i}run_nodes_seq ON {t}run_nodes (root_id, seq)",
)

RUNS_CHUNKS_MIGRATION: tuple[str, ...] = (
    "CREATE TABLE {t}run_chunks (id {serial}, root_id TEXT NOT NULL, nodes TEXT NOT NULL)",
    "CREATE INDEX {i}run_chunks_root ON {t}run_chunks (root_id, id)",
)
# Node rows per chunk: a flush of more writes several chunks (rows stay small).
NODES_PER_CHUNK = 500

_RUN_COLS = (
    "l.root_id, l.tree_id, l.name, l.flow, l.input, l.input_ok, l.status, l.error_type, "
    "l.error_message, l.output, l.owner, l.created_at, l.updated_at, l.completed_at, "
    "l.session_id, l.command, l.cancel_reason, p.host, p.pid, p.pid_start, p.expires_at"
)
_RUN_FROM = "FROM {t}runs l LEFT JOIN {t}procs p ON p.proc = l.owner"
_NODE_COLS = (
    "node_id, parent_id, name, kind, key, attempt, status, started_at, completed_at, "
    "error_type, error_message, replayed, input, output, tags, metadata"
)


def _list_queries() -> dict[str, str]:
    """One query per combination of filters (status, flow, since), so each can use an
    index: ``r_list_<s><f><d>`` with 1 where the filter is given."""
    out: dict[str, str] = {}
    for s in (0, 1):
        for f in (0, 1):
            for d in (0, 1):
                where = [
                    c
                    for c, on in (
                        ("l.status = ?", s),
                        ("l.flow = ?", f),
                        ("l.created_at >= ?", d),
                    )
                    if on
                ]
                clause = (" WHERE " + " AND ".join(where)) if where else ""
                out[f"r_list_{s}{f}{d}"] = (
                    f"SELECT {_RUN_COLS} {_RUN_FROM}{clause} "
                    "ORDER BY l.created_at DESC, l.root_id DESC LIMIT ?"
                )
    return out


RUNS_QUERIES: dict[str, str] = {
    "r_start": "INSERT INTO {t}runs AS r (root_id, tree_id, name, flow, input, input_ok, "
    "status, owner, created_at, updated_at, session_id, command) "
    "VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?) ON CONFLICT (root_id) DO UPDATE SET "
    "tree_id = excluded.tree_id, name = excluded.name, flow = excluded.flow, "
    "input = excluded.input, input_ok = excluded.input_ok, status = 'running', "
    "error_type = NULL, error_message = NULL, output = NULL, owner = excluded.owner, "
    "updated_at = excluded.updated_at, completed_at = NULL, "
    "session_id = excluded.session_id, command = excluded.command, cancel_reason = NULL",
    # A run that is new (most are): nothing of an earlier attempt to clear or update.
    "r_start_new": "INSERT INTO {t}runs (root_id, tree_id, name, flow, input, input_ok, "
    "status, owner, created_at, updated_at, session_id, command) "
    "VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?) ON CONFLICT (root_id) DO NOTHING",
    "r_nodes_clear": "DELETE FROM {t}run_nodes WHERE root_id = ?",
    "r_chunks_clear": "DELETE FROM {t}run_chunks WHERE root_id = ?",
    "r_chunk_put": "INSERT INTO {t}run_chunks (root_id, nodes) VALUES (?, ?)",
    "r_chunks": "SELECT nodes FROM {t}run_chunks WHERE root_id = ? ORDER BY id",
    # How nodes were written before chunks (kept for tests of databases from then).
    "r_node_put": "INSERT INTO {t}run_nodes AS n (root_id, node_id, seq, parent_id, name, "
    "kind, key, attempt, status, started_at, completed_at, error_type, error_message, "
    "replayed, input, output, tags, metadata) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (root_id, node_id) DO UPDATE SET status = excluded.status, "
    "completed_at = excluded.completed_at, error_type = excluded.error_type, "
    "error_message = excluded.error_message, output = excluded.output, "
    "tags = excluded.tags, metadata = excluded.metadata",
    "r_finish": "UPDATE {t}runs SET status = ?, error_type = ?, error_message = ?, "
    "output = ?, updated_at = ?, completed_at = ?, cancel_reason = NULL "
    "WHERE root_id = ? AND owner = ? AND status = 'running'",
    "r_cancels": "SELECT root_id, cancel_reason FROM {t}runs WHERE owner = ? "
    "AND status = 'running' AND cancel_reason IS NOT NULL",
    "r_row": f"SELECT {_RUN_COLS} {_RUN_FROM} WHERE l.root_id = ?",
    "r_row_lock": f"SELECT {_RUN_COLS} {_RUN_FROM} WHERE l.root_id = ?{{lock}}",
    "r_exists": "SELECT 1 FROM {t}runs WHERE root_id = ?",
    "j_any": "SELECT 1 FROM {t}journal WHERE tree_id = ? LIMIT 1",
    "r_nodes": f"SELECT {_NODE_COLS}, seq FROM {{t}}run_nodes WHERE root_id = ? ORDER BY seq",
    "r_cancel_req": "UPDATE {t}runs SET cancel_reason = ?, updated_at = ? "
    "WHERE root_id = ? AND status = 'running'",
    "r_cancel_now": "UPDATE {t}runs SET status = 'cancelled', error_type = 'Cancelled', "
    "error_message = ?, updated_at = ?, completed_at = ?, cancel_reason = NULL "
    "WHERE root_id = ? AND status = 'running'",
    "r_claim": "UPDATE {t}runs SET owner = ?, status = 'running', error_type = NULL, "
    "error_message = NULL, cancel_reason = NULL, updated_at = ?, completed_at = NULL "
    "WHERE root_id = ?",
    "r_running": f"SELECT {_RUN_COLS} {_RUN_FROM} WHERE l.status = 'running' ORDER BY l.created_at",
    "r_prunable": "SELECT root_id FROM {t}runs WHERE status = ? AND updated_at < ? "
    "ORDER BY updated_at LIMIT ?",
    "r_delete": "DELETE FROM {t}runs WHERE root_id = ?",
    "r_fork_insert": "INSERT INTO {t}runs (root_id, tree_id, name, flow, input, input_ok, "
    "status, owner, created_at, updated_at, error_type, error_message) "
    "VALUES (?, ?, ?, ?, ?, ?, 'running', NULL, ?, ?, NULL, NULL)",
    "j_failed_del": "DELETE FROM {t}journal WHERE tree_id = ? AND ok = 0",
    "j_ordered": "SELECT key, name, ok, value, error_type, error_message, owner, recorded_at "
    "FROM {t}journal WHERE tree_id = ? ORDER BY recorded_at, key",
    "j_copy": "INSERT INTO {t}journal (tree_id, key, name, ok, value, error_type, "
    "error_message, owner, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    **_list_queries(),
}

RunRow: TypeAlias = tuple[Any, ...]
"""A ``runs`` row as :data:`RUNS_QUERIES` selects it, with ``alive`` appended."""
NodeRow: TypeAlias = tuple[Any, ...]
"""A ``run_nodes`` row in ``_NODE_COLS`` order."""

ClaimState: TypeAlias = Literal["claimed", "missing", "running", "completed"]
CancelState: TypeAlias = Literal["missing", "requested", "cancelled", "finished"]


def _with_alive(row: Sequence[Any], now: float) -> RunRow:
    """The run columns, then whether the owner is alive (the proc columns dropped)."""
    return (*row[:17], proc_alive(row[17:21], now))


class RunsSql:
    """Run-tree operations of a SQL store (mixed into ``SqlStore``)."""

    _q: dict[str, str]
    _proc: str
    _where: str
    _relock: ClassVar[bool]  # PostgreSQL: read a claim row again after its lock (_fresh)

    if TYPE_CHECKING:

        @property
        def lease(self) -> float: ...

        async def _upsert_proc(self, tx: Tx, now: float, *, renew: bool = True) -> None: ...

        async def _read(self, op: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T: ...

        async def _write(self, op: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T: ...

        async def _write_each(
            self, op: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
        ) -> T: ...

    @property
    def runs_owner(self) -> str:
        """This store instance as the owner of the runs it records."""
        return self._proc

    # -- recording -----------------------------------------------------------------

    async def runs_start(self, run: Sequence[object]) -> bool:
        """Insert (or restart) a run owned by this store: ``(root_id, tree_id, name,
        flow, input, input_ok, created_at, session_id, command)``. A restarted run loses
        the nodes of its earlier attempt (its journal stays). ``False``: another live
        process runs it (nothing written: a run has one owner)."""
        if await self._write_each(self._op_runs_start_new, run):
            return True
        return await self._write(self._op_runs_restart, run)

    def _run_row(self, run: Sequence[object], now: float) -> tuple[object, ...]:
        """The parameters of ``r_start``/``r_start_new``; a run's name is any str (a
        flow's name), stored as text every store takes."""
        root_id, tree_id, name, flow, input, input_ok, created_at, session_id, command = run
        name = readable(name) if isinstance(name, str) else name
        return (
            root_id, tree_id, name, flow, input, input_ok, self._proc, created_at, now,
            session_id, command,
        )  # fmt: skip

    async def _op_runs_start_new(self, tx: Tx, run: Sequence[object]) -> bool:
        """A new run (most are): one INSERT, nothing of an earlier attempt to clear."""
        now = time.time()
        await self._upsert_proc(tx, now, renew=False)
        return bool(await tx.execute(self._q["r_start_new"], self._run_row(run, now)))

    async def _op_runs_restart(self, tx: Tx, run: Sequence[object]) -> bool:
        """A run started again (a resume, or the same root id run again): its earlier
        nodes go, in the transaction that restarts it. Not while another live process
        runs it (``False``)."""
        row = await self._locked_run(tx, str(run[0]))
        if row is not None:
            now = time.time()
            current = _with_alive(row, now)
            if current[6] == "running" and current[10] != self._proc and current[17]:
                return False
        await tx.execute(self._q["r_nodes_clear"], (run[0],))
        await tx.execute(self._q["r_chunks_clear"], (run[0],))
        await tx.execute(self._q["r_start"], self._run_row(run, time.time()))
        return True

    async def runs_write(
        self,
        nodes: Sequence[NodeRow],
        finished: Sequence[Sequence[object]] = (),
        beat: bool = False,
    ) -> list[tuple[str, str]]:
        """Write buffered node rows (``root_id`` first), then final run states
        ``(status, error_type, error_message, output, completed_at, root_id)``; with
        ``beat``, renew this owner's lease. Statements that need not commit together
        (``_write_each``: one transaction on SQLite, one by one on PostgreSQL). Returns the
        cancel requests ``(root_id, reason)`` for runs this store owns."""
        return await self._write_each(self._op_runs_write, nodes, finished, beat)

    async def _op_runs_write(
        self,
        tx: Tx,
        nodes: Sequence[NodeRow],
        finished: Sequence[Sequence[object]],
        beat: bool,
    ) -> list[tuple[str, str]]:
        q = self._q
        await self._put_chunks(tx, self._chunks(nodes), finished)
        if not beat:
            return []
        await self._upsert_proc(tx, time.time())
        asked = await tx.all(q["r_cancels"], (self._proc,))
        return [(str(r[0]), str(r[1])) for r in asked]

    def _chunks(self, nodes: Sequence[NodeRow]) -> list[tuple[object, str]]:
        """The chunk rows ``(root_id, text)`` of buffered node rows: one per root (per
        NODES_PER_CHUNK nodes), a JSON array of a head and the rows in buffer order, each
        without its root_id and its two timestamps (see :func:`_merge` for the format).
        A buffered row is a tuple of the columns; or ``(root_id, text, started_at,
        completed_at)``, a short row already written by the recorder; or ``(root_id,
        texts, times)``, many of them (``times`` two a row)."""
        by_root: dict[object, tuple[list[str], list[float]]] = {}
        for row in nodes:
            got = by_root.get(row[0])
            if got is None:
                got = by_root[row[0]] = ([], [])
            texts, times = got
            if len(row) == 3:
                texts += row[1]
                times += row[2]
                continue
            if len(row) == 4:
                texts.append(row[1])
                times.append(row[2])
                times.append(row[3])
                continue
            started, ended = row[9], row[10]
            times.append(_NAN if started is None else started)
            times.append(_NAN if ended is None else ended)
            texts.append(compact((*row[1:9], *row[11:])))
        # A chunk's head holds this process's id prefix (a node's id, or its parent's,
        # written as a number n is the context id f"{prefix}-{n}") and the rows' times.
        head = f'{{"p":{quote(_PREFIX)},"t":"'
        return [
            (
                root_id,
                f'[{head}{_times_text(times[2 * start : 2 * (start + NODES_PER_CHUNK)])}"}},'
                f"{','.join(texts[start : start + NODES_PER_CHUNK])}]",
            )
            for root_id, (texts, times) in by_root.items()
            for start in range(0, len(texts), NODES_PER_CHUNK)
        ]

    async def _put_chunks(
        self, tx: Tx, chunks: list[tuple[object, str]], finished: Sequence[Sequence[object]]
    ) -> None:
        """Insert the chunk rows in their order, then the final run states."""
        q = self._q
        for root_id, text in chunks:
            await tx.execute(q["r_chunk_put"], (root_id, text))
        now = time.time()
        for state in finished:
            await tx.execute(q["r_finish"], self._finish_args(state, now))

    def _finish_args(self, state: Sequence[object], now: float) -> tuple[object, ...]:
        """The parameters of ``r_finish`` for a final run state ``(status, error_type,
        error_message, output, completed_at, root_id)``."""
        status, etype, emsg, output, completed_at, root_id = state
        return (status, etype, emsg, output, now, completed_at, root_id, self._proc)

    # -- reading -------------------------------------------------------------------

    async def runs_list(
        self, status: str | None, flow: str | None, since: float | None, limit: int
    ) -> list[RunRow]:
        """Runs newest first; ``status`` may be ``running`` or ``interrupted`` (both are
        ``running`` rows, told apart by the owner's liveness)."""
        return await self._read(self._op_runs_list, status, flow, since, limit)

    async def _op_runs_list(
        self, tx: Tx, status: str | None, flow: str | None, since: float | None, limit: int
    ) -> list[RunRow]:
        live = status in ("running", "interrupted")
        stored = "running" if live else status
        name = f"r_list_{int(stored is not None)}{int(flow is not None)}{int(since is not None)}"
        params: list[object] = [p for p in (stored, flow, since) if p is not None]
        now = time.time()
        if not live:
            rows = await tx.all(self._q[name], (*params, limit))
            return [_with_alive(r, now) for r in rows]
        # Liveness is decided here, not in SQL: read running rows until enough match.
        want_alive = status == "running"
        out: list[RunRow] = []
        batch = max(limit, 50)
        while True:
            rows = await tx.all(self._q[name], (*params, batch))
            out = [r for r in (_with_alive(row, now) for row in rows) if r[17] == want_alive]
            if len(out) >= limit or len(rows) < batch:
                return out[:limit]
            batch *= 4

    async def runs_get(self, root_id: str) -> tuple[RunRow, list[NodeRow]] | None:
        return await self._read(self._op_runs_get, root_id)

    async def _op_runs_get(self, tx: Tx, root_id: str) -> tuple[RunRow, list[NodeRow]] | None:
        row = await tx.one(self._q["r_row"], (root_id,))
        if row is None:
            return None
        nodes = await tx.all(self._q["r_nodes"], (root_id,))
        chunks = await tx.all(self._q["r_chunks"], (root_id,))
        return _with_alive(row, time.time()), _merge(nodes, chunks)

    async def runs_orphans(self) -> list[RunRow]:
        """``running`` runs whose owner is dead, oldest first."""
        rows = await self._read(_op_all, self._q["r_running"], ())
        now = time.time()
        return [r for r in (_with_alive(row, now) for row in rows) if not r[17]]

    # -- operating -----------------------------------------------------------------

    async def _fresh(
        self, tx: Tx, sql: str, params: Sequence[object], read: tuple[Any, ...]
    ) -> tuple[Any, ...] | None:
        """A claim row read again after the ``… FOR UPDATE`` that locked it (``read``).
        PostgreSQL (READ COMMITTED) re-checks a row it had to wait for, but keeps the rows
        joined to it (the holder's ``procs`` row) as they were when the statement began:
        a holder that took the claim meanwhile would read as dead and be taken over while
        it runs. A new statement sees what committed before the lock was ours. SQLite
        serializes writers (``BEGIN IMMEDIATE``): ``read`` is fresh already."""
        if not self._relock:
            return read
        return await tx.one(sql, params)

    async def _locked_run(self, tx: Tx, root_id: str) -> tuple[Any, ...] | None:
        """The run's row, locked for this transaction, its owner's liveness as now."""
        row = await tx.one(self._q["r_row_lock"], (root_id,))
        return row if row is None else await self._fresh(tx, self._q["r_row"], (root_id,), row)

    async def runs_cancel(self, root_id: str, reason: str) -> CancelState:
        """Ask the live owner to cancel the run (it reads the request when it renews its
        lease), or mark a run whose owner is dead ``cancelled`` at once. The reason is any
        str: stored as text every store takes."""
        return await self._write(self._op_runs_cancel, root_id, readable(reason))

    async def _op_runs_cancel(self, tx: Tx, root_id: str, reason: str) -> CancelState:
        q = self._q
        row = await self._locked_run(tx, root_id)
        if row is None:
            return "missing"
        now = time.time()
        run = _with_alive(row, now)
        if run[6] != "running":
            return "finished"
        if run[17]:
            await tx.execute(q["r_cancel_req"], (reason, now, root_id))
            return "requested"
        await tx.execute(q["r_cancel_now"], (reason, now, now, root_id))
        return "cancelled"

    async def runs_claim(self, root_id: str, *, orphan_only: bool) -> tuple[ClaimState, RunRow]:
        """Make this store the run's owner so that it can run it again: refused while a
        live owner runs it, and for a completed run. Failed journal entries of the run's
        tree are forgotten (they run again). ``orphan_only``: claim only a ``running``
        run whose owner is dead (what recovery takes)."""
        return await self._write(self._op_runs_claim, root_id, orphan_only)

    async def _op_runs_claim(
        self, tx: Tx, root_id: str, orphan_only: bool
    ) -> tuple[ClaimState, RunRow]:
        q = self._q
        row = await self._locked_run(tx, root_id)
        if row is None:
            return "missing", ()
        now = time.time()
        run = _with_alive(row, now)
        status = run[6]
        if status == "running" and run[17]:
            return "running", run
        if status == "completed" or (orphan_only and status != "running"):
            return "completed" if status == "completed" else "running", run
        await self._upsert_proc(tx, now)
        await tx.execute(q["r_claim"], (self._proc, now, root_id))
        if run[1] == root_id:
            await tx.execute(q["j_failed_del"], (root_id,))
        return "claimed", run

    async def runs_fork(
        self, root_id: str, from_key: str, new_id: str, name: str
    ) -> tuple[Literal["forked", "missing", "no_key", "exists"], int]:
        """Copy the run (flow, input) under ``new_id`` with the journal entries recorded
        before ``from_key``; returns the state and how many entries were copied."""
        return await self._write(self._op_runs_fork, root_id, from_key, new_id, name)

    async def _op_runs_fork(
        self, tx: Tx, root_id: str, from_key: str, new_id: str, name: str
    ) -> tuple[Literal["forked", "missing", "no_key", "exists"], int]:
        q = self._q
        row = await tx.one(q["r_row"], (root_id,))
        if row is None:
            return "missing", 0
        if await tx.one(q["r_exists"], (new_id,)) is not None:
            return "exists", 0
        if await tx.one(q["j_any"], (new_id,)) is not None:
            return "exists", 0  # a tree of that id has a journal (a root run unrecorded)
        entries = await tx.all(q["j_ordered"], (row[1],))
        keys = [e[0] for e in entries]
        if from_key not in keys:
            return "no_key", 0
        kept = entries[: keys.index(from_key)]
        now = time.time()
        await tx.execute(
            q["r_fork_insert"], (new_id, new_id, name, row[3], row[4], row[5], now, now)
        )
        for e in kept:
            await tx.execute(q["j_copy"], (new_id, *e))
        return "forked", len(kept)

    async def runs_prune(self, cutoff: float, statuses: Iterable[str]) -> int:
        """Delete runs (nodes, journal) last updated before ``cutoff``, one transaction
        per run; a ``running`` run with a live owner is never deleted."""
        count = 0
        for status in statuses:
            stored = "running" if status == "interrupted" else status
            if status == "running":
                continue
            while True:
                ids = [
                    str(r[0])
                    for r in await self._read(_op_all, self._q["r_prunable"], (stored, cutoff, 500))
                ]
                done = 0
                for root_id in ids:
                    if await self._write(self._op_prune_one, root_id, stored, cutoff):
                        done += 1
                count += done
                if len(ids) < 500 or not done:
                    break
        return count

    async def _op_prune_one(self, tx: Tx, root_id: str, status: str, cutoff: float) -> bool:
        q = self._q
        row = await self._locked_run(tx, root_id)
        if row is None:
            return False
        run = _with_alive(row, time.time())
        if run[6] != status or run[12] >= cutoff or (status == "running" and run[17]):
            return False
        await tx.execute(q["r_nodes_clear"], (root_id,))
        await tx.execute(q["r_chunks_clear"], (root_id,))
        if run[1] == root_id:  # a session command's journal is the session's: keep it
            await tx.execute(q["j_del_all"], (root_id,))
        await tx.execute(q["r_delete"], (root_id,))
        return True


def _seconds(t: object) -> object:
    """A chunk's timestamp back in seconds (chunks written before held floats)."""
    return t / 1_000_000 if type(t) is int else t


_NAN = float("nan")
_SHORT = (None, None, None, "flow")  # a short row's input, output, key and kind if left out


def _times_text(times: Sequence[float]) -> str:
    """Timestamps (``NaN`` for none) as the base64 of their little-endian IEEE 754
    doubles: the repr of a float costs ≈ 7,000 instructions, a whole microsecond's int a
    third of a node's encoding; these cost the copy of their bytes, and read back
    exactly."""
    return binascii.b2a_base64(struct.pack(f"<{len(times)}d", *times), newline=False).decode(
        "ascii"
    )


def _times_of(text: str) -> list[float | None]:
    data = binascii.a2b_base64(text)
    return [None if t != t else t for t in struct.unpack(f"<{len(data) // 8}d", data)]


def _merge(rows: list[tuple[Any, ...]], chunks: list[tuple[Any, ...]]) -> list[NodeRow]:
    """Node rows in ``_NODE_COLS`` order, in start order, from ``run_nodes`` rows (with
    ``seq`` last) and chunks; a node written more than once is read from its last write.

    A chunk is a JSON array: a head ``{"p": prefix, "t": times}``, then one row per node
    without its root id and timestamps (``times``: see :func:`_times_text`, two a row,
    ``started_at`` then ``completed_at``). A node's id, or its parent's, written as a
    number n is the context id ``f"{prefix}-{n}"``. A row is either every column in
    ``_NODE_COLS`` order with ``seq`` second (``node_id, seq, parent_id, name, kind,
    key, attempt, status, error_type, error_message, replayed, input, output, tags,
    metadata``), or a completed flow written short: ``node_id, seq, parent_id, name``
    and, when any is not null, ``input, output, key``, then ``"fn"`` for a function (its
    kind; a flow's is left out). Chunks written before 2026-12-03
    start with the prefix alone and hold every column, the timestamps in whole
    microseconds (or, before that, as floats with no prefix)."""
    if not chunks:
        return [r[:-1] for r in rows]
    by_id: dict[object, tuple[Any, ...]] = {r[0]: tuple(r) for r in rows}
    for (text,) in chunks:
        for row in _chunk_rows(json.loads(text)):
            by_id[row[0]] = row
    return [r[:-1] for r in sorted(by_id.values(), key=_seq)]


def _chunk_rows(nodes: list[Any]) -> Iterator[tuple[Any, ...]]:
    """A chunk's nodes as ``run_nodes`` rows (``seq`` last), whichever format wrote
    it (see :func:`_merge`)."""
    if nodes and type(nodes[0]) is dict:
        head = nodes.pop(0)
        times = _times_of(head["t"])
        for k, node in enumerate(nodes):
            _prefixed(node, head["p"])
            started, ended = times[2 * k], times[2 * k + 1]
            if len(node) > 8:
                yield (node[0], *node[2:8], started, ended, *node[8:], node[1])
                continue
            values: list[Any] = [*node[4:], *_SHORT[len(node) - 4 :]]
            value, output, key, kind = values
            yield (
                node[0], node[2], node[3], kind, key, 1, "completed", started, ended,
                None, None, 0, value, output, None, None, node[1],
            )  # fmt: skip
        return
    # Before 2026-12-03: every column, the two timestamps (8, 9) in whole microseconds
    # after the writer's id prefix, or float seconds with no prefix before that.
    prefix = nodes.pop(0) if nodes and type(nodes[0]) is str else None
    for node in nodes:
        if prefix is not None:
            _prefixed(node, prefix)
        yield (node[0], *node[2:8], _seconds(node[8]), _seconds(node[9]), *node[10:], node[1])


def _prefixed(node: list[Any], prefix: str) -> None:
    """A node's id and its parent's written as numbers, as the writer's context ids."""
    if type(node[0]) is int:
        node[0] = f"{prefix}-{node[0]}"
    if type(node[2]) is int:
        node[2] = f"{prefix}-{node[2]}"


def _seq(row: tuple[Any, ...]) -> int:
    return int(row[-1])


async def _op_all(tx: Tx, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
    return await tx.all(sql, params)


def decode(text: str | None) -> object:
    """A stored JSON column."""
    return loads(text)
