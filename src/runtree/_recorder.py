"""Recording run trees (DESIGN §7): the recorder a scope with a store installs.

The recorder is an extension that only wraps execution (``wrap_exec``): with other exec
extensions it is one wrapper among them, and the operation carries what a node needs
(kind, key, attempt, input) while the wrapper sees the outcome. When it is the scope's
only extension (the default with a store) nothing awaits it: the plain exec path's
recorded copy and the keyed lane call :meth:`Recorder.start`, which buffers the child
context itself, and set the child's ``_out`` to the result (or ``FAILED``) when it ends.
Boundaries (roots made with ``create_context`` and nested boundaries) are found through
the parent links of the first exec under them; their closing is seen through an
``on_close`` callback. A replayed step never runs, so the journal path reports it
(:meth:`Recorder.note_replay`).

Writes: the run row is written when the root starts (one transaction: a crash right after
still leaves a run to recover). Node rows are buffered and written by a tick every 100 ms
(with the owner's lease renewal, which also reads cancel requests, every lease / 3) and
always when the root closes. A recording failure is logged and counted, never raised.

The hot path: a recorded exec costs an append to the buffer (the context, or a list
record on the wrapper's path); node ids, names, times, statuses, errors and the JSON of
inputs, outputs, tags and metadata are read from the context and encoded when the buffer
is written (:meth:`Recorder._take`, which writes a completed context's row itself and any
other through :meth:`Recorder._exec_row`). Nodes are numbered in buffer order then, which
is start order. A keyed step's output is the JSON text its journal record holds (encoded
once, for both); another value mutated after its exec ended shows as it is when the node
is written.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from functools import partial
from time import time
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

from ._context import FAILED, PENDING, ExecutionContext, has_given_id
from ._context import _ids as _context_ids
from ._defs import Flow
from ._extensions import ExecOp, Extension
from ._journal import UNCHECKED
from ._json import compact, error_text, problem, quote, shown
from .errors import Cancelled

if TYPE_CHECKING:
    from ._scope import Scope
    from .stores._runs_sql import RunsSql

__all__ = ["RecordMode", "Recorder", "capture", "flow_path", "make_recorder"]

log = logging.getLogger("runtree")

RecordMode: TypeAlias = Literal["durable", "all", "none"]
NodeKind: TypeAlias = Literal["root", "boundary", "flow", "fn", "parallel", "stream"]

FLUSH_EVERY = 0.1  # seconds: node rows are at most this far behind
CUT = "<runtree: cut, {size} bytes of JSON> "
NOT_JSON = "<runtree: not JSON> "
FAILURES_KEY = "runtree.record_failures"

_BIG_INT = 10**18  # ints below this print in at most 19 characters (record_limit >= 64)
# The parallel call whose member tasks run here: (the calling context, the node id).
_parallel: ContextVar[tuple[ExecutionContext, str] | None] = ContextVar(
    "runtree.recorder.parallel", default=None
)
_paths: dict[Flow[Any, Any], str] = {}
# Start order of nodes (any run: only the order matters). Every node is buffered when it
# starts and numbered when the buffer is first written, so the buffer's order is the order.
_seqs = itertools.count(1)
_FN_END = ',"fn"]'  # a short row's end when its node is a function (ctx.run)

# An exec's record is a list (cheaper to build than an object, per exec):
# [context, parent (context or node id), kind, key, attempt, input, seq, run,
#  ended, result, exception]. The plain exec path fills in the last three inline.
_CTX, _PARENT, _KIND, _KEY, _ATTEMPT, _INPUT, _SEQ, _RUN = 0, 1, 2, 3, 4, 5, 6, 7
_ENDED, _RESULT, _EXC = 8, 9, 10
ExecRecord: TypeAlias = list[Any]
ErrorFields: TypeAlias = tuple[str | None, str | None]  # the exception's type and message


def capture(value: object, limit: int) -> str | None:
    """``value`` as stored JSON text: itself when it fits in ``limit`` bytes, else a
    marker string (cut, or not JSON). ``None`` stays SQL NULL."""
    if value is None:
        return None
    text = strict_text(value)
    return not_json(value, limit) if text is None else fit(text, limit)


def strict_text(value: object) -> str | None:
    """``value`` as compact JSON text (ASCII: bytes == characters) when it is strict JSON,
    the rule the journal and sessions apply (a dict key that is not a str, NaN, an int
    beyond 2**53 are not: the encoder would turn them into other JSON), else ``None``."""
    try:
        if problem(value) is not None:
            return None
        return compact(value)
    except Exception:  # whatever stops the check or the encoder: not JSON
        return None


def not_json(value: object, limit: int) -> str:
    """The stored marker of a value the encoder refused: its ``repr``, cut to ``limit``."""
    marker = NOT_JSON + shown(value, None)
    if len(marker) > limit:
        marker = marker[: max(limit, len(NOT_JSON) + 16)]
    return compact(marker)


def fit(text: str, limit: int) -> str:
    """JSON ``text`` (ASCII) as stored: itself when it fits in ``limit`` bytes, else the
    cut marker."""
    if len(text) <= limit:
        return text
    head = CUT.format(size=len(text))
    return compact(head + text[: max(limit - len(head), 16)])


def _id_text(ctx: ExecutionContext) -> str | int:
    """A context's id as a node's JSON writes it: its number alone when it has one (the
    chunk holds the process's id prefix; see ``_runs_sql._merge``), else its id quoted."""
    n = getattr(ctx, "_id", None)  # unset on an inline root
    if n is None:
        n = ctx._id = next(_context_ids)  # as reading ctx.id would have numbered it
    elif type(n) is not int:  # given (str), or made when read (AutoId)
        return quote(n)
    return n


def error_fields(exc: BaseException | None) -> tuple[str | None, str | None]:
    if exc is None:
        return None, None
    return type(exc).__qualname__, error_text(exc)


def flow_path(flow: Flow[Any, Any]) -> str:
    """``module:qualname`` naming the module attribute that holds ``flow``."""
    found = _paths.get(flow)
    if found is not None:
        return found
    factory = flow.factory
    module = getattr(factory, "__module__", None) or "__main__"
    name = getattr(factory, "__qualname__", None) or flow.name
    mod = sys.modules.get(module)
    if mod is not None and getattr(mod, name, None) is not flow:
        for attr, value in list(vars(mod).items()):
            if value is flow:
                name = attr
                break
    path = _paths[flow] = f"{module}:{name}"
    return path


class _Node:
    """One recorded context (or a parallel call, or a replayed step)."""

    __slots__ = (
        "attempt",
        "completed_at",
        "ctx",
        "dirty",
        "error",
        "input",
        "key",
        "kind",
        "metadata",
        "name",
        "node_id",
        "output",
        "parent",
        "replayed",
        "run",
        "seq",
        "started_at",
        "status",
        "tags",
    )

    def __init__(
        self,
        run: _Run,
        ctx: ExecutionContext | None,
        parent: ExecutionContext | str | None,
        kind: NodeKind,
        key: str | None,
        attempt: int,
        input: str | None,
    ) -> None:
        self.run = run
        self.ctx = ctx
        self.parent = parent
        self.kind = kind
        self.key = key
        self.attempt = attempt
        self.input = input
        self.output: str | None = None
        self.status = "running"
        self.completed_at: float | None = None
        self.error: tuple[str | None, str | None] = (None, None)
        self.replayed = 0
        self.tags: str | None = None
        self.metadata: str | None = None
        self.node_id: str | None = None
        self.name: str | None = None
        self.started_at = 0.0
        self.seq: int | None = None  # start order: given when first written
        self.dirty = False

    def row(self) -> tuple[object, ...]:
        ctx = self.ctx
        if self.node_id is None:
            assert ctx is not None
            self.node_id = ctx.id
            self.name = ctx.name
            self.started_at = ctx._started_at
        parent = self.parent
        if parent is not None and not isinstance(parent, str):  # a context, or its id
            parent = self.parent = parent.id
        return (
            self.run.root_id,
            self.node_id,
            self.seq,
            parent,
            self.name,
            self.kind,
            self.key,
            self.attempt,
            self.status,
            self.started_at,
            self.completed_at,
            self.error[0],
            self.error[1],
            self.replayed,
            self.input,
            self.output,
            self.tags,
            self.metadata,
        )


class _Run:
    __slots__ = (
        "boundaries",
        "broken",
        "command",
        "first_direct",
        "flow",
        "input",
        "input_ok",
        "last_direct",
        "name",
        "root",
        "root_id",
        "root_node",
        "root_text",
        "session_id",
        "tree_id",
    )

    def __init__(self, root: ExecutionContext) -> None:
        self.root = root
        self.tree_id = root.id
        self.root_id = self.tree_id
        self.root_text = _id_text(root)  # the root's id as a node's JSON writes it
        self.name = root.name
        self.boundaries: dict[ExecutionContext, _Node] = {}
        self.broken = False
        self.flow: str | None = None
        self.input: str | None = None
        self.input_ok = 1
        self.session_id: str | None = None
        self.command: str | None = None
        # The records of the first and the last exec directly under the root.
        self.last_direct: ExecRecord | ExecutionContext | None = None
        self.first_direct: ExecRecord | ExecutionContext | None = None
        self.root_node: _Node


def _session_command() -> tuple[str, str, int] | None:
    mod = sys.modules.get("runtree.sessions._session")
    if mod is None:
        return None
    found: tuple[str, str, int] | None = mod._running_command()
    return found


class Recorder(Extension):
    """Records the run trees of one scope into its store."""

    def __init__(self, store: RunsSql, mode: RecordMode, limit: int, values: bool) -> None:
        self.store = store
        self.mode = mode
        self.limit = limit
        self.values = values
        # A str this short fits in ``limit`` bytes of JSON whatever it holds (ASCII JSON:
        # at most 12 bytes a character, a surrogate pair's escapes).
        self._short = (limit - 2) // 12
        self.runs: dict[ExecutionContext, _Run] = {}
        self.buffer: list[_Node | ExecRecord | ExecutionContext] = []
        # Execs written while they ran, written again once they have ended: records, and
        # recorded contexts as (context, seq, run).
        self.open: list[ExecRecord | tuple[ExecutionContext, int, _Run]] = []
        # A recorded context's node parent when it is not its parent context (a parallel
        # call's member), and its input when the flow parsed it (the node shows the input
        # as given).
        self._parents: dict[ExecutionContext, str] = {}
        self._ending: dict[ExecutionContext, _Run] = {}  # runs whose last rows are written
        self._inputs: dict[ExecutionContext, object] = {}
        self._keys: dict[ExecutionContext, str] = {}  # a recorded keyed exec's key
        self._owned: dict[str, _Run] = {}  # root id -> the open run recording it
        self.failures = 0
        self._parallels = 0  # parallel calls running (members find theirs in _parallel)
        self._ticker: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._beat_every = max(min(store.lease / 3, 10.0), 0.01)
        self._next_beat = 0.0

    # -- what is recorded ----------------------------------------------------------

    def _wants(self, root: ExecutionContext) -> bool:
        if self.mode == "all":
            return True
        return has_given_id(root)

    def _value(self, value: object) -> str | None:
        if not self.values or value is None:
            return None
        t = type(value)
        # The fast ways give what capture() gives (tests/runs/test_values.py).
        if t is int and -_BIG_INT < value < _BIG_INT:  # type: ignore[operator]
            return int.__repr__(value)
        if t is str and len(value) <= self._short:  # type: ignore[arg-type]
            return quote(value)  # type: ignore[arg-type]
        return capture(value, self.limit)

    # -- the wrapper ---------------------------------------------------------------

    async def wrap_exec(self, next: Callable[[], Awaitable[object]], op: ExecOp) -> object:
        ctx = op.context
        kind = op.kind
        if kind == "execute":
            return await self._exec_root(next, op)
        boundary = ctx._boundary or ctx
        root = boundary._root or boundary
        run = self.runs.get(root)
        if run is None:
            if root.parent is not None or not self._wants(root) or root._status != "running":
                return await next()
            target = op.target if op.kind == "subflow" else None
            run = await self._begin_boundary_root(root, ctx.parent, target, op.input)
        if run.broken:
            return await next()
        if kind == "parallel":
            return await self._parallel(next, run, ctx)
        if kind == "stream":
            return await self._stream(next, run, ctx, op)
        parent = ctx.parent
        assert parent is not None
        rec = self._exec_record(ctx, parent, run, kind, op.key, op.attempt, op.input)
        try:
            result = await next()
        except BaseException as exc:
            rec[_EXC] = exc
            rec[_ENDED] = True
            raise
        rec[_RESULT] = result
        rec[_ENDED] = True
        return result

    # The recorder as the scope's only exec extension: the plain exec path (its recorded
    # copy, which inlines start's common case) and the keyed lane call ``start`` instead
    # of awaiting wrap_exec, and set the child's ``_out`` when it ends.

    def start(
        self, ctx: ExecutionContext, parent: ExecutionContext, key: str | None = None
    ) -> bool | None:
        """Record the plain (or keyed: ``key``) exec of the child ``ctx`` of
        ``parent``: the context itself is buffered, its outcome in ``ctx._out``
        (``PENDING`` until the exec path sets it to the result or ``FAILED``). ``True``
        when it is recorded, ``None`` when it is not, ``False`` when its run must start
        first (:meth:`begin`, or the wrapper)."""
        boundary = parent._boundary or parent
        root = boundary._root or boundary
        run = self.runs.get(root)
        if run is None:
            if root.parent is not None or not self._wants(root) or root._status != "running":
                return None
            return False
        if run.broken:
            return None
        if self._parallels or (parent._boundary is None and parent is not root):
            node_parent = self._node_parent(run, parent)
            if node_parent is not parent:
                self._parents[ctx] = node_parent  # type: ignore[assignment]
        if key is not None:
            self._keys[ctx] = key
        ctx._out = PENDING
        if parent is root:
            run.last_direct = ctx
            if run.first_direct is None:
                run.first_direct = ctx
        self.buffer.append(ctx)
        return True

    async def begin(
        self, ctx: ExecutionContext, parent: ExecutionContext, flow: Flow[Any, Any], input: object
    ) -> bool | None:
        """:meth:`start` for a plain ``ctx.exec(flow, input)`` whose run must start first
        (the first exec under a boundary root)."""
        boundary = parent._boundary or parent
        await self._begin_boundary_root(boundary._root or boundary, parent, flow, input)
        return self.start(ctx, parent)

    def keep_input(self, ctx: ExecutionContext, input: object) -> None:
        """The input of a recorded plain exec as given, before its flow parses it."""
        self._inputs[ctx] = input

    def _exec_record(
        self,
        ctx: ExecutionContext,
        parent: ExecutionContext,
        run: _Run,
        kind: str,
        key: str | None,
        attempt: int,
        input: object,
    ) -> ExecRecord:
        node_parent = self._node_parent(run, parent)
        rec = [ctx, node_parent, kind, key, attempt, input, None, run, False, None, None]
        if parent is run.root:
            run.last_direct = rec
            if run.first_direct is None:
                run.first_direct = rec
        self.buffer.append(rec)
        return rec

    def _as_record(self, ctx: ExecutionContext, seq: int | None, run: _Run) -> ExecRecord:
        """A recorded context (:meth:`start`) as the record of its exec."""
        out = ctx._out
        ended = out is not PENDING
        result = exc = None
        if out is FAILED:
            x = ctx._x
            exc = None if x is None else x.error
            if exc is None:  # abandoned: its coroutine was closed
                exc = GeneratorExit()
        elif ended:
            result = out
        parents, inputs, keys = self._parents, self._inputs, self._keys
        parent = ctx.parent if not parents or ctx not in parents else parents[ctx]
        value = ctx.input if not inputs or ctx not in inputs else inputs[ctx]
        key = keys.get(ctx) if keys else None
        return [ctx, parent, "subflow", key, 1, value, seq, run, ended, result, exc]

    def _written(self, rec: ExecRecord) -> tuple[object, ...]:
        """The row of a recorded context's record; once it is written for the last time
        (it has ended, or its run has), the context's entries in the side tables go."""
        if rec[_ENDED] or rec[_RUN].root not in self.runs:
            self._forget(rec[_CTX])
        return self._exec_row(rec)

    def _forget(self, ctx: ExecutionContext) -> None:
        """A recorded context's entries in the side tables, gone (its last write)."""
        if self._parents or self._inputs or self._keys:
            self._parents.pop(ctx, None)
            self._inputs.pop(ctx, None)
            self._keys.pop(ctx, None)

    def _journal_text(self, run: _Run, key: str, value: object) -> str | None:
        """The JSON text the journal wrote for this keyed exec's value, if it did."""
        if not self.values:
            return None
        x = run.root._x
        journal = None if x is None else x.journal
        entry = None if journal is None else journal.entries.get(key)
        if entry is None or entry.value is not value:
            return None
        text: str | None = entry.text
        entry.text = None  # read once: the entry need not keep it for the tree's life
        return text

    def _exec_outcome(self, rec: ExecRecord) -> tuple[str, ErrorFields, str | None]:
        """The status, error fields and output JSON of an exec's record."""
        ctx: ExecutionContext = rec[_CTX]
        status: str = ctx._status
        if not rec[_ENDED]:
            return status, (None, None), None
        exc = rec[_EXC]
        if status == "running":  # an inner extension failed before the body ran
            status = (
                "cancelled"
                if isinstance(exc, (Cancelled, asyncio.CancelledError))
                else ("failed" if exc is not None else "completed")
            )
        if exc is not None:
            return status, error_fields(exc), None
        result = rec[_RESULT]
        return status, (None, None), None if result is None else self._value(result)

    def _exec_row(self, rec: ExecRecord) -> tuple[object, ...]:
        ctx: ExecutionContext = rec[_CTX]
        parent = rec[_PARENT]
        x = ctx._x
        if (
            rec[_ENDED]
            and rec[_EXC] is None
            and ctx._status == "completed"
            and rec[_ATTEMPT] == 1
            and (x is None or not (x.own_tags or x.metadata))
        ):
            # The common case (per node): a flow (or function) that completed and
            # returned a value, written as a short row (see runs_sql._merge), as _take
            # writes the same node.
            name, key = ctx.name, rec[_KEY]
            if type(name) is str and (key is None or type(key) is str):
                parent = quote(parent) if isinstance(parent, str) else _id_text(parent)
                result = rec[_RESULT]
                value = rec[_INPUT]
                ended = getattr(ctx, "_completed_at", None) or time()
                if result is None:
                    output = None
                elif (
                    key is not None
                    and (text := self._journal_text(rec[_RUN], key, result)) is not None
                ):
                    output = fit(text, self.limit)  # the journal's JSON of the same value
                else:
                    output = self._value(result)
                value = None if value is None else self._value(value)
                head = f"[{_id_text(ctx)},{rec[_SEQ]},{parent},{quote(name)}"
                return (
                    rec[_RUN].root_id,
                    f"{head}]"
                    if value is None and output is None and key is None and rec[_KIND] != "fn"
                    else f"{head},{'null' if value is None else quote(value)},"
                    f"{'null' if output is None else quote(output)},"
                    f"{'null' if key is None else quote(key)}"
                    f"{_FN_END if rec[_KIND] == 'fn' else ']'}",
                    ctx._started_at,
                    ended,
                )
        if not isinstance(parent, str):  # a context, or its id (a str or an AutoId)
            parent = parent.id
        status, error, output = self._exec_outcome(rec)
        completed_at = None
        if rec[_ENDED]:
            completed_at = getattr(ctx, "_completed_at", None) or time()
        value = rec[_INPUT]
        tags = metadata = None
        if x is not None:
            tags, metadata = self._extras(x)
        return (
            rec[_RUN].root_id,
            ctx.id,
            rec[_SEQ],
            parent,
            ctx.name,
            "fn" if rec[_KIND] == "fn" else "flow",
            rec[_KEY],
            rec[_ATTEMPT],
            status,
            ctx._started_at,
            completed_at,
            error[0],
            error[1],
            0,
            None if value is None else self._value(value),
            output,
            tags,
            metadata,
        )

    def _extras(self, x: Any) -> tuple[str | None, str | None]:
        """The JSON of a context's serializable tags and of its metadata."""
        tags = metadata = None
        own = x.own_tags
        if own:
            found = {t.label: v for t, v in own.items() if t.serializable}
            if found:
                tags = self._map(found)
        if x.metadata:
            meta = {str(k): v for k, v in x.metadata.items() if k != "journal_replays"}
            if meta:
                metadata = self._map(meta)
        return tags, metadata

    def _node_extras(self, node: _Node, x: Any) -> None:
        node.tags, node.metadata = self._extras(x)

    def _map(self, values: dict[str, object]) -> str:
        """A JSON object; a value that is not JSON (or too long) becomes its marker."""
        try:
            text = compact(values)
        except Exception:  # whatever stops the encoder: not JSON, for the record
            text = ""
        if text and len(text) <= self.limit:
            return text
        each = max(self.limit // max(len(values), 1), 64)
        return compact({k: json.loads(capture(v, each) or "null") for k, v in values.items()})

    async def _parallel(
        self, next: Callable[[], Awaitable[object]], run: _Run, ctx: ExecutionContext
    ) -> object:
        if ctx._boundary is None and ctx is not run.root and ctx not in run.boundaries:
            self._boundary_node(run, ctx)
        node = _Node(run, None, ctx, "parallel", None, 1, None)
        node.node_id = f"{ctx.id}/parallel-{next_id()}"
        node.name = "parallel"
        node.started_at = time()
        node.dirty = True
        self.buffer.append(node)
        token = _parallel.set((ctx, node.node_id))
        self._parallels += 1  # execs look the parallel call up only while one runs
        try:
            result = await next()
        except BaseException as exc:
            node.status = (
                "cancelled" if isinstance(exc, (Cancelled, asyncio.CancelledError)) else "failed"
            )
            node.error = error_fields(exc)
            raise
        else:
            node.status = "completed"
        finally:
            self._parallels -= 1
            _parallel.reset(token)
            node.completed_at = time()
            if not node.dirty:
                node.dirty = True
                self.buffer.append(node)
        return result

    def _node_parent(self, run: _Run, parent: ExecutionContext) -> ExecutionContext | str:
        """The node a new node hangs under: the parallel call it is a member of, else
        ``parent`` (recorded first if it is a nested boundary not recorded yet)."""
        par = _parallel.get() if self._parallels else None
        if par is not None and par[0] is parent:
            return par[1]
        if parent._boundary is None and parent is not run.root and parent not in run.boundaries:
            self._boundary_node(run, parent)
        return parent

    async def _stream(
        self, next: Callable[[], Awaitable[object]], run: _Run, ctx: ExecutionContext, op: ExecOp
    ) -> object:
        """A ``ctx.exec_stream`` child: ``next()`` opens the source and returns; the
        stream ends when its context closes (its item count is in its metadata)."""
        parent = ctx.parent
        assert parent is not None
        value = op.input
        node = _Node(
            run,
            ctx,
            self._node_parent(run, parent),
            "stream",
            op.key,
            op.attempt,
            None if value is None else self._value(value),
        )
        node.dirty = True
        self.buffer.append(node)
        try:
            source = await next()
        except BaseException as exc:
            self._stream_closed(node, ctx, exc)
            raise
        ctx.on_close(partial(self._stream_closed, node, ctx, None))
        return source

    def _stream_closed(self, node: _Node, ctx: ExecutionContext, exc: BaseException | None) -> None:
        status = ctx._status
        x = ctx._x
        if exc is None and x is not None:
            exc = x.error
        if status == "running":  # failed before the stream opened
            cancelled = isinstance(exc, (Cancelled, asyncio.CancelledError))
            status = "cancelled" if cancelled else "failed"
        node.status = status
        node.completed_at = getattr(ctx, "_completed_at", None) or time()
        if exc is not None:
            node.error = error_fields(exc)
        if x is not None:
            self._node_extras(node, x)
        if not node.dirty:
            node.dirty = True
            self.buffer.append(node)

    def _boundary_node(self, run: _Run, b: ExecutionContext) -> _Node:
        parent = b.parent
        assert parent is not None
        if parent._boundary is None and parent is not run.root and parent not in run.boundaries:
            self._boundary_node(run, parent)
        node = _Node(run, b, parent, "boundary", None, 1, None)
        run.boundaries[b] = node
        node.dirty = True
        self.buffer.append(node)
        b.on_close(partial(self._boundary_closed, node, b))
        return node

    def _boundary_closed(self, node: _Node, b: ExecutionContext) -> None:
        x = b._x
        node.status = b._status
        node.completed_at = time()
        if x is not None:
            node.error = error_fields(x.error)
            self._node_extras(node, x)
        if not node.dirty:
            node.dirty = True
            self.buffer.append(node)

    def note_replay(
        self,
        parent: ExecutionContext,
        kind: str,
        name: str,
        input: object,
        key: str,
        entry: Any,
        given: object = UNCHECKED,
    ) -> _Node | None:
        """A keyed step replayed from the journal (it never ran, so no wrapper saw it).
        ``given`` is the step's input as the journal compares it: when it differs from
        the recorded input, the node's metadata says so (``input_changed``)."""
        root = parent.root
        run = self.runs.get(root)
        if run is None or run.broken:
            return None
        node = _Node(
            run,
            None,
            self._node_parent(run, parent),
            "fn" if kind == "fn" else ("stream" if kind == "stream" else "flow"),
            key,
            1,
            None if input is None else self._value(input),
        )
        node.node_id = f"{parent.id}/replay-{next_id()}"
        node.name = name
        node.started_at = node.completed_at = time()
        node.replayed = 1
        meta: dict[str, object] = {}
        if getattr(entry, "ok", False):
            node.status = "completed"
            node.output = self._value(entry.value)
            if kind == "stream" and isinstance(entry.value, list):
                meta["stream_items"] = len(entry.value)
        else:
            node.status = "failed"
            node.error = error_fields(getattr(entry, "error", None))
        if given is not UNCHECKED and entry is not None:
            try:
                changed = entry.changed(given)
            except Exception:  # recording never fails the step
                changed = None
            if changed is not None:
                meta["input_changed"] = {"recorded": changed[0], "now": changed[1]}
        if meta:
            node.metadata = self._map(meta)
        node.dirty = True
        self.buffer.append(node)
        return node

    def replay_closed(self, node: _Node, ctx: ExecutionContext) -> None:
        """A replayed stream's context closed: a consumer that left early (or a failure
        on the way) ends its node as the context ended, with the items it delivered."""
        details = ctx.details
        if details.status == "completed" or node.status != "completed":
            return
        node.status = details.status
        node.completed_at = time()
        node.error = error_fields(details.error)
        items = details.metadata.get("stream_items")
        if isinstance(items, int):
            meta = json.loads(node.metadata) if node.metadata else {}
            meta["stream_items"] = items  # (input_changed, if any, stays)
            node.metadata = self._map(meta)
        if not node.dirty:
            node.dirty = True
            self.buffer.append(node)

    # -- runs ----------------------------------------------------------------------

    async def _exec_root(self, next: Callable[[], Awaitable[object]], op: ExecOp) -> object:
        root = op.context
        if not self._wants(root) or root in self.runs:
            return await next()
        run = _Run(root)
        if isinstance(op.target, Flow):
            run.flow = flow_path(op.target)
        run.input, run.input_ok = self._run_input(op.input)
        node = run.root_node = _Node(run, root, None, "root", None, 1, self._value(op.input))
        self.runs[root] = run
        await self._start(run, node)
        try:
            result = await next()
        except BaseException as exc:
            await self._end(run, root._status, exc, None)
            raise
        await self._end(run, root._status, None, result)
        return result

    async def _begin_boundary_root(
        self,
        root: ExecutionContext,
        parent: ExecutionContext | None,
        target: object,
        input: object,
    ) -> _Run:
        """Start the run of a boundary root at its first exec (under ``parent``). Its flow
        and input are that exec's when it is a flow executed directly under the root
        (what resume runs again); a first exec in a nested boundary leaves them unknown."""
        run = _Run(root)
        command = _session_command()
        if command is not None:
            run.session_id, run.command, command_id = command
            run.root_id = f"{run.tree_id}/{command_id}"
            run.name = run.command
        if isinstance(target, Flow) and parent is root:  # the first exec: a flow, under it
            run.flow = flow_path(target)
            run.input, run.input_ok = self._run_input(input)
        node = run.root_node = _Node(run, root, None, "root", None, 1, None)
        self.runs[root] = run
        root.on_close(partial(self._boundary_root_closed, run))
        await self._start(run, node)
        return run

    def _run_input(self, value: object) -> tuple[str | None, int]:
        if value is None:
            return None, 1
        text = strict_text(value)  # stored whole (resume runs the flow with it again)
        return (not_json(value, self.limit), 0) if text is None else (text, 1)

    async def _start(self, run: _Run, node: _Node) -> None:
        root = run.root
        if run.root_id in self._owned:
            # Another root of this process runs this id now: the run stays that root's.
            self._unowned(run)
            return
        self._owned[run.root_id] = run
        try:
            ours = await self.store.runs_start(
                (
                    run.root_id,
                    run.tree_id,
                    run.name,
                    run.flow,
                    run.input,
                    run.input_ok,
                    root._started_at,
                    run.session_id,
                    run.command,
                )
            )
        except Exception:
            run.broken = True
            self._release_id(run)
            self._failed(1, [run], "starting run")
            return
        if ours is False:
            # Another live process runs this root id: its run record stays its own (one
            # owner). This root still runs (its keyed steps wait for that owner's claims).
            self._release_id(run)
            self._unowned(run)
            return
        node.dirty = True
        self.buffer.append(node)
        self._ensure_ticker()

    def _unowned(self, run: _Run) -> None:
        run.broken = True
        log.warning(
            "runtree: run %r is running in another root (of this process or another live "
            "one); this root with the same id runs unrecorded",
            run.root_id,
        )

    def _release_id(self, run: _Run) -> None:
        if self._owned.get(run.root_id) is run:
            del self._owned[run.root_id]

    async def _boundary_root_closed(self, run: _Run) -> None:
        root = run.root
        x = root._x
        error = None if x is None else x.error
        status = root._status
        last = run.last_direct
        if isinstance(last, ExecutionContext):
            last = self._as_record(last, 0, run)
        if status == "completed" and last is not None:
            last_status, last_error, _ = self._exec_outcome(last)
            if last_status in ("failed", "cancelled"):
                # The error of the last step left the boundary (``async with`` closes it
                # as completed): the run ends as that step did.
                await self._end(run, last_status, None, None, last_error, None)
                return
        first = run.first_direct
        if isinstance(first, ExecutionContext):
            first = self._as_record(first, 0, run)
        output = None
        if first is not None and run.flow is not None:
            output = self._exec_outcome(first)[2]
        await self._end(run, status, error, None, None, output)

    async def _end(
        self,
        run: _Run,
        status: str,
        exc: BaseException | None,
        result: object,
        error: tuple[str | None, str | None] | None = None,
        output: str | None = None,
    ) -> None:
        root = run.root
        self.runs.pop(root, None)
        self._release_id(run)
        if not self.runs:
            self._stop_ticker()
        if run.broken:
            return
        self._ending[root] = run  # its buffered execs still find it (_take)
        try:
            await self._finish(run, status, exc, result, error, output)
        finally:
            self._ending.pop(root, None)

    async def _finish(
        self,
        run: _Run,
        status: str,
        exc: BaseException | None,
        result: object,
        error: tuple[str | None, str | None] | None,
        output: str | None,
    ) -> None:
        root = run.root
        if status == "running":
            status = "failed" if exc is not None else "completed"
        if status == "failed" and isinstance(exc, Cancelled):
            status = "cancelled"
        node = run.root_node
        node.status = status
        node.completed_at = time()
        if error is None:
            error = error_fields(exc)
        node.error = error
        if output is None and exc is None and result is not None:
            output = self._value(result)
        node.output = output
        x = root._x
        if x is not None:
            self._node_extras(node, x)
        if not node.dirty:
            node.dirty = True
            self.buffer.append(node)
        task = self._task
        if task is not None and not task.done():
            await asyncio.shield(task)  # rows in flight first: the final state lands last
        rows = self._take()
        finished = [(status, error[0], error[1], output, node.completed_at, run.root_id)]
        try:
            await self.store.runs_write(rows, finished, False)
        except Exception:
            runs = self._runs_of(rows)
            self._failed(_count(rows) + 1, runs if run in runs else [*runs, run], "writing run")

    # -- the tick: buffered rows, lease renewal, cancel requests -------------------

    def _ensure_ticker(self) -> None:
        if self._ticker is None:
            loop = self._loop = asyncio.get_running_loop()
            self._next_beat = loop.time() + self._beat_every
            self._ticker = loop.call_later(FLUSH_EVERY, self._tick)

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        self._ticker = loop.call_later(FLUSH_EVERY, self._tick) if self.runs else None
        if self._task is not None and not self._task.done():
            return
        beat = loop.time() >= self._next_beat
        if beat:
            self._next_beat = loop.time() + self._beat_every
        if self.buffer or beat:
            self._task = loop.create_task(self._flush(beat), name="runtree:record")

    def _take(self) -> list[tuple[object, ...]]:
        """The buffer as rows (encoded now). Nodes are numbered (``seq``) in buffer order
        the first time they are written. An exec still running is written as running and
        kept in ``open``: written again once it has ended, or once its run has."""
        nodes: list[Any] = self.buffer
        self.buffer = []
        rows: list[tuple[object, ...]] = []
        add = rows.append
        exec_row, as_record, value_of = self._exec_row, self._as_record, self._value
        written, values, limit = self._written, self.values, self.limit
        entries: dict[str, Any] | None = None
        # Per boundary: [its run, the run's journal entries (when a keyed node needs them),
        # and the appends of the run's short rows and their times (see runs_sql._chunks)].
        groups: dict[ExecutionContext, list[Any]] = {}
        shorts: dict[str, tuple[list[str], list[float]]] = {}
        cur: list[Any] = [None, None, None, None]
        was_open, self.open = self.open, []
        keep = self.open.append
        runs, parents, inputs, keys = self.runs, self._parents, self._inputs, self._keys
        boundary: Any = None
        run: _Run | None = None
        parent: Any = PENDING  # (the last node's parent and name, and their JSON)
        parent_text: str | int = ""
        name: Any = PENDING
        name_text = ""
        for node in nodes:
            try:
                t = type(node)
                if t is ExecutionContext:  # a recorded plain exec (start): its context
                    if node._boundary is not boundary:
                        boundary = node._boundary
                        cur = groups.get(boundary)  # type: ignore[assignment]
                        if cur is None:
                            root = boundary._root or boundary
                            run = runs.get(root) or self._ending.get(root)
                            cur = groups[boundary] = [run, None, None, None]
                            if run is not None:
                                got = shorts.get(run.root_id)
                                if got is None:
                                    got = shorts[run.root_id] = ([], [])
                                cur[2], cur[3] = got[0].append, got[1].append
                        run = cur[0]
                    if run is None:  # pragma: no cover - a run is written before it is dropped
                        continue
                    seq = next(_seqs)
                    out = node._out
                    if out is PENDING:
                        if run.root in runs:
                            keep((node, seq, run))
                    elif (
                        out is not FAILED
                        and node._status == "completed"
                        and node._x is None
                        and (not parents or node not in parents)
                        and (not inputs or node not in inputs)
                        and (node.name is name or type(node.name) is str)
                    ):
                        # The common case (per node): a flow that completed. Its entry is
                        # written here as JSON text, as _exec_row writes the same node (the
                        # record tests compare the two ways).
                        if node.name is not name:
                            name = node.name
                            name_text = quote(name)
                        if node.parent is not parent:
                            parent = node.parent
                            parent_text = run.root_text if parent is run.root else _id_text(parent)
                        i = node._id  # _id_text(node), inline
                        if i is None:
                            i = node._id = next(_context_ids)
                        elif type(i) is not int:
                            i = quote(i)
                        value = node.input
                        if value is not None:
                            if type(value) is int and -_BIG_INT < value < _BIG_INT and values:
                                value = int.__repr__(value)  # _value's first fast way
                            else:
                                value = value_of(value)
                        key = keys.pop(node, None) if keys else None
                        if out is not None:
                            if key is not None and values:
                                # _journal_text, inline: the journal's JSON of the same value
                                entries = cur[1]
                                if entries is None:
                                    x = run.root._x
                                    journal = None if x is None else x.journal
                                    entries = cur[1] = {} if journal is None else journal.entries
                                entry = entries.get(key)
                                if entry is not None and entry.value is out and entry.text:
                                    text = entry.text
                                    entry.text = None  # read once (see _journal_text)
                                    out = text if len(text) <= limit else fit(text, limit)
                                else:
                                    out = value_of(out)
                            else:
                                out = value_of(out)
                        # A short row (see runs_sql._merge); its times go in the chunk's head.
                        cur[2](
                            f"[{i},{seq},{parent_text},{name_text}]"
                            if value is None and out is None and key is None
                            else f"[{i},{seq},{parent_text},{name_text},"
                            f"{'null' if value is None else quote(value)},"
                            f"{'null' if out is None else quote(out)},"
                            f"{'null' if key is None else quote(key)}]"
                        )
                        add_time = cur[3]
                        add_time(node._started_at)
                        add_time(node._completed_at)  # set once its exec has returned
                        continue
                    add(written(as_record(node, seq, run)))
                elif t is list:
                    if node[_SEQ] is None:
                        node[_SEQ] = next(_seqs)
                    if not node[_ENDED] and node[_RUN].root in runs:
                        keep(node)
                    add(exec_row(node))
                else:
                    if node.seq is None:
                        node.seq = next(_seqs)
                    node.dirty = False
                    add(node.row())
            except Exception:  # a value or a tag that breaks its encoding: one node lost
                self._lost(node, "encoding a node")

        for root_id, (texts, times) in shorts.items():
            if texts:  # many short rows in one (see runs_sql._chunks)
                add((root_id, texts, times))

        item: Any
        for item in was_open:
            try:
                if type(item) is list:
                    if item[_ENDED] or item[_RUN].root not in runs:
                        add(exec_row(item))
                    else:
                        keep(item)
                else:
                    ctx, seq, of = item
                    if ctx._out is not PENDING or of.root not in runs:
                        add(written(as_record(ctx, seq, of)))
                    else:
                        keep(item)
            except Exception:
                self._lost(item if type(item) is list else item[0], "encoding a node")

        return rows

    def _lost(self, node: Any, what: str) -> None:
        """A node that could not be written (logged and counted, as a failed write)."""
        if type(node) is list:
            runs = [node[_RUN]]
        elif isinstance(node, ExecutionContext):
            b = node._boundary or node
            run = self.runs.get(b._root or b) or self._ending.get(b._root or b)
            runs = [] if run is None else [run]
            self._forget(node)
        else:
            runs = [node.run]
        self._failed(1, runs, what)

    def _runs_of(self, rows: list[tuple[object, ...]]) -> list[_Run]:
        """The runs of these rows that are still known (to count a lost write)."""
        by_id = {run.root_id: run for run in (*self.runs.values(), *self._ending.values())}
        found = {row[0]: by_id.get(row[0]) for row in rows}  # type: ignore[call-overload]
        return [run for run in found.values() if run is not None]

    async def _flush(self, beat: bool) -> None:
        rows = self._take()
        try:
            cancels = await self.store.runs_write(rows, (), beat)
        except Exception:
            self._failed(_count(rows), self._runs_of(rows), "writing nodes")
            return
        if cancels:
            by_id = {run.root_id: run for run in self.runs.values()}
            for root_id, reason in cancels:
                run = by_id.get(root_id)
                if run is not None:
                    run.root.cancel(reason or "cancelled by runs.cancel")

    def _failed(self, count: int, runs: list[_Run], what: str) -> None:
        self.failures += count
        log.warning("run trees: %s failed; %d record(s) lost", what, count, exc_info=True)
        for run in runs:
            try:
                meta = run.root.details.metadata
                meta[FAILURES_KEY] = int(meta.get(FAILURES_KEY, 0)) + count  # type: ignore[call-overload]
            except Exception:  # pragma: no cover - a closed root's metadata stays writable
                log.debug("cannot count a recording failure", exc_info=True)

    async def dispose(self, scope: Scope) -> None:
        """Write what is left (runs whose roots never closed stay ``running``)."""
        self._stop_ticker()
        task = self._task
        if task is not None and not task.done():
            await asyncio.shield(task)
        if self.buffer:
            rows = self._take()
            try:
                await self.store.runs_write(rows, (), False)
            except Exception:
                self._failed(_count(rows), self._runs_of(rows), "writing nodes")


def _count(rows: list[tuple[object, ...]]) -> int:
    """The nodes in rows ``_take`` made (one row may hold a run's short rows)."""
    return sum(len(cast("list[str]", row[1])) if len(row) == 3 else 1 for row in rows)


_ids = itertools.count(1)


def next_id() -> int:
    return next(_ids)


def make_recorder(store: object, mode: str, limit: int, values: bool) -> Recorder | None:
    """The recorder for ``create_scope(store=..., record=...)``, or ``None``."""
    if mode not in ("durable", "all", "none"):
        msg = f"create_scope(record=...) must be 'durable', 'all' or 'none' (got {mode!r})"
        raise ValueError(msg)
    if type(limit) is not int or limit < 64:
        msg = (
            "create_scope(record_limit=...) must be an int of at least 64 bytes "
            f"(got {shown(limit)})"
        )
        raise ValueError(msg)
    if type(values) is not bool:
        # "no" or "false" from a config file would record every value: say so instead.
        msg = f"create_scope(record_values=...) must be True or False (got {shown(values)})"
        raise TypeError(msg)
    if mode == "none" or store is None or not hasattr(store, "runs_write"):
        return None
    return Recorder(store, mode, limit, values)  # type: ignore[arg-type]
