"""runtree.integrations.fastapi with the real FastAPI, through httpx's ASGI transport and
a real uvicorn server on 127.0.0.1.

No ``from __future__ import annotations`` here: FastAPI evaluates parameter annotations
with the module's globals, and these apps are built inside functions."""

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Annotated, Any

import pytest

import runtree as rt

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import httpx
from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from runtree.integrations.fastapi import (
    Ctx,
    Resolve,
    RuntreeMiddleware,
    http_route,
    lifespan,
    request_id,
)

ROOT = Path(__file__).resolve().parent.parent.parent
Serve = Callable[[Any], AbstractAsyncContextManager[str]]
RawGet = Callable[[str, str, dict[str, str]], Awaitable[tuple[int, bytes]]]


class World:
    """What the app's resources and flows saw, and an app built on a fresh scope."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.closed: dict[str, rt.ExecutionContext] = {}  # request id -> boundary
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.boundary_closed = asyncio.Event()
        world = self

        @rt.atom
        def users(ctx: rt.ResolveContext) -> dict[str, int]:
            return {"alice": 1, "bob": 2}

        @rt.resource
        async def tx(ctx: rt.ResolveContext) -> AsyncIterator[list[str]]:
            writes: list[str] = []
            try:
                yield writes
            except BaseException as exc:
                world.events.append(f"rollback {type(exc).__name__}")
                raise
            else:
                world.events.append(f"commit {writes}")

        @rt.flow(deps={"tx": tx})
        async def slow(ctx: rt.ExecutionContext, tx: list[str]) -> str:
            tx.append("slow")
            world.started.set()
            await world.release.wait()
            return "done"

        self.users, self.tx, self.slow = users, tx, slow
        self.scope = rt.create_scope()
        self.app = self._app()

    def _watch(self, ctx: rt.ExecutionContext) -> None:
        def closed() -> None:
            self.closed[ctx.get(request_id)] = ctx
            self.boundary_closed.set()

        ctx.on_close(closed)

    def _app(self) -> FastAPI:
        app = FastAPI(lifespan=lifespan(lambda: self.scope))
        app.add_middleware(RuntreeMiddleware)
        users, tx, slow = self.users, self.tx, self.slow
        world = self
        router = APIRouter(prefix="/v1")

        @router.get("/users/{name}")
        async def user(
            name: str,
            ctx: Ctx,
            db: Annotated[dict[str, int], Resolve(users)],
            writes: Annotated[list[str], Resolve(tx)],
        ) -> dict[str, object]:
            world._watch(ctx)
            writes.append(name)
            await asyncio.sleep(0)  # let concurrent requests interleave
            assert rt.current_context() is ctx
            return {
                "id": db[name],
                "context": ctx.id,
                "request_id": ctx.get(request_id),
                "route": ctx.get(http_route),
                "name": ctx.name,
            }

        @router.get("/fail")
        async def fail(ctx: Ctx, writes: Annotated[list[str], Resolve(tx)]) -> None:
            world._watch(ctx)
            writes.append("x")
            raise ValueError("boom")

        @router.get("/slow")
        async def slow_route(ctx: Ctx) -> str:
            world._watch(ctx)
            return await ctx.exec(slow)

        @router.get("/stream")
        async def stream(ctx: Ctx, writes: Annotated[list[str], Resolve(tx)]) -> StreamingResponse:
            world._watch(ctx)

            async def body() -> AsyncIterator[str]:
                for i in range(3):
                    assert rt.current_context() is ctx and not ctx.closed
                    writes.append(f"chunk {i}")
                    world.events.append(f"chunk {i}")
                    yield f"{i}\n"

            return StreamingResponse(body())

        @router.websocket("/ws")
        async def ws(websocket: WebSocket, ctx: Ctx) -> None:
            world._watch(ctx)
            await websocket.accept()
            text = await websocket.receive_text()
            assert rt.current_context() is ctx
            await websocket.send_json(
                {"echo": text, "route": ctx.get(http_route), "request_id": ctx.get(request_id)}
            )
            if text == "bye":
                await websocket.close()
                return
            try:
                await websocket.receive_text()  # until the client leaves
            except WebSocketDisconnect:
                return

        @router.websocket("/ws/busy")
        async def ws_busy(
            websocket: WebSocket, ctx: Ctx, writes: Annotated[list[str], Resolve(tx)]
        ) -> None:
            """Works without reading while the client leaves (a long step)."""
            world._watch(ctx)
            await websocket.accept()
            await websocket.receive_text()
            world.started.set()
            await ctx.run(asyncio.sleep, 10)  # cancelled when the client leaves

        @router.websocket("/ws/push")
        async def ws_push(
            websocket: WebSocket, ctx: Ctx, writes: Annotated[list[str], Resolve(tx)]
        ) -> None:
            """Only sends: it learns the client left when a send fails, and returns."""
            world._watch(ctx)
            await websocket.accept()
            try:
                for i in range(1000):
                    await websocket.send_text(str(i))
                    await asyncio.sleep(0.01)
            except WebSocketDisconnect:
                return

        @router.get("/late-bug")
        async def late_bug(ctx: Ctx) -> None:
            """A bug of its own, met after the client left: not the disconnect's doing."""
            world._watch(ctx)
            world.started.set()
            await asyncio.sleep(0.5)
            raise KeyError("missing")

        @router.websocket("/ws/late-close")
        async def ws_late_close(websocket: WebSocket, ctx: Ctx) -> None:
            """Closes the socket itself, after the client left."""
            world._watch(ctx)
            await websocket.accept()
            await websocket.send_text("hello")
            await asyncio.sleep(0.5)
            await websocket.close()

        @router.post("/upload")
        async def upload(
            request: Request, ctx: Ctx, writes: Annotated[list[str], Resolve(tx)]
        ) -> int:
            world._watch(ctx)
            world.started.set()
            return len(await request.body())  # the client leaves halfway

        app.include_router(router)
        return app


