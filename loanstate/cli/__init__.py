"""The ``loanstate`` command line: one module per command group, joined in ``_main``."""

from __future__ import annotations

from loanstate.cli._main import cli, main

__all__ = ["cli", "main"]
