"""The web view's API through httpx's ASGI transport, on a real SQLite store with runs
recorded by real flows; the runs list over 100,000 runs; the store password; the command."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import ui_flows

import runtree
from runtree.sessions import Sessions
from runtree.stores import SqliteStore
from runtree.ui import create_app

BASE = "http://127.0.0.1:8765"


async def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / ".runtree" / "runtree.db"


async def _record(store: SqliteStore) -> None:
    async with runtree.create_scope(store=store, record="all") as scope:
        await scope.exec(ui_flows.timed, None, id="timed-1")
        with pytest.raises(ValueError, match=r"^disk full <b>on /dev/sda</b>$"):
            await scope.exec(ui_flows.failing, {"go": True}, id="failing-1")
        await scope.exec(ui_flows.hostile, None, id="hostile-1")


class TestRuns:
    async def test_list_newest_first_with_filters_and_pages(self, db: Path) -> None:
        async with SqliteStore(db) as store:
            await _record(store)
            async with await _client(create_app(store)) as client:
                body = (await client.get("/api/runs")).json()
                assert [r["root_id"] for r in body["runs"]] == ["hostile-1", "failing-1", "timed-1"]
                first = body["runs"][1]
                assert first["status"] == "failed"
                assert first["error"] == {
                    "type": "ValueError",
                    "message": "disk full <b>on /dev/sda</b>",
                }
                assert "input" not in first and "output" not in first  # the list stays light
                assert body["next_offset"] is None

                failed = (await client.get("/api/runs", params={"status": "failed"})).json()
                assert [r["root_id"] for r in failed["runs"]] == ["failing-1"]
                flow = f"{ui_flows.__name__}:timed"
                by_flow = (await client.get("/api/runs", params={"flow": flow})).json()
                assert [r["root_id"] for r in by_flow["runs"]] == ["timed-1"]
                later = time.time() + 60
                assert (await client.get("/api/runs", params={"since": later})).json()["runs"] == []

                page1 = (await client.get("/api/runs", params={"limit": 2})).json()
                assert [r["root_id"] for r in page1["runs"]] == ["hostile-1", "failing-1"]
                assert page1["next_offset"] == 2
                page2 = (await client.get("/api/runs", params={"limit": 2, "offset": 2})).json()
                assert [r["root_id"] for r in page2["runs"]] == ["timed-1"]
                assert page2["next_offset"] is None

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({"status": "done"}, "status must be one of running, completed, failed, cancelled"),
            ({"limit": "0"}, "limit must be between 1 and 500 (got 0)"),
            ({"offset": "x"}, "offset must be an integer (got 'x')"),
            ({"since": "yesterday"}, "since takes epoch seconds (got 'yesterday')"),
        ],
    )
    async def test_bad_parameters_are_named(
        self, db: Path, params: dict[str, str], message: str
    ) -> None:
        async with SqliteStore(db) as store:
            async with await _client(create_app(store)) as client:
                r = await client.get("/api/runs", params=params)
            assert r.status_code == 400
            assert r.json()["error"].startswith(message)

    async def test_a_run_as_a_flat_tree_with_its_failing_path(self, db: Path) -> None:
        async with SqliteStore(db) as store:
            await _record(store)
            async with await _client(create_app(store)) as client:
                body = (await client.get("/api/run", params={"id": "failing-1"})).json()
                missing = await client.get("/api/run", params={"id": "nope"})
            assert body["run"]["status"] == "failed" and body["run"]["input"] == {"go": True}
            shape = [(n["name"], n["depth"], n["status"]) for n in body["nodes"]]
            assert shape == [
                ("failing", 0, "failed"),
                ("fine", 1, "completed"),
                ("inner-a", 2, "completed"),
                ("inner-b", 2, "completed"),
                ("stage", 1, "failed"),
                ("prepare", 2, "completed"),
                ("explode", 2, "failed"),
            ]
            names = {n["id"]: n["name"] for n in body["nodes"]}
            assert [names[i] for i in body["failing"]] == ["failing", "stage", "explode"]
            [write] = [n for n in body["nodes"] if n["key"] == "write"]
            assert write["error"] == {
                "type": "ValueError",
                "message": "disk full <b>on /dev/sda</b>",
            }
            assert "input" not in write  # values come with /api/node
            assert missing.status_code == 404
            assert missing.json() == {"error": "no run 'nope' in this store"}

    async def test_a_node_whole(self, db: Path) -> None:
        async with SqliteStore(db) as store:
            await _record(store)
            async with await _client(create_app(store)) as client:
                tree = (await client.get("/api/run", params={"id": "failing-1"})).json()
                ids = {n["name"]: n["id"] for n in tree["nodes"]}
                fine = await client.get(
                    "/api/node", params={"run": "failing-1", "node": ids["fine"]}
                )
                stage = await client.get(
                    "/api/node", params={"run": "failing-1", "node": ids["stage"]}
                )
                gone = await client.get("/api/node", params={"run": "failing-1", "node": "x"})
            assert fine.json()["output"] == 5 and fine.json()["tags"] == {"tenant": "acme"}
            assert stage.json()["input"] == {"n": 1} and stage.json()["metadata"] == {"rows": 3}
            assert gone.status_code == 404
            assert gone.json() == {"error": "run 'failing-1' has no node 'x'"}

    async def test_a_finished_run_streams_its_tree_then_ends(self, db: Path) -> None:
        async with SqliteStore(db) as store:
            await _record(store)
            async with await _client(create_app(store)) as client:
                r = await client.get("/api/events/run", params={"id": "timed-1"})
            assert r.headers["content-type"].startswith("text/event-stream")
            events = [block.split("\n", 1) for block in r.text.strip().split("\n\n")]
            assert [e[0] for e in events] == ["event: tree", "event: end"]
            tree = json.loads(events[0][1].removeprefix("data: "))
            assert [n["key"] for n in tree["nodes"]] == [None, "short", "medium", "long"]
            assert json.loads(events[1][1].removeprefix("data: ")) == {"status": "completed"}


class TestSessions:
    async def test_sessions_their_commands_and_each_commands_tree(self, db: Path) -> None:
        async with SqliteStore(db) as store:
            session = await Sessions(store).create("tracker", "python")
            await session.exec(ui_flows.fine, None, command="build")
            with pytest.raises(ValueError, match=r"^disk full 2$"):
                await session.exec(ui_flows.explode, 2, command="ship")
            async with await _client(create_app(store)) as client:
                listed = (await client.get("/api/sessions")).json()["sessions"]
                one = (await client.get("/api/session", params={"id": session.session_id})).json()
                trees = [
                    (await client.get("/api/run", params={"id": c["run_id"]})).json()
                    for c in one["commands"]
                ]
                missing = await client.get("/api/session", params={"id": "nope"})
            assert [(s["project_name"], s["commands"]) for s in listed] == [("tracker", 2)]
            assert [(c["command"], c["status"]) for c in one["commands"]] == [
                ("build", "success"),
                ("ship", "failed"),
            ]
            assert [t["run"]["command"] for t in trees] == ["build", "ship"]
            assert [n["name"] for n in trees[0]["nodes"]][1:] == ["fine", "inner-a", "inner-b"]
            assert trees[1]["run"]["error"]["message"] == "disk full 2"
            assert missing.status_code == 404


class TestSafety:
    async def test_headers_forbid_inline_code_and_framing(self, db: Path) -> None:
        async with SqliteStore(db) as store:
            async with await _client(create_app(store)) as client:
                page = await client.get("/")
                js = await client.get("/static/app.js")
                api = await client.get("/api/runs")
            for r in (page, js, api):
                csp = r.headers["content-security-policy"]
                assert "script-src 'self'" in csp and "unsafe-inline" not in csp
                assert "frame-ancestors 'none'" in csp
                assert r.headers["x-content-type-options"] == "nosniff"
            assert page.headers["content-type"].startswith("text/html")
            assert '<script src="/static/app.js" defer></script>' in page.text
            assert page.text.count("<script") == 1  # no inline script
            assert "innerHTML" not in js.text and "insertAdjacentHTML" not in js.text

    async def test_loopback_answers_only_to_loopback_names(self, db: Path) -> None:
        async with SqliteStore(db) as store:
            async with await _client(create_app(store)) as client:
                ok = await client.get("/api/runs", headers={"host": "localhost:8765"})
                rebound = await client.get("/api/runs", headers={"host": "attacker.example:8765"})
            assert ok.status_code == 200
            assert rebound.status_code == 403
            assert "answers to localhost only" in rebound.json()["error"]

    async def test_the_token_is_required(self, db: Path) -> None:
        async with SqliteStore(db) as store:
            app = create_app(store, token="tok-123", allowed_hosts=None)
            async with await _client(app) as client:
                none = await client.get("/api/runs")
                page_none = await client.get("/")
                wrong = await client.get("/api/runs", params={"token": "tok-999"})
                bearer = await client.get("/api/runs", headers={"authorization": "Bearer tok-123"})
                page = await client.get("/", params={"token": "tok-123"})
                by_cookie = await client.get("/api/runs")  # the cookie the page set
            assert (none.status_code, page_none.status_code, wrong.status_code) == (401, 401, 403)
            assert "needs its token" in none.json()["error"]
            assert "tok-123" not in none.text + wrong.text
            assert bearer.status_code == 200 and page.status_code == 200
            cookie = page.headers["set-cookie"]
            assert cookie.startswith("runtree_ui_token=tok-123;") and "HttpOnly" in cookie
            assert "SameSite=Strict" in cookie
            assert by_cookie.status_code == 200

    async def test_the_store_password_never_reaches_a_response(self) -> None:
        secret = "pw-S3cret-x"
        url = f"postgresql://alice:{secret}@127.0.0.1:1/nodb?bogus_option=1"  # fails at once
        app = create_app(url)
        try:
            async with await _client(app) as client:
                responses = [
                    await client.get(path)
                    for path in (
                        "/",
                        "/static/app.js",
                        "/static/app.css",
                        "/api/info",
                        "/api/runs",
                        "/api/run?id=x",
                        "/api/sessions",
                        "/api/session?id=x",
                        "/api/events/run?id=x",
                    )
                ]
        finally:
            await app.state.runtree.close()
        for r in responses:
            assert secret not in r.text, r.url
            assert secret not in str(r.headers), r.url
        info = responses[3].json()
        assert info["store"] == "postgresql://alice:***@127.0.0.1:1/nodb?bogus_option=1"
        assert responses[4].status_code == 503
        assert responses[4].json()["error"].startswith("the store failed")


class TestScale:
    async def test_the_runs_list_over_100_000_runs(self, db: Path) -> None:
        """The first page, each filter, and a later page: each within 100 ms."""
        async with SqliteStore(db) as store:
            await _record(store)  # creates the tables and three real runs
            path = store.path if hasattr(store, "path") else None
            assert path is not None
            now = time.time() - 3600
            rows = [
                (
                    f"bulk-{i:06d}",
                    f"bulk-{i:06d}",
                    "job",
                    f"bulk:flow{i % 10}",
                    "1",
                    1,
                    ("completed", "failed", "cancelled")[i % 3],
                    "o",
                    now + i * 0.01,
                    now + i * 0.01,
                    now + i * 0.01 + 0.5,
                )
                for i in range(100_000)
            ]
            with sqlite3.connect(path) as conn:
                conn.executemany(
                    "INSERT INTO runtree_runs (root_id, tree_id, name, flow, input, input_ok, "
                    "status, owner, created_at, updated_at, completed_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            conn.close()
            queries: list[dict[str, object]] = [
                {},
                {"status": "failed"},
                {"flow": "bulk:flow7"},
                {"since": now + 500},
                {"status": "cancelled", "flow": "bulk:flow3"},
                {"offset": 450},
            ]
            async with await _client(create_app(store)) as client:
                await client.get("/api/runs")  # warm: the first read opens the connection
                took = {}
                for params in queries:
                    started = time.perf_counter()
                    r = await client.get("/api/runs", params=params)
                    took[json.dumps(params)] = (time.perf_counter() - started) * 1000
                    assert r.status_code == 200 and len(r.json()["runs"]) == 50
            assert max(took.values()) <= 100, took


class TestCommand:
    def test_import_runtree_and_the_cli_load_no_web_server(self) -> None:
        code = (
            "import sys, runtree, runtree.cli._app; "
            "bad = [m for m in ('starlette', 'uvicorn', 'runtree.ui') if m in sys.modules]; "
            "assert not bad, bad"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

    def test_a_missing_store_is_named(self, tmp_path: Path) -> None:
        missing = tmp_path / "nothing" / "runtree.db"
        done = subprocess.run(
            [sys.executable, "-m", "runtree", "ui", "--store", f"sqlite:///{missing}"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 1
        assert done.stderr.startswith(f"error: no store at {missing}: record runs first")
        assert not missing.exists()

    @pytest.mark.parametrize(
        ("url", "said"),
        [("bogus://", "unknown scheme 'bogus'"), ("sqlite:///", "its path is empty")],
    )
    def test_a_store_that_cannot_be_opened_fails_at_start(
        self, tmp_path: Path, url: str, said: str
    ) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "runtree", "ui", "--store", url],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 1
        assert done.stderr.startswith("error: Cannot open store URL") and said in done.stderr
        empty = tmp_path / "empty.db"
        empty.touch()  # a file with no runtree store in it: refused, left as it is
        done = subprocess.run(
            [sys.executable, "-m", "runtree", "ui", "--store", f"sqlite:///{empty}"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 1 and "holds no runtree store yet" in done.stderr
        assert empty.stat().st_size == 0

    def test_help_lists_ui(self, tmp_path: Path) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "runtree", "ui", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 0
        assert "--host HOST" in done.stdout and "--port PORT" in done.stdout
