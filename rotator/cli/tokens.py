"""Verbs on tokens: sign (and refresh) with the active key, verify against a JWKS."""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

import click

from .._fs import path_from_url
from .._strict import strict_json
from ..durations import parse_duration
from ..errors import ConfigError
from ..issuer import SIGNER_CLAIMS, signer_for
from ._common import handle_errors, settings_of, store_options

__all__ = ["sign", "verify"]

# Claims the command sets from its own options (the signer sets the others it reserves).
_CLAIM_OPTIONS = {"sub": "--sub", "aud": "--aud", "iss": "--issuer (or ROTATOR_ISSUER)"}


def _claim(text: str) -> tuple[str, Any]:
    """NAME=VALUE: VALUE as JSON when it parses as JSON, else as a string. Reserved names and
    values that are not finite are refused, never dropped."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ConfigError(f"--claim {text!r} is not NAME=VALUE")
    if name in _CLAIM_OPTIONS:
        raise ConfigError(f"--claim {name}=…: {name!r} is set with {_CLAIM_OPTIONS[name]}, not as a claim")
    if name in SIGNER_CLAIMS:
        raise ConfigError(f"--claim {name}=…: {name!r} is set by the signer")
    try:
        parsed = strict_json(value)
    except ValueError as e:
        if "constant" in str(e):  # NaN, Infinity, -Infinity
            raise ConfigError(f"--claim {name}={value}: not a finite JSON number") from e
        return name, value
    if not _finite(parsed):
        raise ConfigError(f"--claim {name}={value}: not a finite JSON number")
    return name, parsed


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


@click.command()
@click.option("--sub", "subject", default=None, help="Subject (sub claim); required unless --refresh.")
@click.option("--aud", "audience", default=None, help="Audience (aud claim); required unless --refresh.")
@click.option("--ttl", default=None, metavar="DURATION", help="Lifetime; default and maximum: token_lifetime.")
@click.option("--claim", "claims", multiple=True, metavar="NAME=VALUE", help="Extra claim (JSON value or string).")
@click.option("--issuer", default=None, help="Issuer (iss claim; ROTATOR_ISSUER).")
@click.option(
    "--refresh", "refresh_token", default=None, metavar="TOKEN",
    help="Refresh TOKEN: same subject, audience and claims, its chain's orig_iat, a new jti.",
)
@store_options
@handle_errors
def sign(
    subject: str | None, audience: str | None, ttl: str | None, claims: tuple[str, ...], refresh_token: str | None,
    **kwargs: Any,
) -> None:
    """Print a token signed with the active key, or a refreshed one (--refresh TOKEN)."""
    settings = settings_of(kwargs)
    if refresh_token is not None and (subject or audience or claims):
        raise ConfigError("--refresh keeps the token's subject, audience and claims: give no --sub, --aud or --claim")
    if refresh_token is None and not (subject and audience):
        raise ConfigError("sign needs --sub and --aud (or --refresh TOKEN)")
    # With ROTATOR_REVOCATION_URL set: stamp the session version, refuse revoked refreshes.
    signer = signer_for(settings, watch=False)  # one token, then exit
    lifetime = parse_duration(ttl, name="--ttl") if ttl is not None else None
    if refresh_token is not None:
        click.echo(signer.refresh(refresh_token.strip(), ttl=lifetime))
        return
    extra = dict(_claim(c) for c in claims)
    click.echo(signer.sign(extra, subject=subject, audience=audience, ttl=lifetime))


@click.command()
@click.argument("token")
@click.option(
    "--jwks-url",
    required=True,
    metavar="URL",
    help="JWKS location: https://…, http:// to a loopback host with --allow-http, or file://.",
)
@click.option("--aud", "audience", default=None, help="Required audience (a token naming another, or any when unset, is rejected).")
@click.option("--iss", "issuer", default=None, help="Required issuer.")
@click.option("--leeway", default="60s", metavar="DURATION", help="Leeway on exp/nbf/iat.")
@click.option("--allow-http", is_flag=True, help="Permit plain http:// for a loopback JWKS host (tests, local runs).")
@handle_errors
def verify(token: str, jwks_url: str, audience: str | None, issuer: str | None, leeway: str, allow_http: bool) -> None:
    """Verify TOKEN against a JWKS and print its claims, or why it is rejected.

    Exit codes: 0 valid, 1 rejected, 6 no usable key set (JWKS unreachable or unusable).
    """
    from ..verifier import InvalidToken, KeysUnavailable, Verifier, load_jwks_file, verify_token  # only here

    leeway_s = parse_duration(leeway, name="--leeway")
    token = token.strip()
    try:
        if jwks_url.startswith("file://") or "://" not in jwks_url:
            keys = load_jwks_file(path_from_url(jwks_url, "--jwks-url"), jwks_url)
            claims = verify_token(token, keys, now=time.time(), leeway=leeway_s, audience=audience, issuer=issuer)
        else:
            verifier = Verifier(jwks_url, issuer=issuer, audience=audience, leeway=leeway_s, allow_http=allow_http)
            claims = verifier.verify(token)
    except InvalidToken as e:
        click.echo(f"rejected ({e.code}): {e}", err=True)
        sys.exit(1)
    except KeysUnavailable as e:
        click.echo(f"rotator: error: keys unavailable: {e}", err=True)
        sys.exit(6)
    click.echo(json.dumps(claims, indent=2, sort_keys=True))
