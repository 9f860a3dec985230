"""ASGI: one runtree boundary per HTTP request or websocket connection.

Install the extra (``pip install 'runtree[asgi]'``) and wrap any ASGI app::

    from runtree.integrations.asgi import RuntreeMiddleware, lifespan

    app = Starlette(routes=..., lifespan=lifespan(make_scope))
    app.add_middleware(RuntreeMiddleware)

The middleware itself speaks plain ASGI (it imports no framework); ``lifespan`` follows
the Starlette/FastAPI lifespan protocol. See docs/fastapi.md for the semantics and the
decisions behind them.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, TypeAlias, final

from .. import _context
from .._context import ExecutionContext
from .._json import shown
from .._scope import Scope
from .._tags import Tag, tag
from ..errors import Cancelled, RuntreeError

_current = _context._current  # assigned, not imported: a method call (see _run)

__all__ = [
    "CONTEXT_KEY",
    "STATE_KEY",
    "ErrorResponse",
    "RuntreeMiddleware",
    "context_of",
    "http_route",
    "lifespan",
    "request_id",
]

ASGIScope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[ASGIScope, Receive, Send], Awaitable[None]]

#: The request's id: the ``X-Request-ID`` header when it holds 1-128 visible ASCII
#: characters, else a new random id (32 hex digits).
request_id: Final[Tag[str]] = tag("request_id", serializable=True)
#: The route template (``/items/{item_id}``) once the framework's router matched one;
#: the raw path before that, and for requests no route matched.
http_route: Final[Tag[str]] = tag("http_route", serializable=True)

#: Key of the scope in the lifespan state (and attribute on ``app.state``).
STATE_KEY: Final = "runtree_scope"
#: Key of the request's boundary in the ASGI scope dict.
CONTEXT_KEY: Final = "runtree.context"

_GOOD_ID = re.compile(rb"[\x21-\x7e]{1,128}")
# Request body bytes the disconnect watcher reads ahead of the app before it waits for
# the app to catch up (a large upload is not buffered whole).
_READ_AHEAD = 64 * 1024


class ErrorResponse(RuntreeError):
    """The app answered with a server error status (``fail_status`` or above): the
    request's boundary closes ``failed`` with this error, so its resources roll back.
    Never raised to the server: the response was already sent."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status

    def __str__(self) -> str:
        return (
            f"the app answered HTTP {self.status}: the request's context closes failed "
            "(its resources roll back); raise fail_status on RuntreeMiddleware to commit"
        )


def context_of(scope: ASGIScope) -> ExecutionContext:
    """The request's boundary from an ASGI scope dict (``Request.scope``), or raise
    ``LookupError`` naming the fix."""
    ctx = scope.get(CONTEXT_KEY)
    if not isinstance(ctx, ExecutionContext):
        msg = (
            "no runtree context for this request: add RuntreeMiddleware to the app "
            "(app.add_middleware(RuntreeMiddleware))"
        )
        raise LookupError(msg)
    return ctx


def lifespan(
    scope_factory: Callable[[], Scope | Awaitable[Scope]],
) -> Callable[[object], AbstractAsyncContextManager[dict[str, object]]]:
    """A Starlette/FastAPI ``lifespan=``: creates the scope at startup and disposes it at
    shutdown. The scope is in the lifespan state (what :class:`RuntreeMiddleware` uses
    when given no ``scope=``) and on ``app.state.runtree_scope``."""

    @asynccontextmanager
    async def run(app: object) -> AsyncIterator[dict[str, object]]:
        made = scope_factory()
        scope = await made if inspect.isawaitable(made) else made
        if not isinstance(scope, Scope):
            msg = f"lifespan(scope_factory): the factory must return a Scope (got {shown(scope)})"
            raise TypeError(msg)
        state = getattr(app, "state", None)
        if state is not None:
            setattr(state, STATE_KEY, scope)
        try:
            yield {STATE_KEY: scope}
        finally:
            await scope.dispose()

    return run


