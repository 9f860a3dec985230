"""pytest plugin: a fresh scope per test, presets and tags by marker, tree assertions.

Installed with runtree (entry point ``pytest11``), so the fixtures are there in every
test session; nothing happens unless a test asks for them::

    @pytest.mark.runtree(presets=[rt.preset(db, fake_db)], tags=[tenant("acme")])
    async def test_lists_users(rt_ctx: rt.ExecutionContext) -> None:
        assert await rt_ctx.exec(list_users) == ["alice"]
        assert_tree(rt_ctx, ("test_lists_users", "running", [("list_users", "completed")]))

- ``rt_scope``: a new :class:`runtree.Scope` for the test, built from the ``runtree``
  marker, disposed when the test ends (for an ``async def`` test: in the test's own event
  loop, right after its body, whichever plugin runs it — pytest-asyncio, anyio or another).
- ``rt_ctx``: a root context of ``rt_scope`` named after the test.
- An ``async def`` test that uses them and that no async plugin claims (no ``asyncio``,
  ``anyio`` or ``trio`` marker) runs in an event loop of its own: runtree alone is enough.
- ``assert_tree(ctx_or_run, expected)``: compare an execution tree with a nested
  ``(name, status, [children])`` shape.

See docs/testing.md.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Final, final

import pytest

from ._context import ExecutionContext
from ._defs import Preset
from ._execution import Execution
from ._extensions import Extension
from ._json import shown
from ._scope import Scope, create_scope
from ._tags import Tagged

__all__ = ["TreeRecorder", "assert_tree", "rt_ctx", "rt_scope"]

MARKER: Final = "runtree"
_OPTIONS: Final = frozenset({"presets", "tags", "store", "extensions"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(presets=(), tags=(), store=None, extensions=()): how the rt_scope "
        "fixture builds the test's scope (store: 'memory', 'sqlite', a URL or a store)",
    )


# Markers by which another plugin claims an ``async def`` test (pytest-asyncio adds its
# own to every async test in its auto mode).
_ASYNC_RUNNERS: Final = ("asyncio", "anyio", "trio")


@pytest.hookimpl
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test that uses ``rt_scope`` or ``rt_ctx`` and that no async
    plugin claims (no ``asyncio``, ``anyio`` or ``trio`` marker) in an event loop of its
    own, as ``asyncio.run`` does: such a test needs no plugin besides runtree's. Any other
    test is left to the plugins that run it."""
    if "rt_scope" not in pyfuncitem.fixturenames or not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    if any(pyfuncitem.get_closest_marker(name) for name in _ASYNC_RUNNERS):
        return None
    async_fixtures = [
        name
        for name, defs in pyfuncitem._fixtureinfo.name2fixturedefs.items()
        if defs
        and (
            inspect.iscoroutinefunction(defs[-1].func) or inspect.isasyncgenfunction(defs[-1].func)
        )
    ]
    if async_fixtures:
        # They ran in another plugin's event loop: this test's own loop could not use
        # what they made (a queue, a connection), nor dispose the scope they touched.
        pytest.fail(
            f"{pyfuncitem.name} uses async fixtures ({', '.join(sorted(async_fixtures))}) "
            "but no async plugin runs it: mark it (@pytest.mark.asyncio with "
            "pytest-asyncio, @pytest.mark.anyio) so the test and its fixtures share one "
            "event loop",
            pytrace=False,
        )
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


# -- recording the tree -------------------------------------------------------------


@final
class TreeRecorder(Extension):
    """Remembers every context of a scope with its children, in start order, so that
    :func:`assert_tree` can walk a tree whose execs have finished (a context forgets its
    children when they close). ``rt_scope`` adds one; add it yourself to other scopes."""

    def __init__(self) -> None:
        self._children: dict[ExecutionContext, list[ExecutionContext]] = {}

    def on_context_open(self, ctx: ExecutionContext) -> None:
        if ctx.parent is not None:
            self._children.setdefault(ctx.parent, []).append(ctx)

    def children(self, ctx: ExecutionContext) -> list[ExecutionContext]:
        """The children ``ctx`` has had so far (running and closed), in start order."""
        return list(self._children.get(ctx, ()))


# -- fixtures -----------------------------------------------------------------------


@final
class _TestScope:
    """The scope of one test, and the store the plugin opened for it (if any)."""

    __slots__ = ("owned_store", "scope")

    def __init__(self, scope: Scope, owned_store: Any) -> None:
        self.scope = scope
        self.owned_store = owned_store

    async def finish(self) -> None:
        try:
            await self.scope.dispose()
        finally:
            store, self.owned_store = self.owned_store, None
            if store is not None:
                await store.aclose()

    @property
    def finished(self) -> bool:
        return self.scope.disposed and self.owned_store is None


