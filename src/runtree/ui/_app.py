"""The ASGI application behind ``runtree ui`` (DESIGN §10): a read-only JSON API over
:class:`runtree.runs.Runs` and :class:`runtree.sessions.Sessions`, server-sent events for
live trees and the runs list, and the page (one HTML, one JS and one CSS file).

Safety: every response carries a strict Content-Security-Policy (scripts and styles from
this origin only, no inline code), so user data can only ever be text. On loopback the
app answers only to loopback host names (a page on another site cannot read it through
DNS rebinding); with a token it answers only to requests carrying it (``?token=``, which
sets an HttpOnly cookie, the cookie, or ``Authorization: Bearer``). The store URL never
leaves the server: the page sees it with its password masked, and error messages are
scrubbed of the password's text.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._json import jsonable
from ..errors import RunNotFoundError, SessionNotFoundError, StoreError
from ..stores._secrets import redact, scrub

if TYPE_CHECKING:
    from ..runs import RunInfo, Runs, RunTree
    from ..sessions import Sessions
    from ..stores import Store

__all__ = ["LOOPBACK_HOSTS", "TOKEN_COOKIE", "create_app", "is_loopback"]

LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "::1", "[::1]")
TOKEN_COOKIE: Final = "runtree_ui_token"
STATUSES: Final = ("running", "completed", "failed", "cancelled", "interrupted")
MAX_LIMIT: Final = 500
MAX_OFFSET: Final = 100_000
KEEPALIVE: Final = 15.0  # seconds between SSE comments on a quiet stream

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS: Final = {
    "content-security-policy": _CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
_ASSETS: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    import ipaddress

    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _dumps(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":"), default=str)


def _json(value: object, status: int = 200) -> Response:
    return Response(_dumps(value), status_code=status, media_type="application/json")


# -- shapes the page reads ---------------------------------------------------------------


def _run_summary(info: RunInfo) -> dict[str, object]:
    """A run for the list: no input or output (a run's input is stored whole)."""
    d = info.to_dict()
    del d["input"], d["output"]
    return d


def _tree(tree: RunTree) -> dict[str, object]:
    """A run and its nodes in depth-first order, each with its depth; values left out
    (``/api/node`` gives one node whole)."""
    nodes: list[dict[str, object]] = []
    for node, depth in tree.walk_with_depth():
        error = node.error
        nodes.append(
            {
                "id": node.node_id,
                "parent": node.parent_id,
                "depth": depth,
                "name": node.name,
                "kind": node.kind,
                "key": node.key,
                "attempt": node.attempt,
                "status": node.status,
                "start": node.started_at,
                "end": node.completed_at,
                "replayed": node.replayed,
                "error": None if error is None else {"type": error.type, "message": error.message},
            }
        )
    return {
        "run": tree.run.to_dict(),
        "nodes": nodes,
        "failing": [n.node_id for n in tree.failing_path()],
        "now": time.time(),
    }


def _tree_signature(tree: RunTree) -> tuple[object, ...]:
    run = tree.run
    return (
        run.status,
        run.updated_at,
        run.completed_at,
        tuple((n.node_id, n.status, n.completed_at) for n in tree.nodes),
    )


def _session_summary(session: Any) -> dict[str, object]:
    return {
        "session_id": session.session_id,
        "project_name": session.project_name,
        "project_type": session.project_type,
        "started_at": session.started_at,
        "ended_at": session.ended_at,
        "active": session.active,
        "commands": len(session.command_history),
    }


# -- the application -----------------------------------------------------------------------


class _State:
    """The store the app reads (opened on first use when given as a URL)."""

    def __init__(self, store: Store | str, poll: float, runs_poll: float) -> None:
        self.url = store if isinstance(store, str) else None
        self.store: Store | None = None if isinstance(store, str) else store
        self.owned = isinstance(store, str)
        self.lock = asyncio.Lock()
        self.poll = poll
        self.runs_poll = runs_poll
        self.shown = redact(store) if isinstance(store, str) else _shown_store(store)

    def clean(self, text: str) -> str:
        """A message safe for the page: the store's passwords masked."""
        return scrub(text, self.url) if self.url is not None else redact(text)

    async def open(self) -> Store:
        if self.store is not None:
            return self.store
        async with self.lock:
            if self.store is None:
                from ..stores import from_url

                assert self.url is not None
                self.store = from_url(self.url, create=False)  # read-only: never create
            return self.store

    async def runs(self) -> Runs:
        from ..runs import Runs

        return Runs(await self.open())

    async def sessions(self) -> Sessions:
        from ..sessions import Sessions

        return Sessions(await self.open())

    async def close(self) -> None:
        store, self.store = self.store, None
        if store is not None and self.owned:
            await store.aclose()


def _shown_store(store: object) -> str:
    try:
        url = getattr(store, "url", None)
    except Exception:
        url = None
    return redact(url) if isinstance(url, str) else type(store).__name__


def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise _ApiError(400, f"{name} must be an integer (got {text!r})") from None
    if not low <= value <= high:
        raise _ApiError(400, f"{name} must be between {low} and {high} (got {value})")
    return value


def _filters(request: Request) -> tuple[str | None, str | None, float | None]:
    q = request.query_params
    status = q.get("status") or None
    if status is not None and status not in STATUSES:
        raise _ApiError(400, f"status must be one of {', '.join(STATUSES)} (got {status!r})")
    flow = q.get("flow") or None
    since_text = q.get("since") or None
    since = None
    if since_text is not None:
        try:
            since = float(since_text)
        except ValueError:
            raise _ApiError(400, f"since takes epoch seconds (got {since_text!r})") from None
        if not math.isfinite(since):
            raise _ApiError(400, f"since takes epoch seconds (got {since_text!r})")
    return status, flow, since


def _required(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise _ApiError(400, f"the query parameter {name} is required")
    return value


Handler = Callable[[Request, _State], Awaitable[Response]]


def _endpoint(state: _State, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request, state)
        except _ApiError as exc:
            return _json({"error": state.clean(exc.message)}, exc.status)
        except RunNotFoundError as exc:
            return _json({"error": f"no run {exc.args[0]!r} in this store"}, 404)
        except SessionNotFoundError as exc:
            return _json({"error": f"no session {exc.args[0]!r} in this store"}, 404)
        except (StoreError, OSError) as exc:
            return _json({"error": state.clean(f"the store failed: {exc}")}, 503)

    return endpoint


async def _list_page(
    state: _State,
    status: str | None,
    flow: str | None,
    since: float | None,
    offset: int,
    limit: int,
) -> dict[str, object]:
    runs = await state.runs()
    # Runs.list has no cursor: read the pages up to this one and keep the last.
    found = await runs.list(
        status=cast(Any, status), flow=flow, since=since, limit=offset + limit + 1
    )
    page = found[offset : offset + limit]
    more = len(found) > offset + limit
    return {
        "runs": [_run_summary(r) for r in page],
        "offset": offset,
        "limit": limit,
        "next_offset": offset + limit if more else None,
        "now": time.time(),
    }


async def _api_info(request: Request, state: _State) -> Response:
    from .. import __version__

    return _json({"store": state.shown, "version": __version__, "read_only": True})


async def _api_runs(request: Request, state: _State) -> Response:
    started = time.perf_counter()
    status, flow, since = _filters(request)
    offset = _query_int(request, "offset", 0, 0, MAX_OFFSET)
    limit = _query_int(request, "limit", 50, 1, MAX_LIMIT)
    body = await _list_page(state, status, flow, since, offset, limit)
    body["took_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return _json(body)


async def _api_run(request: Request, state: _State) -> Response:
    runs = await state.runs()
    tree = await runs.get(_required(request, "id"))
    return _json(_tree(tree))


async def _api_node(request: Request, state: _State) -> Response:
    runs = await state.runs()
    run_id = _required(request, "run")
    node_id = _required(request, "node")
    tree = await runs.get(run_id)
    for node in tree.nodes:
        if node.node_id == node_id:
            return _json(node.to_dict())
    raise _ApiError(404, f"run {run_id!r} has no node {node_id!r}")


async def _api_sessions(request: Request, state: _State) -> Response:
    limit = _query_int(request, "limit", 100, 1, MAX_LIMIT)
    sessions = await state.sessions()
    found = await sessions.list(limit=limit)
    return _json({"sessions": [_session_summary(s) for s in found]})


async def _api_session(request: Request, state: _State) -> Response:
    sessions = await state.sessions()
    session = await sessions.get(_required(request, "id"))
    commands = []
    for c in session.command_history:
        d = c.to_dict()
        d["id"] = c.id
        d["run_id"] = f"{session.root_id}/{c.id}"  # the command's recorded run (docs/runs.md)
        commands.append(d)
    body = _session_summary(session)
    body["commands"] = commands
    body["shared_data"] = session.shared_data
    return _json(body)


def _sse(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {_dumps(data)}\n\n".encode()


def _stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"x-accel-buffering": "no"},
    )


async def _events_run(request: Request, state: _State) -> Response:
    """The tree now, then again each time it changes, until the run is no longer running."""
    root_id = _required(request, "id")
    runs = await state.runs()
    first = await runs.get(root_id)  # a missing run is a 404, before the stream starts

    async def events() -> AsyncIterator[bytes]:
        tree = first
        sig = _tree_signature(tree)
        yield _sse("tree", _tree(tree))
        quiet = 0.0
        while tree.run.status == "running":
            await asyncio.sleep(state.poll)
            try:
                tree = await runs.get(root_id)
            except RunNotFoundError:
                yield _sse("gone", {"root_id": root_id})
                return
            except (StoreError, OSError) as exc:
                yield _sse("problem", {"error": state.clean(f"the store failed: {exc}")})
                continue
            now_sig = _tree_signature(tree)
            if now_sig != sig:
                sig = now_sig
                quiet = 0.0
                yield _sse("tree", _tree(tree))
            else:
                quiet += state.poll
                if quiet >= KEEPALIVE:
                    quiet = 0.0
                    yield b": still running\n\n"
        yield _sse("end", {"status": tree.run.status})

    return _stream(events())


async def _events_runs(request: Request, state: _State) -> Response:
    """The first page of runs (these filters) each time it changes."""
    status, flow, since = _filters(request)
    limit = _query_int(request, "limit", 50, 1, MAX_LIMIT)
    await state.open()

    async def events() -> AsyncIterator[bytes]:
        last: object = None
        quiet = 0.0
        while True:
            try:
                body = await _list_page(state, status, flow, since, 0, limit)
            except (StoreError, OSError) as exc:
                yield _sse("problem", {"error": state.clean(f"the store failed: {exc}")})
            else:
                sig = [
                    (r["root_id"], r["status"], r["updated_at"])
                    for r in cast(list[dict[str, object]], body["runs"])
                ]
                if sig != last:
                    last = sig
                    quiet = 0.0
                    yield _sse("runs", body)
                else:
                    quiet += state.runs_poll
                    if quiet >= KEEPALIVE:
                        quiet = 0.0
                        yield b": quiet\n\n"
            await asyncio.sleep(state.runs_poll)

    return _stream(events())


# -- guard: host names and the token ------------------------------------------------------


class _Guard:
    """Pure ASGI middleware (streams pass through untouched): security headers on every
    response; the host check on loopback; the token when one is required."""

    def __init__(self, app: ASGIApp, token: str | None, hosts: Sequence[str] | None) -> None:
        self.app = app
        self.token = token
        self.hosts = None if hosts is None else {h.lower() for h in hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.hosts is not None and _host_name(headers.get("host", "")) not in self.hosts:
            await _refuse(
                send,
                403,
                "runtree ui answers to localhost only; open the address it printed "
                "(http://127.0.0.1:PORT/)",
            )
            return
        set_cookie = False
        if self.token is not None:
            given, from_query = _given_token(scope, headers)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                await _refuse(
                    send,
                    401 if given is None else 403,
                    "runtree ui needs its token: open the address with ?token= that "
                    "`runtree ui` printed when it started",
                )
                return
            set_cookie = from_query

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                present = {k.lower() for k, _ in raw}
                for name, value in _HEADERS.items():
                    if name.encode() not in present:
                        raw.append((name.encode(), value.encode()))
                if set_cookie:
                    assert self.token is not None
                    cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                    raw.append((b"set-cookie", cookie.encode()))
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _given_token(scope: Scope, headers: dict[str, str]) -> tuple[str | None, bool]:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), False
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("token"):
        return query["token"][0], True
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == TOKEN_COOKIE:
            return value, False
    return None, False


async def _refuse(send: Send, status: int, message: str) -> None:
    body = _dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in _HEADERS.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- assembly ------------------------------------------------------------------------------


def _asset_route(path: str, filename: str, media: str) -> Route:
    body = resources.files(__package__).joinpath("static", filename).read_bytes()

    async def asset(request: Request) -> Response:
        return Response(body, media_type=media)

    return Route(path, asset, methods=["GET", "HEAD"])


async def _no_icon(request: Request) -> Response:
    return Response(status_code=204)


def create_app(
    store: Store | str,
    *,
    token: str | None = None,
    allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS,
    poll: float = 0.25,
    runs_poll: float = 1.0,
) -> Starlette:
    """The web view as an ASGI application (read-only).

    Args:
        store: A store URL (opened on first use, closed at shutdown; its password never
            reaches a response) or an open store (the caller closes it).
        token: When given, every request must carry it (``?token=``, which also sets a
            cookie for the page's own requests, or ``Authorization: Bearer``).
        allowed_hosts: Host names the app answers to (``None``: any). The default, the
            loopback names, keeps other sites' pages out through DNS rebinding.
        poll: Seconds between reads of a running tree for its live stream.
        runs_poll: Seconds between reads of the runs list for its live stream.

    .. versionadded:: 0.2
    """
    state = _State(store, poll, runs_poll)
    routes = [_asset_route(path, name, media) for path, (name, media) in _ASSETS.items()]
    api: list[tuple[str, Handler]] = [
        ("/api/info", _api_info),
        ("/api/runs", _api_runs),
        ("/api/run", _api_run),
        ("/api/node", _api_node),
        ("/api/sessions", _api_sessions),
        ("/api/session", _api_session),
        ("/api/events/run", _events_run),
        ("/api/events/runs", _events_runs),
    ]
    routes += [Route(path, _endpoint(state, handler), methods=["GET"]) for path, handler in api]
    routes.append(Route("/favicon.ico", _no_icon, methods=["GET", "HEAD"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await state.close()

    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Guard, token=token, hosts=allowed_hosts)],
        lifespan=lifespan,
    )
    app.state.runtree = state
    return app
