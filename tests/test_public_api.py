"""The public surface: sorted __all__, every name importable, light import, lazy version."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import loanstate
import loanstate.notifiers
import loanstate.testing


def test_all_is_sorted_and_importable() -> None:
    """Every public module's __all__ lists each name once and every listed name resolves.

    Its order is checked by ruff (RUF022, isort-style sorting) in test_quality.
    """
    for module in (loanstate, loanstate.notifiers, loanstate.testing):
        assert len(set(module.__all__)) == len(module.__all__), module.__name__
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"


def test_version_comes_from_metadata() -> None:
    """loanstate.__version__ is the installed distribution's version."""
    assert loanstate.__version__ == version("loanstate")


def test_import_does_not_load_http_or_sql() -> None:
    """Importing loanstate for the machine alone loads neither SQLAlchemy nor an HTTP client."""
    code = "import sys, loanstate; print(sorted(m for m in ('sqlalchemy', 'httpx2', 'aiohttp') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _loanstate_imports(module: str) -> set[str]:
    """Every loanstate module a module's source imports, type-only imports included."""
    path = Path(loanstate.__file__).parent / f"{module.removeprefix('loanstate.').replace('.', '/')}.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("loanstate"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("loanstate"):
            found.update(
                f"{node.module}.{alias.name}" if node.module == "loanstate" else node.module for alias in node.names
            )
    return found


CORE = (
    "loanstate._errors",
    "loanstate._validate",
    "loanstate._definition",
    "loanstate._checks",
    "loanstate._diagrams",
    "loanstate._events",
    "loanstate._machine",
)


def test_the_core_imports_run_one_way() -> None:
    """_errors imports nothing of loanstate; each core module imports only modules listed before it (no cycle)."""
    assert _loanstate_imports("loanstate._errors") == set()
    for index, module in enumerate(CORE):
        imported = _loanstate_imports(module)
        assert imported <= set(CORE[:index]), (module, imported - set(CORE[:index]))
    assert "loanstate._machine" not in _loanstate_imports("loanstate._events")


def test_problem_is_public_and_lives_with_the_errors() -> None:
    """loanstate.Problem is the one Problem, defined beside the errors that carry it."""
    from loanstate._definition import Problem as ReadersProblem
    from loanstate._errors import Problem as ErrorsProblem

    assert loanstate.Problem is ErrorsProblem is ReadersProblem
    assert "Problem" in loanstate.__all__
