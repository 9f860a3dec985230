"""Presets: test seams without monkeypatching."""

from __future__ import annotations

import pytest

import runtree as rt


def explode(*_: object) -> object:
    raise AssertionError("the preset target must never run")


real_db = rt.atom(explode, name="db")


@rt.flow(deps={"db": real_db})
async def handler(ctx: rt.ExecutionContext, db: object) -> str:
    return f"using {db}"


class TestPresets:
    async def test_atom_replaced_by_a_value(self) -> None:
        async with rt.create_scope(presets=[rt.preset(real_db, "fake-db")]) as scope:
            assert await scope.resolve(real_db) == "fake-db"
            assert await scope.exec(handler) == "using fake-db"

    async def test_atom_replaced_by_another_atom(self) -> None:
        other = rt.atom(lambda ctx: "other-db", name="other")
        async with rt.create_scope(presets=[rt.preset(real_db, other)]) as scope:
            assert await scope.exec(handler) == "using other-db"

    async def test_flow_replaced_by_a_flow_or_a_value(self) -> None:
        real_flow = rt.flow(explode, name="charge")
        fake_flow = rt.flow(lambda ctx: f"fake charge {ctx.input}", name="fake")

        @rt.flow(deps={"charge": real_flow})
        async def checkout(ctx: rt.ExecutionContext, charge: rt.FlowHandle) -> object:
            return await charge(10)

        async with rt.create_scope(presets=[rt.preset(real_flow, fake_flow)]) as scope:
            assert await scope.exec(checkout) == "fake charge 10"
            root = scope.create_context()
            assert await root.exec(real_flow, 5) == "fake charge 5"
        async with rt.create_scope(presets=[rt.preset(real_flow, "canned")]) as scope:
            assert await scope.exec(checkout) == "canned"

    async def test_resource_replaced_by_a_value(self) -> None:
        tx = rt.resource(explode, name="tx")

        @rt.flow(deps={"tx": tx})
        async def f(ctx: rt.ExecutionContext, tx: object) -> object:
            return tx

        async with rt.create_scope(presets=[rt.preset(tx, "fake-tx")]) as scope:
            assert await scope.exec(f) == "fake-tx"

    def test_bad_presets_are_rejected_early(self) -> None:
        f = rt.flow(lambda ctx: 1, name="f")
        with pytest.raises(TypeError, match=r"target must be an atom, resource or flow"):
            rt.preset("nope", 1)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match=r"cannot be replaced by a flow"):
            rt.preset(real_db, f)
        with pytest.raises(TypeError, match=r"takes preset"):
            rt.create_scope(presets=[(real_db, 1)])  # type: ignore[list-item]
