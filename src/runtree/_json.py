"""Strict JSON and safe text, shared by the journal, sessions and stores.

- :func:`problem` — why a value is not strict JSON (``None`` when it is): non-str dict
  keys, NaN/infinity, objects, nesting past 200 levels, and integers too long for
  ``str()`` (``sys.set_int_max_str_digits``; ``json.dumps`` raises ``ValueError`` on them).
- :func:`dumps` — compact strict JSON text, or :class:`SerializationError` naming the value.
- :func:`check_name` — the one rule for keys, ids and names a store writes: a non-empty
  ``str`` of at most :data:`MAX_NAME_BYTES` UTF-8 bytes, with no NUL and no lone surrogate.
- :func:`readable` / :func:`error_text` — text that every store accepts, for messages that
  are recorded (a lone surrogate or a NUL is written as its escape; a ``__str__`` that raises
  gives a placeholder naming the exception's type). They never raise.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable

from .errors import SerializationError, StoreError

__all__ = [
    "MAX_NAME_BYTES",
    "check_name",
    "dumps",
    "error_text",
    "jsonable",
    "problem",
    "readable",
]

# A journal row's primary key is (tree id, key): PostgreSQL's btree entries hold at most
# ≈ 2,700 bytes, so each part is kept well under half of that on every store.
MAX_NAME_BYTES = 1024
# Below this many bits an int has fewer than 4,300 decimal digits (CPython's default limit).
_SAFE_INT_BITS = 14_000


quote: Callable[[str], str] = json.encoder.encode_basestring_ascii
"""A str as a JSON string literal (ASCII, escapes): what :func:`compact` writes for it."""


def _encoder(sort_keys: bool) -> Callable[[object], str]:
    """Compact strict JSON (no NaN or infinity, ASCII) as one function. It calls the C
    encoder the ``json`` module builds inside every ``JSONEncoder.encode`` call once, so
    a small dict costs ≈ 0.5 µs instead of ≈ 1.3 µs; the text is the same. No circular
    check: a value that contains itself ends in a ``RecursionError``, as a too-deep one
    does (callers treat both as "not JSON")."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C encoder
        return json.JSONEncoder(sort_keys=sort_keys, separators=(",", ":"), allow_nan=False).encode
    chunks = make(None, _not_json, quote, None, ":", ",", sort_keys, False, False)
    join = "".join

    def encode(value: object) -> str:
        if type(value) is str:
            return quote(value)
        return join(chunks(value, 0))

    return encode


def _not_json(value: object) -> object:
    msg = f"Object of type {type(value).__name__} is not JSON serializable"
    raise TypeError(msg)


compact = _encoder(sort_keys=False)
"""Compact strict JSON text of a value (``TypeError``/``ValueError``/``RecursionError``
when it is not JSON); see :func:`problem` for what else strict means."""
canonical = _encoder(sort_keys=True)
""":func:`compact` with sorted keys: the same value always gives the same text."""


def problem(value: object, depth: int = 0) -> str | None:
    """Why ``value`` is not strict JSON, or ``None`` when it is."""
    if type(value) is dict and depth < 200:
        # The common case, a dict of plain values: its leaves are checked inline (no
        # call per leaf); anything else goes through the general rules below.
        isfinite = math.isfinite
        for k, v in value.items():
            if type(k) is not str and not isinstance(k, str):
                return f"dict key {readable(repr(k), 80)} is not a str"
            t = type(v)
            if t is str or t is bool or v is None:
                continue
            if t is int and v.bit_length() < _SAFE_INT_BITS:
                continue
            if t is float and isfinite(v):
                continue
            found = problem(v, depth + 1)
            if found is not None:
                return found
        return None
    if depth > 200:
        return "nested too deeply"
    if value is None or isinstance(value, (str, bool)):
        return None
    if isinstance(value, int):
        return None if value.bit_length() < _SAFE_INT_BITS else _int_problem(value)
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} is not a finite number"
    if isinstance(value, (list, tuple)):
        for item in value:
            found = problem(item, depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"dict key {readable(repr(k), 80)} is not a str"
            found = problem(v, depth + 1)
            if found is not None:
                return found
        return None
    return f"{type(value).__name__} value {shown(value, 80)} is not JSON"


def _int_problem(value: int) -> str | None:
    try:
        str(value)
    except ValueError:
        limit = sys.get_int_max_str_digits()
        return (
            f"an int of {value.bit_length()} bits has more than {limit} decimal digits "
            "(sys.set_int_max_str_digits); store it as a str"
        )
    return None


def _repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} whose repr() raised>"


