"""The cost of an exec under the OpenTelemetry extension.

Budget (DESIGN "Budgets"): an exec under ``runtree.otel.TracingExtension`` <= 2x (one bare
SDK ``tracer.start_span(name).end()`` + a plain exec), measured in the same run. Run it on
its own::

    python bench/bench_otel.py [--n 5000] [--rounds 9]

The SDK's ``TracerProvider`` has no span processor (what the span itself costs, not an
exporter). Each round times, in turn: the bare span, a plain exec, an exec under the
extension; the figure is the median over rounds of traced / (span + plain).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time

from opentelemetry.sdk.trace import TracerProvider

import runtree as rt
from runtree.otel import TracingExtension


@rt.flow
async def trivial(ctx: rt.ExecutionContext) -> int:
    return 1


async def _time(n: int, body: object) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        await body  # type: ignore[misc]
        return (time.perf_counter_ns() - start) / n
    finally:
        gc.enable()


async def main(n: int, rounds: int) -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("bench")

    async def spans() -> None:
        for _ in range(n):
            tracer.start_span("trivial").end()

    plain_scope = rt.create_scope()
    traced_scope = rt.create_scope(extensions=[TracingExtension(tracer_provider=provider)])
    plain_root = plain_scope.create_context()
    traced_root = traced_scope.create_context()

    async def plain() -> None:
        for _ in range(n):
            await plain_root.exec(trivial)

    async def traced() -> None:
        for _ in range(n):
            await traced_root.exec(trivial)

    await plain()
    await traced()  # warm up
    ratios: list[float] = []
    rows: list[tuple[float, float, float]] = []
    for _ in range(rounds):
        span_ns = await _time(n, spans())
        plain_ns = await _time(n, plain())
        traced_ns = await _time(n, traced())
        rows.append((span_ns, plain_ns, traced_ns))
        ratios.append(traced_ns / (span_ns + plain_ns))
    await plain_root.close()
    await traced_root.close()
    await plain_scope.dispose()
    await traced_scope.dispose()
    span_ns, plain_ns, traced_ns = (statistics.median(col) for col in zip(*rows, strict=True))
    figure = statistics.median(ratios)
    verdict = "PASS" if figure <= 2.0 else "FAIL"
    print(f"bare SDK span start+end   {span_ns / 1000:8.2f} us")
    print(f"plain exec                {plain_ns / 1000:8.2f} us")
    print(f"exec under TracingExtension {traced_ns / 1000:6.2f} us")
    print(
        f"traced / (span + plain)   {figure:8.2f}x  (spread {min(ratios):.2f}-{max(ratios):.2f})"
        f"  budget <= 2x  {verdict}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds))
