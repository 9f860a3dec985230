"""The web view in a real headless browser (Debian's Chromium through Playwright) against
``runtree ui`` serving a real SQLite store that real flows record into."""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import ui_flows
from ui_support import Server, in_thread, start_server, stop_server

import runtree
from runtree.runs import Runs, RunTree
from runtree.stores import SqliteStore

DOCS_SHOT = Path(__file__).resolve().parents[2] / "docs" / "ui.png"


def record(db: Path, flow: runtree.Flow[Any, Any], value: object, run_id: str) -> RunTree:
    """Run ``flow`` recorded on the store (failures are part of the record), return its tree."""

    async def go() -> RunTree:
        async with SqliteStore(db) as store:
            async with runtree.create_scope(store=store, record="all") as scope:
                try:
                    await scope.exec(flow, value, id=run_id)
                except ValueError:
                    pass
            return await Runs(store).get(run_id)

    return in_thread(go)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def open_run(page: Any, server: Server, run_id: str) -> None:
    page.goto(f"{server.url}#/run?id={run_id}")
    page.wait_for_selector(".tree .row")


class TestRunsList:
    def test_lists_a_recorded_run_and_new_runs_live(
        self, page: Any, server: Server, artefacts: Path
    ) -> None:
        first = unique("listed")
        record(server.db, ui_flows.timed, None, first)
        page.goto(server.url)
        row = page.locator(f'#runs-body tr[data-id="{first}"]')
        row.wait_for()
        assert "completed" in row.inner_text()
        assert f"{ui_flows.__name__}:timed" in row.inner_text()
        page.evaluate("window.__same_page = true")
        later = unique("appears")
        record(server.db, ui_flows.hostile, None, later)
        # No reload: the runs stream brings the new run to the top of the list.
        page.locator(f'#runs-body tr[data-id="{later}"]').wait_for(timeout=10_000)
        assert page.locator("#runs-body tr").first.get_attribute("data-id") == later
        assert page.evaluate("window.__same_page") is True
        page.screenshot(path=str(artefacts / "runs-1280.png"))

    def test_filters_and_keyboard_open_a_run(self, page: Any, server: Server) -> None:
        bad = unique("filtered")
        record(server.db, ui_flows.failing, None, bad)
        page.goto(server.url)
        page.locator("#runs-body tr").first.wait_for()
        page.select_option("#f-status", "failed")
        page.wait_for_url(lambda url: "status=failed" in url)
        page.locator(f'#runs-body tr[data-id="{bad}"]').wait_for(timeout=5000)
        statuses = page.locator("#runs-body .status").all_inner_texts()
        assert statuses and set(statuses) == {"failed"}
        page.locator(f'#runs-body tr[data-id="{bad}"]').focus()
        # A live update of the list (a new failed run) keeps the focused row focused.
        newer = unique("filtered-later")
        record(server.db, ui_flows.failing, None, newer)
        page.locator(f'#runs-body tr[data-id="{newer}"]').wait_for(timeout=10_000)
        assert page.evaluate("document.activeElement.dataset.id") == bad
        page.keyboard.press("Enter")
        page.wait_for_selector(".tree .row")
        assert page.evaluate("location.hash") == f"#/run?id={bad}"


