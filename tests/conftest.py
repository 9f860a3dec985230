"""Run ``async def`` tests on a fresh event loop (debug mode), and fail any test that
leaves a task running behind it, or that lost run-tree records without saying it expects
to (``@pytest.mark.record_loss``); the store fixtures every store test uses:
``open_store`` (memory, SQLite, PostgreSQL) and ``open_durable`` (SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtree.stores import InMemoryStore, PostgresStore, SqliteStore, Store


async def _run_checked(fn: Callable[..., Awaitable[Any]], kwargs: dict[str, Any]) -> None:
    await fn(**kwargs)
    me = asyncio.current_task()
    # Give finished tasks a turn to complete their bookkeeping, then look for leftovers.
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    if leaked:
        for t in leaked:
            t.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        pytest.fail(f"test leaked {len(leaked)} running task(s): {leaked!r}")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(_run_checked(pyfuncitem.obj, kwargs), debug=True)
    return True


class _RecordLoss(logging.Handler):
    """The recorder's warnings that records were lost (it never raises into user code:
    a test seam that breaks a write would otherwise go unnoticed)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("run trees:"):
            self.seen.append(message)


@pytest.fixture(autouse=True)
def _no_silent_record_loss(request: pytest.FixtureRequest) -> Iterator[None]:
    handler = _RecordLoss()
    logger = logging.getLogger("runtree")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if handler.seen and request.node.get_closest_marker("record_loss") is None:
        pytest.fail(
            f"run-tree records were lost ({handler.seen[0]!r}, {len(handler.seen)} in all); "
            "mark the test @pytest.mark.record_loss if it breaks writes on purpose"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """In CI (``CI`` set), a skipped test marked ``postgres`` fails: CI must run them."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and item.get_closest_marker("postgres"):
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid}: a PostgreSQL test was skipped in CI ({report.longrepr!r}); "
            "CI must run it: `source .ci/postgres.sh` sets RUNTREE_TEST_PG_DSN"
        )


# -- stores under test: memory, SQLite (a real file), PostgreSQL (a fresh schema per test) --

PG_DSN = os.environ.get("RUNTREE_TEST_PG_DSN")

_pg = pytest.param(
    "postgres",
    marks=[
        pytest.mark.postgres,
        pytest.mark.skipif(not PG_DSN, reason="RUNTREE_TEST_PG_DSN is not set"),
    ],
)

StoreFactory = Callable[..., Store]


def _drop_schema(schema: str) -> None:
    import psycopg

    assert PG_DSN is not None
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]


def _factory(kind: str, tmp_path: Path) -> Iterator[StoreFactory]:
    if kind == "memory":
        shared = InMemoryStore()

        def memory(**options: Any) -> Store:
            # One database per test: a second "open" is the same instance.
            return shared

        yield memory
        return
    if kind == "sqlite":
        path = tmp_path / ".runtree" / "runtree.db"

        def sqlite(**options: Any) -> Store:
            return SqliteStore(path, **options)

        yield sqlite
        return
    assert PG_DSN is not None
    schema = f"rt_test_{secrets.token_hex(4)}"

    def postgres(**options: Any) -> Store:
        return PostgresStore(PG_DSN, schema=schema, **options)

    try:
        yield postgres
    finally:
        _drop_schema(schema)


@pytest.fixture(params=["memory", "sqlite", _pg])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens the test's store; for memory every call returns the one instance."""
    yield from _factory(request.param, tmp_path)


@pytest.fixture(params=["sqlite", _pg])
def open_durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens a new instance on the test's database at each call (SQLite, PostgreSQL)."""
    yield from _factory(request.param, tmp_path)
