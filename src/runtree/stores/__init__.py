"""Durable stores for journals and sessions.

- :class:`InMemoryStore` — one process, nothing on disk (tests, demos).
- :class:`SqliteStore` — one file on one machine, many processes (the default).
- :class:`PostgresStore` — one database, many machines (``pip install 'runtree[postgres]'``).

:func:`from_url` opens any of them from a URL in SQLAlchemy's form; with no URL it reads
``RUNTREE_STORE`` (default ``sqlite:///.runtree/runtree.db`` in the working directory).
Rows hold JSON text only, written with bound parameters only.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, unquote, urlencode

from .._json import shown
from ..errors import StoreError
from ._base import CommandRecord as CommandRecord
from ._base import SessionBackend as SessionBackend
from ._base import SessionRecord as SessionRecord
from ._base import Store as Store
from ._memory import InMemoryStore as InMemoryStore
from ._postgres import PostgresStore as PostgresStore
from ._secrets import passwords
from ._secrets import redact as redact
from ._sqlite import Durability as Durability
from ._sqlite import SqliteStore as SqliteStore

__all__ = [
    "DEFAULT_URL",
    "ENV_VAR",
    "CommandRecord",
    "Durability",
    "InMemoryStore",
    "PostgresStore",
    "SessionBackend",
    "SessionRecord",
    "SqliteStore",
    "Store",
    "default_url",
    "from_url",
    "redact",
]

for _name in ("InMemoryStore", "SqliteStore", "PostgresStore", "Store"):
    globals()[_name].__module__ = "runtree.stores"
del _name

ENV_VAR = "RUNTREE_STORE"
DEFAULT_URL = "sqlite:///.runtree/runtree.db"

_FORMS = (
    "memory://, sqlite:///relative/path.db, sqlite:////absolute/path.db or "
    "postgresql://user:password@host:5432/dbname"
)
_SQLITE_OPTIONS = ("durability", "synchronous", "lease", "timeout", "offload")
_PG_OPTIONS = ("schema", "lease", "timeout", "connect_timeout", "reconnect")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def default_url() -> str:
    """``$RUNTREE_STORE``, else ``sqlite:///.runtree/runtree.db``."""
    return os.environ.get(ENV_VAR) or DEFAULT_URL


def _bad(url: str, why: str) -> StoreError:
    shown = redact(url)
    return StoreError(f"Cannot open store URL {shown!r}: {why}. Write one of: {_FORMS}")


def _number(url: str, name: str, text: str, *, positive: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad(url, f"option {name}={text!r} is not a number of seconds") from None
    if positive and not value > 0:
        raise _bad(url, f"option {name}={text!r} must be a number of seconds > 0")
    if not value >= 0 or value == float("inf"):
        raise _bad(url, f"option {name}={text!r} must be a finite number of seconds >= 0")
    return value


def _flag(url: str, name: str, text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise _bad(url, f"option {name}={text!r} must be one of 1, 0, true, false, yes, no, on, off")


def from_url(url: str | None = None, *, create: bool = True) -> Store:
    """Open the store a URL names (SQLAlchemy's form).

    - ``memory://`` — a new :class:`InMemoryStore`.
    - ``sqlite:///relative.db`` (relative to the working directory) or
      ``sqlite:////absolute/path.db``; options ``?durability=normal|full``, ``lease=``,
      ``timeout=`` (seconds), ``offload=0|1``.
    - ``postgresql://user:pw@host:port/db`` (also ``postgres://``,
      ``postgresql+psycopg://``); options ``?schema=``, ``lease=``; other query
      parameters go to libpq.

    Args:
        url: The URL; ``None`` reads ``RUNTREE_STORE`` (default
            ``sqlite:///.runtree/runtree.db``).
        create: ``False``: open only a store that exists (a reader's way: a SQLite file
            that is missing or holds no runtree tables, or a PostgreSQL schema without
            them, is a ``StoreError`` and nothing is created).

    Raises:
        StoreError: the URL is malformed or names an unknown kind of store, a driver is
            missing (the message says what to install), or the database cannot be opened.
    """
    if url is None:
        url = default_url()
    if not isinstance(url, str):
        msg = f"from_url() takes a str URL (got {shown(url)})"
        raise TypeError(msg)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.strip().lower()
    if not sep:
        if url.startswith("sqlite:"):
            raise _bad(url, "a sqlite URL has three slashes before a relative path")
        raise _bad(url, "it has no scheme")
    body, _, query = rest.partition("?")
    try:
        params = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        # (Shown only when the URL holds no password: a '?' in an unencoded password
        # splits it, and the query would show its tail.)
        shown_query = "" if passwords(url) else f" {redact('?' + query)[1:]!r}"
        raise _bad(url, f"its query{shown_query} is malformed") from None
    if scheme == "memory":
        unknown = set(params) - {"lease"}
        if body or unknown:
            raise _bad(url, "memory:// takes no path and only ?lease=")
        if "lease" in params:
            return InMemoryStore(lease=_number(url, "lease", params["lease"], positive=True))
        return InMemoryStore()
    if scheme in ("sqlite", "sqlite3", "sqlite+pysqlite"):
        return _open_sqlite(url, body, params, create)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg3"):
        return _open_postgres(url, body, params, create)
    raise _bad(url, f"unknown scheme {scheme!r}")


def _open_sqlite(url: str, body: str, params: dict[str, str], create: bool) -> Store:
    unknown = sorted(set(params) - set(_SQLITE_OPTIONS))
    if unknown:
        raise _bad(url, f"unknown option(s) {', '.join(unknown)} (known: {_SQLITE_OPTIONS})")
    if not body.startswith("/") and body:
        raise _bad(url, "a sqlite URL has a host part; write sqlite:///path (three slashes)")
    path = unquote(body[1:])
    if not path.strip():
        # What sqlite:///$UNSET expands to: never a silent in-memory (non-durable) store.
        raise _bad(
            url,
            "its path is empty; write sqlite:///relative.db, or memory:// for a store in memory",
        )
    lease = _number(url, "lease", params["lease"], positive=True) if "lease" in params else None
    if path == ":memory:":
        return InMemoryStore() if lease is None else InMemoryStore(lease=lease)
    durability = (params.get("durability") or params.get("synchronous") or "normal").lower()
    if durability not in ("normal", "full"):
        raise _bad(url, f"durability={durability!r} must be normal or full")
    offload = _flag(url, "offload", params["offload"]) if "offload" in params else False
    timeout = _number(url, "timeout", params["timeout"]) if "timeout" in params else 10.0
    return SqliteStore(
        path,
        durability="full" if durability == "full" else "normal",
        lease=30.0 if lease is None else lease,
        timeout=timeout,
        offload=offload,
        create=create,
    )


def _open_postgres(url: str, body: str, params: dict[str, str], create: bool) -> Store:
    if not body:
        raise _bad(url, "a postgresql URL needs a host or a database")
    ours = {k: params.pop(k) for k in _PG_OPTIONS if k in params}
    dsn = "postgresql://" + body + (("?" + urlencode(params)) if params else "")

    def seconds(name: str, default: float, positive: bool = True) -> float:
        return _number(url, name, ours[name], positive=positive) if name in ours else default

    return PostgresStore(
        dsn,
        schema=ours.get("schema", "runtree"),
        lease=seconds("lease", 30.0),
        timeout=seconds("timeout", 30.0),
        connect_timeout=seconds("connect_timeout", 10.0),
        reconnect=seconds("reconnect", 15.0, positive=False),
        create=create,
    )
