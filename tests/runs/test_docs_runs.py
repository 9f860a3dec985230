"""The python blocks of docs/runs.md run as written and print what the doc shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "runs.md"
# A python block, and the text block that follows it when the doc shows its output.
BLOCK = re.compile(r"```python\n(.*?)```\n(?:\nprints\n\n```text\n(.*?)```)?", re.S)


def blocks() -> list[tuple[int, str, str | None]]:
    return [(i, m.group(1), m.group(2)) for i, m in enumerate(BLOCK.finditer(DOC.read_text()))]


@pytest.mark.parametrize(("index", "code", "shown"), blocks(), ids=lambda v: str(v)[:12])
def test_runs_doc_example(index: int, code: str, shown: str | None, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, f"docs/runs.md block {index} failed:\n{result.stderr}"
    if shown is not None:
        assert result.stdout == shown
