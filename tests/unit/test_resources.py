"""Resources: context-owned values with commit/rollback cleanup."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

import runtree as rt


class FakeTx:
    def __init__(self, n: int) -> None:
        self.n = n
        self.state = "open"


def tx_resource(log: list[str], ownership: rt._defs.Ownership = "boundary") -> rt.Resource[FakeTx]:
    made = 0

    @rt.resource(ownership=ownership, name="tx")
    async def tx(ctx: rt.ResolveContext) -> AsyncIterator[FakeTx]:
        nonlocal made
        made += 1
        t = FakeTx(made)
        log.append(f"begin {t.n}")
        try:
            yield t
        except Exception as exc:
            t.state = "rolled back"
            log.append(f"rollback {t.n}: {exc}")
            raise
        else:
            t.state = "committed"
            log.append(f"commit {t.n}")

    return tx


class TestOwnership:
    async def test_boundary_resources_are_shared_by_nested_execs(self) -> None:
        log: list[str] = []
        tx = tx_resource(log)

        @rt.flow(deps={"tx": tx})
        async def inner(ctx: rt.ExecutionContext, tx: FakeTx) -> int:
            return tx.n

        @rt.flow(deps={"tx": tx, "inner": inner})
        async def outer(ctx: rt.ExecutionContext, tx: FakeTx, inner: rt.FlowHandle) -> list[int]:
            return [tx.n, await inner(), await inner()]

        async with rt.create_scope() as scope:
            assert await scope.exec(outer) == [1, 1, 1]
            assert await scope.exec(outer) == [2, 2, 2]  # a new boundary, a new tx
        assert log == ["begin 1", "commit 1", "begin 2", "commit 2"]

    async def test_current_resources_are_private_to_the_first_exec_and_descendants(self) -> None:
        log: list[str] = []
        tx = tx_resource(log, "current")

        @rt.flow(deps={"tx": tx})
        async def leaf(ctx: rt.ExecutionContext, tx: FakeTx) -> int:
            return tx.n

        @rt.flow(deps={"tx": tx, "leaf": leaf})
        async def branch(
            ctx: rt.ExecutionContext, tx: FakeTx, leaf: rt.FlowHandle
        ) -> tuple[int, int]:
            return tx.n, await leaf()

        async with rt.create_scope() as scope, scope.create_context() as root:
            first = await root.exec(branch)
            second = await root.exec(branch)
        assert first == (1, 1)  # the leaf shares its ancestor's tx
        assert second == (2, 2)  # a sibling gets a fresh one
        assert log == ["begin 1", "commit 1", "begin 2", "commit 2"]

    async def test_ctx_resolve_gives_the_dependency_value(self) -> None:
        log: list[str] = []
        tx = tx_resource(log)

        @rt.flow(deps={"value": tx})
        async def f(ctx: rt.ExecutionContext, value: FakeTx) -> bool:
            return (await ctx.resolve(tx)) is value

        async with rt.create_scope() as scope, scope.create_context() as root:
            assert await root.exec(f)
            assert await root.run(lambda: 1) == 1


class TestOutcome:
    async def test_the_owners_error_is_thrown_in_and_still_reaches_the_caller(self) -> None:
        log: list[str] = []
        tx = tx_resource(log)

        @rt.flow(deps={"tx": tx})
        async def failing(ctx: rt.ExecutionContext, tx: FakeTx) -> None:
            raise LookupError("no row")

        async with rt.create_scope() as scope:
            with pytest.raises(LookupError):
                await scope.exec(failing)
        assert log == ["begin 1", "rollback 1: no row"]

    async def test_catching_the_error_at_yield_never_suppresses_it(self) -> None:
        log: list[str] = []

        @rt.resource
        def swallowing(ctx: rt.ResolveContext) -> Iterator[str]:
            try:
                yield "r"
            except Exception:
                log.append("caught")  # and does not re-raise

        @rt.flow(deps={"r": swallowing})
        async def failing(ctx: rt.ExecutionContext, r: str) -> None:
            raise ValueError("still raised")

        async with rt.create_scope() as scope:
            with pytest.raises(ValueError):
                await scope.exec(failing)
        assert log == ["caught"]

    async def test_resource_cleanup_and_on_close_share_one_reverse_order(self) -> None:
        log: list[str] = []

        @rt.resource(ownership="current")
        def res(ctx: rt.ResolveContext) -> Iterator[str]:
            yield "r"
            log.append("resource cleanup")

        @rt.flow(deps={"r": res})
        async def f(ctx: rt.ExecutionContext, r: str) -> None:
            ctx.on_close(lambda: log.append("registered after the resource"))

        async with rt.create_scope() as scope, scope.create_context() as root:
            await root.exec(f)
        assert log == ["registered after the resource", "resource cleanup"]

    async def test_failing_resource_factory_is_a_resolve_error(self) -> None:
        @rt.resource(name="conn")
        def conn(ctx: rt.ResolveContext) -> str:
            raise OSError("down")

        @rt.flow(deps={"c": conn})
        async def f(ctx: rt.ExecutionContext, c: str) -> None:
            raise AssertionError("not reached")

        async with rt.create_scope() as scope, scope.create_context() as root:
            with pytest.raises(rt.ResolveError) as info:
                await root.exec(f)
            assert info.value.atom == "conn"
            assert isinstance(info.value.__cause__, OSError)

    async def test_resource_deps_may_be_atoms_resources_and_tags(self) -> None:
        user = rt.tag("user")
        base = rt.atom(lambda ctx: "db", name="base")

        @rt.resource(deps={"db": base, "u": rt.tags.required(user)})
        def session(ctx: rt.ResolveContext, db: str, u: str) -> str:
            return f"{db}:{u}"

        @rt.resource(deps={"s": session}, ownership="current")
        def scoped(ctx: rt.ResolveContext, s: str) -> str:
            return s.upper()

        @rt.flow(deps={"s": scoped})
        async def f(ctx: rt.ExecutionContext, s: str) -> str:
            return s

        async with rt.create_scope() as scope:
            assert await scope.exec(f, tags=[user("ann")]) == "DB:ANN"

    async def test_a_flow_dependency_is_a_handle_bound_to_the_owner(self) -> None:
        # DESIGN §2: flows and resources are deps of flows and resources.
        @rt.flow
        async def lookup(ctx: rt.ExecutionContext) -> str:
            assert ctx.parent is not None
            return f"dsn from {ctx.parent.name}"

        @rt.resource(deps={"lookup": lookup})
        async def conn(ctx: rt.ResolveContext, lookup: rt.FlowHandle[None, str]) -> str:
            return await lookup()

        @rt.flow(deps={"conn": conn})
        async def handler(ctx: rt.ExecutionContext, conn: str) -> str:
            return conn

        async with rt.create_scope() as scope, scope.create_context(name="request") as b:
            assert await b.exec(handler) == "dsn from request"
