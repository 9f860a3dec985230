"""Flows shared by the crash tests' child processes and the test process."""

import asyncio
import os

import runtree


def _dir():
    return os.environ["DBOS_TEST_DIR"]


def mark(name):
    with open(os.path.join(_dir(), name), "a") as f:
        f.write(f"{os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())


def count(d, name):
    p = os.path.join(d, name)
    if not os.path.exists(p):
        return 0
    with open(p) as f:
        return len([line for line in f.read().splitlines() if line])


async def block_if(point):
    """Block forever in a child started with DBOS_TEST_BLOCK=point."""
    if os.environ.get("DBOS_TEST_BLOCK") == point:
        mark(f"ready-{point}")
        await asyncio.sleep(3600)


@runtree.flow
async def rec_wf(ctx):
    """test_recovery_workflow: a step, then a crash point, then another step."""
    mark(f"wf-{ctx.root.id}")
    a = await ctx.run(lambda: (mark(f"s1-{ctx.root.id}"), ctx.input["a"])[1], key="s1")
    await block_if("after-s1")
    b = await ctx.run(lambda: (mark(f"s2-{ctx.root.id}"), ctx.input["b"])[1], key="s2")
    return a + b


@runtree.flow
async def in_step_wf(ctx):
    """A crash inside a step (before its record): the step runs again (at least once)."""

    async def step():
        mark(f"in-{ctx.root.id}")
        await block_if("in-step")
        return "done"

    return await ctx.run(step, key="in")


@runtree.flow
async def slow_step_wf(ctx):
    """test_singleexec: the step sleeps so two workers overlap on it."""

    async def step():
        mark(f"enter-{ctx.root.id}")
        await asyncio.sleep(1.0)
        mark(f"leave-{ctx.root.id}")
        return os.getpid()

    await asyncio.sleep(0.1)
    pid = await ctx.run(step, key="slow")
    await ctx.run(lambda: mark(f"after-{ctx.root.id}"), key="after")
    return pid


@runtree.flow
async def long_wf(ctx):
    """test_cancel across processes."""
    await ctx.run(lambda: mark(f"one-{ctx.root.id}"), key="one")
    mark(f"ready-long-{ctx.root.id}")
    if os.environ.get("DBOS_TEST_BLOCK") == "long":
        await asyncio.sleep(60)
    await ctx.run(lambda: mark(f"two-{ctx.root.id}"), key="two")
    return ctx.input


@runtree.flow
async def retry_crash_wf(ctx):
    """test_recovery_during_retries with a crash in the third attempt."""

    async def step():
        n = count(_dir(), "rc-attempts")
        mark("rc-attempts")
        if n < 2:
            raise RuntimeError("fail")
        await block_if("retry")
        return "ok"

    return await ctx.run(step, key="rc", retry=5)


@runtree.flow
async def quick_fail(ctx):
    """A different flow started under an id another process is running."""
    mark(f"qf-{ctx.root.id}")
    raise RuntimeError("intruder failed")


@runtree.flow
async def quick_ok(ctx):
    mark(f"qo-{ctx.root.id}")
    return "intruder"


@runtree.flow
async def parallel_crash_wf(ctx):
    async def fast():
        mark(f"fast-{ctx.root.id}")
        return "f"

    async def slow():
        mark(f"slow-{ctx.root.id}")
        await block_if("slow-branch")
        return "s"

    return await ctx.parallel(ctx.run(fast, key="fast"), ctx.run(slow, key="slow"))
