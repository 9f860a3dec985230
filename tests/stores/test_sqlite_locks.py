"""Two stores of one SQLite file in one process: opening the second never drops the first's
POSIX locks (closing any descriptor of a file drops them all), so another process can never
take the WAL away from under the first."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from runtree.sessions import Sessions
from runtree.stores import SqliteStore

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from runtree.sessions import Sessions
    from runtree.stores import SqliteStore

    async def main():
        async with SqliteStore(sys.argv[1]) as store:
            session = await Sessions(store).create(sys.argv[2])
            await session.set_shared_data("n", int(sys.argv[3]))
            print(session.session_id)

    asyncio.run(main())
    """
)


def write_in_another_process(path: Path, project: str, n: int) -> str:
    done = subprocess.run(
        [sys.executable, "-c", WRITER, str(path), project, str(n)],
        capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ},
    )  # fmt: skip
    return done.stdout.strip()


async def test_a_second_store_on_the_file_keeps_the_first_one_working(tmp_path: Path) -> None:
    path = tmp_path / "rt.db"
    async with SqliteStore(path) as first:
        reader = Sessions(first)
        first_id = write_in_another_process(path, "p1", 1)
        assert (await reader.get(first_id)).shared_data == {"n": 1}
        for round_ in range(3):
            async with SqliteStore(path) as second:  # opened and closed in this process
                await Sessions(second).list()
            # Another process writes and closes: were the first store's locks gone, it
            # would checkpoint and remove the WAL the first store still reads through.
            sid = write_in_another_process(path, f"p{round_ + 2}", round_ + 2)
            session = await reader.get(sid)
            assert session.shared_data == {"n": round_ + 2}
            assert {s.session_id for s in await reader.list()} >= {first_id, sid}
