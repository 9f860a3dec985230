"""A peer in the same run: dishka's request scope and warm APP-scope get.

No budget: the figures put runtree's own next to a widely used DI container measured the
same way on the same machine. runtree's counterparts are "create_context + exec + close"
(a request boundary) and "scope.resolve(atom), warm" (an app-scoped value).
"""

from __future__ import annotations

from bench_core import bare_floor, fixed
from harness import Group, Pair, Result, Settings, Timed, cross_ratio

__all__ = ["build"]


class AppService:
    """An APP-scoped dependency (one per container)."""


class RequestService:
    """A REQUEST-scoped dependency (one per request scope)."""

    def __init__(self, app: AppService) -> None:
        self.app = app


def _vs(pairs: dict[str, Pair], key: str, base: str, label: str) -> str:
    r = cross_ratio(pairs, key, base)
    return "" if r is None else f"runtree's {label} is {r:.2f}x this"


async def build(settings: Settings) -> Group:
    group = Group("peers")
    try:
        import dishka
    except ImportError:
        group.rows.append(
            Result("dishka", "dishka", "SKIP", note="dishka is not installed (pip install dishka)")
        )
        return group
    provider = dishka.Provider()
    provider.provide(AppService, scope=dishka.Scope.APP)
    provider.provide(RequestService, scope=dishka.Scope.REQUEST)
    container = dishka.make_async_container(provider)
    group.cleanups.append(container.close)
    await container.get(AppService)  # warm
    version = getattr(dishka, "__version__", "")
    group.pairs += [
        Pair(
            "dishka_request",
            f"dishka {version} request scope + get".replace("  ", " "),
            Timed(
                "dishka request",
                """
                async with container() as request:
                    await request.get(RequestService)
                """,
                fixed(container=container, RequestService=RequestService),
            ),
            bare_floor(),
            note=lambda p: _vs(p, "create_exec_close", "dishka_request", "boundary"),
        ),
        Pair(
            "dishka_app_get",
            "dishka warm APP get",
            Timed(
                "dishka get",
                "await container.get(AppService)",
                fixed(container=container, AppService=AppService),
            ),
            bare_floor(),
            note=lambda p: _vs(p, "resolve_warm", "dishka_app_get", "warm resolve"),
        ),
    ]
    return group