def _marker_options(node: pytest.Item) -> dict[str, Any]:
    options: dict[str, Any] = {}
    # The closest marker wins per option: a test's marker over its class's or module's.
    for mark in reversed(list(node.iter_markers(MARKER))):
        if mark.args:
            msg = f"@pytest.mark.{MARKER} takes keyword arguments only (got {shown(mark.args)})"
            raise TypeError(msg)
        unknown = set(mark.kwargs) - _OPTIONS
        if unknown:
            msg = (
                f"@pytest.mark.{MARKER} got unknown option(s) {sorted(unknown)}; "
                f"it takes {sorted(_OPTIONS)}"
            )
            raise TypeError(msg)
        options.update(mark.kwargs)
    return options


def _open_store(spec: object, request: pytest.FixtureRequest) -> tuple[Any, Any]:
    """The store for ``create_scope`` and the one to close after the test (if ours)."""
    if spec is None:
        return None, None
    if isinstance(spec, str):
        from .stores import InMemoryStore, SqliteStore, from_url

        if spec == "memory":
            store: Any = InMemoryStore()
        elif spec == "sqlite":
            tmp = request.getfixturevalue("tmp_path")
            store = SqliteStore(tmp / "runtree.db")
        elif "://" in spec:
            store = from_url(spec)
        else:
            msg = (
                f"@pytest.mark.{MARKER}(store={spec!r}): use 'memory', 'sqlite' (a file in "
                "the test's tmp_path), a store URL or a store object"
            )
            raise ValueError(msg)
        return store, store
    return spec, None  # the test's own store: the test closes it


def _checked(values: object, kind: type, option: str, example: str) -> list[Any]:
    if values is None:
        return []
    if not isinstance(values, Iterable) or isinstance(values, (str, bytes)):
        msg = f"@pytest.mark.{MARKER}({option}=...) takes a list (got {shown(values)})"
        raise TypeError(msg)
    items = list(values)
    for item in items:
        if not isinstance(item, kind):
            msg = f"@pytest.mark.{MARKER}({option}=...) takes {example} (got {shown(item)})"
            raise TypeError(msg)
    return items


@pytest.fixture
def rt_scope(request: pytest.FixtureRequest) -> Iterator[Scope]:
    """A fresh :class:`runtree.Scope` for this test, disposed when it ends."""
    options = _marker_options(request.node)
    presets = _checked(options.get("presets"), Preset, "presets", "rt.preset(target, value)")
    tags = _checked(options.get("tags"), Tagged, "tags", "bound tags like tenant('acme')")
    extensions = _checked(options.get("extensions"), Extension, "extensions", "extensions")
    store, owned = _open_store(options.get("store"), request)
    scope = create_scope(
        presets=presets, tags=tags, extensions=[*extensions, TreeRecorder()], store=store
    )
    state = _TestScope(scope, owned)
    item = request.node
    test = None
    if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
        # Dispose in the test's own loop and task, whichever plugin runs it: the scope's
        # contexts and atoms (connections, tasks) belong to that loop. Plugins call
        # ``item.obj`` when the test runs, after fixtures are set up.
        test = item.obj
        item.obj = _disposing(test, state)
    try:
        yield scope
        if not state.finished:
            # A sync test, or an async test that never ran (a later fixture failed).
            _run_sync(state.finish())
    finally:
        if test is not None:
            # The test item lives as long as the session: it must not keep the scope
            # (and through it every context and its data) once the test is over.
            item.obj = test


def _disposing(test: Callable[..., Awaitable[object]], state: _TestScope) -> Any:
    @functools.wraps(test)
    async def run_then_dispose(*args: object, **kwargs: object) -> object:
        try:
            result = await test(*args, **kwargs)
        except BaseException as exc:
            try:
                await state.finish()
            except Exception as failure:
                exc.add_note(f"and disposing rt_scope failed: {shown(failure)}")
            raise
        await state.finish()
        return result

    return run_then_dispose


