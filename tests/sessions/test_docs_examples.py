"""The code in docs/stores.md and docs/sessions.md runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = [ROOT / "docs" / "stores.md", ROOT / "docs" / "sessions.md"]


def blocks() -> list[tuple[str, int, str]]:
    found = []
    for doc in DOCS:
        for i, match in enumerate(re.finditer(r"```python\n(.*?)```", doc.read_text(), re.S)):
            found.append((doc.name, i, match.group(1)))
    return found


@pytest.mark.parametrize(("doc", "index", "code"), blocks(), ids=lambda v: str(v)[:20])
def test_documented_example_runs(doc: str, index: int, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, f"{doc} block {index} failed:\n{result.stderr}"
    if doc == "stores.md" and index == 0:
        assert result.stdout.count("charging order-42") == 1
    if doc == "sessions.md" and index == 0:
        assert "implement success" in result.stdout
        assert "{'context_hits': 1, 'context_misses': 1}" in result.stdout
