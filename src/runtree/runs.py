"""Run trees that outlive the process: list, show, cancel, resume, fork and prune the
runs a store recorded (see ``create_scope(record=...)``).

A *run* is a recorded root context: its flow (``module:qualname``), input, status and
owner. Its *nodes* are the contexts of its tree. ``Runs(store)`` reads and operates on
them::

    runs = Runs(store)
    for info in await runs.list(status="failed"):
        tree = await runs.get(info.root_id)
        for node, depth in tree.walk_with_depth():
            print("  " * depth, node.name, node.status)

.. versionadded:: 0.2
"""

from __future__ import annotations

import importlib
import secrets
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast, final

from ._defs import Flow
from ._json import MAX_NAME_BYTES, check_name, readable, shown
from ._recorder import flow_path
from .errors import RunNotFoundError, RunStateError, StoreError
from .stores._base import loads

if TYPE_CHECKING:
    from ._execution import Execution
    from ._scope import Scope
    from .stores._runs_sql import NodeRow, RunRow, RunsSql

__all__ = [
    "NodeKind",
    "RunError",
    "RunInfo",
    "RunNode",
    "RunStateError",
    "RunStatus",
    "RunTree",
    "Runs",
    "resolve_flow",
]

RunStatus: TypeAlias = Literal["running", "completed", "failed", "cancelled", "interrupted"]
NodeKind: TypeAlias = Literal["root", "boundary", "flow", "fn", "parallel", "stream"]
_STATUSES = ("running", "completed", "failed", "cancelled", "interrupted")


@final
@dataclass(frozen=True, slots=True)
class RunError:
    """How a run or node failed: the exception's type name and message."""

    type: str
    message: str


