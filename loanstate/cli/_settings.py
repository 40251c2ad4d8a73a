"""Where the operating commands get their settings: environment, a private config file, ``--db``.

Credentials never come from the command line (other users can read a
process's arguments): the database password and the open-platform app key and
secret come from environment variables or from a config file that only its
owner may read.

Environment: ``LOANSTATE_DB_URL`` (a SQLAlchemy URL), ``LOANSTATE_DB_PASSWORD``,
``LOANSTATE_APP_KEY``, ``LOANSTATE_APP_SECRET``, ``LOANSTATE_TOP_URL``,
``LOANSTATE_CONFIG`` (path of the config file). The config file (TOML)::

    [database]
    url = "postgresql+psycopg://servicing@db.internal/loans"
    password = "..."

    [top]
    app_key = "..."
    app_secret = "..."
    url = "https://gw.api.taobao.com/router/rest"

The environment wins over the file; ``--db`` (which must not hold a password)
wins over both for the URL.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit

import attrs
import click

from loanstate.cli._common import InputError, first_line, printable

if TYPE_CHECKING:
    from loanstate.store import SqlStore

__all__ = [
    "CONFIG_HELP",
    "MAX_CONFIG_BYTES",
    "PRODUCTION_URL",
    "Settings",
    "check_db_flag",
    "db_options",
    "open_store",
    "require",
    "settings",
]

#: Alibaba's production gateway, used by ``deliver`` unless LOANSTATE_TOP_URL or [top] url says otherwise.
PRODUCTION_URL: Final = "https://gw.api.taobao.com/router/rest"
#: A config file holds a few settings: anything larger is not one (and is never read whole).
MAX_CONFIG_BYTES: Final = 64 * 1024
CONFIG_HELP: Final = "Config file with credentials (TOML, mode 600); also LOANSTATE_CONFIG."
_DB_HELP: Final = "SQLAlchemy URL of the store, without password (or LOANSTATE_DB_URL)."

F = TypeVar("F", bound=Callable[..., Any])


@attrs.frozen
class Settings:
    """Connection settings gathered from the environment and the config file (secrets kept out of repr)."""

    db_url: str | None = None
    db_password: str | None = attrs.field(default=None, repr=False)
    app_key: str | None = None
    app_secret: str | None = attrs.field(default=None, repr=False)
    top_url: str | None = None
    source: str = "environment"


def db_options(fn: F) -> F:
    """``--db`` and ``--config`` on a command that opens the store."""
    fn = click.option("--config", type=click.Path(path_type=str), help=CONFIG_HELP)(fn)
    return click.option("--db", help=_DB_HELP)(fn)


# "scheme://user:password@host": what a URL that cannot even be parsed may still hold.
_PASSWORD_IN_URL: Final = re.compile(r"(://[^:@/]*:).*@")  # greedy: a raw '@' or '/' in the password too


def _redacted(url: str) -> str:
    """``url`` with any password masked, for an error message about a URL SQLAlchemy cannot parse."""
    return printable(_PASSWORD_IN_URL.sub(r"\1***@", url))


def _read_bounded(path: str) -> bytes:
    """The bytes of the regular file ``path``, refused before reading when it is anything else or too large.

    Opened without blocking and checked on the open descriptor, so a FIFO (which
    would block forever), a device such as /dev/zero (which never ends) or a file
    swapped in after a check is refused, never read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise InputError(f"{printable(path)}: no such config file") from None
    except IsADirectoryError:
        raise InputError(f"{printable(path)}: is a directory, not a config file") from None
    except OSError as exc:
        raise InputError(f"{printable(path)}: cannot read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InputError(f"{printable(path)}: is a directory, not a config file")
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{printable(path)}: is not a regular file (a pipe or a device?); give a config file")
        if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InputError(
                f"{printable(path)}: holds credentials but others may read it "
                f"(mode {stat.S_IMODE(info.st_mode):o}); run: chmod 600 {printable(path)}"
            )
        if info.st_size > MAX_CONFIG_BYTES:
            raise InputError(f"{printable(path)}: is {info.st_size} bytes; a config file is at most {MAX_CONFIG_BYTES}")
        data = handle.read(MAX_CONFIG_BYTES + 1)  # a file that grew since fstat is still cut off here
    if len(data) > MAX_CONFIG_BYTES:
        raise InputError(f"{printable(path)}: is over {MAX_CONFIG_BYTES} bytes; a config file is not that large")
    return data


def _read_config(path: str) -> dict[str, Any]:
    data = _read_bounded(path)
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{printable(path)}: cannot read: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{printable(path)}: not valid TOML: {first_line(exc)}") from None
    except RecursionError:
        raise InputError(f"{printable(path)}: not valid TOML: nested too deeply") from None


def check_db_flag(db: str) -> None:
    """``--db`` must be a database URL and must not hold a password (command lines are visible)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(db)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise InputError(f"--db {_redacted(db)!r} is not a database URL (e.g. sqlite:///loans.db)") from None
    if parsed.password is not None:
        raise InputError(
            "--db holds a password, and command lines are visible to other users: "
            "put it in LOANSTATE_DB_PASSWORD or the config file's [database] password instead"
        )


def _check_top_url(url: str, where: str) -> str:
    """A gateway URL as a notifier can use it: http(s), a host, no space or control character.

    A stray newline (a secret manager's file, ``echo`` into an env file) would
    otherwise fail every send at run time; here it is one clear line at start.
    """
    bad = next((ch for ch in url if ch.isspace() or not ch.isprintable()), None)
    if bad is not None:
        raise InputError(
            f"{where} '{printable(url)}' is not a gateway URL: it holds {bad!a} "
            "(a stray newline or space?); give e.g. https://gw.api.taobao.com/router/rest"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InputError(f"{where} '{printable(url)}' is not a gateway URL: {first_line(exc)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(
            f"{where} '{printable(url)}' is not a gateway URL: it needs http:// or https:// and a host, "
            "e.g. https://gw.api.taobao.com/router/rest"
        )
    return url


def settings(config: str | None, db: str | None) -> Settings:
    """Gather the settings: ``--db`` URL, then environment variables, then the config file."""
    env = os.environ
    path = config or env.get("LOANSTATE_CONFIG")
    data = _read_config(path) if path else {}
    database = data.get("database", {}) if isinstance(data.get("database"), dict) else {}
    top = data.get("top", {}) if isinstance(data.get("top"), dict) else {}
    if db is not None:
        check_db_flag(db)

    def pick(name: str, table: dict[str, Any], key: str) -> str | None:
        value = env.get(name) or table.get(key)
        return str(value) if value else None

    top_url = pick("LOANSTATE_TOP_URL", top, "url")
    if top_url is not None:
        where = "LOANSTATE_TOP_URL" if env.get("LOANSTATE_TOP_URL") else f"{printable(path)} [top] url"
        _check_top_url(top_url, where)
    return Settings(
        db_url=db or pick("LOANSTATE_DB_URL", database, "url"),
        db_password=pick("LOANSTATE_DB_PASSWORD", database, "password"),
        app_key=pick("LOANSTATE_APP_KEY", top, "app_key"),
        app_secret=pick("LOANSTATE_APP_SECRET", top, "app_secret"),
        top_url=top_url,
        source=f"environment and {path}" if path else "environment",
    )


def require(values: dict[str, str | None], where: str) -> None:
    """Refuse to go on (one line, exit 2) while a named setting is missing; ``where`` says how to give it."""
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise InputError(f"missing {', '.join(missing)}: {where}")


@contextmanager
def open_store(s: Settings, *, create: bool = False, require_schema: bool = True) -> Iterator[SqlStore]:
    """Open the store the settings name and check it answers; every failure is one clear line.

    ``create`` makes the schema if it is missing; ``require_schema=False`` opens a
    database whatever it holds (``loanstate db status`` and ``db upgrade``).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    from loanstate.store import SqlStore

    require(
        {"a database URL": s.db_url},
        "pass --db URL, or set LOANSTATE_DB_URL, or [database] url in the config file",
    )
    assert s.db_url is not None
    try:
        url = make_url(s.db_url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise InputError(f"{_redacted(s.db_url)!r} is not a database URL (e.g. sqlite:///loans.db)") from None
    if s.db_password and url.password is None:
        url = url.set(password=s.db_password)
    shown = printable(url.render_as_string(hide_password=True))
    on_disk = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if on_disk and not create and not Path(str(url.database)).exists():
        raise InputError(f"{shown}: no such database file")
    try:
        store = SqlStore(url)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise InputError(
            f"{shown}: the database driver is not installed ({first_line(exc)}); "
            "pip install 'loanstate[postgres]' or 'loanstate[mysql]'"
        ) from None
    try:
        try:
            if create:
                store.create_schema()
            elif require_schema:
                _check_schema(shown, store.schema_version())
        except SQLAlchemyError as exc:
            detail = first_line(getattr(exc, "orig", None) or exc)
            raise InputError(f"cannot use database {shown}: {detail}") from None
        yield store
    finally:
        store.close()


def _check_schema(shown: str, found: int | None) -> None:
    """Refuse a database without loanstate's tables, or at another schema version, naming the fix."""
    from loanstate.store import SCHEMA_VERSION

    if found is None:
        raise InputError(f"{shown}: holds no loanstate tables (create them with `loanstate db init`)")
    if found != SCHEMA_VERSION:
        fix = "run `loanstate db upgrade`" if found < SCHEMA_VERSION else "upgrade loanstate"
        raise InputError(
            f"{shown}: holds loanstate schema version {found}, this loanstate uses {SCHEMA_VERSION}: {fix}"
        )
