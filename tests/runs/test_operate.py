"""Operating on runs: cancel, resume, fork, prune, recover — across real processes."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jobs_module as jobs
import pytest

import runtree
from runtree.errors import RunNotFoundError, RunStateError
from runtree.runs import Runs
from runtree.stores import Store

StoreFactory = Callable[..., Store]
HERE = Path(__file__).parent
ROOT = HERE.parent.parent

CRASHING_RUN = """
import asyncio, sys
import runtree
from runtree.stores import from_url
import jobs_module as jobs

async def main():
    async with from_url(sys.argv[1]) as store:
        async with runtree.create_scope(store=store) as scope:
            await scope.exec(jobs.job, None, id=sys.argv[2])

asyncio.run(main())
"""


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "steps.log"
    monkeypatch.setenv("RUNTREE_TEST_LOG", str(path))
    return path


def ran(log: Path) -> list[str]:
    return log.read_text().split("\n")[:-1] if log.exists() else []


def python_path() -> str:
    """This folder (for ``jobs_module``) before what the tests run with."""
    return os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)


def crash_run(url: str, root_id: str, crash_at: str) -> None:
    """Run ``jobs.job`` in a child process that dies before step ``crash_at``."""
    env = dict(os.environ, RUNTREE_TEST_CRASH=crash_at, PYTHONPATH=python_path())
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_RUN, url, root_id], env=env, capture_output=True
    )
    assert proc.returncode == 17, proc.stderr.decode()


class TestInterruptedAndResume:
    async def test_a_crashed_run_is_interrupted_and_resume_completes_it(
        self, open_durable: StoreFactory, log: Path
    ) -> None:
        async with open_durable() as store:
            crash_run(store.url, "job-x", "s2")
            runs = Runs(store)
            info = (await runs.get("job-x")).run
            assert info.status == "interrupted"
            assert [r.root_id for r in await runs.list(status="interrupted")] == ["job-x"]
            assert await runs.list(status="running") == []
            assert ran(log) == ["ran s1"]
            async with runtree.create_scope(store=store) as scope:
                result = await (await runs.resume("job-x", scope))
            assert result == ["S1", "S2", "S3"]
            assert ran(log) == ["ran s1", "ran s2", "ran s3"]  # s1 replayed
            tree = await runs.get("job-x")
            assert tree.run.status == "completed" and tree.run.output == result
            assert [(n.key, n.replayed) for n in tree.nodes if n.key] == [
                ("s1", True),
                ("s2", False),
                ("s3", False),
            ]
            async with runtree.create_scope(store=store) as scope:
                with pytest.raises(RunStateError, match=r"^Run 'job-x': it completed"):
                    await runs.resume("job-x", scope)
                with pytest.raises(RunNotFoundError):
                    await runs.resume("nope", scope)

    async def test_resume_runs_failed_steps_again(
        self, open_durable: StoreFactory, log: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async with open_durable() as store:
            monkeypatch.setenv("RUNTREE_TEST_FAIL", "s2")
            async with runtree.create_scope(store=store) as scope:
                with pytest.raises(RuntimeError, match=r"^step s2 failed$"):
                    await scope.exec(jobs.job, None, id="job-f")
            assert (await Runs(store).get("job-f")).run.status == "failed"
            monkeypatch.delenv("RUNTREE_TEST_FAIL")  # the cause is fixed
            async with runtree.create_scope(store=store) as scope:
                assert await (await Runs(store).resume("job-f", scope)) == ["S1", "S2", "S3"]
        assert ran(log) == ["ran s1", "ran s2", "ran s2", "ran s3"]

    async def test_resume_refuses_a_live_run(self, open_durable: StoreFactory, log: Path) -> None:
        async with open_durable() as store, runtree.create_scope(store=store) as scope:
            running = asyncio.Event()
            execution = scope.exec(jobs.forever, None, id="live", tags=[jobs.started(running)])
            await running.wait()
            with pytest.raises(RunStateError, match=r"it is running in a live process"):
                await Runs(store).resume("live", scope)
            execution.cancel()
            with pytest.raises(runtree.Cancelled):
                await execution

    async def test_a_resume_whose_flow_cannot_be_imported_leaves_the_run_as_it_was(
        self, open_durable: StoreFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        module = tmp_path / "gone_flows.py"
        module.write_text(
            "import runtree\n"
            "@runtree.flow\n"
            "async def wf(ctx):\n"
            "    if ctx.input == 'fail':\n"
            "        raise ValueError('first')\n"
            "    return 'ok'\n"
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        import gone_flows  # type: ignore[import-not-found]

        async with open_durable() as store:
            async with runtree.create_scope(store=store) as scope:
                with pytest.raises(ValueError, match="first"):
                    await scope.exec(gone_flows.wf, "fail", id="g1")
            module.unlink()
            monkeypatch.delitem(sys.modules, "gone_flows")
            runs = Runs(store)
            async with runtree.create_scope(store=store) as scope:
                with pytest.raises(LookupError, match="gone_flows"):
                    await runs.resume("g1", scope)
            info = (await runs.get("g1")).run
            assert info.status == "failed"
            assert info.error is not None and info.error.message == "first"
            # Once the module is back, the resume is not refused as "running".
            monkeypatch.setitem(sys.modules, "gone_flows", gone_flows)
            async with runtree.create_scope(store=store) as scope:
                with pytest.raises(ValueError, match="first"):
                    await (await runs.resume("g1", scope))

    @pytest.mark.parametrize("bad", ["a\ud800", "", "x\x00y", "k" * 2000])
    async def test_an_id_no_run_can_have_is_not_found(
        self, open_durable: StoreFactory, bad: str
    ) -> None:
        async with open_durable() as store, runtree.create_scope(store=store) as scope:
            runs = Runs(store)
            with pytest.raises(RunNotFoundError):
                await runs.get(bad)
            with pytest.raises(RunNotFoundError):
                await runs.cancel(bad)
            with pytest.raises(RunNotFoundError):
                await runs.fork(bad, from_key="k")
            with pytest.raises(RunNotFoundError):
                await runs.resume(bad, scope)
            assert await runs.list(flow="m:\ud800") == []


class TestCancel:
    @pytest.mark.parametrize(
        ("reason", "stored"),
        [
            ("operator said so", "operator said so"),
            # a NUL or a lone surrogate in the reason is stored readable
            ("stop\x00 now \ud800", "stop\\x00 now \\ud800"),
        ],
        ids=["plain", "nul-and-surrogate"],
    )
    async def test_the_owner_cancels_within_one_renewal(
        self, open_durable: StoreFactory, log: Path, reason: str, stored: str
    ) -> None:
        async with open_durable(lease=0.3) as owner, open_durable() as other:
            async with runtree.create_scope(store=owner) as scope:
                running = asyncio.Event()
                execution = scope.exec(jobs.forever, None, id="c-1", tags=[jobs.started(running)])
                await running.wait()
                info = await Runs(other).cancel("c-1", reason)
                assert info.status == "running" and info.cancel_requested == stored
                with pytest.raises(runtree.Cancelled, match=re.escape(stored)):
                    await asyncio.wait_for(asyncio.shield(execution), 5)
            info = (await Runs(other).get("c-1")).run
        assert info.status == "cancelled"
        assert info.error is not None
        info.error.message.encode("utf-8")  # printable

    async def test_the_same_id_started_elsewhere_leaves_the_run_to_its_live_owner(
        self, open_durable: StoreFactory, log: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        # Another store (another process, as far as the run records go) starting a root
        # with the id of a live run: it runs, unrecorded; the run keeps its owner, whom
        # runs.cancel reaches.
        @runtree.flow
        async def quick(ctx: runtree.ExecutionContext) -> str:
            return "quick"

        async with open_durable(lease=0.3) as owner, open_durable() as other:
            async with runtree.create_scope(store=owner) as scope:
                running = asyncio.Event()
                execution = scope.exec(jobs.forever, None, id="dup", tags=[jobs.started(running)])
                await running.wait()
                async with runtree.create_scope(store=other) as second:
                    assert await second.exec(quick, id="dup") == "quick"
                assert "runs unrecorded" in caplog.text
                info = (await Runs(other).get("dup")).run
                assert info.owner == owner.runs_owner and info.status == "running"
                assert info.flow is not None and info.flow.endswith(":forever")
                await Runs(other).cancel("dup")
                with pytest.raises(runtree.Cancelled):
                    await asyncio.wait_for(asyncio.shield(execution), 5)
            assert (await Runs(other).get("dup")).run.status == "cancelled"

    async def test_the_same_id_started_again_in_this_process_leaves_the_run_to_the_first(
        self, open_durable: StoreFactory, log: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        @runtree.flow
        async def fails(ctx: runtree.ExecutionContext) -> None:
            raise RuntimeError("second start failed")

        async with open_durable(lease=0.3) as store, runtree.create_scope(store=store) as scope:
            running = asyncio.Event()
            first = scope.exec(jobs.forever, None, id="twice", tags=[jobs.started(running)])
            await running.wait()
            with pytest.raises(RuntimeError, match="second start failed"):
                await scope.exec(fails, id="twice")
            assert "runs unrecorded" in caplog.text
            runs = Runs(store)
            info = (await runs.get("twice")).run
            assert info.status == "running" and info.error is None
            assert info.flow is not None and info.flow.endswith(":forever")
            with pytest.raises(RunStateError, match="running in a live process"):
                await runs.resume("twice", scope)
            await runs.cancel("twice")
            with pytest.raises(runtree.Cancelled):
                await asyncio.wait_for(asyncio.shield(first), 5)
            assert (await runs.get("twice")).run.status == "cancelled"

    async def test_a_dead_owners_run_is_cancelled_at_once(
        self, open_durable: StoreFactory, log: Path
    ) -> None:
        async with open_durable() as store:
            crash_run(store.url, "c-2", "s1")
            info = await Runs(store).cancel("c-2")
            assert info.status == "cancelled"
            assert info.error is not None and info.error.type == "Cancelled"
            assert (await Runs(store).cancel("c-2")).status == "cancelled"  # idempotent
            with pytest.raises(RunNotFoundError):
                await Runs(store).cancel("nope")


class TestFork:
    async def test_fork_keeps_the_entries_before_the_key(
        self, open_durable: StoreFactory, log: Path
    ) -> None:
        async with open_durable() as store:
            async with runtree.create_scope(store=store) as scope:
                await scope.exec(jobs.job, None, id="f-1")
            runs = Runs(store)
            new_id = await runs.fork("f-1", from_key="s2")
            assert new_id.startswith("f-1-fork-")
            assert (await runs.get(new_id)).run.status == "interrupted"
            async with runtree.create_scope(store=store) as scope:
                assert await (await runs.resume(new_id, scope)) == ["S1", "S2", "S3"]
            assert ran(log) == ["ran s1", "ran s2", "ran s3", "ran s2", "ran s3"]
            assert await runs.fork("f-1", from_key="s1", new_id="mine") == "mine"
            with pytest.raises(RunStateError, match=r"^Run 'f-1': its journal has no key 'zz'"):
                await runs.fork("f-1", from_key="zz")
            with pytest.raises(RunStateError, match=r"^Run 'mine': a run or a journal with this"):
                await runs.fork("f-1", from_key="s1", new_id="mine")
            # An id whose tree has a journal but no run (a root run unrecorded) is taken too.
            async with runtree.create_scope(store=store, record="none") as scope:
                await scope.exec(jobs.job, None, id="journal-only")
            with pytest.raises(RunStateError, match=r"^Run 'journal-only': a run or a journal"):
                await runs.fork("f-1", from_key="s2", new_id="journal-only")
            with pytest.raises(RunNotFoundError):
                await runs.fork("nope", from_key="s1")

    async def test_a_bad_new_id_is_refused_before_anything_is_written(
        self, open_durable: StoreFactory, log: Path
    ) -> None:
        from runtree.errors import StoreError

        async with open_durable() as store, runtree.create_scope(store=store) as scope:
            await scope.exec(jobs.job, None, id="b-1")
            runs = Runs(store)
            for bad in ("", "a\x00b", "x" * 5000, 7):
                with pytest.raises(StoreError, match=r"runs\.fork\(new_id=\.\.\.\) root id"):
                    await runs.fork("b-1", from_key="s2", new_id=bad)  # type: ignore[arg-type]
            assert [r.root_id for r in await runs.list()] == ["b-1"]
            # A generated id stays a valid one, even for a run whose id is near the limit.
            long_id = "L" * 1020
            await scope.exec(jobs.job, None, id=long_id)
            forked = await runs.fork(long_id, from_key="s2")
            assert forked.startswith("fork-") and (await runs.get(forked)).run.status


class TestPrune:
    async def test_prune_never_deletes_a_running_run(
        self, open_durable: StoreFactory, log: Path
    ) -> None:
        async with open_durable() as store, runtree.create_scope(store=store) as scope:
            for i in range(3):
                await scope.exec(jobs.job, None, id=f"p-{i}")
            running = asyncio.Event()
            execution = scope.exec(jobs.forever, None, id="p-live", tags=[jobs.started(running)])
            await running.wait()
            runs = Runs(store)
            assert await runs.prune(older_than=3600) == 0
            assert await runs.prune(older_than=0, status=("completed", "running")) == 3
            assert [r.root_id for r in await runs.list()] == ["p-live"]
            with pytest.raises(RunNotFoundError):
                await runs.get("p-0")
            async with runtree.create_scope(store=store) as again:  # journal went too
                await again.exec(jobs.job, None, id="p-0")
            assert ran(log).count("ran s1") == 4
            execution.cancel()
            with pytest.raises(runtree.Cancelled):
                await execution

    async def test_a_negative_or_nan_age_is_refused_and_nothing_goes(
        self, open_durable: StoreFactory, log: Path
    ) -> None:
        from datetime import timedelta

        async with open_durable() as store, runtree.create_scope(store=store) as scope:
            await scope.exec(jobs.job, None, id="n-1")
            runs = Runs(store)
            for bad in (-5, float("nan"), timedelta(days=-1)):
                with pytest.raises(ValueError, match=r"^runs\.prune\(older_than=\.\.\.\) must be"):
                    await runs.prune(older_than=bad)
            with pytest.raises(TypeError, match=r"^runs\.list\(flow=\.\.\.\) takes a Flow"):
                await runs.list(flow=5)  # type: ignore[arg-type]
            for bad_status in (["completed", "done"], "done", []):
                with pytest.raises(ValueError, match=r"^runs\.prune\(status=\.\.\.\)"):
                    await runs.prune(older_than=0, status=bad_status)  # type: ignore[arg-type]
            for wrong in (None, 3):
                with pytest.raises(TypeError, match=r"^runs\.prune\(status=\.\.\.\) takes"):
                    await runs.prune(older_than=0, status=wrong)  # type: ignore[arg-type]
            assert [r.root_id for r in await runs.list()] == ["n-1"]


class TestRecover:
    async def test_what_is_not_a_list_of_flows_is_a_type_error(
        self, open_durable: StoreFactory, log: Path
    ) -> None:
        async with open_durable() as store, runtree.create_scope(store=store) as scope:
            for bad in (jobs.job, "tests.runs.jobs:job", [jobs.job, "x"], [None]):
                with pytest.raises(TypeError, match=r"^scope\.recover\(flows\) takes"):
                    await scope.recover(bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=r"^runs\.resume\(flows=\.\.\.\) takes"):
                await Runs(store).resume("any", scope, flows=jobs.job)  # type: ignore[arg-type]

    async def test_recover_resumes_orphans_of_the_given_flows(
        self, open_durable: StoreFactory, log: Path
    ) -> None:
        async with open_durable() as store:
            crash_run(store.url, "o-1", "s3")
            crash_run(store.url, "o-2", "s1")
            async with runtree.create_scope(store=store) as scope:
                assert await scope.recover([jobs.forever]) == []
                executions = await scope.recover([jobs.job])
                assert sorted(e.id for e in executions) == ["o-1", "o-2"]
                assert [await e for e in executions] == [["S1", "S2", "S3"]] * 2
                assert await scope.recover([jobs.job]) == []
            statuses = {r.root_id: r.status for r in await Runs(store).list()}
        assert statuses == {"o-1": "completed", "o-2": "completed"}
