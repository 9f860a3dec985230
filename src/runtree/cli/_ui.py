"""``runtree ui``: serve the web view of the recorded runs (extra ``ui``).

Starlette and uvicorn are imported when the command runs, never when the CLI starts.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import sys
from typing import Annotated

import typer

from ._common import STORE_ENV, CliError, store_ref

__all__ = ["register"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def register(app: typer.Typer) -> None:
    """Add ``ui`` to the ``runtree`` application."""
    app.command("ui", short_help="Serve the recorded runs as a live web view.")(ui)


def _check_url(url: str) -> None:
    """A store URL that cannot be opened fails at start (exit 1), not on every request:
    opened once as the view opens it (``create=False``; a PostgreSQL store connects only
    when used, so this checks its URL), then closed."""
    import asyncio

    from ..errors import StoreError
    from ..stores import from_url

    try:
        store = from_url(url, create=False)
    except StoreError as exc:
        raise CliError(str(exc), kind="StoreError") from None
    asyncio.run(store.aclose())


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket (``port`` 0: a free one), so the printed address is the real one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = "pick another with --port (or --port 0 for a free one)" if port else ""
        raise CliError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}" + (f"; {hint}" if hint else "")
        ) from None
    sock.set_inheritable(True)
    return sock


def ui(
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            metavar="URL",
            help=f"Store URL (default: {STORE_ENV}, else the nearest .runtree/runtree.db).",
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            metavar="HOST",
            help="Address to listen on (beyond loopback: a token).",
        ),
    ] = DEFAULT_HOST,
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", help="Port (0: a free one).", min=0, max=65535)
    ] = DEFAULT_PORT,
) -> None:
    """Serve a read-only web view of the recorded runs and sessions (Ctrl-C stops it)."""
    try:
        import uvicorn

        from ..ui import create_app, is_loopback
    except ImportError:
        raise CliError(
            "runtree ui needs the ui extra: pip install 'runtree[ui]'", kind="ImportError"
        ) from None
    ref = store_ref(store)
    if ref.missing:
        raise CliError(
            f"no store at {ref.shown}: record runs first (create_scope(store=..., "
            "record='all'), runtree run, runtree demo), or pass --store URL",
            kind="StoreError",
        )
    _check_url(ref.url)
    loopback = is_loopback(host)
    token = None if loopback else secrets.token_urlsafe(24)
    app = create_app(
        ref.url,
        token=token,
        allowed_hosts=None if token else (*_loopback_names(), host.lower()),
    )
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown_host = f"[{host.strip('[]')}]" if ":" in host else host
    address = f"http://{shown_host}:{bound}/"
    lines = [f"runtree ui: the runs of {ref.shown} (read-only)"]
    if token is None:
        lines.append(f"open {address}")
    else:
        lines.append(f"open {address}?token={token}")
        lines.append(
            f"bound to {host}: anyone who can reach this port and has the token can read "
            "these runs; the token changes at each start"
        )
    lines.append("Ctrl-C stops it")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    config = uvicorn.Config(
        app,
        log_level="warning",
        timeout_graceful_shutdown=2,
        lifespan="on",
        access_log=False,
    )
    server = uvicorn.Server(config)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    sys.stdout.write("runtree ui stopped\n")


def _loopback_names() -> tuple[str, ...]:
    from ..ui._app import LOOPBACK_HOSTS

    return tuple(LOOPBACK_HOSTS)
