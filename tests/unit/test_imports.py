"""The core imports only the standard library; integrations load on demand."""

from __future__ import annotations

import subprocess
import sys


def test_import_runtree_pulls_in_no_optional_dependency() -> None:
    code = (
        "import sys, runtree, runtree.stores, runtree.sessions\n"
        "heavy = sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('typer', 'rich', 'click', 'psycopg', 'pydantic'))\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_public_names_report_the_package() -> None:
    import runtree

    for name in runtree.__all__:
        obj = getattr(runtree, name)
        if isinstance(obj, type):
            assert obj.__module__ == "runtree", name


def test_errors_pickle_with_their_data() -> None:
    import pickle

    import runtree as rt

    samples = [
        rt.ContextClosedError("req"),
        rt.MissingTagError("tenant"),
        rt.ResolveError("db", ("repo", "db")),
        rt.Cancelled("job", "stop"),
        rt.ExecTimeoutError("slow", 1.5),
        rt.StepFailedError("k", "ValueError", "bad"),
        rt.SessionNotFoundError("s-1"),
        rt.DependencyCycleError(("a", "b", "a")),
    ]
    for err in samples:
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err)
        assert str(back) == str(err)
        assert vars(back) == vars(err)
