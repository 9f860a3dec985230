"""Collaborators of a session, as protocols, with file-backed defaults.

- :class:`ContextProvider` — loads context by domain and topic (``FileContextProvider``
  reads ``<root>/<domain>/<topic>.md``).
- :class:`MemoryProvider` — keeps memory by layer and key (``FileMemoryProvider`` keeps
  ``<root>/<layer>/<key>.json``, files 0600 in folders 0700, written atomically).
- :class:`SkillInvoker` — runs a named skill and records it in the running command
  (``FileSkillInvoker`` returns the instructions of ``<root>/<name>/SKILL.md`` or
  ``<root>/<name>.md``).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .._json import shown
from ..stores._base import dumps

if TYPE_CHECKING:
    from ._session import Session

__all__ = [
    "ContextProvider",
    "FileContextProvider",
    "FileMemoryProvider",
    "FileSkillInvoker",
    "MemoryProvider",
    "SkillInvoker",
]


@runtime_checkable
class ContextProvider(Protocol):
    """Loads context for a domain and topic; ``None`` when there is none."""

    async def get_conditional_context(self, domain: str, topic: str) -> object | None: ...


@runtime_checkable
class MemoryProvider(Protocol):
    """Long-lived memory by layer (``"project"``, ``"user"`` ...) and key."""

    async def get(self, layer: str, key: str) -> object | None: ...

    async def put(self, layer: str, key: str, content: object) -> None: ...


@runtime_checkable
class SkillInvoker(Protocol):
    """Runs a named skill. Implementations call :meth:`Session.record_skill` so the
    invocation shows in the running command's ``skills_invoked``."""

    async def invoke(self, name: str, inputs: Mapping[str, object] | None = None) -> object: ...


def _part(value: str, what: str) -> str:
    """A safe single path component (no separators, no ``..``)."""
    if (
        not isinstance(value, str)
        or not value
        or value in (".", "..")
        or "/" in value
        or "\\" in value
        or "\x00" in value
    ):
        msg = f"{what} must be a plain name without path separators (got {shown(value)})"
        raise ValueError(msg)
    return value


def _inside(root: Path, path: Path, what: str) -> Path:
    """``path`` when it resolves (links followed) inside ``root``, else PermissionError:
    a link must not lead a provider out of its folder, for reading or for writing."""
    base = root.resolve()
    real = path.resolve()
    if real != base and not real.is_relative_to(base):
        msg = (
            f"{what} {str(path)!r} resolves to {str(real)!r}, outside the provider's root "
            f"{str(base)!r}; runtree does not follow links out of it. Replace the link "
            "with a real file or folder inside the root."
        )
        raise PermissionError(msg)
    return path


def _make_private_dirs(folder: Path) -> None:
    missing: list[Path] = []
    p = folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)


class FileContextProvider:
    """Context from text files: ``<root>/<domain>/<topic>.md`` (or ``.txt``), or
    ``<topic>.json`` parsed as JSON. Missing files give ``None``.

    .. versionadded:: 0.1
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    async def get_conditional_context(self, domain: str, topic: str) -> object | None:
        folder = self.root / _part(domain, "domain")
        _part(topic, "topic")
        return await asyncio.to_thread(_read_first, self.root, folder, topic)

    def __repr__(self) -> str:
        return f"FileContextProvider({str(self.root)!r})"


def _read_first(root: Path, folder: Path, topic: str) -> object | None:
    for suffix in (".md", ".txt"):
        path = folder / f"{topic}{suffix}"
        if path.is_file():
            return _inside(root, path, "Context file").read_text(encoding="utf-8")
    path = folder / f"{topic}.json"
    if path.is_file():
        value: object = json.loads(_inside(root, path, "Context file").read_text(encoding="utf-8"))
        return value
    return None


class FileMemoryProvider:
    """Memory as JSON files: ``<root>/<layer>/<key>.json``.

    Writes are atomic (a temporary file renamed over the old one), files are created
    with mode 0600 and folders with 0700: memory may hold private notes.

    .. versionadded:: 0.1
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, layer: str, key: str) -> Path:
        return self.root / _part(layer, "memory layer") / f"{_part(key, 'memory key')}.json"

    async def get(self, layer: str, key: str) -> object | None:
        path = self._path(layer, key)
        return await asyncio.to_thread(_read_json, self.root, path)

    async def put(self, layer: str, key: str, content: object) -> None:
        path = self._path(layer, key)
        text = dumps(content, f"Memory {layer}:{key}")
        await asyncio.to_thread(_write_private, self.root, path, text)

    def __repr__(self) -> str:
        return f"FileMemoryProvider({str(self.root)!r})"


def _read_json(root: Path, path: Path) -> object | None:
    if not path.exists():
        return None
    try:
        text = _inside(root, path, "Memory file").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    value: object = json.loads(text)
    return value


def _write_private(root: Path, path: Path, text: str) -> None:
    # The folder (a link to elsewhere?) is checked before anything is created in it; the
    # file itself is replaced by a rename, which never follows a link.
    _inside(root, path.parent, "Memory folder")
    _make_private_dirs(path.parent)
    _inside(root, path.parent, "Memory folder")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp creates it 0600
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class FileSkillInvoker:
    """Skills as instruction files: ``<root>/<name>/SKILL.md`` or ``<root>/<name>.md``.

    ``invoke`` returns ``{"skill": name, "instructions": text, "inputs": inputs}`` and
    records the invocation in the running command of ``session`` (or of
    :func:`runtree.sessions.current_session`).

    .. versionadded:: 0.1
    """

    def __init__(self, root: str | os.PathLike[str], session: Session | None = None) -> None:
        self.root = Path(root)
        self.session = session

    async def invoke(self, name: str, inputs: Mapping[str, object] | None = None) -> object:
        folder = self.root / _part(name, "skill name")
        candidates = (folder / "SKILL.md", self.root / f"{name}.md")
        text = await asyncio.to_thread(_read_skill, self.root, candidates)
        if text is None:
            looked = " or ".join(str(c) for c in candidates)
            msg = f"Skill {name!r} not found: looked for {looked}"
            raise LookupError(msg)
        from ._session import current_session

        session = self.session or current_session()
        if session is not None:
            await session.record_skill(name)
        return {"skill": name, "instructions": text, "inputs": dict(inputs or {})}

    def __repr__(self) -> str:
        return f"FileSkillInvoker({str(self.root)!r})"


def _read_skill(root: Path, candidates: tuple[Path, ...]) -> str | None:
    for path in candidates:
        if path.is_file():
            return _inside(root, path, "Skill file").read_text(encoding="utf-8")
    return None
