"""``runtree demo``: a brainstorm → implement → test command chain.

Each command runs in its own process (``runtree run runtree.cli._demo:<command>
--session ID``) on the embedded SQLite store, and they share one session: loaded context
(the second load is a cache hit), shared data (ideas → files → test report), the command
history, and a durable journal (running ``test`` again replays its recorded steps).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .._context import ExecutionContext
from .._define import flow

DEMO_PROJECT = "runtree-demo"
CONTEXT_DIR = Path(".runtree") / "demo-context"

_VISION = """\
# Vision
A tiny task tracker: add tasks, list them, mark them done.
"""
_CONVENTIONS = """\
# Conventions
Small pure functions, one test per behaviour.
"""


def _provider() -> Any:
    from ..sessions import FileContextProvider

    return FileContextProvider(CONTEXT_DIR)


async def _load(ctx: ExecutionContext, domain: str, topic: str) -> str:
    """Cache-first context load; the hit or miss shows in the execution tree."""
    from ..sessions import current_session

    session = current_session()
    assert session is not None
    cached = await session.get_cached_context(domain, topic)
    content = await session.load_context(domain, topic, _provider())
    loads = ctx.details.metadata.setdefault("context", [])
    assert isinstance(loads, list)
    loads.append(f"{domain}:{topic} {'hit' if cached is not None else 'miss'}")
    return str(content)


@flow
async def generate_ideas(ctx: ExecutionContext) -> list[dict[str, str]]:
    await asyncio.sleep(0.01)  # "thinking"
    features = ["add task", "list tasks", "complete task"]
    return [{"slug": f.replace(" ", "_"), "title": f} for f in features]


@flow
async def write_code(ctx: ExecutionContext) -> dict[str, str]:
    idea: dict[str, str] = ctx.input  # type: ignore[assignment]
    await asyncio.sleep(0.005)
    return {"path": f"tracker/{idea['slug']}.py", "feature": idea["title"]}


@flow
async def run_test(ctx: ExecutionContext) -> dict[str, object]:
    file: dict[str, str] = ctx.input  # type: ignore[assignment]
    await asyncio.sleep(0.005)
    return {"path": file["path"], "passed": True}


@flow
async def brainstorm(ctx: ExecutionContext) -> dict[str, object]:
    from ..sessions import current_session

    session = current_session()
    assert session is not None
    vision = await _load(ctx, "product", "vision")
    ideas = await ctx.exec(generate_ideas, vision, key="brainstorm:ideas")
    await session.set_shared_data("ideas", ideas)
    return {"ideas": [i["title"] for i in ideas]}


@flow
async def implement(ctx: ExecutionContext) -> dict[str, object]:
    from ..sessions import current_session

    session = current_session()
    assert session is not None
    await _load(ctx, "product", "vision")  # loaded by brainstorm: a cache hit
    await _load(ctx, "code", "conventions")
    ideas: list[dict[str, str]] = await session.get_shared_data("ideas")  # type: ignore[assignment]
    files = await ctx.parallel(
        *(ctx.exec(write_code, idea, key=f"implement:{idea['slug']}") for idea in ideas)
    )
    await session.set_shared_data("files", files)
    return {"files": [f["path"] for f in files]}


@flow
async def test(ctx: ExecutionContext) -> dict[str, object]:
    from ..sessions import current_session

    session = current_session()
    assert session is not None
    previous = await session.get_previous_command("implement")
    ctx.details.metadata["after"] = previous.command if previous else None
    files: list[dict[str, str]] = await session.get_shared_data("files")  # type: ignore[assignment]
    results = [await ctx.exec(run_test, f, key=f"test:{f['path']}") for f in files]
    passed = sum(1 for r in results if r["passed"])
    report: dict[str, object] = {"passed": passed, "failed": len(results) - passed}
    await session.set_shared_data("test_report", report)
    return report


def _write_context() -> None:
    for rel, text in (("product/vision.md", _VISION), ("code/conventions.md", _CONVENTIONS)):
        path = CONTEXT_DIR / rel
        for folder in reversed((path.parent, *path.parent.parents)):
            if folder != Path(".") and not folder.exists():
                folder.mkdir(mode=0o700)  # like the store's own .runtree/
        if not path.exists():
            path.write_text(text)


def run_demo(*, as_json: bool, store: str) -> None:
    """Create a session, run the chain in separate processes, print the session."""
    from ..sessions import Sessions
    from ..stores import from_url
    from ._app import out, print_session

    async def start() -> str:
        async with from_url(store) as s:
            session = await Sessions(s).create(DEMO_PROJECT, "demo")
            return str(session.session_id)

    session_id = asyncio.run(start())  # opening the store creates .runtree/ (0700)
    _write_context()
    env = {**os.environ, "RUNTREE_STORE": store}
    steps = [
        ("brainstorm", "the first command: loads context (a miss), records ideas"),
        ("implement", "a new process: context is a cache hit, ideas come from shared data"),
        ("test", "reads the files implement shared, records a report"),
        ("test", "run again: every keyed step replays from the durable journal"),
    ]
    transcripts = []
    for command, why in steps:
        if not as_json:
            out.rule(f"[bold]runtree run runtree.cli._demo:{command}[/bold] — {why}")
        argv = [
            sys.executable,
            "-m",
            "runtree",
            "run",
            f"runtree.cli._demo:{command}",
            "--session",
            session_id,
            "--command",
            command,
        ]
        if as_json:
            argv.append("--json")
        done = subprocess.run(argv, env=env, capture_output=as_json, text=True, check=False)
        if done.returncode != 0:
            if as_json:
                sys.stderr.write(done.stderr)
            raise SystemExit(done.returncode)
        if as_json:
            transcripts.append({"command": command, **json.loads(done.stdout)})

    async def finish() -> Any:
        async with from_url(store) as s:
            return await Sessions(s).get(session_id)

    session = asyncio.run(finish())
    if as_json:
        from ._app import _session_dict

        sys.stdout.write(
            json.dumps({"session": _session_dict(session), "runs": transcripts}, indent=2) + "\n"
        )
        return
    out.rule("[bold]the session after the chain[/bold]")
    print_session(session)
    out.print(f"\nInspect it again with: runtree session show {session_id}   (store: {store})")
