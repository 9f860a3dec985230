"""SqliteStore and files it did not create: runtree stamps its own application_id, refuses
any other, looks before it changes anything, checks an existing file's integrity on open, and
says what happened when the disk is read-only or full."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

import runtree
from runtree.errors import StoreError
from runtree.sessions import Sessions
from runtree.stores import SqliteStore
from runtree.stores._sqlite import APPLICATION_ID


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for s in statements:
        conn.execute(s)
    conn.commit()
    conn.close()


def pragma(path: Path, name: str) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


async def journal_some(store: SqliteStore, n: int = 3) -> None:
    async with runtree.create_scope(store=store) as scope, scope.create_context(id="job") as ctx:
        for i in range(n):
            await ctx.run(lambda i=i: {"i": i, "pad": "x" * 200}, key=f"k{i}", name="s")


def test_a_new_database_is_stamped_with_runtrees_application_id(tmp_path: Path) -> None:
    path = tmp_path / "runtree.db"
    SqliteStore(path)._conn.close()  # type: ignore[union-attr]
    assert pragma(path, "application_id") == APPLICATION_ID


FOREIGN: dict[str, Callable[[Path], None]] = {
    "views-and-application-id": lambda p: make(
        p, "PRAGMA application_id = 1234", "CREATE VIEW v AS SELECT 1 AS x"
    ),
    "only-user-version": lambda p: make(p, "PRAGMA user_version = 7"),
    "only-application-id": lambda p: make(p, "PRAGMA application_id = 99"),
    "runtree-named-view": lambda p: make(
        p, "PRAGMA user_version = 3", "CREATE VIEW runtree_meta AS SELECT 1 AS name, 2 AS value"
    ),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_a_file_of_another_application_is_refused_and_left_untouched(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "other.db"
    FOREIGN[kind](path)
    before = digest(path)
    with pytest.raises(StoreError, match=r"^.*other\.db.*another application.*will not change.*$"):
        SqliteStore(path)
    assert digest(path) == before
    assert not Path(f"{path}-wal").exists()
    assert pragma(path, "journal_mode") == "delete"


def test_a_meta_table_claiming_runtree_without_its_tables_is_refused_before_wal(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fake.db"
    make(
        path,
        "CREATE TABLE runtree_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO runtree_meta VALUES ('application', 'runtree'), ('schema_version', '1')",
    )
    before = digest(path)
    with pytest.raises(StoreError, match=r"^.*fake\.db.*lacks the table\(s\).*$"):
        SqliteStore(path)
    assert digest(path) == before
    assert pragma(path, "journal_mode") == "delete"
    assert not Path(f"{path}-wal").exists()


async def test_a_reader_creates_nothing(tmp_path: Path) -> None:
    # create=False (what the web view opens stores with): a missing file stays missing, an
    # empty one stays empty; a runtree store opens.
    missing = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="does not exist"):
        SqliteStore(missing, create=False)
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreError, match="holds no runtree store yet"):
        SqliteStore(empty, create=False)
    assert empty.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]
    made = tmp_path / "made.db"
    async with SqliteStore(made):
        pass
    async with runtree.stores.from_url(f"sqlite:///{made}", create=False) as reader:
        assert await reader.journal_load("nothing") == {}  # type: ignore[attr-defined]


async def test_a_file_corrupted_mid_way_is_refused_and_not_written(tmp_path: Path) -> None:
    path = tmp_path / "runtree.db"
    async with SqliteStore(path) as store:
        await journal_some(store, 300)  # many pages: the damage is far from the header
    data = bytearray(path.read_bytes())
    page = 4096
    pages = len(data) // page
    assert pages > 10
    middle = (pages // 2) * page
    data[middle : middle + page] = b"\x5a" * page
    path.write_bytes(bytes(data))
    before = digest(path)
    with pytest.raises(StoreError, match=r"^.*runtree\.db' is corrupt.*did not change it.*$"):
        SqliteStore(path)
    assert digest(path) == before


async def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runtree.db"
    async with SqliteStore(path) as store:
        await journal_some(store, 300)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match=r"^.*runtree\.db.*corrupt.*$"):
        SqliteStore(path)


async def test_an_older_runtree_file_without_the_stamp_is_opened_and_stamped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runtree.db"
    async with SqliteStore(path) as store:
        await journal_some(store)
    make(path, "PRAGMA application_id = 0")
    async with SqliteStore(path) as store:
        assert sorted(await store.journal_load("job")) == ["k0", "k1", "k2"]
    assert pragma(path, "application_id") == APPLICATION_ID


async def test_a_read_only_database_says_so_and_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "runtree.db"
    async with SqliteStore(path) as store:
        session = await Sessions(store).create("p")
        assert store._conn is not None
        # What SQLite reports for a read-only file (or mount): SQLITE_READONLY.
        store._conn.execute("PRAGMA query_only = 1")
        with pytest.raises(StoreError) as info:
            await session.set_shared_data("k", 1)
    text = str(info.value)
    assert "cannot be written" in text and "read-only" in text
    assert "write access" in text
    assert "corrupt" not in text


@pytest.mark.record_loss
async def test_a_full_disk_says_so_and_that_nothing_was_half_written(tmp_path: Path) -> None:
    path = tmp_path / "runtree.db"
    async with SqliteStore(path) as store:
        assert store._conn is not None
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        # What SQLite reports when the disk fills up: SQLITE_FULL.
        store._conn.execute(f"PRAGMA max_page_count = {pages}")
        async with runtree.create_scope(store=store) as scope, scope.create_context(id="j") as ctx:

            async def fill() -> None:
                for i in range(200):
                    await ctx.run(lambda: "x" * 5000, key=f"k{i}", name="s")

            with pytest.raises(StoreError) as info:
                await fill()
        text = str(info.value)
        assert "disk is full" in text and "Free space" in text
        assert "corrupt" not in text
        store._conn.execute("PRAGMA max_page_count = 1073741823")
        for key, record in (await store.journal_load("j")).items():
            assert record["value"] == "x" * 5000, key  # no half-written row
