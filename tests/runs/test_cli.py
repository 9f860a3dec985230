"""`runtree runs ...` and `runtree worker` as subprocesses, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jobs_module as jobs
import pytest

import runtree
from runtree.runs import Runs
from runtree.stores import Store

StoreFactory = Callable[..., Store]
HERE = Path(__file__).parent
WORKER = (sys.executable, "-m", "runtree", "worker", "jobs_module")


def env(log: Path | None = None, **extra: str) -> dict[str, str]:
    out = dict(os.environ, **extra)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    out.pop("RUNTREE_STORE", None)
    if log is not None:
        out["RUNTREE_TEST_LOG"] = str(log)
    return out


def cli(*args: str, log: Path | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtree", *args],
        env=env(log, **extra),
        capture_output=True,
        text=True,
        timeout=60,
    )


def crash_run(url: str, root_id: str, crash_at: str, log: Path) -> None:
    script = (
        "import asyncio, sys, runtree, jobs_module as jobs\n"
        "from runtree.stores import from_url\n"
        "async def main():\n"
        "    async with from_url(sys.argv[1]) as store:\n"
        "        async with runtree.create_scope(store=store) as scope:\n"
        "            await scope.exec(jobs.job, None, id=sys.argv[2])\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, url, root_id],
        env=env(log, RUNTREE_TEST_CRASH=crash_at),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 17, proc.stderr


async def make_runs(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    async with runtree.create_scope(store=store) as scope:
        await scope.exec(jobs.job, None, id="ok-1")
        monkeypatch.setenv("RUNTREE_TEST_FAIL", "s2")
        with pytest.raises(RuntimeError):
            await scope.exec(jobs.job, None, id="bad-1")
        monkeypatch.delenv("RUNTREE_TEST_FAIL")


class TestRunsCommands:
    async def test_list_and_show(
        self, open_durable: StoreFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async with open_durable() as store:
            await make_runs(store, monkeypatch)
            url = store.url
        listed = cli("runs", "list", "--store", url)
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert lines[0].split()[:3] == ["ROOT", "ID", "STATUS"]
        assert [line.split()[:2] for line in lines[1:]] == [
            ["bad-1", "failed"],
            ["ok-1", "completed"],
        ]
        as_json = json.loads(cli("runs", "list", "--json", "--store", url).stdout)
        assert [(r["root_id"], r["status"], r["flow"]) for r in as_json] == [
            ("bad-1", "failed", "jobs_module:job"),
            ("ok-1", "completed", "jobs_module:job"),
        ]
        assert as_json[0]["error"] == {"type": "RuntimeError", "message": "step s2 failed"}
        failed = json.loads(
            cli("runs", "list", "--status", "failed", "--json", "--store", url).stdout
        )
        assert [r["root_id"] for r in failed] == ["bad-1"]
        either = cli("runs", "list", "--status", "failed", "--status", "completed", "--json",
                     "--store", url)  # fmt: skip
        assert [r["root_id"] for r in json.loads(either.stdout)] == ["bad-1", "ok-1"]
        bad = cli("runs", "list", "--status", "failed", "--status", "done", "--store", url)
        assert bad.returncode == 2
        assert bad.stderr.startswith("error: runs.list(status=...) must be one of")

        shown = cli("runs", "show", "bad-1", "--store", url)
        assert shown.returncode == 0, shown.stderr
        text = shown.stdout
        assert all(len(line) <= 80 for line in text.splitlines()), text
        assert "✗ job" in text and "✗ step [s2]" in text
        assert "step [s1]" in text and "✗ step [s1]" not in text
        assert "RuntimeError: step s2 failed" in text
        tree = json.loads(cli("runs", "show", "bad-1", "--json", "--store", url).stdout)
        assert tree["run"]["status"] == "failed"
        [root] = tree["nodes"]
        assert [c["key"] for c in root["children"]] == ["s1", "s2"]

        missing = cli("runs", "show", "nope", "--store", url)
        assert missing.returncode == 1
        assert missing.stderr.startswith("error: no run 'nope' in the store ")
        if url.startswith("sqlite:///"):  # the store is named: its file
            assert url[len("sqlite:///") :].split("?")[0] in missing.stderr
        assert "Traceback" not in missing.stderr

    def test_names_with_a_lone_surrogate_or_a_nul_are_recorded_and_printed(
        self, tmp_path: Path
    ) -> None:
        # A flow's name and an error's message are any str: the run is recorded and every
        # command prints them escaped, never a UnicodeEncodeError from the terminal.
        (tmp_path / "odd_names.py").write_text(
            "import runtree\n"
            "@runtree.flow(name='na\\ud800me\\x00x')\n"
            "async def odd(ctx):\n"
            "    await ctx.run(lambda: 1, key='k', name='st\\ud800ep')\n"
            "    raise ValueError('bad \\ud800 thing')\n"
        )
        url = f"sqlite:///{tmp_path / 'odd.db'}"
        ran = subprocess.run(
            [sys.executable, "-m", "runtree", "run", "odd_names:odd"],
            env=dict(env(), RUNTREE_STORE=url),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 1, ran.stderr
        assert "Traceback" not in ran.stdout + ran.stderr
        assert "na\\ud800me" in ran.stdout and "bad \\ud800 thing" in ran.stderr
        assert "lost" not in ran.stderr  # the run was recorded
        [run] = json.loads(cli("runs", "list", "--json", "--store", url).stdout)
        assert run["name"] == "na\\ud800me\\x00x"
        shown = cli("runs", "show", run["root_id"], "--store", url)
        assert shown.returncode == 0, shown.stderr
        assert "st\\ud800ep" in shown.stdout and "Traceback" not in shown.stderr

    async def test_cancel_fork_resume_prune(
        self, open_durable: StoreFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        log = tmp_path / "steps.log"
        async with open_durable() as store:
            await make_runs(store, monkeypatch)
            url = store.url
            crash_run(url, "dead-1", "s1", log)
        cancelled = cli("runs", "cancel", "dead-1", "--store", url)
        assert (cancelled.returncode, cancelled.stdout) == (0, "run dead-1: cancelled\n")

        forked = cli("runs", "fork", "ok-1", "--from", "s3", "--id", "ok-2", "--store", url)
        assert (forked.returncode, forked.stdout) == (0, "ok-2\n"), forked.stderr
        unknown = cli("runs", "fork", "ok-1", "--from", "zz", "--store", url)
        assert unknown.returncode == 1 and "its journal has no key 'zz'" in unknown.stderr

        resumed = cli(
            "runs", "resume", "ok-2", "--module", "jobs_module", "--json", "--store", url, log=log
        )
        assert resumed.returncode == 0, resumed.stderr
        body = json.loads(resumed.stdout)
        assert body["ok"] and body["result"] == ["S1", "S2", "S3"]
        assert log.read_text().splitlines() == ["ran s3"]  # s1, s2 replayed from the fork
        again = cli("runs", "resume", "ok-1", "--store", url)
        assert again.returncode == 1 and "it completed" in again.stderr

        pruned = cli("runs", "prune", "--older-than", "0s", "--json", "--store", url)
        assert json.loads(pruned.stdout) == {"pruned": 2}
        bad = cli("runs", "prune", "--older-than", "soon", "--store", url)
        assert bad.returncode == 2 and "--older-than takes a duration" in bad.stderr

    def test_a_failed_runtree_run_resumes_replaying_its_finished_steps(
        self, tmp_path: Path
    ) -> None:
        """``runtree run`` gives its root an id of its own: the run is durable, so
        ``runs resume`` after fixing the cause runs the failed step and what follows,
        and replays the steps that had succeeded."""
        log = tmp_path / "steps.log"
        url = f"sqlite:///{tmp_path / 'store.db'}"
        failed = subprocess.run(
            [sys.executable, "-m", "runtree", "run", "jobs_module:job"],
            env={**env(log), "RUNTREE_STORE": url, "RUNTREE_TEST_FAIL": "s2"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert failed.returncode == 1, failed.stderr
        [run] = json.loads(cli("runs", "list", "--json", "--store", url).stdout)
        assert run["status"] == "failed" and run["root_id"].startswith("run-")
        resumed = cli(
            "runs", "resume", run["root_id"], "--module", "jobs_module", "--json", "--store", url,
            log=log,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["result"] == ["S1", "S2", "S3"]
        assert log.read_text().splitlines() == ["ran s1", "ran s2", "ran s2", "ran s3"]


class TestWorker:
    async def test_two_workers_run_an_orphan_once_and_stop_on_sigterm(
        self, open_durable: StoreFactory, tmp_path: Path
    ) -> None:
        log = tmp_path / "steps.log"
        async with open_durable() as store:
            url = store.url
            crash_run(url, "orphan-1", "s2", log)
            assert (await Runs(store).get("orphan-1")).run.status == "interrupted"
            workers = [
                subprocess.Popen(
                    [*WORKER, "--store", url, "--poll", "0.2"],
                    env=env(log),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            try:
                for w in workers:  # both serve before the run can be taken
                    assert w.stderr is not None
                    assert "serving" in w.stderr.readline()
                deadline = time.monotonic() + 30
                while (await Runs(store).get("orphan-1")).run.status != "completed":
                    assert time.monotonic() < deadline, "no worker recovered the run"
                    await asyncio.sleep(0.05)  # another process: poll the store
            finally:
                for w in workers:
                    w.send_signal(signal.SIGTERM)
                codes = [w.wait(timeout=30) for w in workers]
                # the same buffered reader that read the first line reads the rest
                outputs = []
                for w in workers:
                    assert w.stderr is not None
                    outputs.append(w.stderr.read())
                    w.stderr.close()
            assert codes == [0, 0], outputs
        assert log.read_text().splitlines() == ["ran s1", "ran s2", "ran s3"]
        assert sum("resuming run orphan-1" in err for err in outputs) == 1, outputs
