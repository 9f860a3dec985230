"""File-backed providers never follow a link out of their root folder, for reading or for
writing; links that stay inside the root keep working."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtree.sessions import FileContextProvider, FileMemoryProvider, FileSkillInvoker


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.md").write_text("private key", encoding="utf-8")
    (folder / "secret.json").write_text('{"token": 1}', encoding="utf-8")
    return folder


async def test_context_files_linked_outside_are_refused(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "context"
    (root / "docs").mkdir(parents=True)
    os.symlink(outside / "secret.md", root / "docs" / "leak.md")
    os.symlink(outside, root / "linked")
    provider = FileContextProvider(root)
    with pytest.raises(PermissionError, match=r"^.*leak\.md.*outside the provider's root.*$"):
        await provider.get_conditional_context("docs", "leak")
    with pytest.raises(PermissionError, match=r"^.*outside the provider's root.*$"):
        await provider.get_conditional_context("linked", "secret")


async def test_memory_reads_and_writes_through_links_outside_are_refused(
    tmp_path: Path, outside: Path
) -> None:
    root = tmp_path / "memory"
    root.mkdir()
    os.symlink(outside, root / "project")
    provider = FileMemoryProvider(root)
    with pytest.raises(PermissionError, match=r"^.*outside the provider's root.*$"):
        await provider.get("project", "secret")
    with pytest.raises(PermissionError, match=r"^.*outside the provider's root.*$"):
        await provider.put("project", "planted", {"x": 1})
    assert sorted(p.name for p in outside.iterdir()) == ["secret.json", "secret.md"]


async def test_skills_linked_outside_are_refused(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "skills"
    root.mkdir()
    os.symlink(outside / "secret.md", root / "leak.md")
    with pytest.raises(PermissionError, match=r"^.*outside the provider's root.*$"):
        await FileSkillInvoker(root).invoke("leak")


async def test_links_inside_the_root_still_work(tmp_path: Path) -> None:
    root = tmp_path / "context"
    (root / "real").mkdir(parents=True)
    (root / "real" / "topic.md").write_text("hello", encoding="utf-8")
    os.symlink(root / "real", root / "alias")
    assert await FileContextProvider(root).get_conditional_context("alias", "topic") == "hello"
    memory = FileMemoryProvider(tmp_path / "memory")
    await memory.put("layer", "k", [1, 2])
    assert await memory.get("layer", "k") == [1, 2]
