"""``rotator run``: the daemon, with its metrics server and systemd integration."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..config import Settings
from ..durations import parse_duration
from ..errors import ConfigError
from ._common import handle_errors, key_sets_of, rotator_of, store_options

__all__ = ["run"]

@click.command()
@click.option(
    "--metrics-port", default=None, envvar="ROTATOR_METRICS_PORT", metavar="PORT",
    help="Serve /metrics and /healthz on this port, 0-65535 (ROTATOR_METRICS_PORT).",
)
@click.option(
    "--metrics-addr", default="127.0.0.1", show_default=True, envvar="ROTATOR_METRICS_ADDR", metavar="ADDR",
    help="Address for the metrics server; '*' for every address, IPv6 and IPv4, as in a container (ROTATOR_METRICS_ADDR).",
)
@click.option(
    "--max-sleep", default="60s", show_default=True, envvar="ROTATOR_MAX_SLEEP", metavar="DURATION",
    help="Longest wait between steps; bounds how late the published JWKS is re-checked.",
)
@click.option(
    "--log-format", type=click.Choice(["human", "json"]), default="human", show_default=True,
    envvar="ROTATOR_LOG_FORMAT", help="Log lines as text or as JSON objects.",
)
@click.option(
    "--stuck-after", default="5m", show_default=True, envvar="ROTATOR_STUCK_AFTER", metavar="DURATION",
    help="A step running longer than this stops the systemd watchdog pings, so systemd restarts the daemon.",
)
@store_options
@handle_errors
def run(
    metrics_port: str | None, metrics_addr: str, max_sleep: str, log_format: str, stuck_after: str, **kwargs: Any
) -> None:
    """Run continuously: a reconcile step at every due instant, metrics, health, systemd notify.

    SIGTERM/SIGINT stop it cleanly (exit 0); SIGHUP re-reads the settings.
    """
    port = _port(metrics_port)
    from ..daemon import Daemon, DaemonOptions
    from ..logs import setup_logging

    setup_logging(log_format)
    options = dict(kwargs)

    def load() -> dict[str, Settings]:
        return key_sets_of(dict(options))

    sets = load()  # refuse bad settings at once, with a one-line error
    sleep = parse_duration(max_sleep, name="--max-sleep")
    if not 1 <= sleep <= 3600:
        raise ConfigError(f"--max-sleep {max_sleep!r}: expected between 1s and 1h")
    stuck = parse_duration(stuck_after, name="--stuck-after")
    if not 1 <= stuck <= 3600:
        raise ConfigError(f"--stuck-after {stuck_after!r}: expected between 1s and 1h")
    daemon_options = DaemonOptions(
        max_sleep=min(sleep, *(s.policy.rotation_period for s in sets.values())),
        metrics_port=port,
        metrics_addr=metrics_addr,
        stuck_after=stuck,
    )
    try:
        code = Daemon(load, rotator_of, daemon_options).run()
    except OSError as e:
        raise ConfigError(f"cannot start: {e.strerror or e}") from e
    sys.exit(code)


def _port(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    if not text.isascii() or not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ConfigError(f"--metrics-port {text!r}: expected a port number from 0 to 65535")
    return int(text)
