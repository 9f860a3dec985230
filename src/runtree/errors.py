"""Errors raised by runtree.

Every error is a :class:`RuntreeError` and also subclasses the builtin it most resembles,
so ``except LookupError`` or ``except TimeoutError`` keep working. Each keeps its data as
attributes, builds its message only when it is read, and pickles (the journal stores them).

::

    RuntreeError
    ├── ContextClosedError      (RuntimeError)
    ├── ScopeDisposedError      (RuntimeError)
    ├── MissingTagError         (LookupError)
    ├── ParseError              (ValueError)
    ├── DependencyCycleError    (RuntimeError)
    ├── ResolveError            (LookupError)
    ├── Cancelled
    ├── ExecTimeoutError        (TimeoutError)
    ├── NestingError            (RecursionError)
    ├── SerializationError      (TypeError)
    ├── StepFailedError
    ├── JournalMismatchError    (RuntimeError)
    ├── JournalReentryError     (RuntimeError)
    ├── CommandNotRunningError  (RuntimeError)
    ├── RunStateError           (RuntimeError)
    └── StoreError
        ├── SessionNotFoundError (KeyError)
        └── RunNotFoundError     (KeyError)

Warnings (both :class:`UserWarning`): ``SerializationWarning`` when a durable journal cannot
store a step's value; ``JournalInputWarning`` when a journal key is replayed for an input
that differs from the recorded one.
"""

from __future__ import annotations

__all__ = [
    "Cancelled",
    "CommandNotRunningError",
    "ContextClosedError",
    "DependencyCycleError",
    "ExecTimeoutError",
    "JournalInputWarning",
    "JournalMismatchError",
    "JournalReentryError",
    "MissingTagError",
    "NestingError",
    "ParseError",
    "ResolveError",
    "RunNotFoundError",
    "RunStateError",
    "RuntreeError",
    "ScopeDisposedError",
    "SerializationError",
    "SerializationWarning",
    "SessionNotFoundError",
    "StepFailedError",
    "StoreError",
]


class RuntreeError(Exception):
    """Base class of every error runtree raises."""


class ContextClosedError(RuntreeError, RuntimeError):
    """``exec``/``run`` (or another operation that starts work) on a closed context."""

    def __init__(self, context: str, operation: str = "exec") -> None:
        super().__init__(context, operation)
        self.context = context
        self.operation = operation

    def __str__(self) -> str:
        return (
            f"ExecutionContext {self.context!r} is closed: cannot {self.operation} on it. "
            "Start the work from an open context (the parent, or a new one from "
            "scope.create_context())."
        )


class ScopeDisposedError(RuntreeError, RuntimeError):
    """Any use of a scope after :meth:`Scope.dispose`."""

    def __init__(self, operation: str) -> None:
        super().__init__(operation)
        self.operation = operation

    def __str__(self) -> str:
        return (
            f"Cannot {self.operation}: the scope is disposed. "
            "Create a new scope with runtree.create_scope()."
        )


class MissingTagError(RuntreeError, LookupError):
    """A required tag has no value in the context, its parents, the scope or a default."""

    def __init__(self, tag: str, where: str = "context") -> None:
        super().__init__(tag, where)
        self.tag = tag
        self.where = where

    def __str__(self) -> str:
        return (
            f"Tag {self.tag!r} has no value in this {self.where}, its parents or the scope, "
            "and no default. Bind it with create_scope(tags=[...]), "
            "create_context(tags=[...]), exec(..., tags=[...]) or ctx.set(), "
            "or give the tag a default."
        )


class ParseError(RuntreeError, ValueError):
    """A flow's input or a tag's value was rejected by its ``parse`` callable."""

    def __init__(self, kind: str, name: str, reason: str) -> None:
        super().__init__(kind, name, reason)
        self.kind = kind
        self.name = name
        self.reason = reason

    def __str__(self) -> str:
        return f"Invalid value for {self.kind} {self.name!r}: {self.reason}"


class DependencyCycleError(RuntreeError, RuntimeError):
    """Resolving an atom or resource needs itself."""

    def __init__(self, cycle: tuple[str, ...]) -> None:
        super().__init__(cycle)
        self.cycle = cycle

    def __str__(self) -> str:
        return (
            f"Dependency cycle: {' -> '.join(self.cycle)}. "
            "Break it by removing one of these dependencies (check presets that "
            "replace an atom with one that depends on it, and factories that resolve "
            "their own atom again)."
        )


class ResolveError(RuntreeError, LookupError):
    """An atom's or resource's factory raised; the original error is ``__cause__``."""

    def __init__(self, atom: str, path: tuple[str, ...]) -> None:
        super().__init__(atom, path)
        self.atom = atom
        self.path = path

    def __str__(self) -> str:
        via = " -> ".join(self.path) if self.path else self.atom
        return (
            f"Cannot resolve {self.atom!r} (via {via}): its factory failed; "
            "see the cause above. It is not cached: the next resolve runs the factory again."
        )


