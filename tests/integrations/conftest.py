"""A real uvicorn server on 127.0.0.1, in the test's own event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest


@asynccontextmanager
async def _serve(app: Any) -> AsyncIterator[str]:
    import uvicorn

    # Bind first: the port is known at once and connections wait in the backlog until
    # uvicorn accepts them (no polling for "started").
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="auto", ws="websockets-sansio")
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _raw_get(host: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """One GET on its own connection (``Connection: close``); (status, body). A bare
    socket client: hundreds of them at once cost little next to a full HTTP client."""
    name, port = host.split(":")
    reader, writer = await asyncio.open_connection(name, int(port))
    lines = [f"GET {path} HTTP/1.1", "Host: test", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.fixture
def raw_get() -> Callable[[str, str, dict[str, str]], Awaitable[tuple[int, bytes]]]:
    return _raw_get


@pytest.fixture
def serve() -> Callable[[Any], AbstractAsyncContextManager[str]]:
    """``async with serve(app) as host:`` runs ``app`` under uvicorn on ``host``."""
    return _serve
