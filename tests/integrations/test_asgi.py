"""runtree.integrations.asgi: the middleware with plain Starlette (httpx's ASGI transport and
uvicorn) and speaking raw ASGI, where each message's timing is in the test's hands."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

import runtree as rt

pytest.importorskip("starlette")

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from runtree.integrations.asgi import (
    _READ_AHEAD,
    ErrorResponse,
    RuntreeMiddleware,
    context_of,
    http_route,
    lifespan,
    request_id,
)

Serve = Callable[[Any], AbstractAsyncContextManager[str]]
RawGet = Callable[[str, str, dict[str, str]], Awaitable[tuple[int, bytes]]]


class Tx:
    """A boundary resource that records whether it committed or rolled back."""

    def __init__(self) -> None:
        self.outcomes: list[str] = []
        outcomes = self.outcomes

        @rt.resource
        async def tx(ctx: rt.ResolveContext) -> AsyncIterator[str]:
            try:
                yield "tx"
            except BaseException as exc:
                outcomes.append(f"rollback {type(exc).__name__}")
                raise
            else:
                outcomes.append("commit")

        self.resource = tx


def starlette_app(scope: rt.Scope, tx: Tx, seen: list[rt.ExecutionContext]) -> Starlette:
    async def item(request: Request) -> Response:
        ctx = rt.current_context()
        assert ctx is not None and ctx is context_of(request.scope)
        seen.append(ctx)
        await ctx.resolve(tx.resource)
        return JSONResponse({"route": ctx.get(http_route), "name": ctx.name})

    async def unavailable(request: Request) -> Response:
        ctx = context_of(request.scope)
        seen.append(ctx)
        await ctx.resolve(tx.resource)
        return PlainTextResponse("down", status_code=503)

    async def missing(request: Request) -> Response:
        return PlainTextResponse("no", status_code=404)

    api = Mount("/api", routes=[Route("/items/{item_id}", item)])
    app = Starlette(
        routes=[api, Route("/down", unavailable), Route("/missing", missing)],
        lifespan=lifespan(lambda: scope),
    )
    app.add_middleware(RuntreeMiddleware)
    return app


class TestStarlette:
    async def test_routes_inside_mounts_and_error_statuses(self) -> None:
        scope, tx = rt.create_scope(), Tx()
        seen: list[rt.ExecutionContext] = []
        app = starlette_app(scope, tx, seen)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as c,
        ):
            item = (await c.get("/api/items/7")).json()
            down = await c.get("/down")
            nowhere = await c.get("/nowhere")
        assert item == {"route": "/api/items/{item_id}", "name": "GET /api/items/{item_id}"}
        assert down.status_code == 503 and nowhere.status_code == 404
        assert tx.outcomes == ["commit", "rollback ErrorResponse"]
        assert [c.details.status for c in seen] == ["completed", "failed"]
        error = seen[1].details.error
        assert isinstance(error, ErrorResponse) and error.status == 503
        assert str(error).startswith("the app answered HTTP 503")
        assert scope.disposed

    async def test_under_uvicorn(self, serve: Serve, raw_get: RawGet) -> None:
        scope, tx = rt.create_scope(), Tx()
        seen: list[rt.ExecutionContext] = []
        async with serve(starlette_app(scope, tx, seen)) as host:
            status, body = await raw_get(host, "/api/items/3", {"X-Request-ID": "abc"})
        assert status == 200 and b"/api/items/{item_id}" in body
        assert seen[0].get(request_id) == "abc"
        assert tx.outcomes == ["commit"]

    async def test_no_scope_names_the_fix(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            raise AssertionError("not reached")

        asgi = RuntreeMiddleware(app)
        with pytest.raises(RuntimeError, match=r"^RuntreeMiddleware has no scope: pass"):
            await asgi({"type": "http", "path": "/", "headers": []}, _never, _drop)

    def test_scope_must_be_a_scope(self) -> None:
        with pytest.raises(TypeError, match=r"^RuntreeMiddleware\(scope=\.\.\.\) takes a runtree"):
            RuntreeMiddleware(_drop, scope="nope")  # type: ignore[arg-type]

    def test_watch_after_must_be_seconds(self) -> None:
        with pytest.raises(ValueError, match=r"^RuntreeMiddleware\(watch_after=\.\.\.\) takes"):
            RuntreeMiddleware(_drop, watch_after=-1)


async def _never() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError


async def _drop(message: Any) -> None:
    return None


class Client:
    """The server side of one raw ASGI HTTP exchange, driven by the test."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.inbox.put_nowait({"type": "http.request", "body": b"", "more_body": False})
        self.disconnect_read = asyncio.Event()
        self.waiting = asyncio.Event()  # a receive() waits for the next message
        self.reads = 0
        self.read = asyncio.Event()  # set at each message read (clear it to wait again)

    async def receive(self) -> dict[str, Any]:
        if self.inbox.empty():
            self.waiting.set()
        message = await self.inbox.get()
        self.reads += 1
        self.read.set()
        if message["type"] == "http.disconnect":
            self.disconnect_read.set()
        return message

    async def send(self, message: Any) -> None:
        self.sent.append(dict(message))

    def disconnect(self) -> None:
        self.inbox.put_nowait({"type": "http.disconnect"})


