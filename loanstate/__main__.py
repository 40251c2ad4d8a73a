"""``python -m loanstate``: the ``loanstate`` command."""

from __future__ import annotations

from loanstate.cli import main

if __name__ == "__main__":
    main()
