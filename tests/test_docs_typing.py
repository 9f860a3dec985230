"""Every ```python block of README.md and docs/*.md passes ``mypy --strict``.

Each block is checked on its own, as a user would paste it into a file. One mypy run
checks all of them (a few seconds); each block is its own test so a failure names the
document and the line.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Blocks that fail today because of a known library typing bug, with the reason shown in
# the test report. Keep this list short and remove an entry as soon as its fix lands.
KNOWN_FAILURES: dict[str, str] = {}


@dataclass(frozen=True)
class Block:
    doc: str  # "README.md", "guide.md"
    index: int  # 0-based, per document
    line: int  # line of the block's first code line in the document
    code: str

    @property
    def id(self) -> str:
        return f"{self.doc}#{self.index}"

    @property
    def module(self) -> str:
        stem = re.sub(r"\W", "_", self.doc.removesuffix(".md").lower())
        return f"doc_{stem}_{self.index}"


def _blocks() -> list[Block]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for i, match in enumerate(re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M)):
            line = text.count("\n", 0, match.start(1)) + 1
            found.append(Block(doc.name, i, line, match.group(1)))
    return found


BLOCKS = _blocks()


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Run mypy --strict once over every block; errors by module, with doc line numbers."""
    folder = tmp_path_factory.mktemp("doc_blocks")
    for block in BLOCKS:
        (folder / f"{block.module}.py").write_text(block.code, encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--strict", "--python-version", "3.11",
            "--no-error-summary", "--show-error-codes", "--no-color-output",
            "--cache-dir", str(folder / ".mypy_cache"),
            *(f"{b.module}.py" for b in BLOCKS),
        ],
        cwd=folder, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode not in (0, 1) or done.stderr.strip():
        pytest.fail(f"mypy did not run: exit {done.returncode}\n{done.stderr}{done.stdout}")
    by_module = {b.module: b for b in BLOCKS}
    errors: dict[str, list[str]] = {}
    for text in done.stdout.splitlines():
        match = re.match(r"^(\w+)\.py:(\d+): (error|note): (.*)$", text)
        if match is None or match.group(1) not in by_module:
            continue
        block = by_module[match.group(1)]
        where = f"{block.doc}:{block.line + int(match.group(2)) - 1}"
        errors.setdefault(block.module, []).append(f"{where}: {match[3]}: {match[4]}")
    return errors


def _param(block: Block) -> object:
    reason = KNOWN_FAILURES.get(block.id)
    marks = [pytest.mark.skip(reason=f"{block.id}: {reason}")] if reason else []
    return pytest.param(block, id=block.id, marks=marks)


def test_there_are_blocks_to_check() -> None:
    assert any(b.doc == "README.md" for b in BLOCKS)
    assert len({b.module for b in BLOCKS}) == len(BLOCKS)
    stale = set(KNOWN_FAILURES) - {b.id for b in BLOCKS}
    assert not stale, f"KNOWN_FAILURES names blocks that no longer exist: {sorted(stale)}"


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_doc_block_passes_mypy_strict(block: Block, mypy_errors: dict[str, list[str]]) -> None:
    problems = [e for e in mypy_errors.get(block.module, []) if ": error: " in e]
    assert not problems, "mypy --strict:\n" + "\n".join(mypy_errors[block.module])
