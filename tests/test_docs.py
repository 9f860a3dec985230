"""The code in README.md and docs/guide.md runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "guide.md", ROOT / "docs" / "streaming.md"]


def blocks() -> list[tuple[str, int, str]]:
    found = []
    for doc in DOCS:
        if not doc.exists():
            continue
        text = doc.read_text()
        for i, match in enumerate(re.finditer(r"```python\n(.*?)```", text, re.S)):
            found.append((doc.name, i, match.group(1)))
    return found


@pytest.mark.parametrize(("doc", "index", "code"), blocks(), ids=lambda v: str(v)[:20])
def test_documented_example_runs(doc: str, index: int, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, f"{doc} block {index} failed:\n{result.stderr}"


def test_quickstart_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "acme: ['hello alice', 'hello bob']" in result.stdout
    assert result.stdout.rstrip().endswith("database: disconnect")
