"""Verbs on the key set: rotate, retire, revoke, recover, status, jwks, plan."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..config import Settings
from ..durations import format_duration
from ..errors import ConfigError, RotatorError
from ..lifecycle import retire, revoke
from ..health import Health
from ..metrics import Metrics
from ..keys import key_type
from ..publish import jwks_size, write_discovery
from ..reconcile import Rotator, StepResult
from ..sealing import private_half_status
from ..state import KeyRecord, State
from ..stepping import observed_step
from ..timeline import check_horizon, timeline
from ._common import handle_errors, iso, policy_options, report, rotator_of, settings_of, store_options

__all__ = ["rotate", "retire_cmd", "recover", "revoke_cmd", "status", "jwks", "plan_cmd"]

@click.command()
@click.option("--force", is_flag=True, help="Rotate now if a successor has been published for max-age.")
@click.option(
    "--metrics-file",
    default=None,
    metavar="FILE",
    envvar="ROTATOR_METRICS_FILE",
    help="Write Prometheus metrics here (node_exporter textfile collector), also when the step fails.",
)
@store_options
@handle_errors
def rotate(force: bool, metrics_file: str | None, **kwargs: Any) -> None:
    """Run one reconcile step: create, activate, retire and remove keys as due."""
    settings = settings_of(kwargs)
    rotator = rotator_of(settings)
    if metrics_file is None:
        result = rotator.step(force=force)
    else:
        result = _step_with_metrics(rotator, settings, force, metrics_file)
    if result.published:
        write_discovery(rotator.publisher, settings)
    report(result, rotator)


def _step_with_metrics(rotator: Rotator, settings: Settings, force: bool, path: str) -> StepResult:
    health = Health(policy=settings.policy)
    metrics = Metrics(health=health)
    metrics.carry_over(path)
    try:
        return observed_step(rotator, (health, metrics), force=force)
    finally:
        _write_metrics(metrics, path, settings.key_set)


def _write_metrics(metrics: Metrics, path: str, key_set: str) -> None:
    """A metrics file that cannot be written is reported, but never changes the step's
    outcome or hides its error: the exit code stays the step's."""
    try:
        metrics.write_textfile(path, key_set)
    except OSError as e:
        click.echo(f"rotator: warning: cannot write metrics file {path}: {e.strerror}", err=True)


# Kids are base64url, so one in 32 starts with "-": take unknown option-like
# tokens as the KID argument, and keep -h free of meaning on these commands.
_KID_COMMAND = {"ignore_unknown_options": True, "help_option_names": ["--help"]}


@click.command(name="retire", context_settings=_KID_COMMAND)
@click.argument("kid")
@store_options
@handle_errors
def retire_cmd(kid: str, **kwargs: Any) -> None:
    """Stop signing with KID now; it stays published for the retirement window."""
    settings = settings_of(kwargs)
    rotator = rotator_of(settings)
    result = rotator.step(operation=lambda state, now: retire(state, kid, now, settings.policy))
    report(result, rotator)


@click.command()
@click.option("--dry-run", is_flag=True, help="Print what recovery would change, and change nothing.")
@click.option("--yes", is_flag=True, help="Make the changes without asking (required when not at a terminal).")
@click.option(
    "--other-lineage",
    is_flag=True,
    help="Adopt from a publish target of another key set (this keystore was lost and started afresh).",
)
@store_options
@handle_errors
def recover(dry_run: bool, yes: bool, other_lineage: bool, **kwargs: Any) -> None:
    """Recover a restored or recreated keystore, or a state a fast clock wrote.

    When the publish target is ahead of the keystore, adopts every key it still serves
    (public half only, retired, so the tokens it signed keep verifying) and revokes
    restored keys it no longer serves; revokes every key the target records as revoked;
    sets stored times ahead of this host's clock to now; then runs a normal step. Lists
    the changes first and asks for --yes; changes nothing when nothing is wrong.
    """
    settings = settings_of(kwargs)
    rotator = rotator_of(settings)
    changes = rotator.recovery_plan(other_lineage=other_lineage).events
    if dry_run or not yes:
        for event in changes:
            click.echo(f"would: {event}")
    if dry_run:
        click.echo("nothing to recover" if not changes else f"{len(changes)} change(s); run again with --yes to make them")
        return
    if changes and not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("recovery changes the key set: review the plan above (or --dry-run), then run with --yes")
        click.confirm("make these changes?", abort=True)
    result = rotator.step(recover=True, other_lineage=other_lineage)
    if result.published:
        write_discovery(rotator.publisher, settings)
    report(result, rotator)


