"""Tags: typed ambient values bound on a scope, a context or an exec call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Literal, TypeAlias, TypeVar, final, overload

from ._json import describe_error, shown
from ._json import problem as _problem
from .errors import ParseError, SerializationError

__all__ = ["Tag", "TagDep", "Tagged", "tag", "tags"]

T = TypeVar("T")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()
# Tag views also map (ALL_VALUES, tag) to every visible value of the tag, nearest first.
ALL_VALUES = _Missing()


class Tag(Generic[T]):
    """A typed key for an ambient value. Create with :func:`runtree.tag`.

    Calling a tag binds a value: ``tenant("acme")`` is a :class:`Tagged` to pass as
    ``tags=[...]`` to a scope, a context or an exec.
    """

    __slots__ = ("_default", "_parse", "label", "serializable")

    def __init__(
        self,
        label: str,
        default: T | _Missing,
        parse: Callable[[Any], T] | None,
        serializable: bool,
    ) -> None:
        self.label = label
        self._default = default
        self._parse = parse
        self.serializable = serializable

    @property
    def has_default(self) -> bool:
        return self._default is not MISSING

    @property
    def default(self) -> T:
        """The default value; ``LookupError`` when the tag has none."""
        if isinstance(self._default, _Missing):
            msg = f"Tag {self.label!r} has no default"
            raise LookupError(msg)
        return self._default

    def check(self, value: object) -> T:
        """Parse and validate a value for this tag (what binding and ``ctx.set`` do)."""
        if self._parse is not None:
            try:
                value = self._parse(value)
            except ParseError:
                raise
            except Exception as exc:
                raise ParseError("tag", self.label, describe_error(exc)) from exc
        # A str is always strict JSON: skip the walk (and the message built for it) on
        # the most common value, bound on every request by the ASGI middleware.
        if self.serializable and type(value) is not str:
            check_json(value, f"Value of serializable tag {self.label!r}")
        return value  # type: ignore[return-value]

    def __call__(self, value: T) -> Tagged[T]:
        return Tagged(self, self.check(value))

    def __repr__(self) -> str:
        return f"Tag({self.label!r})"


@final
class ParsedTag(Tag[T]):
    """A tag with ``parse=``: binding it takes the raw value its parse accepts
    (``retries("5")`` for ``tag("retries", parse=int)``) and stores the parsed one."""

    __slots__ = ()

    def __call__(self, value: object) -> Tagged[T]:  # what parse accepts, checked by it
        return Tagged(self, self.check(value))


@final
class Tagged(Generic[T]):
    """A tag bound to a value: ``tenant("acme")``."""

    __slots__ = ("tag", "value")

    def __init__(self, tag: Tag[T], value: T) -> None:
        self.tag = tag
        self.value = value

    def __repr__(self) -> str:
        return f"{self.tag.label}={self.value!r}"


TagMode: TypeAlias = Literal["required", "optional", "all"]


@final
class TagDep(Generic[T]):
    """A dependency on a tag, made by ``tags.required/optional/all``."""

    __slots__ = ("mode", "tag")

    def __init__(self, tag: Tag[object], mode: TagMode) -> None:
        self.tag = tag
        self.mode = mode

    def __repr__(self) -> str:
        return f"tags.{self.mode}({self.tag.label!r})"


class _TagsNamespace:
    """``runtree.tags``: build dependencies on tags for ``deps={...}``."""

    __slots__ = ()

    def required(self, t: Tag[T]) -> TagDep[T]:
        """The nearest value; :class:`MissingTagError` when there is none."""
        return TagDep(t, "required")  # type: ignore[arg-type]

    def optional(self, t: Tag[T]) -> TagDep[T | None]:
        """The nearest value, or ``None``."""
        return TagDep(t, "optional")  # type: ignore[arg-type]

    def all(self, t: Tag[T]) -> TagDep[list[T]]:
        """Every value visible, nearest first (the default is not included)."""
        return TagDep(t, "all")  # type: ignore[arg-type]


tags = _TagsNamespace()


@overload
def tag(label: str, *, parse: Callable[[Any], T], serializable: bool = False) -> ParsedTag[T]: ...
@overload
def tag(
    label: str,
    *,
    default: T,
    parse: Callable[[Any], T],
    serializable: bool = False,
) -> ParsedTag[T]: ...
@overload
def tag(
    label: str,
    *,
    default: T,
    parse: None = None,
    serializable: bool = False,
) -> Tag[T]: ...
@overload
def tag(label: str, *, parse: None = None, serializable: bool = False) -> Tag[Any]: ...
def tag(
    label: str,
    *,
    default: object = MISSING,
    parse: Callable[[Any], object] | None = None,
    serializable: bool = False,
) -> Tag[Any]:
    """Define a tag.

    Args:
        label: A name for messages and traces (``"tenant"``).
        default: The value when nothing binds the tag.
        parse: Called on every bound value; its result is stored. An exception becomes a
            :class:`ParseError` naming the tag.
        serializable: The value must be strict JSON (checked on every bind).

    To type a tag without ``parse`` or ``default``, annotate it:
    ``tenant: Tag[str] = tag("tenant")``.
    """
    if not isinstance(label, str) or not label:
        msg = f"tag() needs a non-empty str label (got {shown(label)})"
        raise TypeError(msg)
    t: Tag[Any] = (ParsedTag if parse is not None else Tag)(label, MISSING, parse, serializable)
    if not isinstance(default, _Missing):
        t._default = t.check(default)
    return t


def check_json(value: object, what: str) -> None:
    """Raise :class:`SerializationError` unless ``value`` is strict JSON."""
    reason = _problem(value)
    if reason is not None:
        raise SerializationError(what, reason)
