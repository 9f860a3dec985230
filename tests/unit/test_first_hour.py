"""What a new user runs into in the first hour: each mistake gets a clear answer."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator

import pytest

import runtree as rt
from runtree.stores import InMemoryStore

tenant: rt.Tag[str] = rt.tag("tenant")


@rt.flow
async def who(ctx: rt.ExecutionContext) -> str:
    return ctx.get(tenant)


class TestRootIds:
    @pytest.mark.parametrize("bad", ["", 123, b"x"])
    async def test_one_rule_for_ids_on_every_path(self, bad: object) -> None:
        async with rt.create_scope() as scope:
            with pytest.raises(TypeError, match=r"^scope\.exec\(id=\.\.\.\) takes a non-empty str"):
                scope.exec(who, id=bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=r"^create_context\(id=\.\.\.\) takes a non-empty"):
                scope.create_context(id=bad)  # type: ignore[arg-type]

    async def test_id_with_a_store_must_be_storable(self) -> None:
        async with rt.create_scope(store=InMemoryStore()) as scope:
            with pytest.raises(rt.StoreError, match="root id"):
                scope.create_context(id="a\x00b")

    async def test_id_without_a_store_warns_once(self) -> None:
        async with rt.create_scope() as scope:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                await scope.exec(who, tags=[tenant("a")], id="order-1")
                await scope.exec(who, tags=[tenant("a")], id="order-1")
            assert len([w for w in caught if "without a store" in str(w.message)]) == 1

    async def test_id_with_a_store_does_not_warn(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            async with rt.create_scope(store=InMemoryStore()) as scope:
                assert await scope.exec(who, tags=[tenant("a")], id="order-1") == "a"


class TestExecute:
    async def test_tags_is_the_natural_spelling(self) -> None:
        assert await rt.execute(who, tags=[tenant("acme")]) == "acme"
        assert await rt.execute(who, execution_tags=[tenant("acme")]) == "acme"

    async def test_tags_and_execution_tags_together_refused(self) -> None:
        with pytest.raises(TypeError, match="not both"):
            await rt.execute(who, tags=[tenant("a")], execution_tags=[tenant("b")])


def test_calling_a_flow_says_how_to_run_it() -> None:
    with pytest.raises(TypeError, match=r"ctx\.exec\(who, input\)"):
        who(None)  # type: ignore[operator]


@pytest.fixture
def resource_warnings() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield caught


async def test_an_undisposed_scope_with_cleanups_warns(
    resource_warnings: list[warnings.WarningMessage],
) -> None:
    @rt.atom
    def conn(ctx: rt.ResolveContext) -> Iterator[str]:
        yield "conn"

    scope = rt.create_scope()
    await scope.resolve(conn)
    del scope
    gc.collect()
    assert any("never disposed" in str(w.message) for w in resource_warnings)


async def test_an_undisposed_scope_without_cleanups_is_quiet(
    resource_warnings: list[warnings.WarningMessage],
) -> None:
    scope = rt.create_scope()
    await scope.exec(who, tags=[tenant("a")])
    del scope
    gc.collect()
    assert not [w for w in resource_warnings if "never disposed" in str(w.message)]