class TestWaterfall:
    def test_one_bar_per_node_widths_proportional_to_durations(
        self, page: Any, server: Server, artefacts: Path
    ) -> None:
        run_id = unique("timed")
        tree = record(server.db, ui_flows.timed, None, run_id)
        open_run(page, server, run_id)
        bars = page.locator(".tree .row .bar")
        assert bars.count() == len(tree.nodes) == 4
        widths = [
            (page.locator(f'.row[data-node="{n.node_id}"] .bar').bounding_box()["width"], n)
            for n in tree.nodes
        ]
        track = page.locator(".tree .row .track").first.bounding_box()["width"]
        run = tree.run
        t0 = min([run.created_at, *(n.started_at for n in tree.nodes)])
        t1 = max([run.completed_at or 0, *(n.completed_at or 0 for n in tree.nodes)])
        for width, node in widths:
            assert node.duration is not None
            expected = node.duration / (t1 - t0) * track
            assert abs(width - expected) <= 2, (node.name, node.key, width, expected)
        # The steps sleep 0.05 s, 0.1 s and 0.3 s: their bars are in that order (a loaded
        # host stretches the sleeps, so the proportions are checked against the recorded
        # durations above, not against the nominal ones).
        by_key = {n.key: w for w, n in widths}
        assert by_key["long"] > by_key["medium"] > by_key["short"] > 0
        keys = page.locator(".tree .row .key").all_inner_texts()
        assert keys == ["short", "medium", "long"]
        page.screenshot(path=str(artefacts / "waterfall-1280.png"))

    def test_a_failing_run_opens_on_its_failing_path(
        self, page: Any, server: Server, artefacts: Path
    ) -> None:
        run_id = unique("failing")
        tree = record(server.db, ui_flows.failing, None, run_id)
        path = [n.node_id for n in tree.failing_path()]
        open_run(page, server, run_id)
        deepest = page.locator(f'.row[data-node="{path[-1]}"]')
        assert deepest.is_visible()
        assert "selected" in (deepest.get_attribute("class") or "")
        for node_id in path[:-1]:
            row = page.locator(f'.row[data-node="{node_id}"]')
            assert row.get_attribute("aria-expanded") == "true"
            assert "on-path" in (row.get_attribute("class") or "")
        # The subtree that did not fail is folded: its children are hidden.
        [fine] = [n for n in tree.nodes if n.name == "fine"]
        assert page.locator(f'.row[data-node="{fine.node_id}"]').get_attribute("aria-expanded") == (
            "false"
        )
        assert not page.locator(".row", has_text="inner-a").is_visible()
        error = page.locator(".details .node-error")
        assert error.inner_text() == "ValueError: disk full <b>on /dev/sda</b>"
        page.locator(".details .v-input").wait_for()
        assert page.locator(".details .v-input").inner_text() == '"<b>on /dev/sda</b>"'
        assert page.locator(".details b").count() == 0  # the markup stayed text
        page.screenshot(path=str(artefacts / "failing-1280.png"))
        page.set_viewport_size({"width": 800, "height": 800})
        assert page.evaluate("document.documentElement.scrollWidth") <= 800
        assert page.locator(".details").is_visible() and deepest.is_visible()
        page.screenshot(path=str(artefacts / "failing-800.png"), full_page=True)

    def test_the_documentation_screenshot(self, page: Any, server: Server, artefacts: Path) -> None:
        run_id = unique("ingest")
        tree = record(server.db, ui_flows.ingest, {"source": "docs/"}, run_id)
        assert tree.run.status == "failed"
        open_run(page, server, run_id)
        page.locator(".details .v-input").wait_for()
        assert page.locator(".tree .row .bar").count() == 5  # the fan-out is folded
        page.locator(".row", has_text="parallel").locator(".tw").click()  # unfold it
        assert page.locator(".row", has_text="embed:b.md").is_visible()
        assert page.locator(".tree .row .bar").count() == len(tree.nodes) == 8
        page.screenshot(path=str(artefacts / "ingest-1280.png"))
        if os.environ.get("RUNTREE_UPDATE_DOCS_SHOT"):  # refresh docs/ui.png on request only
            shutil.copyfile(artefacts / "ingest-1280.png", DOCS_SHOT)

    def test_keyboard_folds_and_opens_subtrees(self, page: Any, server: Server) -> None:
        run_id = unique("keys")
        record(server.db, ui_flows.failing, None, run_id)
        page.goto(f"{server.url}#/run?id={run_id}")
        page.wait_for_selector(".tree .row")
        page.locator(".tree").focus()
        page.keyboard.press("Home")
        page.keyboard.press("ArrowDown")  # "fine", folded (not on the failing path)
        focused = page.locator(".row.focus")
        assert focused.locator(".name").inner_text() == "fine"
        page.keyboard.press("ArrowRight")  # opens it
        assert focused.get_attribute("aria-expanded") == "true"
        page.keyboard.press("ArrowRight")  # to its first child
        assert page.locator(".row.focus .name").inner_text() == "inner-a"
        page.keyboard.press("Enter")
        page.locator(".details .v-output").wait_for()
        assert page.locator(".details h3").inner_text() == "inner-a"
        assert page.locator(".details .v-output").inner_text() == "2"
        page.keyboard.press("ArrowLeft")  # back to the parent
        page.keyboard.press("ArrowLeft")  # folds it
        assert page.locator(".row.focus .name").inner_text() == "fine"
        assert not page.locator(".row", has_text="inner-a").is_visible()

    def test_a_node_named_script_renders_as_text(self, page: Any, server: Server) -> None:
        run_id = unique("hostile")
        record(server.db, ui_flows.hostile, None, run_id)
        open_run(page, server, run_id)
        name = page.locator(".row .name", has_text="alert(1)")
        assert name.inner_text() == ui_flows.HOSTILE
        assert "&lt;script&gt;" in name.inner_html()
        assert page.locator("script").count() == 1  # only app.js
        name.click()
        assert page.locator(".details h3").inner_text() == ui_flows.HOSTILE
        # the page fixture fails the test on any dialog (alert) or page error

    def test_a_running_tree_gains_nodes_live(
        self, page: Any, server: Server, artefacts: Path
    ) -> None:
        run_id = unique("live")
        reached, gate = threading.Event(), threading.Event()
        flow = ui_flows.gated(reached, gate)

        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(record, server.db, flow, None, run_id)
            try:
                assert reached.wait(30), "the flow did not reach its first step"
                open_run(page, server, run_id)
                page.locator(".row", has_text="first").wait_for(timeout=10_000)
                assert page.locator(".row", has_text="second").count() == 0
                assert page.locator("#live").is_visible()
                page.evaluate("window.__same_page = true")
                gate.set()
                page.locator(".row", has_text="second").wait_for(timeout=10_000)
            finally:
                gate.set()
                tree = done.result(timeout=60)
        assert tree.run.status == "completed"
        page.locator(".runhead .status", has_text="completed").wait_for()
        assert page.evaluate("window.__same_page") is True
        assert page.locator(".tree .row .bar").count() == len(tree.nodes) == 3
        page.locator('body[data-live="0"]').wait_for(state="attached")  # the stream ended
        page.screenshot(path=str(artefacts / "live-1280.png"))