def jsonable(value: object) -> object:
    """A copy of ``value`` for showing (not storing): non-finite floats become their
    ``repr``, dict keys ``str``, tuples lists; anything else is left as it is."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def dumps(value: object, what: str) -> str:
    """Compact strict JSON text of ``value``.

    Raises:
        SerializationError: ``value`` is not strict JSON (``what`` names it).
    """
    reason = problem(value)
    if reason is None:
        try:
            return compact(value)
        except (TypeError, ValueError, RecursionError) as exc:
            reason = f"json.dumps refused it ({type(exc).__name__})"
    raise SerializationError(what, reason)


def readable(text: str, limit: int | None = None) -> str:
    """``text`` with lone surrogates and NULs written as escapes (every store accepts it),
    cut to ``limit`` characters."""
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text


def error_text(exc: BaseException) -> str:
    """``str(exc)`` as :func:`readable` text; never raises (a ``__str__`` that raises gives
    a placeholder naming the type)."""
    try:
        text = str(exc)
    except Exception as inner:  # the user's __str__ is broken: record that, not its error
        try:
            detail = type(inner).__name__
        except Exception:  # pragma: no cover - type() of an exception always has a name
            detail = "an error"
        return f"<{type(exc).__name__}: str() raised {detail}>"
    if not isinstance(text, str):  # pragma: no cover - str() returns a str
        return f"<{type(exc).__name__}>"
    return readable(text)


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel() -> int:
    """The ``stacklevel`` of :func:`warnings.warn` that points at the first frame outside
    runtree (the user's line that led here), for a warning raised deep in runtree."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def shown(value: object, limit: int | None = 200) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters; never raises (a value
    whose ``repr`` raises, or an int too long to print, is shown by its type)."""
    return readable(_repr(value), limit)


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of an error (a ParseError's reason, a log line); never raises."""
    text = error_text(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def type_name(exc: BaseException) -> str:
    """The exception's qualified type name as :func:`readable` text."""
    return readable(type(exc).__qualname__)


def check_name(value: object, what: str) -> str:
    """``value`` when it is a valid key, id or name for a store, else :class:`StoreError`.

    Valid: a non-empty ``str`` of at most :data:`MAX_NAME_BYTES` UTF-8 bytes with no NUL
    and no lone surrogate. ``what`` names the thing (``"journal key"``, ``"root id"``).
    """
    if (
        type(value) is str
        and value
        and value.isascii()
        and len(value) <= MAX_NAME_BYTES
        and "\x00" not in value
    ):
        return value
    return _check_slow(value, what)


def _check_slow(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        msg = f"A {what} must be a non-empty str (got {shown(value, 80)})"
        raise StoreError(msg)
    text = shown(value, 80)
    if "\x00" in value:
        msg = f"The {what} {text} holds a NUL character, which no store accepts; remove it"
        raise StoreError(msg)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        msg = (
            f"The {what} {text} holds a lone surrogate (not valid Unicode text), which no "
            "store accepts; decode the text with errors='replace' or build the name from "
            "valid text"
        )
        raise StoreError(msg) from None
    if size > MAX_NAME_BYTES:
        msg = (
            f"The {what} {text} is {size} bytes long; a store accepts at most "
            f"{MAX_NAME_BYTES} bytes: use a shorter name (a digest of a long one)"
        )
        raise StoreError(msg)
    return value
