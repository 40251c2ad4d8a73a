"""The public surface: sorted __all__, every name importable, light import, lazy version."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

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
