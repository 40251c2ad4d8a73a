"""``loanstate console``: serve the web console over a store."""

from __future__ import annotations

import ipaddress
import logging
import os

import click

from loanstate.cli._common import InputError, debug_option

__all__ = ["console"]

_CONFIG_HELP = "TOML file with [database] url and password (or LOANSTATE_CONFIG)."


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere


@click.command()
@click.option("--db", help="SQLAlchemy URL of the store, without password (or LOANSTATE_DB_URL).")
@click.option("--config", type=click.Path(path_type=str), help=_CONFIG_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8470, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--allow-actions", is_flag=True, help="Allow retry and skip (needs LOANSTATE_CONSOLE_TOKEN); read-only otherwise."
)
@click.option("--refresh", default=15, show_default=True, type=click.IntRange(0, 3600), help="Seconds; 0: never.")
@click.option("--page-size", default=50, show_default=True, type=click.IntRange(1, 1000))
@debug_option
def console(
    *, db: str | None, config: str | None, host: str, port: int, allow_actions: bool, refresh: int, page_size: int
) -> None:
    """Serve the web console: outbox overview, parked loans by error, each loan's story, /metrics.

    Actions (retry, skip) and any address other than loopback need a token in
    LOANSTATE_CONSOLE_TOKEN: scripts send it as a bearer header, browsers log in with it.
    """
    token = os.environ.get("LOANSTATE_CONSOLE_TOKEN") or None
    if allow_actions and token is None:
        raise InputError("--allow-actions needs a token: set LOANSTATE_CONSOLE_TOKEN (16 characters or more)")
    if not is_loopback(host) and token is None:
        raise InputError(
            f"--host {host} is reachable from other machines: set LOANSTATE_CONSOLE_TOKEN first "
            "(every page then needs it), or keep the default 127.0.0.1"
        )
    try:
        import uvicorn

        from loanstate.console import create_app
    except ImportError as exc:
        raise InputError(
            f"the console needs its extra ({exc.name} is missing): pip install 'loanstate[console]'"
        ) from None
    from loanstate.cli._settings import open_store, settings

    # Uvicorn configures only its own loggers: the action log needs a handler of its own.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    action_log = logging.getLogger("loanstate.console")
    action_log.addHandler(handler)
    action_log.setLevel(logging.INFO)
    with open_store(settings(config, db)) as store:
        app = create_app(store, token=token, allow_actions=allow_actions, refresh_seconds=refresh, page_size=page_size)
        shown = store.engine.url.render_as_string(hide_password=True)
        mode = "actions on" if allow_actions else "read-only"
        click.echo(f"loanstate console for {shown} ({mode}) at http://{host}:{port}/", err=True)
        uvicorn.run(app, host=host, port=port, log_level="info", server_header=False, proxy_headers=False)
