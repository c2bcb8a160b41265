"""What every verb shares: the option sets, settings, error mapping and the factories."""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click

from ..config import Settings
from ..keysets import load_key_sets, select
from ..durations import format_time
from ..errors import RotatorError
from ..reconcile import Rotator, StepResult

if TYPE_CHECKING:
    from ..revocation import RevocationStore

__all__ = [
    "F",
    "policy_options",
    "store_options",
    "revocation_options",
    "settings_of",
    "key_sets_of",
    "handle_errors",
    "rotator_of",
    "revocation_store",
    "iso",
    "report",
]

F = TypeVar("F", bound=Callable[..., Any])

_POLICY_OPTIONS = (
    ("--rotation-period", "rotation_period", "How often a new key starts signing (P). Default 15m."),
    ("--token-lifetime", "token_lifetime", "Longest token lifetime issuers mint (T). Default 1h."),
    ("--leeway", "leeway", "Verifier leeway on exp/nbf/iat (L). Default 60s."),
    ("--max-age", "max_age", "JWKS Cache-Control max-age (M). Default 300s."),
    ("--retirement-window", "retirement_window", "How long a retired key stays published (W). Default 24h."),
    ("--private-key-grace", "private_key_grace", "How long a retired key's private half is kept. Default 5m."),
    ("--audit-retention", "audit_retention", "How long metadata of removed keys is kept. Default 24h."),
    ("--max-clock-skew", "max_clock_skew", "Tolerated clock difference with the store and stored times; at most half of max-age. Default 60s or half of max-age, whichever is less."),
    ("--refresh-max-age", "refresh_max_age", "Absolute lifetime of a refresh chain from its orig_iat. Default 24h."),
    ("--refresh-grace", "refresh_grace", "How long after exp a token may still be refreshed. Default 0s."),
)


def policy_options(func: F) -> F:
    for flag, name, help_text in reversed(_POLICY_OPTIONS):
        func = click.option(flag, name, default=None, metavar="DURATION", help=help_text)(func)
    func = click.option(
        "--algorithm", default=None, metavar="ALG",
        help="What the key set signs with: ES256 (default), ES384, RS256, PS256 or EdDSA (ROTATOR_ALGORITHM).",
    )(func)
    func = click.option(
        "--rsa-bits", default=None, metavar="BITS", help="Size of new RSA keys: 2048 (default), 3072 or 4096 (ROTATOR_RSA_BITS)."
    )(func)
    func = click.option(
        "--jwks-key-budget", default=None, metavar="N",
        help="Most keys of one type a JWKS may hold, summed over the key sets publishing it (ROTATOR_JWKS_KEY_BUDGET). Default 100.",
    )(func)
    func = click.option(
        "--key-set", "key_set", default=None, metavar="NAME",
        help="The key set to act on, where the settings file names several (ROTATOR_KEY_SET).",
    )(func)
    return click.option(
        "--config", "config_file", default=None, metavar="FILE", help="TOML settings file (or ROTATOR_CONFIG)."
    )(func)


def store_options(func: F) -> F:
    options = [
        click.option("--keystore", default=None, metavar="URL", help="Keystore location (ROTATOR_KEYSTORE)."),
        click.option("--publish", default=None, metavar="URL", help="JWKS publish location (ROTATOR_PUBLISH)."),
        click.option(
            "--passphrase-file",
            default=None,
            metavar="FILE",
            help="File holding the keystore passphrase (else ROTATOR_KEYSTORE_PASSPHRASE).",
        ),
        click.option("--kms-key-id", default=None, metavar="ID", help="AWS KMS key for envelope encryption (ROTATOR_KMS_KEY_ID)."),
        click.option("--s3-endpoint-url", default=None, metavar="URL", help="S3-compatible endpoint (ROTATOR_S3_ENDPOINT_URL)."),
        click.option(
            "--s3-single-writer",
            is_flag=True,
            default=None,
            help="Allow a store that ignores conditional writes; only one rotator may run.",
        ),
        click.option("--public-url", default=None, metavar="URL", help="URL verifiers fetch the JWKS from; confirmation reads it."),
        click.option("--discovery", is_flag=True, default=None, help="Also publish an OpenID discovery document."),
        click.option(
            "--insecure-plaintext-keys",
            is_flag=True,
            default=None,
            help="Store private keys UNENCRYPTED. Local experiments only.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return policy_options(func)


def key_sets_of(kwargs: dict[str, Any]) -> dict[str, Settings]:
    """Every key set the settings name, or only the one --key-set (ROTATOR_KEY_SET) picks."""
    config_file = kwargs.pop("config_file", None)
    name = kwargs.pop("key_set", None) or os.environ.get("ROTATOR_KEY_SET") or None
    sets = load_key_sets(kwargs, config_file=config_file)
    return {name: select(sets, name)} if name is not None else sets


def settings_of(kwargs: dict[str, Any]) -> Settings:
    """The one key set a command acts on (several need --key-set)."""
    return select(key_sets_of(kwargs), None)


def handle_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RotatorError as e:
            click.echo(f"rotator: error: {e}", err=True)
            sys.exit(e.exit_code)
        except ValueError as e:
            click.echo(f"rotator: error: {e}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def rotator_of(settings: Settings) -> Rotator:
    return Rotator(
        keystore=settings.open_keystore(),
        publisher=settings.open_publisher(),
        policy=settings.policy,
        passphrase=settings.resolved_passphrase(),
        allow_plaintext=settings.insecure_plaintext_keys,
        kms_key_id=settings.kms_key_id,
        passphrase_source=settings.passphrase_source(),
        algorithm=settings.algorithm,
        rsa_bits=settings.rsa_bits,
    )


def iso(ts: float | None) -> str:
    return "-" if ts is None else format_time(ts)


def report(result: StepResult, rotator: Rotator) -> None:
    for event in result.events:
        prefix = "warning: " if event in result.warnings else ""
        click.echo(f"{prefix}{event}")
    state = result.state
    active = state.active
    published = [k for k in state.keys if k.published]
    click.echo(
        f"active {active.kid if active else 'none'}; "
        f"pending {', '.join(k.kid for k in state.pending) or 'none'}; "
        f"{len(published)} key(s) published at {rotator.publisher.location}"
    )


def revocation_options(func: F) -> F:
    options = [
        click.option(
            "--revocation-url",
            default=None,
            metavar="URL",
            help="Redis holding the revocations: redis://HOST[:PORT][/DB] or rediss:// (ROTATOR_REVOCATION_URL).",
        ),
        click.option(
            "--revocation-prefix",
            default=None,
            metavar="PREFIX",
            help="Key prefix in Redis, one per key set (ROTATOR_REVOCATION_PREFIX). Default rotator:.",
        ),
        click.option(
            "--revocation-password-file",
            default=None,
            metavar="FILE",
            help="File holding the Redis password (ROTATOR_REVOCATION_PASSWORD_FILE).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return policy_options(func)


def revocation_store(settings: Settings) -> "RevocationStore":
    """The store the settings name (redis-py is loaded here, on first use)."""
    from ..revocation import store_for

    return store_for(settings)