@final
@dataclass(frozen=True, slots=True)
class RunInfo:
    """A recorded run (a root context). Times are epoch seconds.

    ``status`` is ``interrupted`` for a run left ``running`` by a process that died.
    ``flow`` is the import path ``module:qualname`` of the flow it ran (``None`` when the
    root ran no flow first); ``input`` the run's input (whole); ``output`` its result (cut
    to ``record_limit``). ``session_id``/``command`` are set for session commands.
    """

    root_id: str
    name: str
    flow: str | None
    input: object
    status: RunStatus
    error: RunError | None
    output: object
    owner: str | None
    created_at: float
    updated_at: float
    completed_at: float | None
    session_id: str | None
    command: str | None
    cancel_requested: str | None = None
    tree_id: str = ""
    input_ok: bool = True

    @property
    def duration(self) -> float | None:
        return None if self.completed_at is None else self.completed_at - self.created_at

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (the shape ``runtree runs list --json`` prints)."""
        return {
            "root_id": self.root_id,
            "name": self.name,
            "flow": self.flow,
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "error": None if self.error is None else _error_dict(self.error),
            "owner": self.owner,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "completed_at": self.completed_at,
            "duration": self.duration,
            "session_id": self.session_id,
            "command": self.command,
            "cancel_requested": self.cancel_requested,
        }


@final
@dataclass(frozen=True, slots=True)
class RunNode:
    """One recorded context of a run (or a ``parallel`` call, or a replayed step).

    ``input``/``output`` hold the stored JSON value, or a marker string when the value
    was cut (``"<runtree: cut, N bytes of JSON> ..."``) or was not JSON
    (``"<runtree: not JSON> repr"``).
    """

    node_id: str
    parent_id: str | None
    name: str
    kind: NodeKind
    key: str | None
    attempt: int
    status: str
    started_at: float
    completed_at: float | None
    error: RunError | None
    replayed: bool
    input: object
    output: object
    tags: dict[str, object] = field(default_factory=dict)
    metadata: dict[str, object] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        return None if self.completed_at is None else self.completed_at - self.started_at

    @property
    def input_changed(self) -> bool:
        """A replayed step whose input differs from the one its journal entry was
        recorded for (the outcome of the other input was replayed);
        ``metadata["input_changed"]`` holds both digests (``recorded``, ``now``)."""
        return "input_changed" in self.metadata

    def to_dict(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "parent_id": self.parent_id,
            "name": self.name,
            "kind": self.kind,
            "key": self.key,
            "attempt": self.attempt,
            "status": self.status,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "duration": self.duration,
            "error": None if self.error is None else _error_dict(self.error),
            "replayed": self.replayed,
            "input": self.input,
            "output": self.output,
            "tags": self.tags,
            "metadata": self.metadata,
        }


def _error_dict(error: RunError) -> dict[str, str]:
    return {"type": error.type, "message": error.message}


@final
class RunTree:
    """A run and its nodes: ``run``, ``nodes`` (start order), ``children(node)``,
    ``walk()`` (depth-first), ``walk_with_depth()``, ``roots()``."""

    __slots__ = ("_children", "_top", "nodes", "run")

    def __init__(self, run: RunInfo, nodes: list[RunNode]) -> None:
        self.run = run
        self.nodes = nodes
        ids = {n.node_id for n in nodes}
        self._children: dict[str, list[RunNode]] = {}
        self._top: list[RunNode] = []
        for n in nodes:
            if n.parent_id is None or n.parent_id not in ids:
                self._top.append(n)
            else:
                self._children.setdefault(n.parent_id, []).append(n)

    def roots(self) -> list[RunNode]:
        """Nodes without a recorded parent (normally the one root node)."""
        return list(self._top)

    def children(self, node: RunNode | str) -> list[RunNode]:
        """The nodes whose parent is ``node`` (a node or a node id), in start order."""
        key = node if isinstance(node, str) else node.node_id
        return list(self._children.get(key, ()))

    def walk(self) -> Iterator[RunNode]:
        """Every node depth-first (children in start order)."""
        for node, _ in self.walk_with_depth():
            yield node

    def walk_with_depth(self) -> Iterator[tuple[RunNode, int]]:
        """Every node depth-first (children in start order), with its depth (0 for a
        node without a recorded parent)."""
        stack = [(n, 0) for n in reversed(self._top)]
        while stack:
            node, depth = stack.pop()
            yield node, depth
            stack.extend((c, depth + 1) for c in reversed(self._children.get(node.node_id, ())))

    def failing_path(self) -> list[RunNode]:
        """The chain from the root to the deepest failed node (empty when none failed)."""
        best: list[RunNode] = []
        path: list[RunNode] = []
        for node, depth in self.walk_with_depth():
            del path[depth:]
            path.append(node)
            if node.status == "failed" and len(path) > len(best):
                best = list(path)
        return best

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: the run, and its nodes as a nested tree (``children`` lists)."""

        def build(node: RunNode) -> dict[str, object]:
            d = node.to_dict()
            d["children"] = [build(c) for c in self._children.get(node.node_id, ())]
            return d

        return {"run": self.run.to_dict(), "nodes": [build(n) for n in self._top]}

    def __repr__(self) -> str:
        return f"<RunTree {self.run.root_id!r} {self.run.status} nodes={len(self.nodes)}>"


def _error(etype: str | None, message: str | None) -> RunError | None:
    if etype is None and message is None:
        return None
    return RunError(etype or "Exception", message or "")


def _json_dict(text: str | None) -> dict[str, object]:
    value = loads(text)
    return value if isinstance(value, dict) else {}


def run_info(row: RunRow) -> RunInfo:
    status = row[6]
    alive = bool(row[17])
    if status == "running" and not alive:
        status = "interrupted"
    return RunInfo(
        root_id=row[0],
        tree_id=row[1],
        name=row[2],
        flow=row[3],
        input=loads(row[4]),
        input_ok=bool(row[5]),
        status=status,
        error=_error(row[7], row[8]),
        output=loads(row[9]),
        owner=row[10],
        created_at=float(row[11]),
        updated_at=float(row[12]),
        completed_at=None if row[13] is None else float(row[13]),
        session_id=row[14],
        command=row[15],
        cancel_requested=row[16],
    )


def run_node(row: NodeRow) -> RunNode:
    return RunNode(
        node_id=row[0],
        parent_id=row[1],
        name=row[2],
        kind=row[3],
        key=row[4],
        attempt=int(row[5]),
        status=row[6],
        started_at=float(row[7]),
        completed_at=None if row[8] is None else float(row[8]),
        error=_error(row[9], row[10]),
        replayed=bool(row[11]),
        input=loads(row[12]),
        output=loads(row[13]),
        tags=_json_dict(row[14]),
        metadata=_json_dict(row[15]),
    )


