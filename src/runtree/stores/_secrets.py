"""Keeping a database password out of every repr, message and log line.

A PostgreSQL DSN carries its password in one of three places: the URL's user info
(``postgresql://user:pw@host/db``), a URL query parameter (``?password=pw``), or a libpq
``key=value`` connection string (``host=h password=pw`` or ``password='p w'``). :func:`redact`
masks all three; :func:`scrub` also removes the password's literal text from any message
(a driver's error may echo parts of the DSN).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["passwords", "redact", "scrub"]

MASK = "***"
# libpq key=value: value is a bare word or a single-quoted string with \' and \\ escapes.
_KV_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)")
_URL_USERINFO = re.compile(r"(?i)^([a-z][a-z0-9+.\-]*://[^:/@?#]*):([^@/?#]*)@")
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)([^&#]*)")


def redact(dsn: str) -> str:
    """``dsn`` with every password masked (URL user info, ``?password=``, ``password=``)."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}:{MASK}@", dsn)
    text = _QUERY_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
    if "://" not in text:
        text = _KV_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
    return text


def passwords(dsn: str) -> list[str]:
    """The password texts a DSN holds (raw and decoded), longest first."""
    found: set[str] = set()
    m = _URL_USERINFO.match(dsn)
    if m:
        found.update((m.group(2), unquote(m.group(2))))
    for m in _QUERY_PASSWORD.finditer(dsn):
        found.update((m.group(2), unquote(m.group(2))))
    if "://" in dsn:
        try:
            parts = urlsplit(dsn)
            if parts.password:
                found.add(parts.password)
            found.update(v for k, v in parse_qsl(parts.query) if k.lower() == "password")
        except ValueError:
            pass
    else:
        for m in _KV_PASSWORD.finditer(dsn):
            value = m.group(2)
            found.add(value)
            if value.startswith("'") and value.endswith("'") and len(value) >= 2:
                found.add(re.sub(r"\\(.)", r"\1", value[1:-1]))
    return sorted((p for p in found if p), key=len, reverse=True)


def scrub(text: str, dsn: str) -> str:
    """``text`` with the DSN's passwords removed wherever they appear."""
    text = redact(text)
    for secret in passwords(dsn):
        text = text.replace(secret, MASK)
    return text
