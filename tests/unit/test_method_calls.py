"""The current-context variable's methods are called as methods wherever runtree uses it.

CPython 3.11 compiles ``name.method(...)`` as an attribute load plus a call (a bound
method built at every call) when ``name`` was bound by an import in that module, since it
expects a module there; a name bound by assignment gets a method call. The hot paths
(every exec on the full path, every stream item, every log record) call ``set``/``reset``/
``get`` on ``_current``, so it must not be imported by name where it is called."""

from __future__ import annotations

import dis
import importlib
import pkgutil
import types
from contextvars import ContextVar

import runtree


def _attribute_calls(code: types.CodeType, module: types.ModuleType) -> list[str]:
    found = []
    ins = list(dis.get_instructions(code))
    for a, b, c in zip(ins, ins[1:], ins[2:], strict=False):
        # (``set_current = _current.set``, a bound method kept for a loop, is fine)
        if (
            a.opname == "LOAD_GLOBAL"
            and b.opname == "LOAD_ATTR"
            and c.opname != "STORE_FAST"
            and isinstance(module.__dict__.get(str(a.argval)), ContextVar)
        ):
            found.append(f"{module.__name__}:{code.co_name}: {a.argval}.{b.argval}")
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found += _attribute_calls(const, module)
    return found


def test_context_variables_are_called_as_methods() -> None:
    found: list[str] = []
    checked = 0
    for info in pkgutil.walk_packages(runtree.__path__, "runtree."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an extra that is not installed
            continue
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        with open(path, encoding="utf-8") as f:
            code = compile(f.read(), path, "exec")
        checked += 1
        found += _attribute_calls(code, module)
    assert checked > 20
    assert found == []
