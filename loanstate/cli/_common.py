"""What every ``loanstate`` command shares: exit statuses, the input error, --debug, consoles."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

from loanstate._errors import InvalidDefinition

if TYPE_CHECKING:
    from rich.console import Console

    from loanstate._machine import LoanMachine

__all__ = [
    "EXIT_FINDINGS",
    "EXIT_USAGE",
    "InputError",
    "debug_option",
    "first_line",
    "json_text",
    "load_machine",
    "printable",
    "stderr",
    "stdout",
]

#: Exit status when a command found something (problems, findings, parked loans).
EXIT_FINDINGS: Final = 1
#: Exit status for a usage or input error.
EXIT_USAGE: Final = 2

F = TypeVar("F", bound=Callable[..., Any])


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` safe for a terminal: every control or other non-printable character shown as an escape.

    Loan numbers, statuses, descriptions and error messages come from input; an
    ESC byte in one must not reach the terminal, where it could recolour,
    retitle or rewrite what the operator reads. ``\\x1b`` is shown instead, so the
    oddity stays visible. ``keep_newlines`` keeps line ends (multi-line text).
    """
    value = str(text)
    if value.isprintable():  # the usual case: one C-level scan
        return value
    return "".join(ch if ch.isprintable() or (keep_newlines and ch == "\n") else ascii(ch)[1:-1] for ch in value)


def json_text(data: object, *, indent: int | None = None) -> str:
    """``data`` as JSON that keeps non-ASCII text readable yet carries no raw control character.

    ``json.dumps`` escapes C0 controls only; DEL, C1 controls (U+009B is a CSI
    to some terminals) and invisible format characters (bidi overrides) would
    pass raw with ``ensure_ascii=False``. They can only sit inside strings, so
    each becomes its ``\\uXXXX`` escape: the same value to any JSON reader.
    """
    text = json.dumps(data, ensure_ascii=False, indent=indent, default=str)
    if text.replace("\n", "").isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == "\n" else json.dumps(ch)[1:-1] for ch in text)


class InputError(click.ClickException):
    """Bad input: one clear line on stderr, exit status 2."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"loanstate: error: {printable(self.format_message())}", err=True)


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its class name when it has none), safe for a terminal."""
    text = str(exc).strip() or type(exc).__name__
    return printable(text.splitlines()[0])


def debug_option(fn: F) -> F:
    """``--debug`` on a command: show the traceback of an error instead of one line."""

    def remember(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            os.environ["LOANSTATE_DEBUG"] = "1"

    return click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=remember,
        help="Show the full traceback of an error.",
    )(fn)


def stdout() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def load_machine(path: str | None) -> LoanMachine:
    """The lifecycle in ``path`` (the shipped default when ``None``); a bad file is an input error."""
    from loanstate._machine import LoanMachine, default_machine

    if path is None:
        return default_machine()
    try:
        return LoanMachine.from_file(path)
    except InvalidDefinition as exc:
        unreadable = [p for p in exc.problems if p.code == "unreadable"]
        if unreadable:
            raise InputError(str(unreadable[0])) from exc
        count = len(exc.problems)
        noun = "problem" if count == 1 else "problems"
        raise InputError(
            f"{path}: invalid lifecycle definition ({count} {noun}; `loanstate check {path}` lists them)"
        ) from exc
