"""``scope.override(target, replacement)``: a preset on a live scope, for one block.

A preset given to ``create_scope`` is in place before anything resolves. An override
comes later, when values may already be cached: entering it releases the target's cached
value and every atom that depends on it (their cleanups run), so the next resolve sees the
replacement; leaving it restores what was there before and releases them again, so the
next resolve runs the real factories.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, final

from ._defs import Atom, Flow, preset
from ._tags import MISSING
from .errors import DependencyCycleError

if TYPE_CHECKING:
    from ._scope import Scope

__all__ = ["Override"]


@final
class Override:
    """What ``scope.override(target, replacement)`` returns: an async context manager
    (cached values released, their cleanups run, on entry and exit) that also works with
    ``with`` (the values forgotten at once, their cleanups run at dispose)."""

    __slots__ = ("_active", "_previous", "_scope", "replacement", "target")

    def __init__(self, scope: Scope, target: object, replacement: object) -> None:
        preset(target, replacement)  # type: ignore[arg-type]  # the same checks as a preset
        if replacement is target:
            name = getattr(target, "name", repr(target))
            raise DependencyCycleError((name, name))
        self._scope = scope
        self.target = target
        self.replacement = replacement
        self._previous: object = MISSING
        self._active = False

    def _table(self) -> dict[Any, object]:
        scope = self._scope
        return scope._flow_presets if isinstance(self.target, Flow) else scope._presets

    async def __aenter__(self) -> None:
        if self._enter() and isinstance(self.target, Atom):
            try:
                await self._scope.release(self.target)
            except BaseException:
                # ``async with`` never leaves a block it did not enter: put back what
                # was there now (the released value's cleanup failed, but it is gone).
                self._leave()
                raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._leave() and isinstance(self.target, Atom):
            await self._scope.release(self.target)

    # ``with scope.override(...)`` (a sync test, or code that cannot await): the cached
    # values are forgotten at once, as ``async with`` releases them, but their cleanups
    # run when the scope is disposed instead of on entry and exit.

    def __enter__(self) -> None:
        if self._enter() and isinstance(self.target, Atom):
            self._scope._resolver.forget(self.target)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._leave() and isinstance(self.target, Atom):
            self._scope._resolver.forget(self.target)

    def _enter(self) -> bool:
        """Put the replacement in place (checked); whether to release the target."""
        name = getattr(self.target, "name", self.target)
        if self._active:
            msg = f"scope.override({name!r}) is already active; make a new one to nest"
            raise RuntimeError(msg)
        scope = self._scope
        scope._check_open(f"override {name!r}")
        table = self._table()
        self._previous = table.get(self.target, MISSING)
        table[self.target] = self.replacement
        try:
            scope._check_preset_cycles()
        except BaseException:
            self._restore()
            raise
        scope._rebuild_hooks()  # a flow preset sends execs down the full path
        self._active = True
        scope._overrides.append(self)
        return True

    def _leave(self) -> bool:
        """Put back what was there; whether to release the target."""
        if not self._active:
            return False
        self._active = False
        scope = self._scope
        active = scope._overrides
        mine = active.index(self)
        del active[mine]
        later = next((o for o in active[mine:] if o.target is self.target), None)
        if later is not None:
            # Left before an override of the same target entered after it (overlapping
            # blocks, in two tasks say): that one stays in place, and restores what was
            # there before this one when it leaves.
            later._previous = self._previous
            self._previous = MISSING
            return False
        self._restore()
        if scope.disposed:
            return False
        scope._rebuild_hooks()
        return True

    def _restore(self) -> None:
        table = self._table()
        if self._previous is MISSING:
            table.pop(self.target, None)
        else:
            table[self.target] = self._previous
        self._previous = MISSING

    def __repr__(self) -> str:
        name = getattr(self.target, "name", self.target)
        return f"<Override {name!r} {'active' if self._active else 'inactive'}>"