class Cancelled(RuntreeError):
    """The work of a context was cancelled with ``ctx.cancel()`` (or its scope closed it).

    It is an ``Exception``, not a ``BaseException``: the caller of a cancelled exec can
    handle it and go on; its own task is not cancelled.
    """

    def __init__(self, context: str, reason: str | None = None) -> None:
        super().__init__(context, reason)
        self.context = context
        self.reason = reason

    def __str__(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"ExecutionContext {self.context!r} was cancelled{why}"


class ExecTimeoutError(RuntreeError, TimeoutError):
    """An attempt of an exec ran longer than its ``timeout=``."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(name, timeout)
        self.name = name
        self.timeout = timeout

    def __str__(self) -> str:
        return (
            f"{self.name!r} timed out after {self.timeout:g}s. Raise timeout= or make the "
            "step faster; add retry= to try again."
        )


class NestingError(RuntreeError, RecursionError):
    """Execs nested deeper than the interpreter's stack allows."""

    def __init__(self, name: str, depth: int) -> None:
        super().__init__(name, depth)
        self.name = name
        self.depth = depth

    def __str__(self) -> str:
        import sys

        return (
            f"Cannot exec {self.name!r}: the execs nested in this task already use about "
            f"{self.depth} stack frames, close to the recursion limit "
            f"({sys.getrecursionlimit()}). Use a loop instead of recursion, or raise "
            "sys.setrecursionlimit() before creating the scope."
        )


class SerializationError(RuntreeError, TypeError):
    """A value that must be strict JSON (a serializable tag, shared data, a journal entry)."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(what, reason)
        self.what = what
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"{self.what} must be strict JSON (dict with str keys, list, str, int, float, "
            f"bool, None): {self.reason}"
        )


class SerializationWarning(UserWarning):
    """A durable journal could not store a step's value; the step will run again."""


class JournalInputWarning(UserWarning):
    """A journal key was replayed although the step's input differs from the recorded one.

    The key is the step's identity, so the recorded outcome is returned; the warning says
    so, with both input digests, so that a key that should include what varies is found.
    """


class StepFailedError(RuntreeError):
    """A journaled step's recorded error, rebuilt after a restart."""

    def __init__(self, key: str, type_name: str, message: str) -> None:
        super().__init__(key, type_name, message)
        self.key = key
        self.type_name = type_name
        self.message = message

    def __str__(self) -> str:
        return (
            f"Step {self.key!r} failed in an earlier run with {self.type_name}: "
            f"{self.message}. Call ctx.reset_journal({self.key!r}) to run it again."
        )


class JournalMismatchError(RuntreeError, RuntimeError):
    """The same journal key came back for a different step."""

    def __init__(self, key: str, recorded: str, requested: str) -> None:
        super().__init__(key, recorded, requested)
        self.key = key
        self.recorded = recorded
        self.requested = requested

    def __str__(self) -> str:
        return (
            f"Journal key {self.key!r} was recorded for {self.recorded!r} but is now used "
            f"for {self.requested!r}. Give each step its own key, or reset the journal "
            "entry with ctx.reset_journal()."
        )


class JournalReentryError(RuntreeError, RuntimeError):
    """A keyed step execs its own key again inside itself (it would wait for itself)."""

    def __init__(self, key: str, step: str) -> None:
        super().__init__(key, step)
        self.key = key
        self.step = step

    def __str__(self) -> str:
        return (
            f"Journal key {self.key!r} is being run by the enclosing step {self.step!r}; "
            "a step cannot wait for its own outcome. Give the inner step its own key."
        )


class CommandNotRunningError(RuntreeError, RuntimeError):
    """``complete_command`` for a command that is not running in the session."""

    def __init__(self, session_id: str, command: str, reason: str) -> None:
        super().__init__(session_id, command, reason)
        self.session_id = session_id
        self.command = command
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"Cannot complete command {self.command!r} in session {self.session_id!r}: "
            f"{self.reason}. Call start_command({self.command!r}, inputs) first."
        )


class StoreError(RuntreeError):
    """A store cannot be opened, read or written."""


class SessionNotFoundError(StoreError, KeyError):
    """No session with that id in the store (``reason``: why none can have it)."""

    def __init__(self, session_id: str, reason: str | None = None) -> None:
        super().__init__(session_id)
        self.session_id = session_id
        self.reason = reason

    def __str__(self) -> str:
        if self.reason is not None:
            return f"No session can have that id: {self.reason}"
        return (
            f"No session {self.session_id!r} in this store. List sessions with "
            "Sessions.list() (or `runtree session list`) or create one."
        )


class RunNotFoundError(StoreError, KeyError):
    """No recorded run with that id in the store."""

    def __init__(self, root_id: str) -> None:
        super().__init__(root_id)
        self.root_id = root_id

    def __str__(self) -> str:
        return (
            f"No run {self.root_id!r} in this store. List runs with `runtree runs list` "
            "(or Runs(store).list())."
        )


class RunStateError(RuntreeError, RuntimeError):
    """A run operation its state does not allow: resuming a completed run or one a live
    process runs, forking from a key the run never recorded, a fork id already in use."""

    def __init__(self, root_id: str, reason: str) -> None:
        super().__init__(root_id, reason)
        self.root_id = root_id
        self.reason = reason

    def __str__(self) -> str:
        return f"Run {self.root_id!r}: {self.reason}"
