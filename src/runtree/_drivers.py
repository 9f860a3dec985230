"""Load runtree's store drivers before a user's folder goes on ``sys.path``.

``python -m runtree`` starts with the working folder first on ``sys.path``, and ``runtree
run`` adds it so that the user's flows import: a ``sqlite3.py`` (or ``psycopg/``) there would
replace the driver. :func:`import_drivers` imports :mod:`runtree.stores` (and so ``sqlite3``)
and ``psycopg`` when installed, with the working folder left out of the path meanwhile.
"""

from __future__ import annotations

import importlib
import os
import sys

__all__ = ["import_drivers"]


def import_drivers() -> None:
    """Import the store drivers from the interpreter's own path (idempotent)."""
    here = {"", ".", os.getcwd()}
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if p not in here]
    try:
        importlib.import_module("runtree.stores")
        try:
            importlib.import_module("psycopg")
        except ImportError:
            pass  # optional: PostgresStore says what to install when it is used
    finally:
        sys.path[:] = saved
