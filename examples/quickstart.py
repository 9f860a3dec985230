"""Quickstart: a request-like flow tree with tags, atoms, a resource, nested execs,
parallel work, a journaled step and cleanup, printed as a tree.

Run it with ``python examples/quickstart.py`` (after ``make demo``, which creates the
virtualenv: ``.venv/bin/python examples/quickstart.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import runtree as rt

# -- tags: typed ambient values ------------------------------------------------------
tenant: rt.Tag[str] = rt.tag("tenant")
request_id: rt.Tag[str] = rt.tag("request_id")

events: list[str] = []


# -- atoms: long-lived values owned by the scope ---------------------------------------
@rt.atom
async def database(ctx: rt.ResolveContext) -> AsyncIterator[dict[str, list[str]]]:
    events.append("database: connect")
    yield {"acme": ["alice", "bob"], "globex": ["hank"]}
    events.append("database: disconnect")  # cleanup, when the scope is disposed


# -- a resource: one per request, committed or rolled back with the request ----------
@rt.resource
async def transaction(ctx: rt.ResolveContext) -> AsyncIterator[list[str]]:
    writes: list[str] = []
    try:
        yield writes
    except Exception:
        events.append(f"transaction: rollback {writes}")
        raise
    else:
        events.append(f"transaction: commit {writes}")


# -- flows: units of work --------------------------------------------------------------
@rt.flow(deps={"db": database, "who": rt.tags.required(tenant)})
async def load_users(ctx: rt.ExecutionContext, db: dict[str, list[str]], who: str) -> list[str]:
    await asyncio.sleep(0.01)
    return db[who]


@rt.flow(deps={"tx": transaction})
async def audit(ctx: rt.ExecutionContext, tx: list[str]) -> None:
    tx.append(f"viewed by {ctx.get(request_id)}")


@rt.flow
async def greet(ctx: rt.ExecutionContext) -> str:
    await asyncio.sleep(0.005)
    return f"hello {ctx.input}"


@rt.flow(deps={"load_users": load_users, "audit": audit})
async def handle_request(
    ctx: rt.ExecutionContext,
    load_users: rt.FlowHandle[object, list[str]],
    audit: rt.FlowHandle[object, None],
) -> list[str]:
    ctx.on_close(lambda: events.append(f"request {ctx.get(request_id)}: closed"))
    users = await load_users(key="users")  # journaled: runs once per request tree
    await load_users(key="users")  # replayed from the journal, not run again
    greetings = await ctx.parallel(*(ctx.exec(greet, u) for u in users))
    await audit()
    return greetings


# -- an extension: record every context for the tree printout --------------------------
class TreeRecorder(rt.Extension):
    def __init__(self) -> None:
        self.contexts: list[tuple[rt.ExecutionContext, str]] = []

    async def wrap_exec(self, next: Callable[[], Awaitable[object]], op: rt.ExecOp) -> object:
        self.contexts.append((op.context, op.kind))
        return await next()


def print_tree(recorder: TreeRecorder) -> None:
    children: dict[int, list[tuple[rt.ExecutionContext, str]]] = {}
    roots = []
    for ctx, kind in recorder.contexts:
        if kind == "parallel":
            continue
        if ctx.parent is None:
            roots.append((ctx, kind))
        else:
            children.setdefault(id(ctx.parent), []).append((ctx, kind))

    def show(ctx: rt.ExecutionContext, kind: str, prefix: str, branch: str) -> None:
        d = ctx.details
        took = f"{(d.duration or 0) * 1000:6.1f} ms"
        label = f"{prefix}{branch}{d.name}"
        print(f"{label:<24} {kind:<8} {d.status:<10} {took}")
        kids = children.get(id(ctx), [])
        inner = prefix + ("│  " if branch == "├─ " else "   " if branch else "")
        for i, (child, child_kind) in enumerate(kids):
            show(child, child_kind, inner, "└─ " if i == len(kids) - 1 else "├─ ")

    for ctx, kind in roots:
        show(ctx, kind, "", "")


async def main() -> None:
    recorder = TreeRecorder()
    async with rt.create_scope(extensions=[recorder]) as scope:
        for i, who in enumerate(["acme", "globex"], start=1):
            result = await scope.exec(handle_request, tags=[tenant(who), request_id(f"req-{i}")])
            print(f"{who}: {result}")
        print()
        print_tree(recorder)
    print()
    print("\n".join(events))


if __name__ == "__main__":
    asyncio.run(main())
