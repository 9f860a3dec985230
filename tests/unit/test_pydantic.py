"""A pydantic model class as a flow's parse."""

from __future__ import annotations

import pytest

import runtree as rt

pydantic = pytest.importorskip("pydantic")


class Order(pydantic.BaseModel):
    id: int
    qty: int = 1


@rt.flow(parse=Order)
async def place(ctx: rt.ExecutionContext) -> int:
    order = ctx.input
    assert isinstance(order, Order)
    return order.id * order.qty


async def test_model_validates_and_coerces_the_input() -> None:
    async with rt.create_scope() as scope, scope.create_context() as root:
        assert await root.exec(place, {"id": "7", "qty": 3}) == 21
        with pytest.raises(rt.ParseError) as info:
            await root.exec(place, {"qty": 2})
        assert info.value.name == "place"
        assert "id" in str(info.value)
        assert isinstance(info.value.__cause__, pydantic.ValidationError)