def _seconds(value: float | timedelta, what: str) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"{what} takes seconds or a timedelta (got {shown(value)})"
        raise TypeError(msg)
    return float(value)


def _since(value: float | datetime | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return _seconds(value, "runs.list(since=...)")


def _backend(store: object, what: str) -> RunsSql:
    if store is None or not hasattr(store, "runs_list"):
        msg = f"{what} needs a runtree store (runtree.stores.from_url(...)); got {shown(store)}"
        raise TypeError(msg)
    return store  # type: ignore[return-value]


def _flows(flows: Iterable[Flow[Any, Any]], what: str) -> list[Flow[Any, Any]]:
    """``flows`` as a list, each one checked: a sharp error for a single flow, a path
    string or anything else that is not a flow."""
    if isinstance(flows, (Flow, str)) or not isinstance(flows, Iterable):
        msg = f"{what} takes an iterable of flows (got {shown(flows)}); pass [flow, ...]"
        raise TypeError(msg)
    out = list(flows)
    for f in out:
        if not isinstance(f, Flow):
            msg = f"{what} takes flows made with @runtree.flow (got {shown(f)})"
            raise TypeError(msg)
    return out


def resolve_flow(path: str, flows: Iterable[Flow[Any, Any]] = ()) -> Flow[Any, Any]:
    """The flow recorded as ``module:qualname``: one of ``flows`` with that path, else
    imported (the module must be importable here).

    Raises:
        RunStateError-free ``LookupError``: no such flow.
    """
    for f in flows:
        if flow_path(f) == path:
            return f
    module_name, _, attr = path.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            msg = (
                f"cannot import module {module_name!r} of the recorded flow {path!r}: {exc}; "
                "run from the project's folder, or pass the module (--module) or the flows"
            )
            raise LookupError(msg) from exc
    found: object = module
    for part in attr.split("."):
        found = getattr(found, part, None)
    if isinstance(found, Flow):
        return found
    for value in vars(module).values():
        if isinstance(value, Flow) and flow_path(value) == path:
            return value
    msg = f"the recorded flow {path!r} is not a runtree flow in module {module_name!r}"
    raise LookupError(msg)


@final
class Runs:
    """The runs a store recorded. Every method is a coroutine (another process may have
    written since).

    Args:
        store: A store from :mod:`runtree.stores`.

    .. versionadded:: 0.2
    """

    __slots__ = ("store",)

    def __init__(self, store: object) -> None:
        _backend(store, "Runs(store)")
        self.store = store

    @property
    def _db(self) -> RunsSql:
        return self.store  # type: ignore[return-value]

    async def list(
        self,
        *,
        status: RunStatus | Iterable[RunStatus] | None = None,
        flow: str | Flow[Any, Any] | None = None,
        since: float | datetime | None = None,
        limit: int = 50,
    ) -> list[RunInfo]:
        """Runs newest first.

        Args:
            status: Only runs with this status, or with one of these (a list, tuple or
                set; ``interrupted``: running, owner dead).
            flow: Only runs of this flow (a Flow, or its ``module:qualname`` path).
            since: Only runs created at or after this time (epoch seconds or datetime).
            limit: At most this many.
        """
        statuses = _statuses(status, "runs.list")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            msg = f"runs.list(limit=...) must be a positive int (got {shown(limit)})"
            raise ValueError(msg)
        if flow is not None and not isinstance(flow, (str, Flow)):
            msg = f"runs.list(flow=...) takes a Flow or its 'module:qualname' (got {shown(flow)})"
            raise TypeError(msg)
        path = flow_path(flow) if isinstance(flow, Flow) else flow
        start = _since(since)
        if path is not None and readable(path) != path:
            return []  # a lone surrogate or a NUL: no recorded flow path holds one
        if statuses is None or len(statuses) == 1:
            one = None if statuses is None else statuses[0]
            return [run_info(r) for r in await self._db.runs_list(one, path, start, limit)]
        # One indexed query per status (each newest first, at most ``limit``), merged.
        found = [
            run_info(r) for s in statuses for r in await self._db.runs_list(s, path, start, limit)
        ]
        found.sort(key=lambda r: (r.created_at, r.root_id), reverse=True)
        return found[:limit]

    async def get(self, root_id: str) -> RunTree:
        """The run and its nodes.

        Raises:
            RunNotFoundError: no run with that id.
        """
        _known_id(root_id)
        found = await self._db.runs_get(root_id)
        if found is None:
            raise RunNotFoundError(root_id)
        row, nodes = found
        return RunTree(run_info(row), [run_node(n) for n in nodes])

    async def cancel(self, root_id: str, reason: str | None = None) -> RunInfo:
        """Cancel a running run. Its owner (a live process) cancels the root when it next
        renews its lease (every ``lease / 3`` seconds); a run whose owner is dead is
        marked ``cancelled`` at once. A finished run is left as it is. Returns the run
        as it stands after the request.

        Raises:
            RunNotFoundError: no run with that id.
        """
        _known_id(root_id)
        text = str(reason) if reason else "cancelled by runs.cancel"
        state = await self._db.runs_cancel(root_id, text)
        if state == "missing":
            raise RunNotFoundError(root_id)
        return (await self.get(root_id)).run

    async def resume(
        self, root_id: str, scope: Scope, *, flows: Iterable[Flow[Any, Any]] = ()
    ) -> Execution[Any]:
        """Run a failed, cancelled or interrupted run again under the same id, with its
        recorded flow and input: steps recorded as successes replay, steps recorded as
        failures run again. Returns the :class:`~runtree.Execution` (await it).

        Args:
            scope: Runs it; its store must hold the run.
            flows: Flows to match the recorded path against before importing it.

        Raises:
            RunNotFoundError: no run with that id.
            RunStateError: the run completed, runs in a live process, is a session
                command (re-run it with ``session.exec``), or has no recorded flow or
                JSON input.
            LookupError: the recorded flow cannot be imported.
        """
        return await _resume(
            scope, root_id, _flows(flows, "runs.resume(flows=...)"), orphan_only=False
        )

    async def fork(self, root_id: str, *, from_key: str, new_id: str | None = None) -> str:
        """A new run with this run's flow and input whose journal holds the entries
        recorded before ``from_key`` (in record order). It shows as ``interrupted`` until
        resumed: ``await runs.resume(new_id, scope)`` runs it from ``from_key`` on.

        Raises:
            RunNotFoundError: no run with that id.
            RunStateError: the run's journal has no key ``from_key``, or ``new_id`` is
                taken.
            StoreError: ``new_id`` is not a valid root id (empty, too long, a NUL...).
        """
        if not isinstance(from_key, str) or not from_key:
            msg = f"runs.fork(from_key=...) takes a journal key (got {shown(from_key)})"
            raise TypeError(msg)
        if new_id is not None:
            # The rule for every root id (a fork is resumed under it): before any write.
            check_name(new_id, "runs.fork(new_id=...) root id")
        tree = await self.get(root_id)
        ident = new_id or f"{root_id}-fork-{secrets.token_hex(3)}"
        if len(ident.encode()) > MAX_NAME_BYTES:
            ident = f"fork-{secrets.token_hex(6)}"  # the run's own id is near the limit
        state, _ = await self._db.runs_fork(root_id, from_key, ident, tree.run.name)
        if state == "missing":
            raise RunNotFoundError(root_id)
        if state == "no_key":
            raise RunStateError(
                root_id,
                f"its journal has no key {from_key!r}; list its keys with "
                f"`runtree runs show {root_id}`",
            )
        if state == "exists":
            raise RunStateError(
                ident, "a run or a journal with this id exists already; pick another new_id"
            )
        return ident

    async def prune(
        self,
        *,
        older_than: float | timedelta,
        status: Iterable[RunStatus] | RunStatus = ("completed",),
    ) -> int:
        """Delete runs last updated more than ``older_than`` ago (seconds or a
        timedelta) with one of ``status``: each run with its nodes and journal, in one
        transaction per run. A running run is never pruned (``interrupted`` ones may be).
        Returns how many were deleted."""
        age = _seconds(older_than, "runs.prune(older_than=...)")
        if not age >= 0:  # a negative age (or NaN) would reach runs made from now on
            msg = f"runs.prune(older_than=...) must be 0 or more seconds (got {shown(older_than)})"
            raise ValueError(msg)
        statuses = _statuses(status, "runs.prune")
        if statuses is None:
            msg = "runs.prune(status=...) takes a status or a list of them (got None)"
            raise TypeError(msg)
        import time

        return await self._db.runs_prune(time.time() - age, statuses)

    def __repr__(self) -> str:
        return f"Runs({self.store!r})"


def _statuses(
    status: RunStatus | Iterable[RunStatus] | None, where: str
) -> tuple[RunStatus, ...] | None:
    """A status or several (a list, tuple, set) as a tuple without repeats; ``None``
    stays ``None`` (any status)."""
    if status is None:
        return None
    if isinstance(status, str):
        many: Iterable[object] = (status,)
    elif isinstance(status, Iterable) and not isinstance(status, (bytes, bytearray)):
        many = status
    else:
        msg = f"{where}(status=...) takes a status or a list of them (got {status!r})"
        raise TypeError(msg)
    out: list[RunStatus] = []
    for s in many:
        if s not in _STATUSES:
            msg = f"{where}(status=...) must be one of {', '.join(_STATUSES)} (got {shown(s)})"
            raise ValueError(msg)
        if s not in out:
            out.append(cast("RunStatus", s))
    if not out:
        msg = f"{where}(status=...) got no status (pass None for any)"
        raise ValueError(msg)
    return tuple(out)


def _known_id(root_id: object) -> None:
    """``RunNotFoundError`` for an id no run can have (not a str, empty, a NUL, a lone
    surrogate, too long: the rule every root id met when its run was recorded), before
    the store is asked (a lone surrogate cannot even be sent to it)."""
    try:
        check_name(root_id, "root id")
    except StoreError:
        raise RunNotFoundError(root_id) from None  # type: ignore[arg-type]


async def _resume(
    scope: Scope, root_id: str, flows: Iterable[Flow[Any, Any]], *, orphan_only: bool
) -> Execution[Any]:
    db = _backend(scope.store, "resuming a run: the scope")
    _known_id(root_id)
    found = await db.runs_get(root_id)
    if found is None:
        raise RunNotFoundError(root_id)
    info = run_info(found[0])
    problem = None
    if info.session_id is not None:
        problem = "it is a session command; run the command again with session.exec"
    elif info.flow is None:
        problem = "its root ran no flow first, so there is nothing recorded to run again"
    elif not info.input_ok:
        problem = "its input was not JSON, so it cannot be run again from the record"
    if problem is not None:
        raise RunStateError(root_id, problem)
    assert info.flow is not None
    # Found before the claim: a flow that cannot be imported leaves the run as it was.
    flow = resolve_flow(info.flow, flows)
    state, _ = await db.runs_claim(root_id, orphan_only=orphan_only)
    if state == "missing":
        raise RunNotFoundError(root_id)
    if state == "completed":
        raise RunStateError(root_id, "it completed; there is nothing to resume (fork it instead)")
    if state == "running":
        raise RunStateError(
            root_id,
            "it is running in a live process; cancel it first (runs.cancel) or wait",
        )
    return scope.exec(flow, info.input, id=root_id)


async def recover(scope: Scope, flows: Iterable[Flow[Any, Any]]) -> list[Execution[Any]]:
    """Resume every ``running`` run whose owner is dead and whose flow is one of
    ``flows``; returns their executions (what ``scope.recover`` does)."""
    wanted = {flow_path(f): f for f in _flows(flows, "scope.recover(flows)")}
    db = _backend(scope.store, "scope.recover: the scope")
    out: list[Execution[Any]] = []
    for row in await db.runs_orphans():
        if row[3] not in wanted or row[14] is not None or not row[5]:
            continue
        state, _ = await db.runs_claim(row[0], orphan_only=True)
        if state != "claimed":
            continue  # another worker took it, or its owner came back
        out.append(scope.exec(wanted[row[3]], loads(row[4]), id=row[0]))
    return out
