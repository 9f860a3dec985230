"""The web view under test: ``runtree ui`` as a real server and Debian's headless Chromium
driven by Playwright.

Without Chromium the browser tests are skipped, except in CI (``CI`` set), where they fail:
``.ci/run`` installs it. Screenshots go to ``RUNTREE_UI_ARTEFACTS`` (default: a folder
under pytest's temporary directory).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ui_support import CHROMIUM_ARGS, Server, in_thread, need_chromium, start_server, stop_server


def _seed(db: Path) -> None:
    """The store exists before the server starts (the server never creates one)."""
    from runtree.stores import SqliteStore

    async def go() -> None:
        async with SqliteStore(db):
            pass

    in_thread(go)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("ui-store") / ".runtree" / "runtree.db"
    _seed(db)
    proc, srv = start_server(db)
    try:
        yield srv
    finally:
        stop_server(proc)


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("RUNTREE_UI_ARTEFACTS")
    folder = Path(chosen) if chosen else tmp_path_factory.getbasetemp() / "ui-artefacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    try:
        yield opened
    finally:
        context.close()
    assert not errors, errors
