"""Sessions: command chains that share one persisted context tree across processes.

::

    from runtree.sessions import Sessions, FileContextProvider
    from runtree.stores import from_url

    async with from_url() as store:                 # RUNTREE_STORE or .runtree/runtree.db
        session = await Sessions(store).get_or_create("tracker", "python")
        await session.exec(brainstorm, {"topic": "tasks"}, command="brainstorm")

Each command (``brainstorm`` → ``implement`` → ``test``), possibly in its own process, sees
the context and memory loaded before (cache-first), the shared data, the command history,
and the session's durable journal. See docs/sessions.md.
"""

from __future__ import annotations

from ._providers import ContextProvider as ContextProvider
from ._providers import FileContextProvider as FileContextProvider
from ._providers import FileMemoryProvider as FileMemoryProvider
from ._providers import FileSkillInvoker as FileSkillInvoker
from ._providers import MemoryProvider as MemoryProvider
from ._providers import SkillInvoker as SkillInvoker
from ._session import CommandExecution as CommandExecution
from ._session import Session as Session
from ._session import Sessions as Sessions
from ._session import current_session as current_session

__all__ = [
    "CommandExecution",
    "ContextProvider",
    "FileContextProvider",
    "FileMemoryProvider",
    "FileSkillInvoker",
    "MemoryProvider",
    "Session",
    "SkillInvoker",
    "Sessions",
    "current_session",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        _obj.__module__ = "runtree.sessions"
del _name, _obj
