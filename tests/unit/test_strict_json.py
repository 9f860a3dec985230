"""What a durable journal accepts as a value: strict JSON. ``problem`` says why a value is
not; dicts of plain values take a fast path that must say exactly what the general rules
say (a reference walk below states those rules on its own)."""

from __future__ import annotations

import math
import random

import pytest

from runtree._json import problem


def reference(value: object, depth: int = 0) -> bool:
    """Strict JSON by the rules, without any fast path: True when it is."""
    if depth > 200:
        return False
    if value is None or isinstance(value, (str, bool)):
        return True
    if isinstance(value, int):
        return value.bit_length() < 14_000
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(reference(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and reference(v, depth + 1) for k, v in value.items())
    return False


class Str(str):
    pass


class Int(int):
    pass


LEAVES: list[object] = [
    None, True, 0, -5, 2**60, 10**4300, 1.5, math.nan, -math.inf, "x", Str("s"), Int(3),
    b"b", object(), (1, 2), [], {}, {1: 2}, {None: 1}, {Str("k"): 1}, {(1,): 2}, set(),
]  # fmt: skip


def nested(rng: random.Random, depth: int) -> object:
    r = rng.random()
    if depth > 3 or r < 0.4:
        return rng.choice(LEAVES)
    if r < 0.7:
        keys: list[object] = ["a", "b", Str("c"), 1, 2.5, None]
        return {rng.choice(keys): nested(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return [nested(rng, depth + 1) for _ in range(rng.randint(0, 3))]


def test_problem_agrees_with_the_rules_on_random_values() -> None:
    rng = random.Random(7)
    for _ in range(20_000):
        value = nested(rng, 0)
        assert (problem(value) is None) == reference(value), repr(value)[:200]


@pytest.mark.parametrize("levels", [198, 199, 200, 201, 202])
@pytest.mark.parametrize("leaf", ["s", 1, 1.5, None, {}, [], {"x": 1}])
def test_the_depth_limit_is_the_same_for_every_leaf(levels: int, leaf: object) -> None:
    value: object = leaf
    for _ in range(levels):
        value = {"a": value}
    assert (problem(value) is None) == reference(value)
    if not reference(value):
        assert problem(value) == "nested too deeply"


def test_flat_dicts_name_what_is_wrong() -> None:
    assert problem({"n": 1, "f": 0.5, "s": "x", "b": True, "z": None}) is None
    assert problem({1: "a"}) == "dict key 1 is not a str"
    assert problem({"x": math.nan}) == "nan is not a finite number"
    assert problem({"x": b"raw"}) == "bytes value b'raw' is not JSON"
    assert problem({"x": {"y": [1, object]}}) is not None
