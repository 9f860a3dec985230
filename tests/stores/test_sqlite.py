"""SqliteStore on real files: modes, refusing foreign or corrupt files, URLs, migrations,
locks that never block the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import runtree
from runtree._journal import StepRecord
from runtree.errors import StoreError
from runtree.stores import InMemoryStore, PostgresStore, SqliteStore, from_url
from runtree.stores import _sql as sqlmod


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def journal_some(store: SqliteStore, n: int = 3, tree: str = "job") -> None:
    async with runtree.create_scope(store=store) as scope, scope.create_context(id=tree) as ctx:
        for i in range(n):
            await ctx.run(lambda i=i: i, key=f"k{i}", name="s")


def slow_last_pass(store: SqliteStore, seconds: float = 0.05) -> None:
    """Make the checkpoint's last pass (the loop's writes held) take ``seconds`` more."""
    last_pass = store._last_pass

    def slow(done: Any) -> None:
        time.sleep(seconds)  # writes arrive meanwhile
        last_pass(done)

    store._last_pass = slow  # type: ignore[method-assign]


class TestFiles:
    @pytest.mark.parametrize("umask", [0o022, 0o000])
    def test_new_files_are_owner_only_whatever_the_umask(self, tmp_path: Path, umask: int) -> None:
        """A fresh process with a permissive umask: database, -wal and -shm are 0600, the
        created folders 0700."""
        db = tmp_path / "project" / ".runtree" / "runtree.db"
        script = (
            "import asyncio, os, sys, runtree\n"
            "from runtree.stores import SqliteStore\n"
            f"os.umask({umask})\n"
            "async def main():\n"
            "    store = SqliteStore(sys.argv[1])\n"
            "    async with runtree.create_scope(store=store) as scope:\n"
            "        async with scope.create_context(id='t') as ctx:\n"
            "            await ctx.run(lambda: 1, key='k', name='s')\n"
            "            for s in ('', '-wal', '-shm'):\n"
            "                print(oct(os.stat(sys.argv[1] + s).st_mode & 0o777))\n"
            "    await store.aclose()\n"
            "asyncio.run(main())\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, str(db)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["0o600", "0o600", "0o600"]
        assert mode(db.parent) == 0o700
        assert mode(db.parent.parent) == 0o700

    async def test_an_existing_folder_keeps_its_mode(self, tmp_path: Path) -> None:
        folder = tmp_path / "shared"
        folder.mkdir(mode=0o755)
        os.chmod(folder, 0o755)
        async with SqliteStore(folder / "x.db"):
            pass
        assert mode(folder) == 0o755
        assert mode(folder / "x.db") == 0o600

    async def test_a_text_file_is_refused_and_left_alone(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.db"
        path.write_text("my notes, not a database\n" * 100)
        before = digest(path)
        with pytest.raises(StoreError, match=r"notes\.db.* is not a SQLite database"):
            SqliteStore(path)
        assert digest(path) == before
        assert not Path(f"{path}-wal").exists()

    async def test_another_applications_database_is_refused_and_left_alone(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "app.db"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
        conn.commit()
        conn.close()
        before = digest(path)
        with pytest.raises(StoreError, match=r"app\.db.* another application \(objects: users\)"):
            SqliteStore(path)
        assert digest(path) == before
        assert not Path(f"{path}-wal").exists()

    async def test_a_corrupt_database_is_refused_naming_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "runtree.db"
        async with SqliteStore(path) as store:
            await journal_some(store)
        data = bytearray(path.read_bytes())
        data[100:4096] = b"\xff" * (4096 - 100)  # the schema page, past the header
        path.write_bytes(bytes(data))
        before = digest(path)
        with pytest.raises(StoreError, match=r"runtree\.db.*(corrupt|malformed)"):
            SqliteStore(path)
        assert digest(path) == before

    async def test_a_folder_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(StoreError, match=r"is a folder"):
            SqliteStore(tmp_path)

    async def test_a_newer_schema_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "runtree.db"
        async with SqliteStore(path):
            pass
        conn = sqlite3.connect(path)
        conn.execute("UPDATE runtree_meta SET value = '99' WHERE name = 'schema_version'")
        conn.commit()
        conn.close()
        with pytest.raises(StoreError, match=r"schema version 99, newer .* upgrade runtree"):
            SqliteStore(path)

    async def test_forward_migration_keeps_the_data(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "runtree.db"
        async with SqliteStore(path) as store:
            await journal_some(store)
        after = sqlmod.schema_version() + 1
        monkeypatch.setitem(sqlmod.MIGRATIONS, after, ("CREATE TABLE {t}extra (x {real})",))
        async with SqliteStore(path) as store:
            assert sorted(await store.journal_load("job")) == ["k0", "k1", "k2"]
        conn = sqlite3.connect(path)
        assert conn.execute(
            "SELECT value FROM runtree_meta WHERE name = 'schema_version'"
        ).fetchone() == (str(after),)
        assert conn.execute("SELECT count(*) FROM runtree_extra").fetchone() == (0,)
        conn.close()

    async def test_rows_are_json_text(self, tmp_path: Path) -> None:
        path = tmp_path / "runtree.db"
        async with (
            SqliteStore(path) as store,
            runtree.create_scope(store=store) as scope,
            scope.create_context(id="job") as ctx,
        ):
            await ctx.run(lambda: {"a": [1, "x"]}, key="k", name="s")
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT value FROM runtree_journal").fetchone() == ('{"a":[1,"x"]}',)
        conn.close()


class TestDurability:
    async def test_default_is_wal_with_synchronous_normal(self, tmp_path: Path) -> None:
        async with SqliteStore(tmp_path / "a.db") as store:
            assert store.durability == "normal"
            assert store._conn is not None
            assert store._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert store._conn.execute("PRAGMA synchronous").fetchone() == (1,)

    async def test_full_is_an_option(self, tmp_path: Path) -> None:
        async with SqliteStore(tmp_path / "a.db", durability="full") as store:
            assert store._conn is not None
            assert store._conn.execute("PRAGMA synchronous").fetchone() == (2,)
            await journal_some(store)
            assert "durability=full" in store.url
        with pytest.raises(ValueError, match=r"^durability= must be 'normal' or 'full'"):
            SqliteStore(tmp_path / "b.db", durability="fast")  # type: ignore[arg-type]

    async def test_offloaded_writes_give_the_same_results(self, tmp_path: Path) -> None:
        async with SqliteStore(tmp_path / "a.db", offload=True) as store:
            await journal_some(store, n=5)
            assert sorted(await store.journal_load("job")) == [f"k{i}" for i in range(5)]

    async def test_the_wal_is_checkpointed_off_the_loop(self, tmp_path: Path) -> None:
        path = tmp_path / "a.db"
        async with SqliteStore(path) as store:
            await journal_some(store, n=3000)
            assert store._checkpoint is not None
            await asyncio.wrap_future(store._checkpoint)
            # Without checkpoints 3000 commits leave a WAL of ~25 MB; with them it is
            # reused from its start after each checkpoint.
            assert os.path.getsize(f"{path}-wal") < 10_000_000
            # The last pass copies every frame (writes are held for it): the next write
            # restarts the WAL from its beginning. One more checkpoint, now that nothing
            # writes: the periodic one above may have run hundreds of writes before the
            # end (the recorder's flushes add writes as the run's timing allows), and those
            # frames would still be in the WAL.
            store._schedule_checkpoint()
            await asyncio.wrap_future(store._checkpoint)
            # The count of writes goes on while a checkpoint runs: left as it is, the next
            # writes may start another one, which races the probe below (it then reads
            # -1, busy, or a WAL that could not restart). Count from zero.
            store._writes = 0
            await journal_some(store, n=1, tree="after")
            probe = sqlite3.connect(path)
            try:
                _, frames, _ = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                probe.close()
            assert 0 < frames < 50

    async def test_writes_go_on_on_the_loop_while_a_checkpoint_copies(self, tmp_path: Path) -> None:
        """The checkpoint's first phase copies frames while the loop keeps writing; only
        its last pass holds the loop's writes (they wait for it on the loop)."""
        path = tmp_path / "a.db"
        async with SqliteStore(path) as store:
            await journal_some(store, n=1)
            passes: list[bool] = []
            thread_conn = store._thread_conn

            def watched() -> sqlite3.Connection:
                passes.append(store._checkpointing)
                return thread_conn()

            store._thread_conn = watched  # type: ignore[method-assign]
            store._writes = 10**6  # the next write starts a checkpoint
            await journal_some(store, n=200, tree="during")
            assert store._checkpoint is not None
            await asyncio.wrap_future(store._checkpoint)
            assert passes[0] is False  # the catch-up passes: writes not held
            assert passes.count(True) == 1  # the last pass: writes held
            assert store._checkpointing is False
            assert len(await store.journal_load("during")) == 200

    async def test_writes_held_by_the_last_pass_wait_on_the_loop_not_the_thread(
        self, tmp_path: Path
    ) -> None:
        """Concurrent roots write while the last pass is slow: their writes (records in
        batches, claims, run rows) wait for it and then run on the loop. Sent to the
        thread, they queued one hop each and the loop's own writes then met the
        thread's write lock (SQLITE_BUSY) and followed them there."""
        path = tmp_path / "a.db"
        async with SqliteStore(path) as store:
            await journal_some(store, n=1)
            on_thread: list[object] = []
            in_thread = store._in_thread

            def counted(*args: Any, **kwargs: Any) -> Any:
                on_thread.append(args[0])
                return in_thread(*args, **kwargs)

            store._in_thread = counted  # type: ignore[method-assign]
            slow_last_pass(store)
            store._writes = 10**6  # the next write starts a checkpoint

            async def root(r: int) -> None:
                await journal_some(store, n=30, tree=f"held-{r}")

            await asyncio.gather(*(root(r) for r in range(8)))
            assert store._checkpoint is not None
            await asyncio.wrap_future(store._checkpoint)
            assert on_thread == []
            for r in range(8):
                assert len(await store.journal_load(f"held-{r}")) == 30

    async def test_closing_during_the_last_pass_commits_the_held_records(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "a.db"
        store = SqliteStore(path)
        await journal_some(store, n=1)
        slow_last_pass(store)
        store._schedule_checkpoint()
        while not store._checkpointing:  # the catch-up passes are over: writes held
            await asyncio.sleep(0.001)
        pending = [
            asyncio.ensure_future(
                store.journal_record(f"t{k}", "k", "me", {"name": "s", "ok": True, "value": k})
            )
            for k in range(5)
        ]
        await asyncio.sleep(0)
        await store.aclose()
        assert [await p for p in pending] == [
            {"name": "s", "ok": True, "value": k} for k in range(5)
        ]
        assert store._executor is None
        async with SqliteStore(path) as again:
            for k in range(5):
                assert (await again.journal_load(f"t{k}"))["k"]["value"] == k

    async def test_closing_in_the_loop_turn_of_a_batch_opens_no_connection_again(
        self, tmp_path: Path
    ) -> None:
        """``aclose`` commits the loop turn's batch itself; the commit scheduled for that
        turn then finds nothing to do. It used to commit an empty batch on the store's
        thread, which opened a new connection (and thread) on the closed store."""
        path = tmp_path / "a.db"
        store = SqliteStore(path)
        await journal_some(store, n=1)
        pending = [
            asyncio.ensure_future(
                store.journal_record(f"t{k}", "k", "me", {"name": "s", "ok": True, "value": k})
            )
            for k in range(5)
        ]
        await asyncio.sleep(0)  # the records wait in this loop turn's batch
        assert store._batch is not None
        threads = threading.active_count()
        await store.aclose()
        assert [(await p)["value"] for p in pending] == list(range(5))
        await asyncio.sleep(0.01)  # the turn's own commit has run
        assert store._executor is None
        assert store._tconn is None
        assert threading.active_count() <= threads

    async def test_a_batch_committed_after_close_fails_its_steps(self, tmp_path: Path) -> None:
        store = SqliteStore(tmp_path / "a.db")
        await journal_some(store, n=1)
        await store.aclose()
        done: asyncio.Future[StepRecord | None] = asyncio.get_running_loop().create_future()
        store._commit([(("t", "k", "s", 1, "1", None, None, "me", 0.0, None), done)])
        with pytest.raises(StoreError, match="closed while steps waited"):
            await done
        assert store._executor is None

    async def test_a_failing_checkpoint_is_logged_and_lets_writes_go_on(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        path = tmp_path / "a.db"
        async with SqliteStore(path) as store:
            await journal_some(store, n=1)

            def broken() -> sqlite3.Connection:
                raise sqlite3.OperationalError("disk I/O error")

            store._thread_conn = broken  # type: ignore[method-assign]
            store._writes = 10**6
            await journal_some(store, n=20, tree="t2")
            assert store._checkpoint is not None
            await asyncio.wrap_future(store._checkpoint)
            assert "checkpoint of" in caplog.text
            assert store._checkpointing is False
            await journal_some(store, n=5, tree="t3")  # writes still run on the loop
            assert len(await store.journal_load("t3")) == 5


class TestLocks:
    async def test_a_locked_database_never_blocks_the_event_loop(self, tmp_path: Path) -> None:
        path = tmp_path / "a.db"
        async with SqliteStore(path, timeout=30) as store:
            await journal_some(store, n=1)  # the tables exist; the journal is loaded
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            ticks = 0
            try:
                async with (
                    runtree.create_scope(store=store) as scope,
                    scope.create_context(id="job2") as ctx,
                ):
                    step = asyncio.create_task(ctx.run(lambda: "v", key="k", name="s"))
                    while ticks < 20:  # the loop keeps turning while the step waits
                        await asyncio.sleep(0)
                        ticks += 1
                    assert not step.done()
                    blocker.execute("COMMIT")
                    assert await asyncio.wait_for(step, 30) == "v"
            finally:
                if blocker.in_transaction:
                    blocker.execute("ROLLBACK")
                blocker.close()

    async def test_a_lock_held_past_the_timeout_is_a_store_error(self, tmp_path: Path) -> None:
        path = tmp_path / "a.db"
        async with SqliteStore(path, timeout=0.05) as store:
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                with pytest.raises(StoreError, match=r"a\.db.* locked .* 0\.05s"):
                    await store.session_put("s", "data", "k", "1", "now")
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()


class TestUrls:
    async def test_relative_and_absolute_paths(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        async with from_url("sqlite:///data/rel.db") as store:
            assert isinstance(store, SqliteStore)
            assert store.path == tmp_path / "data" / "rel.db"
        absolute = tmp_path / "abs" / "a.db"
        async with from_url(f"sqlite:///{absolute}?durability=full&lease=5") as store:
            assert isinstance(store, SqliteStore)
            assert store.path == absolute
            assert store.durability == "full"
            assert store.lease == 5
            again = store.url
        async with from_url(again) as store:
            assert isinstance(store, SqliteStore) and store.path == absolute

    async def test_default_and_env(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("RUNTREE_STORE", raising=False)
        async with from_url() as store:
            assert isinstance(store, SqliteStore)
            assert store.path == tmp_path / ".runtree" / "runtree.db"
        assert mode(tmp_path / ".runtree") == 0o700
        monkeypatch.setenv("RUNTREE_STORE", "memory://")
        async with from_url() as store:
            assert isinstance(store, InMemoryStore)

    @pytest.mark.parametrize(
        ("url", "why"),
        [
            ("sqlite:relative.db", "three slashes"),
            ("sqlite://host/x.db", "three slashes"),
            ("mysql://u@h/db", "unknown scheme 'mysql'"),
            ("runtree.db", "no scheme"),
            ("sqlite:///x.db?speed=fast", "unknown option"),
            ("sqlite:///x.db?durability=turbo", "durability='turbo'"),
            ("memory://somewhere", "memory:// takes no path"),
            ("postgresql://", "needs a host or a database"),
        ],
    )
    def test_bad_urls_say_what_to_write(self, url: str, why: str) -> None:
        with pytest.raises(StoreError) as info:
            from_url(url)
        text = str(info.value)
        assert why in text
        assert "sqlite:///relative/path.db" in text

    def test_a_missing_postgres_driver_says_what_to_install(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "psycopg", None)
        with pytest.raises(StoreError, match=r"pip install 'runtree\[postgres\]'"):
            PostgresStore("postgresql://localhost/db")
        with pytest.raises(StoreError, match=r"pip install 'runtree\[postgres\]'"):
            from_url("postgresql://localhost/db")

    def test_importing_runtree_loads_no_driver(self) -> None:
        code = (
            "import sys, runtree, runtree.stores, runtree.sessions\n"
            "print('psycopg' in sys.modules)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        assert done.stdout.strip() == "False"


class TestJournalRows:
    async def test_a_success_is_written_as_the_general_insert_writes_it(
        self, tmp_path: Path
    ) -> None:
        """A success goes through its own statement (its constant columns in the SQL: no
        None parameters); alone or in a batch, its row is the one the general insert
        writes, and a key recorded first (a failure) still stands."""
        path = tmp_path / "rows.db"
        async with SqliteStore(path) as store:
            ok: StepRecord = {"name": "s", "ok": True, "value": {"n": 1}, "input_digest": "abc"}
            failed: StepRecord = {"name": "s", "ok": False, "error_type": "E", "error_message": "m"}
            assert await store.journal_record("t", "alone", "o", ok.copy()) == ok
            # several at once: they join one batch (group commit)
            got = await asyncio.gather(
                *(store.journal_record("t", f"b{i}", "o", ok.copy()) for i in range(4))
            )
            assert got == [ok] * 4
            assert await store.journal_record("t", "f", "o", failed.copy()) == failed
            stood = await store.journal_record("t", "f", "o2", ok.copy())
            assert stood["ok"] is False and stood["error_type"] == "E"
            # the general statement, for comparison
            params = ("t", "general", "s", 1, '{"n":1}', None, None, "o", 0.0, "abc")
            assert store._conn is not None
            assert store._conn.execute(store._insert_sql, params).rowcount == 1
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute(
                "SELECT key, name, ok, value, error_type, error_message, owner, input_digest "
                "FROM runtree_journal WHERE tree_id = 't' ORDER BY key"
            ).fetchall()
        finally:
            conn.close()
        by_key = {r[0]: r[1:] for r in rows}
        general = by_key.pop("general")
        assert general == ("s", 1, '{"n":1}', None, None, "o", "abc")
        assert by_key.pop("f") == ("s", 0, None, "E", "m", "o", None)
        assert by_key == {k: general for k in ("alone", "b0", "b1", "b2", "b3")}

    async def test_a_success_from_its_text_writes_the_row_the_record_dict_writes(
        self, tmp_path: Path
    ) -> None:
        """The journal records a success through ``journal_record_ok`` (its value as JSON
        text, no record dict); ``journal_record`` with the dict writes the same row, and
        both answer a key recorded first with the record that stands."""
        path = tmp_path / "ok.db"
        async with SqliteStore(path) as store:
            ok: StepRecord = {"name": "s", "ok": True, "value": {"n": 1}, "input_digest": "=1"}
            assert await store.journal_record("t", "dict", "o", ok.copy()) == ok
            assert await store.journal_record_ok("t", "text", "o", "s", '{"n":1}', "=1") is None
            failed: StepRecord = {"name": "s", "ok": False, "error_type": "E", "error_message": "m"}
            await store.journal_record("t", "f", "o", failed)
            stood = await store.journal_record_ok("t", "f", "o2", "s", "1", None)
            assert stood is not None and stood["ok"] is False and stood["error_type"] == "E"
            with pytest.raises(StoreError, match="journal key"):
                await store.journal_record_ok("t", "", "o", "s", "1", None)
            with pytest.raises(StoreError, match="root id"):
                await store.journal_record_ok("bad\x00id", "k", "o", "s", "1", None)
        conn = sqlite3.connect(path)
        try:
            rows = dict(
                conn.execute(
                    "SELECT key, name || ok || value || owner || input_digest "
                    "FROM runtree_journal WHERE key IN ('dict', 'text')"
                ).fetchall()
            )
        finally:
            conn.close()
        assert rows["dict"] == rows["text"] == 's1{"n":1}o=1'

    async def test_a_subclass_wrapping_journal_record_still_sees_every_record(
        self, tmp_path: Path
    ) -> None:
        """A store subclass that wraps ``journal_record`` alone (a test seam, a wrapper)
        sees successes too: the journal takes the text path only where the class that
        defines ``journal_record_ok`` is the one that defines ``journal_record`` (or below
        it)."""
        seen: list[tuple[str, str]] = []

        class Wrapped(SqliteStore):
            async def journal_record(
                self, tree_id: str, key: str, owner: str, record: StepRecord
            ) -> StepRecord:
                seen.append(("dict", key))
                return await super().journal_record(tree_id, key, owner, record)

        class Both(Wrapped):
            async def journal_record_ok(
                self, tree_id: str, key: str, owner: str, name: str, value: str, d: str | None
            ) -> StepRecord | None:
                seen.append(("text", key))
                return await super().journal_record_ok(tree_id, key, owner, name, value, d)

        @runtree.flow
        async def step(ctx: runtree.ExecutionContext[int]) -> int:
            return ctx.input + 1

        for cls, expected in ((Wrapped, "dict"), (Both, "text")):
            seen.clear()
            async with (
                cls(tmp_path / f"{cls.__name__}.db") as store,
                runtree.create_scope(store=store) as scope,
                scope.create_context(id="w-1") as root,
            ):
                assert await root.exec(step, 1, key="a") == 2
                assert await root.run(lambda: 5, key="b") == 5
            assert seen == [(expected, "a"), (expected, "b")], cls.__name__

    async def test_a_batch_tells_its_own_rows_from_keys_recorded_before(
        self, tmp_path: Path
    ) -> None:
        """A batch of successes goes in one executemany; a key another owner recorded
        first keeps its record, which comes back for that row alone. A batch holding a
        failure takes the row-by-row way; both ways give the same answers and rows."""
        async with SqliteStore(tmp_path / "batch.db") as store:
            before: StepRecord = {"name": "s", "ok": False, "error_type": "E", "error_message": "m"}
            for tree in ("fast", "slow"):
                assert await store.journal_record(tree, "taken", "other", before.copy()) == before

            def row(tree: str, key: str, ok: int = 1) -> tuple[object, ...]:
                if ok:
                    return (tree, key, "s", 1, "1", None, None, "me", 5.5, None)
                return (tree, key, "s", 0, None, "E", "m", "me", 5.5, None)

            fast = [row("fast", "a"), row("fast", "taken"), row("fast", "b")]
            slow = [row("slow", "a"), row("slow", "taken"), row("slow", "b", ok=0)]
            got_fast = await store._write1(store._op_records, fast)
            got_slow = await store._write1(store._op_records, slow)
            assert got_fast == got_slow == [None, before, None]
            assert store._conn is not None
            stored = store._conn.execute(
                "SELECT tree_id, key, ok, owner FROM runtree_journal ORDER BY tree_id, key"
            ).fetchall()
        assert stored == [
            ("fast", "a", 1, "me"),
            ("fast", "b", 1, "me"),
            ("fast", "taken", 0, "other"),
            ("slow", "a", 1, "me"),
            ("slow", "b", 0, "me"),
            ("slow", "taken", 0, "other"),
        ]