@click.command(name="revoke", context_settings=_KID_COMMAND)
@click.argument("kid")
@store_options
@handle_errors
def revoke_cmd(kid: str, **kwargs: Any) -> None:
    """Emergency: remove KID from the JWKS now and destroy its private half."""
    settings = settings_of(kwargs)
    rotator = rotator_of(settings)
    result = rotator.step(operation=lambda state, now: revoke(state, kid, now))
    report(result, rotator)


def _private_status(state: State, settings: Settings) -> dict[str, str]:
    """kid -> present | destroyed | damaged, test-decrypting where these settings open the key set."""
    try:
        sealer = settings.sealer_options().open(state)
    except RotatorError:
        sealer = None
    return private_half_status(state, sealer)


def _key_row(key: KeyRecord, settings: Settings) -> dict[str, Any]:
    policy = settings.policy
    removal = key.retired_at + policy.retirement_window if key.retired_at is not None and key.removed_at is None else None
    return {
        "kid": key.kid,
        "state": key.state.value,
        "created_at": iso(key.created_at),
        "published_at": iso(key.published_at),
        "activated_at": iso(key.activated_at),
        "activation": key.activation,
        "retired_at": iso(key.retired_at),
        "removal_due_at": iso(removal),
        "removed_at": iso(key.removed_at),
        "revoked_at": iso(key.revoked_at),
        "private_key": "present" if key.private is not None else "destroyed",
        "revocation": key.revocation,
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@store_options
@handle_errors
def status(as_json: bool, **kwargs: Any) -> None:
    """Show every key with its state and times (UTC)."""
    settings = settings_of(kwargs)
    state = settings.open_keystore().load()
    if state is None:
        raise ConfigError(f"no key set at {settings.keystore}: run `rotator rotate` to create one")
    private = _private_status(state, settings)
    rows = [{**_key_row(k, settings), "private_key": private[k.kid]} for k in _status_order(state)]
    if as_json:
        doc = {"generation": state.generation, "keyset": state.keyset, "keys": rows}
        click.echo(json.dumps(doc, indent=2))
        return
    columns = ("kid", "state", "created_at", "activated_at", "retired_at", "removal_due_at", "private_key")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        click.echo("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())


def _status_order(state: State) -> list[KeyRecord]:
    return sorted(state.keys, key=lambda k: (k.created_at, k.kid), reverse=True)


@click.command()
@store_options
@handle_errors
def jwks(**kwargs: Any) -> None:
    """Print the published JWKS."""
    settings = settings_of(kwargs)
    publisher = settings.open_publisher()
    body = publisher.document()  # a document several key sets share is printed whole
    if body is None:
        raise ConfigError(f"nothing published at {publisher.location}: run `rotator rotate` first")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"the JWKS at {publisher.location} is not valid JSON ({e}): damaged; run `rotator rotate`") from e
    click.echo(json.dumps(doc, indent=2))


@click.command(name="plan")
@click.option("--days", default=2.0, show_default=True, type=click.FloatRange(min=0, max=366), help="Days to preview.")
@policy_options
@handle_errors
def plan_cmd(days: float, **kwargs: Any) -> None:
    """Preview the key timeline the current settings produce."""
    settings = settings_of(kwargs)
    policy = settings.policy
    check_horizon(policy, days)
    entries = timeline(policy, days)
    click.echo(
        f"policy: rotation_period={format_duration(policy.rotation_period)} "
        f"token_lifetime={format_duration(policy.token_lifetime)} leeway={format_duration(policy.leeway)} "
        f"max_age={format_duration(policy.max_age)} retirement_window={format_duration(policy.retirement_window)}"
    )
    click.echo(f"{'TIME':>14}  {'EVENT':<22} {'KEY':<10} JWKS")
    for e in entries:
        day, rest = divmod(int(e.at), 86400)
        click.echo(f"{day:>4}d {rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}  {e.event:<22} {e.kid:<10} {e.jwks_keys}")
    sizes = [e.jwks_keys for e in entries]
    created = sum(1 for e in entries if e.event == "key_created")
    rotations = sum(1 for e in entries if e.event == "key_activated")
    most = max(sizes, default=0)
    click.echo(
        f"summary: {created} keys created, {rotations} activations, JWKS size max {most} "
        f"(bound ceil(W/P) + 2 = {policy.max_jwks_keys}); {settings.algorithm} keys: at most "
        f"{jwks_size(settings.algorithm, policy.max_jwks_keys, settings.rsa_bits):,} bytes, "
        f"{policy.max_jwks_keys} of a key budget of {settings.jwks_key_budget} {key_type(settings.algorithm)} keys"
    )