def http_scope(path: str = "/") -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": path, "headers": []}


class TestRawASGI:
    async def test_a_disconnect_cancels_running_work_and_rolls_back(self) -> None:
        tx, started, closed = Tx(), asyncio.Event(), asyncio.Event()
        outcome: list[str] = []

        @rt.flow(deps={"tx": tx.resource})
        async def wait_forever(ctx: rt.ExecutionContext, tx: str) -> None:
            started.set()
            await asyncio.Event().wait()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            ctx = rt.current_context()
            assert ctx is not None
            ctx.on_close(closed.set)
            try:
                await ctx.exec(wait_forever)
            except rt.Cancelled as exc:
                outcome.append(f"handler saw {exc.reason}")
                raise

        async with rt.create_scope() as scope:
            client = Client()
            call = asyncio.ensure_future(
                RuntreeMiddleware(app, scope=scope)(http_scope(), client.receive, client.send)
            )
            await started.wait()
            client.disconnect()
            await call  # the client is gone: nothing is raised to the server
            assert closed.is_set()
        assert outcome == ["handler saw client disconnected"]
        assert tx.outcomes == ["rollback Cancelled"]
        assert client.sent == []

    async def test_a_disconnect_after_the_response_is_not_a_cancel(self) -> None:
        contexts: list[rt.ExecutionContext] = []
        go, after_response = asyncio.Event(), asyncio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            contexts.append(context_of(scope))
            await go.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            await after_response.wait()  # a background task after the response

        async with rt.create_scope() as scope:
            client = Client()
            watching = RuntreeMiddleware(app, scope=scope, watch_after=0)
            call = asyncio.ensure_future(watching(http_scope(), client.receive, client.send))
            await client.waiting.wait()  # the watcher read the request and waits for more
            go.set()
            await client.read.wait()
            client.disconnect()
            await client.disconnect_read.wait()  # the watcher has it (and ignores it)
            after_response.set()
            await call
        assert contexts[0].details.status == "completed"

    async def test_the_app_reading_a_disconnect_after_the_response_is_not_a_cancel(
        self,
    ) -> None:
        contexts: list[rt.ExecutionContext] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            contexts.append(context_of(scope))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            assert (await receive())["type"] == "http.request"
            assert (await receive())["type"] == "http.disconnect"

        async with rt.create_scope() as scope:
            client = Client()
            client.disconnect()
            await RuntreeMiddleware(app, scope=scope)(http_scope(), client.receive, client.send)
        assert contexts[0].details.status == "completed"

    async def test_a_request_shorter_than_watch_after_starts_no_task(self) -> None:
        tasks: list[set[asyncio.Task[Any]]] = []
        client = Client()

        def app(turn: Callable[[], Awaitable[object]]) -> Any:
            async def app(scope: Any, receive: Any, send: Any) -> None:
                await turn()
                tasks.append(asyncio.all_tasks())
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"ok"})

            return app

        async with rt.create_scope() as scope:
            before = asyncio.all_tasks()
            # A loop turn: a watcher started with the request would exist by now.
            fast = RuntreeMiddleware(app(lambda: asyncio.sleep(0)), scope=scope)
            await fast(http_scope(), client.receive, client.send)
            # watch_after=0: the watcher reads the request and waits for more.
            slow = RuntreeMiddleware(app(client.waiting.wait), scope=scope, watch_after=0)
            await slow(http_scope(), client.receive, client.send)
        assert tasks[0] == before
        assert len(tasks[1] - before) == 1

    def test_the_watch_follows_the_app_to_a_new_event_loop(self) -> None:
        # A timer left pending on a closed loop must not keep a later loop's requests
        # from being watched.
        outcomes: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["path"] == "/slow":
                try:
                    await rt.current_context().exec(forever)  # type: ignore[union-attr]
                except rt.Cancelled:
                    outcomes.append("cancelled")
                    raise

        started = asyncio.Event()

        @rt.flow
        async def forever(ctx: rt.ExecutionContext) -> None:
            started.set()
            await asyncio.Event().wait()

        scope = rt.create_scope()
        middleware = RuntreeMiddleware(app, scope=scope, watch_after=60)

        async def fast() -> None:
            client = Client()
            await middleware(http_scope("/fast"), client.receive, client.send)

        async def slow() -> None:
            client = Client()
            middleware.watch_after = 0
            call = asyncio.ensure_future(
                middleware(http_scope("/slow"), client.receive, client.send)
            )
            await started.wait()
            client.disconnect()
            await call

        asyncio.run(fast())  # leaves the 60 s timer pending on a loop that closes
        started = asyncio.Event()
        asyncio.run(slow())
        asyncio.run(scope.dispose())
        assert outcomes == ["cancelled"]

    async def test_a_watch_due_while_the_app_reads_starts_after_that_read(self) -> None:
        tx, started, bodies = Tx(), asyncio.Event(), []

        @rt.flow(deps={"tx": tx.resource})
        async def wait_forever(ctx: rt.ExecutionContext, tx: str) -> None:
            started.set()
            await asyncio.Event().wait()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            bodies.append((await receive())["body"])  # waits: the body is not there yet
            await rt.current_context().exec(wait_forever)  # type: ignore[union-attr]

        async with rt.create_scope() as scope:
            client = Client()
            client.inbox = asyncio.Queue()
            watching = RuntreeMiddleware(app, scope=scope, watch_after=0)
            call = asyncio.ensure_future(watching(http_scope(), client.receive, client.send))
            await client.waiting.wait()  # the app reads; the watch is due meanwhile
            client.inbox.put_nowait({"type": "http.request", "body": b"hi", "more_body": False})
            await started.wait()
            client.disconnect()
            await call
        assert bodies == [b"hi"]
        assert tx.outcomes == ["rollback Cancelled"]

    async def test_the_app_reads_the_body_through_the_watcher(self) -> None:
        bodies: list[bytes] = []
        reads_ahead: list[int] = []
        client = Client()
        client.inbox = asyncio.Queue()
        chunk = 16 * 1024

        async def app(scope: Any, receive: Any, send: Any) -> None:
            while client.reads < _READ_AHEAD // chunk:  # the watcher reads ahead ...
                client.read.clear()
                await client.read.wait()
            reads_ahead.append(client.reads)  # ... up to its limit, then waits for room
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            bodies.append(b"".join(chunks))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        async with rt.create_scope() as scope:
            big = b"x" * (200 * 1024)  # more than the watcher reads ahead
            for i in range(0, len(big), chunk):
                more = i + chunk < len(big)
                client.inbox.put_nowait(
                    {"type": "http.request", "body": big[i : i + chunk], "more_body": more}
                )
            watching = RuntreeMiddleware(app, scope=scope, watch_after=0)
            await watching(http_scope(), client.receive, client.send)
        assert reads_ahead == [_READ_AHEAD // chunk]
        assert bodies == [big]

    async def test_an_app_error_closes_failed_and_reaches_the_server(self) -> None:
        tx = Tx()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await context_of(scope).resolve(tx.resource)
            raise KeyError("lost")

        async with rt.create_scope() as scope:
            client = Client()
            with pytest.raises(KeyError):
                await RuntreeMiddleware(app, scope=scope)(http_scope(), client.receive, client.send)
        assert tx.outcomes == ["rollback KeyError"]

    async def test_lifespan_and_other_scope_types_pass_through(self) -> None:
        seen: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope["type"])

        await RuntreeMiddleware(app)({"type": "lifespan"}, _never, _drop)
        assert seen == ["lifespan"]
