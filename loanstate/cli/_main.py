"""The ``loanstate`` command: demo, check, diagram, audit, gateway, deliver, outbox.

Exit status, for every command: 0 when all is well, 1 when the command found
something (problems in a definition, findings in a history, parked loans, a
broken guarantee in the demo), 2 for a usage or input error (a missing or
unreadable file, a bad definition given as input, an unreachable database,
missing credentials). Input errors print one line, never a traceback; the
``--debug`` flag (on any command) shows the traceback.
"""

from __future__ import annotations

import os
import sys

import click

from loanstate._errors import LoanStateError, UnreadableInput
from loanstate.cli._common import (
    EXIT_USAGE,
    debug_option,
    first_line,
)
from loanstate.cli.audit import audit
from loanstate.cli.console import console
from loanstate.cli.db import db, prune
from loanstate.cli.deliver import deliver
from loanstate.cli.demo import demo
from loanstate.cli.gateway import gateway
from loanstate.cli.importing import import_
from loanstate.cli.lifecycle import check, diagram
from loanstate.cli.outbox import outbox

__all__ = ["cli", "main"]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Example: loanstate demo --loans 500",
)
@click.version_option(package_name="loanstate", prog_name="loanstate")
@debug_option
def cli() -> None:
    """Legal loan status changes, recorded and notified to Alibaba exactly once in effect.

    Exit status: 0 ok, 1 findings, 2 usage or input error (--debug shows a traceback).
    """


# One line per command: what the command line offers is read here, in one place.
for _command in (demo, check, diagram, audit, import_, gateway, deliver, outbox, db, console):
    cli.add_command(_command)
outbox.add_command(prune)


# -- entry point ---------------------------------------------------------------------


def _input_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [LoanStateError, OSError, UnicodeError]
    try:
        from sqlalchemy.exc import SQLAlchemyError

        types.append(SQLAlchemyError)
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        pass
    return tuple(types)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; exits with its status (0 ok, 1 findings, 2 usage or input error)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("LOANSTATE_DEBUG") == "1"
    try:
        status = cli.main(args=args, prog_name="loanstate", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.Abort:
        click.echo("loanstate: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        if debug:
            raise
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("loanstate: interrupted", err=True)
        sys.exit(130)
    except _input_error_types() as exc:
        if debug:
            raise
        message = first_line(exc)
        if isinstance(exc, UnreadableInput | LoanStateError):
            click.echo(f"loanstate: error: {message}", err=True)
        else:
            click.echo(f"loanstate: error: {type(exc).__name__}: {message}", err=True)
        sys.exit(EXIT_USAGE)
    except Exception as exc:
        if debug:
            raise
        click.echo(
            f"loanstate: internal error: {type(exc).__name__}: {first_line(exc)} (run with --debug for the traceback)",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    sys.exit(status if isinstance(status, int) else 0)
