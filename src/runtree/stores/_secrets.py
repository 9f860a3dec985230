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

__all__ = ["passwords", "redact", "scrub", "unencoded_userinfo", "without_passwords"]

MASK = "***"
# libpq key=value: value is a bare word or a single-quoted string with \' and \\ escapes.
_KV_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)")
# The user info of a URL: from the first ':' after the user to the last '@' (a password
# whose '/', '?', '#' or space was not percent-encoded must not end the match early: what is
# masked may then be more than the password, never less).
_URL_USERINFO = re.compile(r"(?i)^([a-z][a-z0-9+.\-]*://[^:/@?#\s]*):(.*)@")
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)([^&#]*)")


def redact(dsn: str) -> str:
    """``dsn`` with every password masked (URL user info, ``?password=``, ``password=``)."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}:{MASK}@", dsn)
    text = _QUERY_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
    # (also after a URL scheme: "postgresql://host=h password=pw" is no URL, but a
    # message may show it)
    return _KV_PASSWORD.sub(lambda m: m.group(1) + MASK, text)


def unencoded_userinfo(dsn: str) -> bool:
    """Whether a URL's user info (before its last ``@``) holds a ``/``, ``?``, ``#`` or
    space: a password whose reserved characters were not percent-encoded. libpq then
    reads part of it as the host, port or path — and may show it there."""
    m = _URL_USERINFO.match(dsn)
    return m is not None and any(c in m.group(2) for c in "/?# ")


def without_passwords(dsn: str) -> str:
    """``dsn`` with every password left out, found as :func:`redact` finds them (libpq
    then reads ``PGPASSWORD`` or ``~/.pgpass``)."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}@", dsn)
    text = re.sub(r"(?i)([?&])password=[^&#]*&?", r"\1", text).rstrip("?&")
    return re.sub(r"(?i)\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S*)\s*", "", text).strip()


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
    for m in _KV_PASSWORD.finditer(dsn):  # wherever they are (see redact)
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
