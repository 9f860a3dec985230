"""runtree: scoped dependency graphs and hierarchical, durable execution contexts.

A :class:`Scope` owns long-lived values (atoms) and their cleanup; every unit of work runs
in an :class:`ExecutionContext`, and each nested ``exec`` makes a child context with its own
data, inherited tags, structured cancellation, timeouts, retries and ordered cleanup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._context import ContextDetails as ContextDetails
from ._context import ExecutionContext as ExecutionContext
from ._context import FlowHandle as FlowHandle
from ._context import Settled as Settled
from ._context import current_context as current_context
from ._define import atom as atom
from ._define import flow as flow
from ._define import resource as resource
from ._defs import Atom as Atom
from ._defs import Flow as Flow
from ._defs import Preset as Preset
from ._defs import Resource as Resource
from ._defs import preset as preset
from ._execute import execute as execute
from ._execution import Execution as Execution
from ._execution import ExecutionDetails as ExecutionDetails
from ._extensions import ExecOp as ExecOp
from ._extensions import Extension as Extension
from ._extensions import ResolveOp as ResolveOp
from ._resolve import ResolveContext as ResolveContext
from ._scope import Scope as Scope
from ._scope import create_scope as create_scope
from ._stream import FlowStream as FlowStream
from ._tags import ParsedTag as ParsedTag
from ._tags import Tag as Tag
from ._tags import TagDep as TagDep
from ._tags import Tagged as Tagged
from ._tags import tag as tag
from ._tags import tags as tags
from .errors import Cancelled as Cancelled
from .errors import CommandNotRunningError as CommandNotRunningError
from .errors import ContextClosedError as ContextClosedError
from .errors import DependencyCycleError as DependencyCycleError
from .errors import ExecTimeoutError as ExecTimeoutError
from .errors import JournalInputWarning as JournalInputWarning
from .errors import JournalMismatchError as JournalMismatchError
from .errors import JournalReentryError as JournalReentryError
from .errors import MissingTagError as MissingTagError
from .errors import NestingError as NestingError
from .errors import ParseError as ParseError
from .errors import ResolveError as ResolveError
from .errors import RunNotFoundError as RunNotFoundError
from .errors import RunStateError as RunStateError
from .errors import RuntreeError as RuntreeError
from .errors import ScopeDisposedError as ScopeDisposedError
from .errors import SerializationError as SerializationError
from .errors import SerializationWarning as SerializationWarning
from .errors import SessionNotFoundError as SessionNotFoundError
from .errors import StepFailedError as StepFailedError
from .errors import StoreError as StoreError

__version__ = "0.1.0"

__all__ = [
    "Atom",
    "Cancelled",
    "CommandNotRunningError",
    "ContextClosedError",
    "ContextDetails",
    "DependencyCycleError",
    "ExecOp",
    "ExecTimeoutError",
    "Execution",
    "ExecutionContext",
    "ExecutionDetails",
    "Extension",
    "Flow",
    "FlowHandle",
    "FlowStream",
    "JournalMismatchError",
    "JournalReentryError",
    "MissingTagError",
    "NestingError",
    "ParseError",
    "Preset",
    "ResolveContext",
    "ResolveError",
    "ResolveOp",
    "Resource",
    "RuntreeError",
    "Scope",
    "ScopeDisposedError",
    "SerializationError",
    "SerializationWarning",
    "JournalInputWarning",
    "RunNotFoundError",
    "RunStateError",
    "SessionNotFoundError",
    "Settled",
    "StepFailedError",
    "StoreError",
    "ParsedTag",
    "Tag",
    "TagDep",
    "Tagged",
    "atom",
    "create_scope",
    "current_context",
    "execute",
    "flow",
    "preset",
    "resource",
    "tag",
    "tags",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("runtree."):
        try:
            _obj.__module__ = "runtree"
        except (AttributeError, TypeError):
            pass
del _name, _obj


if TYPE_CHECKING:  # for type checkers, the submodules below are attributes as well
    from . import otel as otel
    from . import sessions as sessions
    from . import stores as stores


def __getattr__(name: str) -> object:
    # Submodules with optional weight load on first use: stores, sessions, otel.
    if name in ("stores", "sessions", "otel"):
        import importlib

        return importlib.import_module(f"runtree.{name}")
    msg = f"module 'runtree' has no attribute {name!r}"
    raise AttributeError(msg)
