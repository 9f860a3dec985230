"""A FastAPI request through RuntreeMiddleware with one ``Resolve`` dependency, against the
same app with a hand-written ``Depends`` and no middleware (budget: ≤ 1.2x).

Both apps are called as ASGI apps directly: no server and no HTTP client, whose costs
would be the same on both sides and hide the difference. Each request gets the
``receive``/``send`` pair a server gives (see ``Exchange``): ``receive`` returns the request,
then blocks until the response is complete or the client disconnects, as uvicorn's does.

Batches alternate (bare, runtree, bare, …); each runtree batch is divided by the mean of
the bare batches on either side; the figure is the median of those samples (the floor:
the best runtree batch over the best bare one). Batches are
timed in process CPU time (``time.process_time_ns``): on a shared host, time spent
descheduled would otherwise land on whichever side was running.

``--instructions`` counts instructions per request instead, with ``valgrind
--tool=callgrind``: each app runs in its own process, instrumented only around ``--n``
warm requests (``callgrind_control -i on``, ``-z``, ``-d``). The host's load cannot blur
the counts; the timing ratios above move by tens of percent between runs on a busy host.

Run: ``python bench/bench_asgi.py`` (``--quick`` for a smoke run, ``--no-watch`` for the
middleware without its disconnect watcher, ``--instructions [--n 100]``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI

import runtree as rt
from runtree.integrations.fastapi import Resolve, RuntreeMiddleware

CONFIG = {"greeting": "hello"}


@rt.atom
def config(ctx: rt.ResolveContext) -> dict[str, str]:
    return CONFIG


async def get_config() -> dict[str, str]:
    # async, as Resolve's dependency is: FastAPI runs a sync dependency in a worker thread,
    # which would cost the baseline far more than anything measured here.
    return CONFIG


def bare_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello/{name}")
    async def hello(name: str, cfg: Annotated[dict[str, str], Depends(get_config)]) -> str:
        return f"{cfg['greeting']} {name}"

    return app


def runtree_app(scope: rt.Scope, *, watch: bool = True) -> FastAPI:
    app = FastAPI()
    app.add_middleware(RuntreeMiddleware, scope=scope, watch_disconnect=watch)

    @app.get("/hello/{name}")
    async def hello(name: str, cfg: Annotated[dict[str, str], Resolve(config)]) -> str:
        return f"{cfg['greeting']} {name}"

    return app


DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}


class Exchange:
    """One request's ``receive``/``send``, as uvicorn's request cycle serves them: the
    first ``receive`` returns the (empty) body, the next blocks until the response is
    complete and then reports ``http.disconnect``. A ``receive`` that never blocks would
    misrepresent anything that watches it for a disconnect."""

    __slots__ = ("complete", "event")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.event.set()  # the request (no body) has arrived
        self.complete = False

    async def receive(self) -> dict[str, Any]:
        if not self.complete:
            await self.event.wait()
            self.event.clear()
        if self.complete:
            return DISCONNECT
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete = True
            self.event.set()


def scope_for() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/hello/alice",
        "raw_path": b"/hello/alice",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


async def batch(app: Any, n: int) -> float:
    gc.collect()
    gc.disable()
    try:
        t0 = time.process_time_ns()
        for _ in range(n):
            exchange = Exchange()
            await app(scope_for(), exchange.receive, exchange.send)
        return (time.process_time_ns() - t0) / n
    finally:
        gc.enable()


async def main(quick: bool, watch: bool) -> None:
    async with rt.create_scope() as scope:
        bare, wrapped = bare_app(), runtree_app(scope, watch=watch)
        n, rounds = (200, 5) if quick else (1000, 15)
        for app in (bare, wrapped):
            await batch(app, n)  # warm up (FastAPI builds its middleware stack on first call)
        ratios: list[float] = []
        bare_ns: list[float] = []
        wrapped_ns: list[float] = []
        before = await batch(bare, n)
        for _ in range(rounds):
            subject = await batch(wrapped, n)
            after = await batch(bare, n)
            ratios.append(subject / ((before + after) / 2))
            bare_ns.append(before)
            wrapped_ns.append(subject)
            before = after
    ratio = statistics.median(ratios)
    verdict = "PASS" if ratio <= 1.2 else "FAIL"
    print(f"CPython {sys.version.split()[0]}, {rounds} rounds of {n} requests")
    print(f"bare FastAPI + Depends            {statistics.median(bare_ns) / 1000:7.1f} µs")
    label = "RuntreeMiddleware + Resolve" if watch else "... watch_disconnect=False"
    print(f"{label:33} {statistics.median(wrapped_ns) / 1000:7.1f} µs")
    print(
        f"ratio {ratio:.3f}x (spread {min(ratios):.3f}-{max(ratios):.3f}; "
        f"floor {min(wrapped_ns) / min(bare_ns):.3f}x)    budget <= 1.2x: {verdict}"
    )


SUBJECTS = {
    "bare": "bare FastAPI + Depends",
    "runtree": "RuntreeMiddleware + Resolve",
    "no-watch": "... watch_disconnect=False",
}


async def counted(subject: str, n: int) -> None:
    """Run ``n`` requests of one app under callgrind, counting only those."""
    async with rt.create_scope() as scope:
        watch = subject == "runtree"
        app = bare_app() if subject == "bare" else runtree_app(scope, watch=watch)
        await batch(app, 50)  # warm up, uncounted
        pid = str(os.getpid())
        subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
        for _ in range(n):  # not batch(): its gc.collect() would be counted
            exchange = Exchange()
            await app(scope_for(), exchange.receive, exchange.send)
        subprocess.run(["callgrind_control", "-d", "bench", pid], check=True, capture_output=True)


def instructions(n: int) -> None:
    counts: dict[str, float] = {}
    for subject in SUBJECTS:
        with tempfile.TemporaryDirectory() as out:
            subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--instr-atstart=no",
                    f"--callgrind-out-file={out}/cg.%p",
                    sys.executable,
                    __file__,
                    "--count",
                    subject,
                    "--n",
                    str(n),
                ],
                check=True,
                capture_output=True,
            )
            for dump in Path(out).iterdir():
                text = dump.read_text()
                if "Trigger: dump bench" in text:
                    found = re.search(r"^summary: (\d+)", text, re.MULTILINE)
                    assert found is not None
                    counts[subject] = int(found.group(1)) / n
    print(f"CPython {sys.version.split()[0]}, instructions per request (callgrind, {n} requests)")
    for subject, label in SUBJECTS.items():
        ratio = counts[subject] / counts["bare"]
        print(f"{label:33} {counts[subject] / 1000:7.1f} k   {ratio:.3f}x")
    verdict = "PASS" if counts["runtree"] / counts["bare"] <= 1.2 else "FAIL"
    print(f"budget <= 1.2x: {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-watch", action="store_true", help="watch_disconnect=False")
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument("--n", type=int, default=100, help="requests counted (--instructions)")
    parser.add_argument("--count", choices=SUBJECTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count:
        asyncio.run(counted(args.count, args.n))
    elif args.instructions:
        instructions(args.n)
    else:
        asyncio.run(main(args.quick, not args.no_watch))
