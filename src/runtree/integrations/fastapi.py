"""FastAPI: the request's context and scope values as dependencies.

Install the extra (``pip install 'runtree[fastapi]'``)::

    from typing import Annotated
    from fastapi import FastAPI
    from runtree.integrations.fastapi import Ctx, Resolve, RuntreeMiddleware, lifespan

    app = FastAPI(lifespan=lifespan(make_scope))
    app.add_middleware(RuntreeMiddleware)

    @app.get("/users/{name}")
    async def user(name: str, ctx: Ctx, db: Annotated[Db, Resolve(db_atom)]) -> dict: ...

``Ctx`` is the request's boundary (the one :class:`RuntreeMiddleware` opened);
``Resolve(target)`` gives what ``await ctx.resolve(target)`` gives: an atom's value, or a
resource owned by the request's boundary. See docs/fastapi.md.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

try:
    from fastapi import Depends, params
    from starlette.requests import HTTPConnection
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    msg = "runtree.integrations.fastapi needs the 'fastapi' extra: pip install 'runtree[fastapi]'"
    raise ImportError(msg, name=exc.name) from exc

from .._context import ExecutionContext
from .._defs import Atom, Resource
from .._json import shown
from .asgi import (
    CONTEXT_KEY,
    STATE_KEY,
    ErrorResponse,
    RuntreeMiddleware,
    context_of,
    http_route,
    lifespan,
    request_id,
)

__all__ = [
    "CONTEXT_KEY",
    "STATE_KEY",
    "Ctx",
    "ErrorResponse",
    "Resolve",
    "RuntreeMiddleware",
    "http_route",
    "lifespan",
    "request_id",
    "request_context",
]

T = TypeVar("T")


def request_context(connection: HTTPConnection) -> ExecutionContext:
    """The request's boundary (a FastAPI dependency; also fine to call directly)."""
    return context_of(connection.scope)


#: The request's :class:`runtree.ExecutionContext`, as a parameter annotation.
Ctx = Annotated[ExecutionContext, Depends(request_context)]

# One dependency function per target, so that FastAPI's per-request dependency cache
# resolves a target once however many parameters ask for it.
_resolvers: dict[object, params.Depends] = {}


def Resolve(target: Atom[T] | Resource[T]) -> params.Depends:
    """``Annotated[T, Resolve(target)]``: the value of an atom (the scope's, cached) or a
    resource (owned by the request's boundary, cleaned up when it closes)."""
    found = _resolvers.get(target)
    if found is not None:
        return found
    if not isinstance(target, (Atom, Resource)):
        msg = f"Resolve() takes an atom or a resource (got {shown(target)})"
        raise TypeError(msg)

    async def resolve(connection: HTTPConnection) -> Any:
        return await context_of(connection.scope).resolve(target)

    resolve.__name__ = resolve.__qualname__ = f"resolve_{target.name}"
    found = _resolvers[target] = params.Depends(resolve)
    return found
