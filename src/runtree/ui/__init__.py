"""``runtree ui``: the recorded run trees in the browser, live (extra ``ui``).

::

    from runtree.ui import create_app

    app = create_app("sqlite:///.runtree/runtree.db")   # any ASGI server runs it

A read-only view over :mod:`runtree.runs` and :mod:`runtree.sessions`: the runs list, a
run as a waterfall, sessions with their commands; running trees update through
server-sent events. See docs/ui.md.

.. versionadded:: 0.2
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    msg = "runtree.ui needs the ui extra: pip install 'runtree[ui]'"
    raise ImportError(msg) from exc

from ._app import create_app as create_app
from ._app import is_loopback as is_loopback

__all__ = ["create_app", "is_loopback"]
