"""The flows of ``runtree demo``: a brainstorm → implement → test command chain.

Run them one by one as commands of a session, each in its own process::

    SID=$(runtree session start tracker)
    runtree run runtree.cli.demo:brainstorm --session "$SID"
    runtree run runtree.cli.demo:implement --session "$SID"
    runtree run runtree.cli.demo:test --session "$SID"

They share the session: its loaded context (a second load is a cache hit), its shared
data (ideas → files → test report), its command history and its durable journal (each
keyed step runs once; running a command again replays it).
"""

from __future__ import annotations

import asyncio

from .._context import ExecutionContext
from .._define import flow
from ..sessions import Session, current_session

__all__ = ["BUILTIN_CONTEXT", "brainstorm", "generate_ideas", "implement", "run_test", "test"]

#: What the demo's context provider serves, by ``domain:topic``.
BUILTIN_CONTEXT = {
    "product:vision": "A tiny task tracker: add tasks, list them, mark them done.",
    "code:conventions": "Small pure functions, one test per behaviour.",
}


class _BuiltinContext:
    """A :class:`~runtree.sessions.ContextProvider` serving :data:`BUILTIN_CONTEXT`."""

    async def get_conditional_context(self, domain: str, topic: str) -> object | None:
        return BUILTIN_CONTEXT.get(f"{domain}:{topic}")


def _session() -> Session:
    session = current_session()
    if session is None:
        msg = (
            "the demo flows run as commands of a session: "
            "runtree run runtree.cli.demo:brainstorm --session ID"
        )
        raise RuntimeError(msg)
    return session


async def _load(ctx: ExecutionContext, domain: str, topic: str) -> str:
    """Cache-first context load; the hit or miss shows in the execution tree."""
    session = _session()
    cached = await session.get_cached_context(domain, topic)
    content = await session.load_context(domain, topic, _BuiltinContext())
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
    idea = ctx.input
    assert isinstance(idea, dict)
    await asyncio.sleep(0.005)
    return {"path": f"tracker/{idea['slug']}.py", "feature": str(idea["title"])}


@flow
async def run_test(ctx: ExecutionContext) -> dict[str, object]:
    file = ctx.input
    assert isinstance(file, dict)
    await asyncio.sleep(0.005)
    return {"path": file["path"], "passed": True}


@flow
async def brainstorm(ctx: ExecutionContext) -> dict[str, object]:
    """Load the product vision, generate ideas (a keyed step), share them."""
    session = _session()
    vision = await _load(ctx, "product", "vision")
    ideas = await ctx.exec(generate_ideas, vision, key="brainstorm:ideas")
    await session.set_shared_data("ideas", ideas)
    return {"ideas": [i["title"] for i in ideas]}


@flow
async def implement(ctx: ExecutionContext) -> dict[str, object]:
    """Write one file per shared idea, in parallel (one keyed step each)."""
    session = _session()
    await _load(ctx, "product", "vision")  # loaded by brainstorm: a cache hit
    await _load(ctx, "code", "conventions")
    ideas = await session.get_shared_data("ideas")
    if not isinstance(ideas, list):
        msg = "no ideas in the session's shared data: run brainstorm first"
        raise RuntimeError(msg)
    files = await ctx.parallel(
        *(ctx.exec(write_code, idea, key=f"implement:{idea['slug']}") for idea in ideas)
    )
    await session.set_shared_data("files", files)
    return {"files": [f["path"] for f in files]}


@flow
async def test(ctx: ExecutionContext) -> dict[str, object]:
    """Test every shared file (one keyed step each) and share the report."""
    session = _session()
    previous = await session.get_previous_command("implement")
    ctx.details.metadata["after"] = previous.command if previous else None
    files = await session.get_shared_data("files")
    if not isinstance(files, list):
        msg = "no files in the session's shared data: run implement first"
        raise RuntimeError(msg)
    results = [await ctx.exec(run_test, f, key=f"test:{f['path']}") for f in files]
    passed = sum(1 for r in results if r["passed"])
    report: dict[str, object] = {"passed": passed, "failed": len(results) - passed}
    await session.set_shared_data("test_report", report)
    return report
