"""Per-item cost of ``ctx.exec_stream`` against iterating the bare async generator.

Budget (DESIGN "Budgets", §8): the per-item cost of ``exec_stream`` <= 3x iterating the
bare async generator. Run it on its own::

    python bench/bench_stream.py [--items 20000] [--rounds 15]

Each round runs every subject once, in turn, on a fresh generator of ``--items`` items
(bare, floor, subject, floor ...), so slow changes of the machine reach each alike; a
subject's ratio is the median over rounds of its time divided by the mean of the two bare
batches around it. Besides the bare generator and ``exec_stream``, two floors show where
the time goes: the same generator behind one delegating async generator (the layer any
wrapper adds), and that layer plus a ``ContextVar`` set/reset around each step (what
"``current_context()`` is the child at every resumption" costs at the least). A third
shows the alternative to the set/reset: each step driven by hand inside one
``contextvars.Context`` per stream (``Context.run``), with nothing else done per item.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import runtree as rt

_var: contextvars.ContextVar[object] = contextvars.ContextVar("bench", default=None)


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


@rt.flow
async def stream_numbers(ctx: rt.ExecutionContext) -> AsyncIterator[int]:
    for i in range(ctx.input):
        yield i


async def layer(source: AsyncIterator[int]) -> AsyncIterator[int]:
    async for item in source:
        yield item


async def layer_with_var(source: AsyncIterator[int]) -> AsyncIterator[int]:
    marker = object()
    nxt = source.__anext__
    while True:
        token = _var.set(marker)
        try:
            item = await nxt()
        except StopAsyncIteration:
            _var.reset(token)
            return
        _var.reset(token)
        yield item


class ContextRunStep:
    """The other way to run each step with the child current: drive the generator's
    ``__anext__()`` awaitable inside one ``contextvars.Context`` per stream
    (``Context.run(aw.send, None)``), the cheapest driver plain Python allows (no catching
    of ``StopIteration``: it reaches the ``async for`` as is). Measured, not used."""

    __slots__ = ("_aw", "_nxt", "_run")

    def __init__(self, source: AsyncIterator[int]) -> None:
        self._nxt = source.__anext__
        context = contextvars.copy_context()
        context.run(_var.set, object())
        self._run = context.run

    def __aiter__(self) -> ContextRunStep:
        return self

    def __anext__(self) -> Any:
        self._aw: Any = self._nxt()
        return self

    def __await__(self) -> ContextRunStep:
        return self

    def __next__(self) -> object:
        return self._run(self._aw.send, None)

    def send(self, value: object) -> object:
        return self._run(self._aw.send, value)

    def throw(self, *exc: Any) -> object:
        return self._run(self._aw.throw, *exc)


async def timed(make: Callable[[], AsyncIterator[int]]) -> int:
    it = make()
    t0 = time.perf_counter_ns()
    async for _ in it:
        pass
    return time.perf_counter_ns() - t0


async def main(items: int, rounds: int) -> dict[str, float]:
    async with rt.create_scope() as scope, scope.create_context() as ctx:
        subjects: dict[str, Callable[[], AsyncIterator[int]]] = {
            "one delegating generator": lambda: layer(numbers(items)),
            "  + ContextVar set/reset per step": lambda: layer_with_var(numbers(items)),
            "Context.run driver per step": lambda: ContextRunStep(numbers(items)),
            "ctx.exec_stream": lambda: ctx.exec_stream(stream_numbers, items).__aiter__(),
        }
        bare: Callable[[], AsyncIterator[int]] = lambda: numbers(items)  # noqa: E731
        samples: dict[str, list[float]] = {name: [] for name in subjects}
        floor_ns: list[float] = []
        for make in [bare, *subjects.values()]:  # warm up
            await timed(make)
        gc.disable()
        try:
            for _ in range(rounds):
                before = await timed(bare)
                for name, make in subjects.items():
                    got = await timed(make)
                    after = await timed(bare)
                    floor = (before + after) / 2
                    samples[name].append(got / floor)
                    floor_ns.append(floor / items)
                    before = after
        finally:
            gc.enable()
    floor = statistics.median(floor_ns)
    print(f"CPython {sys.version.split()[0]}, {items} items x {rounds} rounds")
    print(f"{'bare async generator':38} {floor:7.0f} ns/item   1.00x")
    ratios: dict[str, float] = {}
    for name, values in samples.items():
        ratio = statistics.median(values)
        ratios[name] = ratio
        print(f"{name:38} {floor * ratio:7.0f} ns/item {ratio:6.2f}x")
    verdict = "PASS" if ratios["ctx.exec_stream"] <= 3.0 else "FAIL"
    print(f"budget: exec_stream <= 3x the bare generator per item: {verdict}")
    return ratios


def cli(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    return asyncio.run(main(args.items, args.rounds))


if __name__ == "__main__":
    cli()
