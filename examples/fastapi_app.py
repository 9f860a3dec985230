"""A FastAPI app with one runtree boundary per request.

The scope lives as long as the app (``lifespan``); each request gets its own context with
``request_id`` and ``http_route`` tags; a request-scoped transaction commits when the
handler succeeds and rolls back when it fails. Run it: ``python examples/fastapi_app.py``
(it serves two requests through httpx's ASGI transport and prints what happened); serve it
for real with ``uvicorn examples.fastapi_app:app``.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
from fastapi import FastAPI, HTTPException

import runtree as rt
from runtree.integrations.fastapi import Ctx, Resolve, RuntreeMiddleware, lifespan, request_id
from runtree.logging import ContextFilter

log = logging.getLogger("example")


@rt.atom
async def database(ctx: rt.ResolveContext) -> AsyncIterator[dict[str, list[str]]]:
    print("database: connect")
    yield {"alice": ["read", "write"], "bob": ["read"]}
    print("database: disconnect")


@rt.resource
async def transaction(ctx: rt.ResolveContext) -> AsyncIterator[list[str]]:
    writes: list[str] = []
    try:
        yield writes
    except BaseException:
        print(f"transaction {ctx.get(request_id)}: rollback {writes}")
        raise
    else:
        print(f"transaction {ctx.get(request_id)}: commit {writes}")


@rt.flow(deps={"db": database, "tx": transaction})
async def grant(ctx: rt.ExecutionContext, db: dict[str, list[str]], tx: list[str]) -> list[str]:
    user, right = ctx.input  # type: ignore[misc]
    if user not in db:
        raise KeyError(user)
    tx.append(f"{user}+{right}")
    log.info("granted %s to %s", right, user)
    return [*db[user], right]


app = FastAPI(lifespan=lifespan(rt.create_scope))
app.add_middleware(RuntreeMiddleware)


@app.get("/users/{name}")
async def rights(name: str, db: Annotated[dict[str, list[str]], Resolve(database)]) -> list[str]:
    if name not in db:
        raise HTTPException(404, f"no user {name}")
    return db[name]


@app.post("/users/{name}/rights/{right}")
async def add_right(name: str, right: str, ctx: Ctx) -> list[str]:
    return await ctx.exec(grant, (name, right))


async def main() -> None:
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter(tags=[request_id]))
    handler.setFormatter(logging.Formatter("log [%(request_id)s %(runtree_flow)s] %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://example") as client,
    ):
        got = await client.get("/users/alice")
        print(f"GET /users/alice -> {got.status_code} {got.json()}")
        ok = await client.post("/users/bob/rights/write", headers={"X-Request-ID": "req-1"})
        print(f"POST /users/bob/rights/write -> {ok.status_code} {ok.json()}")
        failed = await client.post("/users/carol/rights/write", headers={"X-Request-ID": "req-2"})
        print(f"POST /users/carol/rights/write -> {failed.status_code}")


if __name__ == "__main__":
    asyncio.run(main())