@final
class RuntreeMiddleware:
    """Open one boundary (``scope.create_context()``) per HTTP request or websocket
    connection; inside the app, :func:`runtree.current_context` is that boundary.

    - Tags :data:`request_id` and :data:`http_route` are bound on it; its name is
      ``"<METHOD> <route>"`` (``"WS <route>"`` for websockets).
    - It closes after the app returns, that is after the response was sent (a streaming
      body included) and background tasks ran: ``completed`` normally; ``failed`` when the
      app raised (the error goes on to the server unchanged) or answered with a status of
      ``fail_status`` or above; ``cancelled`` when the client disconnected first.
    - A client disconnect cancels the boundary at once: execs running under it stop with
      :class:`runtree.Cancelled` and its resources roll back.

    Args:
        app: The ASGI app to wrap.
        scope: The scope to open boundaries in; ``None`` takes it from the lifespan state
            (see :func:`lifespan`).
        fail_status: Responses with this status or above close the boundary failed.
        watch_disconnect: Watch for an HTTP client disconnect while the app runs;
            off, a disconnect is only seen when the app reads it.
        watch_after: Seconds a request runs before its watch starts (between one and
            two times this, checked by one timer for all requests); a request that ends
            sooner costs no task, and a disconnect does not cancel it (its work is done).
    """

    __slots__ = (
        "_loop",
        "_older",
        "_tick",
        "_younger",
        "app",
        "fail_status",
        "scope",
        "watch_after",
        "watch_disconnect",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        scope: Scope | None = None,
        fail_status: int = 500,
        watch_disconnect: bool = True,
        watch_after: float = 0.05,
    ) -> None:
        if scope is not None and not isinstance(scope, Scope):
            msg = f"RuntreeMiddleware(scope=...) takes a runtree Scope (got {shown(scope)})"
            raise TypeError(msg)
        self.app = app
        self.scope = scope
        self.fail_status = fail_status
        self.watch_disconnect = watch_disconnect
        if not watch_after >= 0:
            msg = (
                f"RuntreeMiddleware(watch_after=...) takes seconds >= 0 (got {shown(watch_after)})"
            )
            raise ValueError(msg)
        self.watch_after = watch_after
        # Running HTTP requests not watched yet, in two generations: each tick of one
        # timer (every `watch_after` seconds while any are pending) starts a watcher for
        # each request of the older one, and the younger one becomes the older.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._younger: dict[_Exchange, None] = {}
        self._older: dict[_Exchange, None] = {}
        self._tick: asyncio.TimerHandle | None = None

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        rt_scope = self.scope if self.scope is not None else _scope_from_state(scope)
        path = scope.get("path", "")
        method = scope.get("method", "GET") if kind == "http" else "WS"
        ctx = rt_scope.create_context(
            tags=(request_id(_request_id(scope)), http_route(path)), name=f"{method} {path}"
        )
        request = _RequestScope(scope)
        request.ctx = ctx
        request.method = method
        request.prefix = ""
        request.root = scope.get("root_path", "")
        dict.__setitem__(request, CONTEXT_KEY, ctx)  # not through the route hook
        token = _current.set(ctx)
        try:
            if kind == "http":
                await self._http(ctx, request, receive, send)
            else:
                await self._websocket(ctx, request, receive, send)
        finally:
            _current.reset(token)

    async def _http(
        self, ctx: ExecutionContext, request: _RequestScope, receive: Receive, send: Send
    ) -> None:
        exchange = _Exchange(ctx, receive, send)
        if self.watch_disconnect:
            self._pending(exchange)
        answered_error = False
        try:
            async with ctx:
                await exchange.run(self.app, request)
                if exchange.status >= self.fail_status:
                    answered_error = True
                    raise ErrorResponse(exchange.status)
        except ErrorResponse:
            # Ours: the response is sent; the boundary closed failed (resources rolled
            # back, cleanup failures logged by the core). Nothing for the server to do.
            if not answered_error:
                raise
        except Cancelled:
            if not exchange.gone:
                raise
            # The client went away: nobody is left to answer, and the boundary already
            # closed cancelled (its resources rolled back).

    def _pending(self, exchange: _Exchange) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # the app moved to another loop (tests do that)
            self._loop, self._younger, self._older, self._tick = loop, {}, {}, None
        younger = self._younger
        younger[exchange] = None
        exchange.generation = younger
        if self._tick is None:
            self._tick = loop.call_later(self.watch_after, self._watch_older)

    def _watch_older(self) -> None:
        older, self._older, self._younger = self._older, self._younger, {}
        for exchange in older:
            exchange.generation = None
            exchange.start_watch()
        if self._older and self._loop is not None:
            self._tick = self._loop.call_later(self.watch_after, self._watch_older)
        else:
            self._tick = None

    async def _websocket(
        self, ctx: ExecutionContext, request: _RequestScope, receive: Receive, send: Send
    ) -> None:
        exchange = _Exchange(ctx, receive, send)
        if self.watch_disconnect:
            self._pending(exchange)
        try:
            async with ctx:
                await exchange.run(self.app, request)
        except Cancelled:
            if not exchange.gone:
                raise


# What apps and servers raise when the client is gone: Starlette's ClientDisconnect and
# WebSocketDisconnect, uvicorn's ClientDisconnected (told by name: this module imports no
# framework), a broken connection (ConnectionError), runtree's Cancelled.
_DISCONNECT_ERRORS = frozenset(("ClientDisconnect", "WebSocketDisconnect", "ClientDisconnected"))