class TestSessions:
    def test_sessions_commands_and_a_commands_tree(self, page: Any, server: Server) -> None:
        from runtree.sessions import Sessions

        async def go() -> str:
            async with SqliteStore(server.db) as store:
                session = await Sessions(store).create(unique("project"))
                await session.exec(ui_flows.fine, None, command="build")
                return session.session_id

        session_id = in_thread(go)
        page.goto(f"{server.url}#/sessions")
        row = page.locator(f'#sessions-body tr[data-id="{session_id}"]')
        row.click()
        page.locator("#commands-body tr").first.click()
        page.locator("#command-run .tree .row").first.wait_for()
        names = page.locator("#command-run .row .name").all_inner_texts()
        assert names[1:] == ["fine", "inner-a", "inner-b"]


class TestScale:
    def test_a_10000_node_tree_renders_within_a_second(
        self, page: Any, server: Server, artefacts: Path
    ) -> None:
        """Measured in the page (performance.now() around the render, layout included)."""
        run_id = unique("wide")
        started = time.perf_counter()
        tree = record(server.db, ui_flows.wide, 10_000, run_id)
        recorded = time.perf_counter() - started
        assert len(tree.nodes) == 10_000
        open_run(page, server, run_id)
        page.locator('body[data-rows="10000"]').wait_for(state="attached")
        render_ms = page.evaluate("window.runtreeUI.renderMs")
        (artefacts / "wide.txt").write_text(
            f"10,000 nodes: recorded in {recorded:.2f} s, rendered in {render_ms:.0f} ms\n"
        )
        # Every node has its row on the axis (the rows in view are drawn: virtualised).
        assert page.locator(".tree .spacer").bounding_box()["height"] == 10_000 * 24
        drawn = page.locator(".tree .row .bar").count()
        assert 30 <= drawn <= 120, drawn
        page.locator(".tree").focus()
        page.keyboard.press("End")
        last = tree.nodes[-1]
        row = page.locator(f'.row[data-node="{last.node_id}"]')
        assert row.locator(".name").inner_text() == last.name
        assert row.is_visible() and "focus" in (row.get_attribute("class") or "")
        # Looked up and measured in the page in one call: a scroll event may redraw the
        # window (new row elements) between a locator's lookup and its measurement.
        width = page.evaluate(
            "sel => document.querySelector(sel).getBoundingClientRect().width",
            f'.row[data-node="{last.node_id}"] .bar',
        )
        assert width >= 1  # even an instant step shows (min-width: 1px)
        page.screenshot(path=str(artefacts / "wide-1280.png"))
        assert render_ms <= 1000, f"rendering 10,000 nodes took {render_ms:.0f} ms"


class TestToken:
    def test_off_loopback_the_token_is_required(
        self, page: Any, server: Server, artefacts: Path
    ) -> None:
        proc, exposed = start_server(server.db, "--host", "0.0.0.0")
        try:
            assert exposed.token is not None
            assert exposed.url.startswith("http://0.0.0.0:")
            assert any("anyone who can reach this port" in line for line in exposed.lines)
            base = exposed.url.replace("0.0.0.0", "127.0.0.1").rstrip("/")
            with httpx.Client(base_url=base, timeout=10) as client:
                assert client.get("/").status_code == 401
                assert client.get("/api/runs").status_code == 401
                assert client.get("/api/runs", params={"token": "nope"}).status_code == 403
                ok = client.get("/api/runs", params={"token": exposed.token})
                assert ok.status_code == 200
            page.goto(f"{base}/?token={exposed.token}")
            page.locator("#runs-body tr[data-id]").first.wait_for()
            assert "token" not in page.url  # kept out of the address bar
            page.screenshot(path=str(artefacts / "token-1280.png"))
        finally:
            stop_server(proc)


@pytest.mark.parametrize("width", [800])
def test_runs_list_fits_narrow_windows(page: Any, server: Server, width: int) -> None:
    record(server.db, ui_flows.timed, None, unique("narrow"))
    page.set_viewport_size({"width": width, "height": 800})
    page.goto(server.url)
    page.locator("#runs-body tr[data-id]").first.wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= width
