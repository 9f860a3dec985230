"""Instructions per operation, counted by ``valgrind --tool=callgrind``: a before/after
comparison that the host's load cannot blur (timing ratios on a busy 2-core host move by
tens of percent; instruction counts repeat exactly).

    python bench/bench_instructions.py [SRC ...] [--n 20000]

Each SRC is a ``src`` folder holding a ``runtree`` package (default: this checkout's);
pass an older checkout's too (``git archive REV | tar -x -C /tmp/old``) to compare. For each
operation the program runs twice, with 0 and ``--n`` repetitions, and the difference over
``--n`` is the count per operation; the ratio to a bare ``await f()`` is the figure.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

PROGRAM = """
import asyncio, sys
import runtree as rt

@rt.flow
async def trivial(ctx):
    return 1

async def f():
    return 1

async def main(n, what):
    scope = rt.create_scope()
    root = scope.create_context()
    await root.exec(trivial)
    if what == "exec":
        for _ in range(n):
            await root.exec(trivial)
    elif what == "create_exec_close":
        for _ in range(n):
            c = scope.create_context()
            await c.exec(trivial)
            await c.close()
    else:
        for _ in range(n):
            await f()
    await root.close()
    await scope.dispose()

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""

OPERATIONS = ("bare_await", "exec", "create_exec_close")


def count(src: Path, n: int, what: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-c", PROGRAM, str(n), what],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", done.stderr)
    assert found is not None, done.stderr
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("src", nargs="*", type=Path)
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    sources = args.src or [Path(__file__).resolve().parent.parent / "src"]
    for src in sources:
        per_op = {}
        for what in OPERATIONS:
            per_op[what] = (count(src, args.n, what) - count(src, 0, what)) / args.n
        bare = per_op["bare_await"]
        print(f"{src}:")
        for what in OPERATIONS:
            print(f"  {what:<18} {per_op[what]:>9,.0f} instructions  {per_op[what] / bare:6.2f}x")


if __name__ == "__main__":
    main()
