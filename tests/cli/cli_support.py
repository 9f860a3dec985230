"""Helpers for the CLI tests: the real `runtree` console script as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RUNTREE = Path(sys.executable).parent / "runtree"

FLOWS = """
import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor

import runtree as rt
from runtree.sessions import current_session

@rt.flow
async def add(ctx):
    session = current_session()
    total = ctx.input["a"] + ctx.input["b"]
    if session is not None:
        await session.set_shared_data("total", total)
    return await ctx.exec(rt.flow(lambda c: c.input * 10, name="scale"), total, key="scale")

@rt.flow
async def inner(ctx):
    raise ValueError("broken [/b] on purpose\\nsecond line of the message")

@rt.flow
async def boom(ctx):
    print("the flow prints this")
    await ctx.exec(rt.flow(lambda c: 1, name="fine"))
    return await ctx.exec(inner, 1)

@rt.flow
async def chatty(ctx):
    print("the flow prints this")
    return {"text": "[/b] [bold]not bold[/bold]"}

@rt.flow
async def wants_dict(ctx):
    return ctx.input["topic"]

@rt.flow
async def slow(ctx):
    print("started", file=sys.stderr, flush=True)
    await asyncio.sleep(60)

@rt.flow(name="fl\x1b[32mow")
async def escapes(ctx):
    session = current_session()
    if session is not None:
        await session.record_context_load("dom\x1b[31m", "t", "c")
    ctx.details.metadata["m\x1b[33m"] = "v\x1b]0;title\x07"
    await ctx.run(lambda: 1, key="k\x1b[41mEVIL")
    return 1

@rt.flow
async def exits(ctx):
    sys.exit(3)

@rt.flow
async def shells_out(ctx):
    import os, subprocess
    subprocess.run([sys.executable, "-c", "print('from a subprocess')"], check=True)
    os.write(1, b"from os.write\\n")
    return "done"

@rt.flow
async def gives_a_set(ctx):
    return {1, 2}

not_a_flow = 42
"""

Run = Callable[..., subprocess.CompletedProcess[str]]


def run_cli(
    *args: str, cwd: Path, env: dict[str, str], code: int | None = 0
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(RUNTREE), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if code is not None:
        assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    return done


def run_many(
    cases: list[tuple[list[str], Path, dict[str, str]]],
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent invocations a few at a time (each pays the interpreter's start-up)."""

    def one(case: tuple[list[str], Path, dict[str, str]]) -> subprocess.CompletedProcess[str]:
        args, cwd, env = case
        return run_cli(*args, cwd=cwd, env=env, code=None)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(one, cases))


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RUNTREE_STORE", "COLUMNS")}
    env.update(extra)
    return env


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """stderr is exactly one line, ``error: ...``; returns it."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]