@pytest.fixture
def world() -> World:
    return World()


async def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


class TestThroughASGITransport:
    async def test_a_request_gets_its_own_context_tags_and_values(self, world: World) -> None:
        async with world.app.router.lifespan_context(world.app), await _client(world.app) as c:
            got = (await c.get("/v1/users/alice", headers={"X-Request-ID": "req-1"})).json()
        assert got["id"] == 1
        assert got["request_id"] == "req-1"
        assert got["route"] == "/v1/users/{name}"
        assert got["name"] == "GET /v1/users/{name}"
        boundary = world.closed["req-1"]
        assert boundary.id == got["context"]
        assert boundary.details.status == "completed"
        assert world.events == ["commit ['alice']"]
        assert world.scope.disposed  # the lifespan disposed it

    async def test_a_missing_or_unusable_request_id_gets_a_new_one(self, world: World) -> None:
        async with world.app.router.lifespan_context(world.app), await _client(world.app) as c:
            a = (await c.get("/v1/users/bob")).json()["request_id"]
            b = (await c.get("/v1/users/bob", headers={"X-Request-ID": "x" * 200})).json()
        assert len(a) == 32 and int(a, 16) >= 0
        assert b["request_id"] != "x" * 200 and len(b["request_id"]) == 32

    async def test_a_failing_handler_answers_500_and_rolls_back(self, world: World) -> None:
        async with world.app.router.lifespan_context(world.app), await _client(world.app) as c:
            response = await c.get("/v1/fail", headers={"X-Request-ID": "f"})
        assert response.status_code == 500
        assert world.events == ["rollback ValueError"]
        boundary = world.closed["f"]
        assert boundary.details.status == "failed"
        assert isinstance(boundary.details.error, ValueError)

    async def test_a_streaming_response_keeps_the_context_open_until_sent(
        self, world: World
    ) -> None:
        async with world.app.router.lifespan_context(world.app), await _client(world.app) as c:
            response = await c.get("/v1/stream", headers={"X-Request-ID": "s"})
        assert response.text == "0\n1\n2\n"
        assert world.events == [
            "chunk 0",
            "chunk 1",
            "chunk 2",
            "commit ['chunk 0', 'chunk 1', 'chunk 2']",
        ]
        assert world.closed["s"].details.status == "completed"

    async def test_the_route_template_includes_the_prefixes_of_mounted_apps(self) -> None:
        """FastAPI's router reports only the final route (a Mount does not store itself
        in the scope as Starlette's router does): the mounts' prefixes still count."""
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Mount, Route

        async def plain(request: Request) -> JSONResponse:
            return JSONResponse(rt.current_context().get(http_route))  # type: ignore[union-attr]

        app, sub = FastAPI(), FastAPI()

        @sub.get("/items/{item_id}")
        async def item(item_id: int, ctx: Ctx) -> str:
            return ctx.get(http_route)

        app.mount("/v1", sub)
        app.router.routes.append(Mount("/plain", routes=[Route("/w/{k}", plain)]))
        app.add_middleware(RuntreeMiddleware, scope=rt.create_scope())
        async with await _client(app) as c:
            assert (await c.get("/v1/items/1")).json() == "/v1/items/{item_id}"
            assert (await c.get("/plain/w/x")).json() == "/plain/w/{k}"

    async def test_without_the_middleware_ctx_names_the_fix(self) -> None:
        app = FastAPI()

        @app.get("/")
        async def index(ctx: Ctx) -> str:
            return ctx.id

        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            with pytest.raises(LookupError, match=r"^no runtree context .*RuntreeMiddleware"):
                await c.get("/")

    def test_resolve_refuses_what_it_cannot_resolve(self) -> None:
        with pytest.raises(TypeError, match=r"^Resolve\(\) takes an atom or a resource"):
            Resolve("db")  # type: ignore[arg-type]


