"""Translations of tests/test_failures.py (retries, timeouts, cancellation)."""

import asyncio
import time

import pytest
from dbos_support import env, run_status

import runtree
from runtree.errors import Cancelled, ExecTimeoutError, StepFailedError

C: dict = {}
EV: dict = {}


def bump(k):
    C[k] = C.get(k, 0) + 1
    return C[k]


@pytest.fixture(autouse=True)
def _reset():
    C.clear()
    EV.clear()


def ev(name):
    if name not in EV:
        EV[name] = asyncio.Event()
    return EV[name]


# ---- test_step_retries --------------------------------------------------------------
def failing_step():
    bump("fail")
    raise Exception("fail")


@runtree.flow
async def failing_wf(ctx):
    await ctx.run(failing_step, key="f", retry=1)


@pytest.mark.asyncio
async def test_step_retries(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        with pytest.raises(Exception, match="fail"):
            await scope.exec(failing_wf, None, id="retry-1")
        assert C["fail"] == 2  # max_attempts == retry + 1
        tree = await runs.get("retry-1")
        attempts = sorted(n.attempt for n in tree.nodes if n.key == "f")
        assert attempts == [1, 2]
        # the final outcome is journaled: a re-run replays the error without running
        with pytest.raises(Exception, match="fail"):
            await scope.exec(failing_wf, None, id="retry-1")
        assert C["fail"] == 2


# ---- test_step_retries_no_final_sleep (sync + async) -------------------------------
async def failing_async():
    bump("fa")
    raise Exception("fail")


@runtree.flow
async def backoff_wf(ctx):
    await ctx.run(failing_async, key="b", retry=2, retry_delay=0.4, retry_backoff=2.0)


@pytest.mark.asyncio
async def test_step_retries_no_final_sleep(tmp_path):
    async with env(tmp_path) as (_store, scope, _runs):
        start = time.monotonic()
        with pytest.raises(Exception, match="fail"):
            await scope.exec(backoff_wf, None, id="nfs")
        elapsed = time.monotonic() - start
        assert C["fa"] == 3
        assert 1.15 <= elapsed < 1.9, elapsed  # 0.4 + 0.8; a final sleep adds 1.6


# ---- test_step_should_retry / test_step_should_retry_on_last_attempt ---------------
class Fatal(Exception):
    pass


class Retryable(Exception):
    pass


def fatal_step():
    bump("fatal")
    raise Fatal("no retry")


def retryable_step():
    bump("retryable")
    raise Retryable("retry")


def mixed_step():
    n = bump("mixed")
    if n < 3:
        raise Retryable("retry me")
    raise Fatal("stop now")


@runtree.flow
async def should_retry_wf(ctx):
    fn = {"fatal": fatal_step, "retryable": retryable_step, "mixed": mixed_step}[ctx.input]
    await ctx.run(fn, key=ctx.input, retry=3, retry_on=Retryable)


@pytest.mark.asyncio
async def test_step_should_retry(tmp_path):
    async with env(tmp_path) as (_store, scope, _runs):
        with pytest.raises(Fatal, match="no retry"):
            await scope.exec(should_retry_wf, "fatal", id="sr-1")
        assert C["fatal"] == 1
        with pytest.raises(Retryable):
            await scope.exec(should_retry_wf, "retryable", id="sr-2")
        assert C["retryable"] == 4
        with pytest.raises(Fatal, match="stop now"):
            await scope.exec(should_retry_wf, "mixed", id="sr-3")
        assert C["mixed"] == 3


# ---- test_step_status (attempt counter) ---------------------------------------------
@runtree.flow
async def attempt_wf(ctx):
    def step():
        n = bump("st")
        if n < 5:
            raise Exception("fail")
        return n

    return await ctx.run(step, key="st", retry=4)


@pytest.mark.asyncio
async def test_step_status(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        assert await scope.exec(attempt_wf, None, id="st-1") == 5
        tree = await runs.get("st-1")
        nodes = [n for n in tree.nodes if n.key == "st"]
        assert sorted(n.attempt for n in nodes) == [1, 2, 3, 4, 5]
        assert [n.status for n in sorted(nodes, key=lambda n: n.attempt)] == ["failed"] * 4 + [
            "completed"
        ]


# ---- test_recovery_during_retries: recover never touches a live owner's run -------
@runtree.flow
async def live_retry_wf(ctx):
    async def step():
        n = bump("lr")
        if n < 3:
            raise Exception("fail")
        ev("lr-start").set()
        await ev("lr-block").wait()

    await ctx.run(step, key="lr", retry=2)


@pytest.mark.asyncio
async def test_recovery_during_retries(tmp_path):
    async with env(tmp_path) as (_store, scope, _runs):
        h = scope.exec(live_retry_wf, None, id="lr-1")
        await ev("lr-start").wait()
        assert await scope.recover([live_retry_wf]) == []
        ev("lr-block").set()
        assert await h is None
        assert C["lr"] == 3


# ---- test_workflow_error_serialization ---------------------------------------------
class BadException(Exception):
    def __init__(self, one, two):
        super().__init__(f"Message: {one}, {two}")


def bad_step():
    bump("bad")
    raise BadException(1, 2)


@runtree.flow
async def bad_wf(ctx):
    await ctx.run(bad_step, key="bad")


@pytest.mark.asyncio
async def test_workflow_error_serialization(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        with pytest.raises(BadException):
            await scope.exec(bad_wf, None, id="bad-1")
        tree = await runs.get("bad-1")
        assert tree.run.error.type == "BadException"
        assert tree.run.error.message == "Message: 1, 2"
        [node] = [n for n in tree.nodes if n.key == "bad"]
        assert node.error.type == "BadException"
    async with env(tmp_path) as (_store, scope, runs):  # a restart
        with pytest.raises(StepFailedError) as ei:
            await scope.exec(bad_wf, None, id="bad-1")
        assert "BadException" in str(ei.value) and "Message: 1, 2" in str(ei.value)
        assert C["bad"] == 1


# ---- test_step_timeout_bounds_step_duration ---------------------------------------
async def half_second_step():
    bump("inv")
    try:
        await asyncio.sleep(0.5)
        return "done"
    except asyncio.CancelledError:
        C["cancelled"] = True
        raise
    finally:
        C["cleanup"] = True


@runtree.flow
async def timeout_wf(ctx):
    return await ctx.run(half_second_step, timeout=ctx.input, key="hs")


@pytest.mark.asyncio
async def test_step_timeout_bounds_step_duration(tmp_path):
    async with env(tmp_path) as (_store, scope, _runs):
        start = time.time()
        with pytest.raises(ExecTimeoutError) as ei:
            await scope.exec(timeout_wf, 0.2, id="t-short")
        assert time.time() - start < 2.0
        assert isinstance(ei.value, TimeoutError)
        assert "half_second_step" in str(ei.value)
        assert C.get("cancelled") and C.get("cleanup")
        assert await scope.exec(timeout_wf, 20, id="t-long") == "done"
        assert C["inv"] == 2


# ---- test_step_timeout_is_checkpointed_and_replayed: DESIGN differs (timeouts never journaled)
@runtree.flow
async def catching_wf(ctx):
    async def slow_step():
        bump("slow")
        await asyncio.sleep(60)

    try:
        return await ctx.run(slow_step, timeout=0.2, key="slow")
    except ExecTimeoutError:
        return "caught"


@pytest.mark.asyncio
async def test_step_timeout_not_journaled(tmp_path):
    async with env(tmp_path) as (_store, scope, _runs):
        assert await scope.exec(catching_wf, None, id="tj") == "caught"
        assert await scope.exec(catching_wf, None, id="tj") == "caught"
        assert C["slow"] == 2  # a timeout is never journaled: runs again


# ---- test_step_timeout_preserves_step_outcomes --------------------------------------
@runtree.flow
async def boom_wf(ctx):
    async def boom():
        bump("boom")
        raise ValueError("boom")

    await ctx.run(boom, timeout=30, key="boom")


@pytest.mark.asyncio
async def test_step_timeout_preserves_step_outcomes(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        with pytest.raises(ValueError, match="boom"):
            await scope.exec(boom_wf, None, id="boom-1")
        [n] = [n for n in (await runs.get("boom-1")).nodes if n.key == "boom"]
        assert n.error.type == "ValueError" and n.output is None
        # a second root with the id is "a restart" for runtree: ValueError or StepFailedError
        with pytest.raises((ValueError, StepFailedError), match="boom"):
            await scope.exec(boom_wf, None, id="boom-1")  # replayed
        assert C["boom"] == 1


# ---- test_step_timeout_with_retries -------------------------------------------------
@runtree.flow
async def fresh_budget_wf(ctx):
    async def flaky():
        n = bump("flaky")
        if n == 1:
            await asyncio.sleep(60)
        await asyncio.sleep(0.2)
        return "done"

    return await ctx.run(flaky, timeout=0.6, retry=2, retry_delay=0.3, key="flaky")


@runtree.flow
async def exhausted_wf(ctx):
    async def always_slow():
        bump("slow")
        await asyncio.sleep(60)

    await ctx.run(always_slow, timeout=0.2, retry=2, key="slow")


@runtree.flow
async def opted_out_wf(ctx):
    async def no_retry():
        bump("opt")
        await asyncio.sleep(60)

    await ctx.run(no_retry, timeout=0.2, retry=2, retry_on=ValueError, key="opt")


@pytest.mark.asyncio
async def test_step_timeout_with_retries(tmp_path):
    async with env(tmp_path) as (_store, scope, _runs):
        assert await scope.exec(fresh_budget_wf, None, id="fb") == "done"
        assert C["flaky"] == 2
        with pytest.raises(ExecTimeoutError):
            await scope.exec(exhausted_wf, None, id="ex")
        assert C["slow"] == 3
        h = scope.exec(exhausted_wf, None, id="ex")
        with pytest.raises(ExecTimeoutError):
            await h
        assert C["slow"] == 6  # final outcome a timeout: not journaled
        assert h.status == "failed"
        with pytest.raises(ExecTimeoutError):
            await scope.exec(opted_out_wf, None, id="oo")
        assert C["opt"] == 1


# ---- test_step_timeout_with_workflow_cancellation / test_preemptible_step_cancellation_and_resume
@runtree.flow
async def cancellable_wf(ctx):
    async def step():
        n = bump("inv")
        if n == 1:
            ev("started").set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                C["first_cancelled"] = True
                raise
            return "should-not-reach"
        return "done"

    return await ctx.run(step, timeout=30, retry=4, retry_delay=0.01, key="step")


@pytest.mark.asyncio
async def test_step_cancellation_and_resume(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        h = scope.exec(cancellable_wf, None, id="cx")
        await ev("started").wait()
        await runs.cancel("cx")
        with pytest.raises(Cancelled):
            await asyncio.wait_for(asyncio.shield(h), 5)
        assert C.get("first_cancelled")
        assert C["inv"] == 1  # no retry after a cancellation
        assert await run_status(runs, "cx") == "cancelled"
        r = await runs.resume("cx", scope)
        assert await r == "done"
        assert C["inv"] == 2
        tree = await runs.get("cx")
        done = [n for n in tree.nodes if n.key == "step" and n.status == "completed"]
        assert len(done) == 1 and done[0].output == "done"


# ---- test_timeout_preserves: execution-level timeout ends "failed", never journaled
@runtree.flow
async def slowroot(ctx):
    await ctx.run(lambda: bump("pre"), key="pre")
    await asyncio.sleep(60)


@pytest.mark.asyncio
async def test_root_timeout_then_resume(tmp_path):
    async with env(tmp_path) as (_store, scope, runs):
        h = scope.exec(slowroot, None, id="rt", timeout=0.2)
        with pytest.raises(ExecTimeoutError):
            await h
        assert h.status == "failed"
        assert await run_status(runs, "rt") == "failed"
        r = await runs.resume("rt", scope)
        r.cancel()
        with pytest.raises(Cancelled):
            await r
        assert C["pre"] == 1


# ---- test_step_timeout_preserves_step_outcomes: stubborn_step ------------------------------
@runtree.flow
async def stubborn_wf(ctx):
    async def stubborn():
        bump("stub")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            pass
        return "suppressed"

    return await ctx.run(stubborn, timeout=0.2, key="stub")


@pytest.mark.asyncio
async def test_step_timeout_stubborn_step(tmp_path):
    """DESIGN differs from DBOS here (docs/guide.md, "Decision" under timeouts): a step that
    catches its timeout's cancellation and returns has finished, as with asyncio.timeout:
    its value stands and is journaled, so a re-run replays it without running it."""
    async with env(tmp_path) as (_store, scope, _runs):
        assert await scope.exec(stubborn_wf, None, id="stub") == "suppressed"
        assert await scope.exec(stubborn_wf, None, id="stub") == "suppressed"
    assert C["stub"] == 1
