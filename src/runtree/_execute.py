"""``runtree.execute``: run one flow, in a given scope or a temporary one."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal, TypeVar, overload

from ._defs import Flow, Preset
from ._execution import ExecutionDetails
from ._extensions import Extension
from ._scope import Scope, create_scope
from ._tags import Tagged

log = logging.getLogger("runtree")

__all__ = ["execute"]

In = TypeVar("In")
Out = TypeVar("Out")
Y = TypeVar("Y")


# A streaming flow gives the list of its items (DESIGN §8); ``scope=`` never goes with
# ``extensions``, ``presets`` or ``scope_tags``.
@overload
async def execute(
    flow: Flow[In, AsyncIterator[Y]],
    input: object = None,
    *,
    scope: Scope,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: Literal[False] = False,
) -> list[Y]: ...
@overload
async def execute(
    flow: Flow[In, AsyncIterator[Y]],
    input: object = None,
    *,
    scope: Scope,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: Literal[True],
) -> ExecutionDetails[list[Y]]: ...
@overload
async def execute(
    flow: Flow[In, AsyncIterator[Y]],
    input: object = None,
    *,
    scope: None = None,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: Literal[False] = False,
    extensions: Iterable[Extension] = (),
    presets: Iterable[Preset[Any]] = (),
    scope_tags: Iterable[Tagged[Any]] = (),
) -> list[Y]: ...
@overload
async def execute(
    flow: Flow[In, AsyncIterator[Y]],
    input: object = None,
    *,
    scope: None = None,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: Literal[True],
    extensions: Iterable[Extension] = (),
    presets: Iterable[Preset[Any]] = (),
    scope_tags: Iterable[Tagged[Any]] = (),
) -> ExecutionDetails[list[Y]]: ...
@overload
async def execute(  # type: ignore[overload-overlap]
    flow: Flow[In, Out],
    input: object = None,
    *,
    scope: Scope,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: Literal[False] = False,
) -> Out: ...
@overload
async def execute(  # type: ignore[overload-overlap]
    flow: Flow[In, Out],
    input: object = None,
    *,
    scope: Scope,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: Literal[True],
) -> ExecutionDetails[Out]: ...
@overload
async def execute(  # type: ignore[overload-overlap]
    flow: Flow[In, Out],
    input: object = None,
    *,
    scope: None = None,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: Literal[False] = False,
    extensions: Iterable[Extension] = (),
    presets: Iterable[Preset[Any]] = (),
    scope_tags: Iterable[Tagged[Any]] = (),
) -> Out: ...
@overload
async def execute(  # type: ignore[overload-overlap]
    flow: Flow[In, Out],
    input: object = None,
    *,
    scope: None = None,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: Literal[True],
    extensions: Iterable[Extension] = (),
    presets: Iterable[Preset[Any]] = (),
    scope_tags: Iterable[Tagged[Any]] = (),
) -> ExecutionDetails[Out]: ...
@overload
async def execute(
    flow: Flow[In, AsyncIterator[Y]],
    input: object = None,
    *,
    scope: Scope,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: bool,
) -> list[Y] | ExecutionDetails[list[Y]]: ...
@overload
async def execute(
    flow: Flow[In, AsyncIterator[Y]],
    input: object = None,
    *,
    scope: None = None,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: bool,
    extensions: Iterable[Extension] = (),
    presets: Iterable[Preset[Any]] = (),
    scope_tags: Iterable[Tagged[Any]] = (),
) -> list[Y] | ExecutionDetails[list[Y]]: ...
@overload
async def execute(
    flow: Flow[In, Out],
    input: object = None,
    *,
    scope: Scope,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: bool,
) -> Out | ExecutionDetails[Out]: ...
@overload
async def execute(
    flow: Flow[In, Out],
    input: object = None,
    *,
    scope: None = None,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: bool,
    extensions: Iterable[Extension] = (),
    presets: Iterable[Preset[Any]] = (),
    scope_tags: Iterable[Tagged[Any]] = (),
) -> Out | ExecutionDetails[Out]: ...
async def execute(
    flow: Flow[In, Out],
    input: object = None,
    *,
    scope: Scope | None = None,
    execution_tags: Iterable[Tagged[Any]] = (),
    tags: Iterable[Tagged[Any]] = (),
    details: bool = False,
    extensions: Iterable[Extension] = (),
    presets: Iterable[Preset[Any]] = (),
    scope_tags: Iterable[Tagged[Any]] = (),
) -> Any:
    """Run ``flow`` once: in ``scope`` if given, else in a temporary scope that is
    disposed afterwards (also on failure).

    ``tags=`` (like ``scope.exec``'s) and ``execution_tags=`` are the same thing: tags of
    this execution's root context; ``scope_tags=`` configure the temporary scope.

    Raises:
        TypeError: ``scope`` together with ``extensions``, ``presets`` or ``scope_tags``
            (configure the scope itself instead); both ``tags`` and ``execution_tags``.
    """
    if tags:
        if execution_tags:
            msg = (
                "execute() takes tags= or execution_tags= (the same thing: tags of this "
                "execution), not both"
            )
            raise TypeError(msg)
        execution_tags = tags

    if scope is not None:
        extras = [
            n
            for n, v in (
                ("extensions", extensions),
                ("presets", presets),
                ("scope_tags", scope_tags),
            )
            if v
        ]
        if extras:
            msg = (
                f"execute(scope=...) cannot take {', '.join(extras)}: they configure a new "
                "scope. Pass them to create_scope() instead, or drop scope= to use a "
                "temporary scope."
            )
            raise TypeError(msg)
        return await scope.exec(flow, input, tags=execution_tags, details=details)
    temp = create_scope(tags=scope_tags, extensions=extensions, presets=presets)
    try:
        result = await temp.exec(flow, input, tags=execution_tags, details=details)
    except BaseException as exc:
        await temp._dispose_after(exc)  # the flow's error, with cleanup failures as notes
        raise
    if not details:
        await temp.dispose()
        return result
    # details=True never raises: a cleanup failure is logged (and noted on the flow's
    # error, if it failed).
    error = result.error  # type: ignore[union-attr]
    if error is None:
        try:
            await temp.dispose()
        except Exception:
            log.exception("execute(): disposing its temporary scope failed")
    else:
        await temp._dispose_after(error)
    return result
