"""The ``runtree`` command line (needs the ``cli`` extra: typer and rich).

``runtree demo`` · ``runtree session start|list|show|get|set|end`` ·
``runtree run MODULE:FLOW --input JSON [--session ID] [--command NAME]``.
The store comes from ``RUNTREE_STORE`` (default ``sqlite:///.runtree/runtree.db``).
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``runtree`` console script and ``python -m runtree``."""
    try:
        from ._app import run_app
    except ImportError as exc:  # typer/rich missing
        missing = getattr(exc, "name", None) or str(exc)
        print(
            f"runtree: the command line needs the 'cli' extra ({missing} is not installed).\n"
            "Install it with: pip install 'runtree[cli]'",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    # User data (a flow's or a step's name, an error message) may hold a lone surrogate,
    # which a UTF-8 stream refuses: print it escaped instead of failing mid-output.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    run_app(argv)
