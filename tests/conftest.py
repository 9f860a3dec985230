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
