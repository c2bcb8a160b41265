"""``rotator authz``: the verification sidecar (see ``rotator.authz``)."""

from __future__ import annotations

import sys

import click

from ..logs import setup_logging
from ._common import handle_errors

__all__ = ["authz"]


@click.command()
@click.option("--config", "config_file", default=None, envvar="ROTATOR_CONFIG", metavar="FILE",
              help="Settings file with an [authz] table (ROTATOR_CONFIG).")
@click.option("--check", is_flag=True, help="Read and check the settings, print a summary, and exit.")
@click.option("--log-format", type=click.Choice(["human", "json"]), default="human", show_default=True,
              envvar="ROTATOR_LOG_FORMAT", help="Log lines as text or as JSON objects.")
@handle_errors
def authz(config_file: str | None, check: bool, log_format: str) -> None:
    """Answer proxies' per-request checks (nginx auth_request, Traefik forwardAuth, Envoy
    ext_authz over HTTP and gRPC) until SIGTERM; SIGHUP reloads the settings."""
    from ..authz import Supervisor, load_authz

    settings = load_authz(config_file=config_file)
    if check:
        click.echo(
            f"rotator authz: {len(settings.issuers)} issuer(s) ({', '.join(i.issuer for i in settings.issuers)}), "
            f"{len(settings.rules)} rule(s), {len(settings.headers)} claim header(s), "
            f"listen {settings.listen[0]}:{settings.listen[1]}"
            + (f", gRPC {settings.grpc_listen[0]}:{settings.grpc_listen[1]}" if settings.grpc_listen else "")
            + f", {settings.worker_count} worker(s), revocation {'on' if settings.revocation_url else 'off'}"
        )
        return
    setup_logging(log_format)
    sys.exit(Supervisor(settings, lambda: load_authz(config_file=config_file)).run())
