"""Helpers for the web view tests: ``runtree ui`` as a real server (a subprocess on
127.0.0.1, a free port), Chromium's location, a coroutine run on a loop of its own."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

CHROMIUM = os.environ.get("RUNTREE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def need_chromium() -> str:
    found = CHROMIUM if os.path.isfile(CHROMIUM) else shutil.which("chromium")
    if found:
        return found
    why = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{why}: CI must run the browser tests (.ci/run installs it)")
    pytest.skip(why)


def in_thread(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a loop of its own in another thread (the sync Playwright API
    owns this thread's loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(work())).result(timeout=120)


@dataclass
class Server:
    url: str
    store_url: str
    db: Path
    token: str | None
    lines: list[str]


def start_server(db: Path, *extra: str) -> tuple[subprocess.Popen[str], Server]:
    """``python -m runtree ui`` on ``db``; returns once it printed its address."""
    store_url = "sqlite:///.runtree/runtree.db"  # relative: no machine path on screenshots
    assert db.parent.name == ".runtree" and db.name == "runtree.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtree", "ui", "--store", store_url, "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=db.parent.parent,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:  # blocks until the server speaks (pytest-timeout bounds it)
        lines.append(line.rstrip("\n"))
        if line.startswith("open "):
            break
    else:
        proc.wait(timeout=10)
        pytest.fail("runtree ui exited before serving:\n" + "\n".join(lines))
    address = lines[-1].removeprefix("open ")
    token = address.split("?token=", 1)[1] if "?token=" in address else None
    base = address.split("?", 1)[0]
    # Drain what it prints later so that it never blocks on a full pipe.
    drain = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    drain.start()
    proc.drain = drain  # type: ignore[attr-defined]
    return proc, Server(base, store_url, db, token, lines)


def stop_server(proc: subprocess.Popen[str]) -> None:
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    finally:
        drain = getattr(proc, "drain", None)
        if drain is not None:
            drain.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
