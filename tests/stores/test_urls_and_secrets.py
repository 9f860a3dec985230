"""Hostile store URLs are StoreErrors naming the part at fault; a PostgreSQL password never
shows in a repr, an error, a log line or the CLI's stderr, in any form a DSN takes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtree.errors import StoreError
from runtree.stores import InMemoryStore, PostgresStore, from_url, redact

SECRET = "s3cr3tPW"


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("sqlite://", "path is empty"),
        ("sqlite:///", "path is empty"),
        ("sqlite:///?durability=full", "path is empty"),
        ("sqlite:///x.db?lease=0", "option lease='0'"),
        ("sqlite:///x.db?lease=-1", "option lease='-1'"),
        ("sqlite:///x.db?timeout=soon", "option timeout='soon'"),
        ("sqlite:///x.db?offload=maybe", "option offload='maybe'"),
        ("memory://?lease=0", "option lease='0'"),
        ("postgresql://h/db?lease=0", "option lease='0'"),
        ("postgresql://h/db?timeout=0", "option timeout='0'"),
        ("postgresql://h/db?reconnect=x", "option reconnect='x'"),
    ],
)
def test_a_hostile_url_is_a_store_error_naming_the_part(
    url: str, part: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError) as info:
        from_url(url)
    assert part in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing created


async def test_memory_on_purpose_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert isinstance(from_url("memory://"), InMemoryStore)
    assert isinstance(from_url("sqlite:///:memory:"), InMemoryStore)
    async with from_url("sqlite:///x.db?offload=off") as store:
        assert store.url.endswith("x.db")


DSNS = [
    pytest.param(f"postgresql://runtree:{SECRET}@127.0.0.1:1/nothing", id="url-userinfo"),
    pytest.param(f"postgresql://runtree@127.0.0.1:1/nothing?password={SECRET}", id="url-query"),
    pytest.param(f"host=127.0.0.1 port=1 user=runtree password={SECRET} dbname=x", id="conninfo"),
    pytest.param(f"host=127.0.0.1 port=1 password='{SECRET} x' dbname=x", id="conninfo-quoted"),
    # DSNs the driver refuses to parse (its error echoes the DSN).
    pytest.param(f"postgresql://runtree:{SECRET}@[::1:1/nothing", id="url-bad-ipv6"),
    pytest.param(f"postgresql://host=127.0.0.1 password={SECRET}", id="conninfo-after-scheme"),
]


@pytest.mark.parametrize("dsn", DSNS)
async def test_the_password_never_shows(dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = PostgresStore(dsn, connect_timeout=2, reconnect=0.3)
    shown = [repr(store), store.dsn, store.url, redact(dsn)]
    with pytest.raises(StoreError) as info:
        await store.open()
    await store.aclose()
    shown += [str(info.value), repr(info.value), caplog.text]
    cause = info.value.__cause__ or info.value.__context__
    if cause is not None:
        shown += [str(cause), repr(cause)]
    for text in shown:
        assert SECRET not in text, text
    assert "Cannot connect to PostgreSQL" in str(info.value)
    assert "***" in repr(store)


@pytest.mark.parametrize("mark", ["/", "#", "?", " "])
def test_a_password_with_an_unencoded_reserved_character_is_refused(mark: str) -> None:
    # libpq would read part of it as the host, port or path (and show it there).
    dsn = f"postgresql://runtree:{SECRET}{mark}x@127.0.0.1:1/nothing"
    for make in (PostgresStore, from_url):
        with pytest.raises(StoreError) as info:
            make(dsn)
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)
        if make is PostgresStore:
            assert "percent-encode the password" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://runtree:{SECRET}@127.0.0.1:1/x?lease=zero",
        f"postgresql://runtree@127.0.0.1:1/x?password={SECRET}&lease=zero",
        f"postgresql://runtree@127.0.0.1:1/x?password={SECRET}&a=%zz&&",
        f"postgresql://runtree:{SECRET}?x@127.0.0.1:1/x",
        f"postgresql://runtree:a?{SECRET}@127.0.0.1:1/x",
    ],
)
def test_from_url_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(StoreError) as info:
        from_url(url)
    assert SECRET not in str(info.value)


def test_the_cli_never_prints_the_password(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RUNTREE_STORE": f"postgresql://runtree:{SECRET}@127.0.0.1:1/x?reconnect=0",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "runtree", "session", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert SECRET not in proc.stdout + proc.stderr
    assert "127.0.0.1" in proc.stdout + proc.stderr