class TestUnderUvicorn:
    async def test_requests_failures_and_streams(self, world: World, serve: Serve) -> None:
        async with serve(world.app) as host, httpx.AsyncClient(base_url=f"http://{host}") as c:
            ok = await c.get("/v1/users/alice", headers={"X-Request-ID": "u1"})
            failed = await c.get("/v1/fail", headers={"X-Request-ID": "u2"})
            streamed = await c.get("/v1/stream", headers={"X-Request-ID": "u3"})
        assert ok.json()["route"] == "/v1/users/{name}"
        assert failed.status_code == 500
        assert streamed.text == "0\n1\n2\n"
        assert [world.closed[k].details.status for k in ("u1", "u2", "u3")] == [
            "completed",
            "failed",
            "completed",
        ]
        assert world.events[0] == "commit ['alice']"
        assert world.events[1] == "rollback ValueError"
        assert world.scope.disposed

    async def test_a_client_disconnect_cancels_the_request(
        self, world: World, serve: Serve
    ) -> None:
        async with serve(world.app) as host:
            hostname, port = host.split(":")
            _reader, writer = await asyncio.open_connection(hostname, int(port))
            writer.write(b"GET /v1/slow HTTP/1.1\r\nHost: t\r\nX-Request-ID: gone\r\n\r\n")
            await writer.drain()
            await world.started.wait()  # the flow runs, holding its transaction
            writer.close()
            await writer.wait_closed()
            await world.boundary_closed.wait()
        boundary = world.closed["gone"]
        assert boundary.cancelled
        assert boundary.details.status == "cancelled"
        assert world.events == ["rollback Cancelled"]
        assert not world.release.is_set()  # the flow never finished: it was cancelled

    async def test_200_concurrent_requests_have_isolated_contexts(
        self, world: World, serve: Serve, raw_get: RawGet
    ) -> None:
        n = 200
        names = ["alice" if i % 2 else "bob" for i in range(n)]
        async with serve(world.app) as host:
            answers = await asyncio.gather(
                *(
                    raw_get(host, f"/v1/users/{names[i]}", {"X-Request-ID": f"r{i}"})
                    for i in range(n)
                )
            )
        assert {status for status, _ in answers} == {200}
        bodies = [json.loads(body) for _, body in answers]
        assert [b["request_id"] for b in bodies] == [f"r{i}" for i in range(n)]
        assert len({b["context"] for b in bodies}) == n
        assert all(world.closed[f"r{i}"].id == bodies[i]["context"] for i in range(n))
        assert all(world.closed[f"r{i}"].details.status == "completed" for i in range(n))
        # Each request's transaction saw only its own write.
        commits = sorted(e for e in world.events if e.startswith("commit"))
        assert commits == sorted(f"commit [{name!r}]" for name in names)

    async def test_a_websocket_connection_is_one_context(self, world: World, serve: Serve) -> None:
        from websockets.asyncio.client import connect

        async with serve(world.app) as host:
            async with connect(
                f"ws://{host}/v1/ws", additional_headers={"X-Request-ID": "ws1"}
            ) as ws:
                await ws.send("hello")
                first = json.loads(await ws.recv())
            await world.boundary_closed.wait()
            world.boundary_closed.clear()
            async with connect(
                f"ws://{host}/v1/ws", additional_headers={"X-Request-ID": "ws2"}
            ) as ws:
                await ws.send("bye")
                second = json.loads(await ws.recv())
                await ws.wait_closed()
            await world.boundary_closed.wait()
        assert first == {"echo": "hello", "route": "/v1/ws", "request_id": "ws1"}
        assert second["echo"] == "bye"
        # The client left first: cancelled. The app closed the socket: completed.
        assert world.closed["ws1"].details.status == "cancelled"
        assert world.closed["ws2"].details.status == "completed"

    @pytest.mark.parametrize("path", ["/v1/ws/busy", "/v1/ws/push"])
    async def test_a_websocket_client_that_leaves_cancels_the_connection(
        self, world: World, serve: Serve, path: str
    ) -> None:
        """Whether the app is busy in a step (not reading) or only sending, a client
        that leaves first ends the connection cancelled, and its resources roll back."""
        from websockets.asyncio.client import connect

        async with serve(world.app) as host:
            async with connect(
                f"ws://{host}{path}", additional_headers={"X-Request-ID": "gone"}
            ) as ws:
                if path.endswith("busy"):
                    await ws.send("work")
                    await world.started.wait()
                else:
                    await ws.recv()
            await asyncio.wait_for(world.boundary_closed.wait(), 5)
        boundary = world.closed["gone"]
        assert boundary.details.status == "cancelled"
        assert world.events == ["rollback Cancelled"]

    async def test_an_error_of_the_apps_own_after_the_client_left_is_a_failure(
        self, world: World, serve: Serve
    ) -> None:
        """Only what the disconnect caused ends the boundary cancelled: a bug met after
        the client left fails it, with that error, and reaches the server's log."""
        async with serve(world.app) as host:
            hostname, port = host.split(":")
            _reader, writer = await asyncio.open_connection(hostname, int(port))
            writer.write(b"GET /v1/late-bug HTTP/1.1\r\nHost: t\r\nX-Request-ID: bug\r\n\r\n")
            await writer.drain()
            await world.started.wait()
            writer.close()
            await asyncio.wait_for(world.boundary_closed.wait(), 5)
        boundary = world.closed["bug"]
        assert boundary.details.status == "failed"
        assert isinstance(boundary.details.error, KeyError)

    async def test_a_websocket_closed_by_the_app_after_the_client_left_is_cancelled(
        self, world: World, serve: Serve
    ) -> None:
        from websockets.asyncio.client import connect

        async with serve(world.app) as host:
            async with connect(
                f"ws://{host}/v1/ws/late-close", additional_headers={"X-Request-ID": "late"}
            ) as ws:
                # more than the watch reads ahead, never read by the app: the watch stops
                # short of the disconnect, so the app's failed close is what tells
                await ws.send(b"x" * 70_000)
                await ws.recv()
            await asyncio.wait_for(world.boundary_closed.wait(), 5)
        assert world.closed["late"].details.status == "cancelled"

    async def test_a_client_that_leaves_while_its_body_is_read_cancels_the_request(
        self, world: World, serve: Serve
    ) -> None:
        """A disconnect the app learns from ``request.body()`` (Starlette raises
        ClientDisconnect) ends the request cancelled, not failed: the client left."""
        async with serve(world.app) as host:
            hostname, port = host.split(":")
            _reader, writer = await asyncio.open_connection(hostname, int(port))
            writer.write(
                b"POST /v1/upload HTTP/1.1\r\nHost: t\r\nX-Request-ID: up\r\n"
                b"Content-Length: 100000\r\n\r\n" + b"x" * 1000
            )
            await writer.drain()
            await world.started.wait()
            writer.close()
            await asyncio.wait_for(world.boundary_closed.wait(), 5)
        assert world.closed["up"].details.status == "cancelled"
        assert world.events == ["rollback Cancelled"]


def test_example_app_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "fastapi_app.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "GET /users/alice -> 200" in done.stdout


def test_import_runtree_loads_no_web_framework() -> None:
    code = (
        "import sys, runtree, runtree.logging, runtree.integrations\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'starlette', 'httpx', 'uvicorn', 'structlog', 'anyio', 'pytest'))\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
