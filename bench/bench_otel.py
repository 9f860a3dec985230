"""The cost of an exec under the OpenTelemetry extension.

Budget (DESIGN "Budgets"): an exec under ``runtree.otel.TracingExtension`` <= 2x (one bare
SDK ``tracer.start_span(name).end()`` + a plain exec), measured in the same run. Run it on
its own::

    python bench/bench_otel.py [--batch-ms 1] [--batches 30] [--rounds 7]

The SDK's ``TracerProvider`` has no span processor (what the span itself costs, not an
exporter). Each round interleaves short batches of: the bare span, a plain exec, an exec
under the extension, and, for information, a span carrying the attributes the extension
sets on a first attempt that completes (three at the start; see docs/otel.md), and a loop
doing a bare span and then a plain exec (the two side by side cost more than the sum of
their separate loops, each of which keeps its own code and data hot). Every
batch lasts about ``--batch-ms`` (the number of operations per batch is set per measure
at warm-up), well under a scheduler time slice, so most batches run undisturbed. Each
measure of a round is its fastest batch: on a shared host, load only ever adds time, and
the batches of all measures are spread over the same stretch of time. The figure is the
median over rounds of traced / (span + plain).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable

from opentelemetry.sdk.trace import TracerProvider

import runtree as rt
from runtree.otel import TracingExtension


@rt.flow
async def trivial(ctx: rt.ExecutionContext) -> int:
    return 1


async def main(batch_ms: float, batches: int, rounds: int) -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("bench")
    attributes = {
        "runtree.kind": "execute",
        "runtree.context_id": "rt-12345",
        "runtree.root_id": "rt-12345",
    }

    async def span(n: int) -> None:
        for _ in range(n):
            tracer.start_span("trivial").end()

    async def span_attributes(n: int) -> None:
        for _ in range(n):
            tracer.start_span("trivial", attributes=attributes).end()

    plain_scope = rt.create_scope()
    traced_scope = rt.create_scope(extensions=[TracingExtension(tracer_provider=provider)])
    plain_root = plain_scope.create_context()
    traced_root = traced_scope.create_context()

    async def plain(n: int) -> None:
        for _ in range(n):
            await plain_root.exec(trivial)

    async def traced(n: int) -> None:
        for _ in range(n):
            await traced_root.exec(trivial)

    async def span_then_plain(n: int) -> None:
        for _ in range(n):
            tracer.start_span("trivial").end()
            await plain_root.exec(trivial)

    measures: dict[str, Callable[[int], Awaitable[None]]] = {
        "span": span,
        "plain": plain,
        "traced": traced,
        "span_attributes": span_attributes,
        "span_then_plain": span_then_plain,
    }
    sizes: dict[str, int] = {}
    for name, body in measures.items():  # warm up, and size each measure's batches
        await body(50)
        start = time.perf_counter_ns()
        await body(50)
        per_op = (time.perf_counter_ns() - start) / 50
        sizes[name] = max(5, round(batch_ms * 1e6 / per_op))
    rows: list[dict[str, float]] = []
    for _ in range(rounds):
        fastest = dict.fromkeys(measures, float("inf"))
        gc.collect()
        gc.disable()
        try:
            for _ in range(batches):
                for name, body in measures.items():
                    n = sizes[name]
                    start = time.perf_counter_ns()
                    await body(n)
                    fastest[name] = min(fastest[name], (time.perf_counter_ns() - start) / n)
        finally:
            gc.enable()
        rows.append(fastest)
    await plain_root.close()
    await traced_root.close()
    await plain_scope.dispose()
    await traced_scope.dispose()

    ratios = [r["traced"] / (r["span"] + r["plain"]) for r in rows]
    informational = [r["traced"] / (r["span_attributes"] + r["plain"]) for r in rows]
    together = [r["traced"] / r["span_then_plain"] for r in rows]
    median = {name: statistics.median(r[name] for r in rows) for name in measures}
    figure = statistics.median(ratios)
    verdict = "PASS" if figure <= 2.0 else "FAIL"
    print(f"bare SDK span start+end        {median['span'] / 1000:8.2f} us")
    print(f"span with the same attributes  {median['span_attributes'] / 1000:8.2f} us")
    print(f"plain exec                     {median['plain'] / 1000:8.2f} us")
    print(f"exec under TracingExtension    {median['traced'] / 1000:8.2f} us")
    print(f"a bare span, then a plain exec {median['span_then_plain'] / 1000:8.2f} us")
    print(
        f"traced / (span with attributes + plain)  {statistics.median(informational):.2f}x"
        f"  (spread {min(informational):.2f}-{max(informational):.2f})  information"
    )
    print(
        f"traced / (a bare span, then a plain exec, in one loop)"
        f"  {statistics.median(together):.2f}x"
        f"  (spread {min(together):.2f}-{max(together):.2f})  information"
    )
    print(
        f"traced / (span + plain)  {figure:.2f}x  (spread {min(ratios):.2f}-{max(ratios):.2f})"
        f"  budget <= 2x  {verdict}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-ms", type=float, default=1.0, help="length of a batch")
    parser.add_argument("--batches", type=int, default=30, help="batches per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.batch_ms, args.batches, args.rounds))
