"""Run ``async def`` tests on a fresh event loop (debug mode), and fail any test that
leaves a task running behind it."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """In CI (``CI`` set), a skipped test marked ``postgres`` fails: CI must run them."""
    outcome = yield
    report = outcome.get_result()
    import os

    if report.skipped and os.environ.get("CI") and item.get_closest_marker("postgres"):
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid}: a PostgreSQL test was skipped in CI ({report.longrepr!r}); "
            "CI must run it: `source .ci/postgres.sh` sets RUNTREE_TEST_PG_DSN"
        )