def _run_sync(work: Awaitable[None]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(work)  # type: ignore[arg-type]
        return
    work.close()  # type: ignore[attr-defined]
    msg = (
        "rt_scope cannot be disposed from inside a running event loop: use it from an "
        "async def test (or a sync test that starts no loop of its own)"
    )
    raise RuntimeError(msg)


@pytest.fixture
def rt_ctx(rt_scope: Scope, request: pytest.FixtureRequest) -> ExecutionContext:
    """A root context of ``rt_scope`` named after the test; it closes with the scope."""
    return rt_scope.create_context(name=request.node.name)


# -- assert_tree --------------------------------------------------------------------


def assert_tree(ctx_or_run: object, expected: Sequence[Any]) -> None:
    """Assert that a tree has the shape ``expected``.

    ``expected`` is ``(name, status)`` for a node without children, or ``(name, status,
    [child, ...])`` with the children in start order. ``...`` matches any name or status,
    and ``(name, status, ...)`` any children.

    ``ctx_or_run`` is an :class:`runtree.ExecutionContext` of a scope with a
    :class:`TreeRecorder` (``rt_scope`` has one), an :class:`runtree.Execution` (its
    root context), or a recorded run tree: any object with ``nodes`` (each with
    ``name``, ``status`` and ``parent_id``; the root first) and ``children(node)``.

    Raises:
        AssertionError: naming the first node that differs, with both trees.
    """
    if isinstance(ctx_or_run, Execution):
        ctx_or_run = ctx_or_run.context
    if isinstance(ctx_or_run, ExecutionContext):
        # (found among the scope's extensions: a module-level map from scopes to their
        # recorders would keep every scope alive through the contexts it records)
        recorder = next(
            (x for x in ctx_or_run.scope._extensions if isinstance(x, TreeRecorder)), None
        )
        if recorder is None:
            msg = (
                "assert_tree needs the context's scope to record its tree: use the "
                "rt_scope fixture, or create_scope(extensions=[runtree.testing.TreeRecorder()])"
            )
            raise TypeError(msg)
        actual = _shape(
            ctx_or_run,
            lambda c: c.name,
            lambda c: c.details.status,
            recorder.children,
        )
    elif hasattr(ctx_or_run, "nodes") and callable(getattr(ctx_or_run, "children", None)):
        run: Any = ctx_or_run
        nodes = list(run.nodes)
        if not nodes:
            msg = "assert_tree: the run tree has no nodes"
            raise AssertionError(msg)
        ids = {getattr(n, "node_id", None) for n in nodes}
        roots = [n for n in nodes if getattr(n, "parent_id", None) not in ids]
        actual = _shape(
            roots[0] if roots else nodes[0],
            lambda n: n.name,
            lambda n: n.status,
            lambda n: list(run.children(n)),
        )
    else:
        msg = (
            "assert_tree takes an ExecutionContext or a run tree (an object with nodes "
            f"and children(node)), got {shown(ctx_or_run)}"
        )
        raise TypeError(msg)
    problem = _compare(actual, expected, ())
    if problem is not None:
        raise AssertionError(
            f"{problem}\nexpected:\n{_render(expected)}\nactual:\n{_render(actual)}"
        )


def _shape(
    node: Any,
    name: Callable[[Any], str],
    status: Callable[[Any], str],
    children: Callable[[Any], list[Any]],
) -> tuple[Any, ...]:
    # Iterative: a tree may be deeper than the recursion limit.
    root: list[Any] = [name(node), status(node), []]
    stack = [(node, root)]
    while stack:
        current, out = stack.pop()
        for child in children(current):
            entry: list[Any] = [name(child), status(child), []]
            out[2].append(entry)
            stack.append((child, entry))
    return _freeze(root)


def _freeze(node: list[Any]) -> tuple[Any, ...]:
    return (node[0], node[1], [_freeze(c) for c in node[2]])


def _compare(
    actual: tuple[Any, ...],
    expected: Sequence[Any],
    path: tuple[str, ...],
    label: str | None = None,
) -> str | None:
    if not isinstance(expected, (tuple, list)) or len(expected) not in (2, 3):
        where = " > ".join(path) or "the root"
        return (
            f"under {where}: expected nodes are (name, status[, children]), got {shown(expected)}"
        )
    name, status, children = actual
    label = str(name) if label is None else label
    here = " > ".join((*path, label))
    want_name, want_status = expected[0], expected[1]
    if want_name is not ... and want_name != name:
        return f"at {here}: expected a node named {want_name!r}, got {name!r}"
    if want_status is not ... and want_status != status:
        return f"at {here}: expected status {shown(want_status)}, got {status!r}"
    want_children = expected[2] if len(expected) == 3 else []
    if want_children is ...:
        return None
    names = [c[0] for c in children]
    if len(want_children) != len(children):
        return f"at {here}: expected {_count(len(want_children))}, got {len(children)} {names}"
    for i, (got, want) in enumerate(zip(children, want_children, strict=True)):
        step = str(got[0])
        if names.count(got[0]) > 1:  # same-named siblings: say which one
            step += f"[{names[:i].count(got[0])}]"
        problem = _compare(got, want, (*path, label), step)
        if problem is not None:
            return problem
    return None


def _count(n: int) -> str:
    return "1 child" if n == 1 else f"{n} children"


def _shown(value: object) -> str:
    return "..." if value is ... else repr(value)


def _render(node: Any, indent: int = 1) -> str:
    pad = "  " * indent
    if not isinstance(node, (tuple, list)) or len(node) < 2:
        return f"{pad}{node!r}"
    head = f"{pad}{_shown(node[0])} {_shown(node[1])}"
    kids = node[2] if len(node) == 3 else []
    if kids is ...:
        return f"{head} ..."
    return "\n".join([head, *(_render(k, indent + 1) for k in kids)])
