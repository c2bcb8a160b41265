"""Verbs on revocations (the ``redis`` extra): deny-token, revoke-subject, bump-session,
revocations."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from ..durations import parse_moment
from ..errors import ConfigError
from ._common import handle_errors, iso, revocation_options, revocation_store, settings_of

__all__ = ["deny_token", "revoke_subject", "bump_session", "revocations_cmd", "revocation_snapshot"]

@click.command(name="deny-token")
@click.argument("token", required=False)
@click.option("--jti", default=None, help="Deny this token id instead of a whole TOKEN (with --exp).")
@click.option("--exp", default=None, metavar="WHEN", help="With --jti: the token's expiry (epoch seconds, ISO 8601 or a duration from now).")
@revocation_options
@handle_errors
def deny_token(token: str | None, jti: str | None, exp: str | None, **kwargs: Any) -> None:
    """Deny one token (logout from one device) until it expires.

    TOKEN is the token itself, or - to read it from standard input (keeps it out of the
    process list). Its signature is not checked; its jti and exp are what is denied.
    """
    if (token is None) == (jti is None):
        raise ConfigError("give TOKEN, or --jti with --exp")
    if jti is not None and exp is None:
        raise ConfigError("--jti needs --exp (when the token expires)")
    if token is not None and exp is not None:
        raise ConfigError("--exp goes with --jti; a TOKEN carries its own exp")
    exp_at = parse_moment(exp, "--exp", time.time()) if exp is not None else None
    if token == "-":
        token = sys.stdin.readline()
    from ..revocation import token_id

    store = revocation_store(settings_of(kwargs))
    if token is not None:
        jti, token_exp = token_id(token.strip())
    else:
        assert jti is not None and exp_at is not None
        token_exp = exp_at
    expires_at = store.deny(jti, token_exp)
    if expires_at <= time.time():
        click.echo(
            f"not denied: jti {jti!r} expired at {iso(expires_at - store.grace)} (plus {store.grace:g}s grace), "
            "so every verifier already rejects it; nothing written"
        )
        return
    click.echo(f"denied: jti {jti!r} until {iso(expires_at)}")


@click.command(name="revoke-subject")
@click.argument("subject")
@click.option("--until", default=None, metavar="WHEN", help="A ban: tokens issued until WHEN are void too (epoch seconds, ISO 8601 or a duration like 7d).")
@revocation_options
@handle_errors
def revoke_subject(subject: str, until: str | None, **kwargs: Any) -> None:
    """Void every token of SUBJECT issued until now (logout everywhere, password reset), or until WHEN."""
    until_at = parse_moment(until, "--until", time.time()) if until is not None else None
    cutoff = revocation_store(settings_of(kwargs)).revoke_subject(subject, until=until_at)
    click.echo(
        f"revoked: every token of {subject!r} issued before {iso(cutoff.not_before)} "
        f"(record kept until {iso(cutoff.expires_at)})"
    )


@click.command(name="bump-session")
@click.argument("subject")
@revocation_options
@handle_errors
def bump_session(subject: str, **kwargs: Any) -> None:
    """Void every token of SUBJECT that carries an older session version; prints the new version."""
    click.echo(revocation_store(settings_of(kwargs)).bump_session(subject))


@click.command(name="revocations")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@revocation_options
@handle_errors
def revocations_cmd(as_json: bool, **kwargs: Any) -> None:
    """Show the revocations in force."""
    tables = revocation_store(settings_of(kwargs)).records()
    if as_json:
        click.echo(json.dumps(tables.as_json(), indent=2))
        return
    click.echo(
        f"{len(tables.denied)} denied jtis, {len(tables.cutoffs)} subject cutoffs, "
        f"{len(tables.versions)} session versions"
        + (f", {len(tables.malformed)} malformed records (skipped by every replica)" if tables.malformed else "")
    )
    for jti, expires in sorted(tables.denied.items()):
        click.echo(f"jti      {_shown(jti)}  until {iso(expires)}")
    for c in sorted(tables.cutoffs.values(), key=lambda c: c.subject):
        click.echo(f"subject  {_shown(c.subject)}  issued before {iso(c.not_before)}  until {iso(c.expires_at)}")
    for v in sorted(tables.versions.values(), key=lambda v: v.subject):
        click.echo(f"session  {_shown(v.subject)}  version {v.version}  until {iso(v.expires_at)}")
    for key, problem in sorted(tables.malformed.items()):
        click.echo(f"malformed  {_shown(key)}  {problem}")


@click.command(name="revocation-snapshot")
@click.option(
    "--revocation-snapshot", "snapshot", default=None, metavar="LOCATION",
    help="Where to publish it: a path, file://, or s3://bucket/key (ROTATOR_REVOCATION_SNAPSHOT).",
)
@revocation_options
@handle_errors
def revocation_snapshot(snapshot: str | None, **kwargs: Any) -> None:
    """Publish a snapshot of the revocations in force, for replicas starting cold (the daemon
    does this every revocation_snapshot_interval when revocation_snapshot is set)."""
    from ..revocation import publish_snapshot

    kwargs["revocation_snapshot"] = snapshot
    store = revocation_store(settings_of(kwargs))
    try:
        count, position = publish_snapshot(store)
    finally:
        store.close()
    assert store.snapshot is not None
    click.echo(f"published {count} records at log position {position} to {store.snapshot.location}")


def _shown(text: str) -> str:
    """An id as printed: itself when every character prints, else its escaped repr, so a
    direction override (U+202E) or another invisible character cannot disguise a listing."""
    return text if text.isprintable() else repr(text)
