"""Structural guards for the exec hot path (its speed is measured in bench/, never here)."""

from __future__ import annotations

import runtree as rt


def test_exec_has_no_closure_cells() -> None:
    # A lambda inside exec that captures a local turns that local into a cell variable
    # for the whole method: every plain exec then pays for the cells (≈ 8% measured).
    assert rt.ExecutionContext.exec.__code__.co_cellvars == ()