def _from_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) says the client is gone."""
    seen = 0
    error: BaseException | None = exc
    while error is not None and seen < 8:
        if (
            isinstance(error, (Cancelled, ConnectionError))
            or type(error).__name__ in _DISCONNECT_ERRORS
        ):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def _size(message: Message) -> int:
    """The bytes a message carries (a request body's chunk, a websocket message)."""
    body = message.get("body") or message.get("bytes") or message.get("text") or b""
    return len(body)


def _scope_from_state(scope: ASGIScope) -> Scope:
    state = scope.get("state")
    found = state.get(STATE_KEY) if isinstance(state, dict) else None
    if found is None:
        # A server that keeps no lifespan state (a test transport, say): the lifespan
        # also put the scope on app.state, and Starlette puts the app in the scope.
        found = getattr(getattr(scope.get("app"), "state", None), STATE_KEY, None)
    if not isinstance(found, Scope):
        msg = (
            "RuntreeMiddleware has no scope: pass RuntreeMiddleware(app, scope=...) or "
            "create the app with lifespan=runtree.integrations.asgi.lifespan(make_scope) "
            "(the server must run the lifespan)"
        )
        raise RuntimeError(msg)
    return found


def _request_id(scope: ASGIScope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            if _GOOD_ID.fullmatch(value):
                return str(value.decode("ascii"))
            break
    return os.urandom(16).hex()  # 128 random bits, as uuid4 (at a quarter of its cost)


class _RequestScope(dict[str, Any]):
    """The ASGI scope the app sees: a copy that notices when the router stores the
    matched route (``scope["route"] = route``, as Starlette and FastAPI do) and binds
    its template as ``http_route``."""

    __slots__ = ("ctx", "method", "prefix", "root")

    ctx: ExecutionContext
    method: str
    prefix: str  # the templates of the mounts the router reported (Starlette's does)
    root: str  # the root_path the request came with

    def __setitem__(self, key: str, value: Any) -> None:
        dict.__setitem__(self, key, value)
        if key == "route":
            self._matched(value)

    def update(self, *args: Any, **kwargs: Any) -> None:
        dict.update(self, *args, **kwargs)
        if args:
            other = args[0]
            # type() first: the ABC check costs more than the rest of this method.
            if (type(other) is dict or isinstance(other, Mapping)) and "route" in other:
                self._matched(other["route"])

    def _matched(self, route: object) -> None:
        prefix = self.prefix
        if hasattr(route, "routes"):  # a Mount: its app routes the rest
            path = getattr(route, "path", None)
            if isinstance(path, str):
                self.prefix = prefix + path
            return
        path = getattr(route, "path_format", None)
        if not isinstance(path, str):
            path = getattr(route, "path", None)
            if not isinstance(path, str):
                return
        if not prefix:
            # No mount reported itself (FastAPI's router stores only the final route):
            # the mounts' part of the path is what they added to root_path (as it was
            # requested: a mount's own parameters show as their values).
            root = self.get("root_path", "")
            if type(root) is str and root.startswith(self.root):
                prefix = root[len(self.root) :]
        template = prefix + path
        self.ctx.set(http_route, template)
        self.ctx.name = f"{self.method} {template}"
        # Routing is done: the app's further writes to the scope need no look.
        self.__class__ = _RoutedScope


class _RoutedScope(_RequestScope):
    """A request scope whose route was matched: plain dict writes from then on."""

    __slots__ = ()

    __setitem__ = dict.__setitem__
    update = dict.update


@final
class _Exchange:
    """One request's messages: tracks the response status and end, and (HTTP) watches
    for a client disconnect once the request has run for a while.

    Until the watcher starts, the app reads the server's ``receive`` directly. Once it
    runs, the watcher is the only reader: it reads the body ahead of the app (at most
    ``_READ_AHEAD`` bytes) and hands each message over, so that it is already waiting in
    ``receive`` when the client disconnects. The two never read at the same time: a
    watcher due while the app waits in ``receive`` starts when that call returns."""

    __slots__ = (
        "_buffered",
        "_due",
        "_error",
        "_last",
        "_messages",
        "_more",
        "_reading",
        "_receive",
        "_room",
        "_send",
        "closed_by_app",
        "ctx",
        "done",
        "ended",
        "generation",
        "gone",
        "status",
        "watcher",
    )

    def __init__(self, ctx: ExecutionContext, receive: Receive, send: Send) -> None:
        self.ctx = ctx
        self._receive = receive
        self._send = send
        self.status = 0
        self.done = False  # the response (HTTP) was sent completely
        self.closed_by_app = False  # the app closed the websocket
        self.gone = False  # the client disconnected before the app finished
        self.ended = False  # the watcher saw the disconnect (or receive failed)
        self.watcher: asyncio.Task[None] | None = None
        # While waiting for its watch: the middleware's generation that holds it.
        self.generation: dict[_Exchange, None] | None = None
        self._reading = False  # the app waits in the server's receive (no watcher yet)
        self._due = False  # the watcher was due while the app was reading
        # Set when the watch starts (the rest is only read once it has).
        self._messages: deque[Message] | None = None

    async def run(self, app: ASGIApp, request: _RequestScope) -> None:
        """Run the app on this exchange, then end its watch (waiting for one, or
        running). What the app raises once the client has left because of that
        (Starlette's ``ClientDisconnect`` or ``WebSocketDisconnect``, a failed send,
        runtree's ``Cancelled``) ends the boundary ``cancelled``, as when the app
        returns; any other error is a failure of its own and goes on as it is."""
        try:
            await app(request, self.receive, self.send)
        except Exception as exc:
            if self.gone and _from_disconnect(exc):
                raise Cancelled(self.ctx.name, "client disconnected") from exc
            raise
        finally:
            generation = self.generation
            if generation is not None:
                del generation[self]
            elif self.watcher is not None:
                await self.stop_watch()

    def _client_left(self) -> None:
        if not self.done and not self.closed_by_app:
            self.gone = True
            self.ctx.cancel("client disconnected")

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
        elif kind == "http.response.body":
            if not message.get("more_body", False):
                # Complete once handed over: a disconnect seen from now on is the normal
                # end of the exchange, not a cancellation.
                self.done = True
        elif kind == "websocket.close":
            self.closed_by_app = True
        elif kind == "websocket.http.response.start":
            self.status = message["status"]
        try:
            await self._send(message)
        except OSError:
            # A server tells a websocket's sender the client is gone this way (uvicorn's
            # ClientDisconnected; Starlette turns it into WebSocketDisconnect).
            if kind == "websocket.send" or kind == "websocket.close":
                self.closed_by_app = False  # the client had left first
                self._client_left()
            raise

    async def receive(self) -> Message:
        if self._messages is not None:
            return await self._handed_over()
        self._reading = True
        try:
            message = await self._receive()
        finally:
            self._reading = False
            if self._due:
                self._start()
        kind = message["type"]
        if kind == "http.disconnect" or kind == "websocket.disconnect":
            self._client_left()
        return message

    # -- HTTP: the disconnect watcher ------------------------------------------------

    def start_watch(self) -> None:
        """The request ran ``watch_after``: start the watcher unless the response is
        complete."""
        if self.done or self.ended or self.closed_by_app:
            return
        if self._reading:
            self._due = True
        else:
            self._start()

    def _start(self) -> None:
        self._due = False
        self._buffered = 0
        self._error: BaseException | None = None
        self._more: asyncio.Event | None = None
        self._room: asyncio.Event | None = None
        self._messages = deque()
        self._last: Message = {"type": "http.disconnect"}  # what ended the watch
        self.watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop_watch(self) -> None:
        watcher = self.watcher
        if watcher is not None:
            watcher.cancel()
            # Not `await watcher`: that would raise the watcher's CancelledError here and
            # hide a cancellation of this very task.
            await asyncio.wait((watcher,))

    async def _watch(self) -> None:
        messages = self._messages
        assert messages is not None
        try:
            while True:
                if self._buffered >= _READ_AHEAD:
                    room = self._room = asyncio.Event()
                    await room.wait()
                message = await self._receive()
                kind = message["type"]
                if kind == "http.disconnect" or kind == "websocket.disconnect":
                    self._last = message
                    self.ended = True
                    self._client_left()
                    self._wake()
                    return
                self._buffered += _size(message)
                messages.append(message)
                self._wake()
        except Exception as exc:
            # The server's receive failed: the app's next receive raises it.
            self._error = exc
            self.ended = True
            self._wake()

    def _wake(self) -> None:
        if self._more is not None:
            self._more.set()

    async def _handed_over(self) -> Message:
        messages = self._messages
        assert messages is not None
        while not messages:
            if self.ended:
                if self._error is not None:
                    raise self._error
                return self._last
            more = self._more
            if more is None:
                more = self._more = asyncio.Event()
            more.clear()
            await more.wait()
        message = messages.popleft()
        self._buffered -= _size(message)
        if self._room is not None and self._buffered < _READ_AHEAD:
            self._room.set()
        return message
