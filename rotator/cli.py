"""The ``rotator`` command line: a thin layer over the library."""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import sys
import time
from typing import Any, Callable, TypeVar

import click

from . import __version__
from .config import Settings, load_settings
from .durations import format_duration, format_time, parse_duration
from .errors import ConfigError, RotatorError
from .issuer import SIGNER_CLAIMS, Signer
from ._aws import S3Options
from .keystore import Keystore, open_keystore
from .lifecycle import retire, revoke
from .publish import Publisher, discovery_document, open_publisher
from .reconcile import Rotator, StepResult
from .state import KeyRecord, State

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


def _policy_options(func: F) -> F:
    for flag, name, help_text in reversed(_POLICY_OPTIONS):
        func = click.option(flag, name, default=None, metavar="DURATION", help=help_text)(func)
    return click.option(
        "--config", "config_file", default=None, metavar="FILE", help="TOML settings file (or ROTATOR_CONFIG)."
    )(func)


def _store_options(func: F) -> F:
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
    return _policy_options(func)


def _settings(kwargs: dict[str, Any]) -> Settings:
    config_file = kwargs.pop("config_file", None)
    return load_settings(kwargs, config_file=config_file)


def _handle_errors(func: F) -> F:
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


def _s3(settings: Settings) -> S3Options:
    return S3Options(endpoint_url=settings.s3_endpoint_url, single_writer=settings.s3_single_writer)


def _keystore(settings: Settings) -> Keystore:
    return open_keystore(settings.keystore, _s3(settings))


def _publisher(settings: Settings) -> Publisher:
    return open_publisher(
        settings.publish, s3=_s3(settings), max_age=settings.policy.max_age, public_url=settings.public_url
    )


def _rotator(settings: Settings) -> Rotator:
    return Rotator(
        keystore=_keystore(settings),
        publisher=_publisher(settings),
        policy=settings.policy,
        passphrase=settings.resolved_passphrase(),
        allow_plaintext=settings.insecure_plaintext_keys,
        kms_key_id=settings.kms_key_id,
        passphrase_source=settings.passphrase_source(),
    )


def _iso(ts: float | None) -> str:
    return "-" if ts is None else format_time(ts)


def _report(result: StepResult, settings: Settings) -> None:
    for event in result.events:
        prefix = "warning: " if event in result.warnings else ""
        click.echo(f"{prefix}{event}")
    state = result.state
    active = state.active
    published = [k for k in state.keys if k.published]
    click.echo(
        f"active {active.kid if active else 'none'}; "
        f"pending {', '.join(k.kid for k in state.pending) or 'none'}; "
        f"{len(published)} key(s) published at {_publisher(settings).location}"
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rotator")
def main() -> None:
    """Rotate ES256 JWT signing keys and publish their public JWKS."""


@main.command()
@click.option("--force", is_flag=True, help="Rotate now if a successor has been published for max-age.")
@click.option(
    "--metrics-file",
    default=None,
    metavar="FILE",
    envvar="ROTATOR_METRICS_FILE",
    help="Write Prometheus metrics here (node_exporter textfile collector), also when the step fails.",
)
@_store_options
@_handle_errors
def rotate(force: bool, metrics_file: str | None, **kwargs: Any) -> None:
    """Run one reconcile step: create, activate, retire and remove keys as due."""
    settings = _settings(kwargs)
    rotator = _rotator(settings)
    if metrics_file is None:
        result = rotator.step(force=force)
    else:
        result = _step_with_metrics(rotator, settings, force, metrics_file)
    if settings.discovery and result.published and settings.issuer and settings.public_url:
        rotator.publisher.write_discovery(discovery_document(settings.issuer, settings.public_url))
    _report(result, settings)


def _step_with_metrics(rotator: Rotator, settings: Settings, force: bool, path: str) -> StepResult:
    from .metrics import Metrics

    metrics = Metrics()
    metrics.carry_over(path)
    try:
        return metrics.record_step(rotator, settings.policy, force=force)
    finally:
        _write_metrics(metrics, path)


def _write_metrics(metrics: Any, path: str) -> None:
    """A metrics file that cannot be written is reported, but never changes the step's
    outcome or hides its error: the exit code stays the step's."""
    try:
        metrics.write_textfile(path)
    except OSError as e:
        click.echo(f"rotator: warning: cannot write metrics file {path}: {e.strerror}", err=True)


@main.command()
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
@_store_options
@_handle_errors
def run(
    metrics_port: str | None, metrics_addr: str, max_sleep: str, log_format: str, stuck_after: str, **kwargs: Any
) -> None:
    """Run continuously: a reconcile step at every due instant, metrics, health, systemd notify.

    SIGTERM/SIGINT stop it cleanly (exit 0); SIGHUP re-reads the settings.
    """
    port = _port(metrics_port)
    from .daemon import Daemon, DaemonOptions
    from .logs import setup_logging

    setup_logging(log_format)
    options = dict(kwargs)

    def load() -> Settings:
        return _settings(dict(options))

    settings = load()  # refuse bad settings at once, with a one-line error
    sleep = parse_duration(max_sleep, name="--max-sleep")
    if not 1 <= sleep <= 3600:
        raise ConfigError(f"--max-sleep {max_sleep!r}: expected between 1s and 1h")
    stuck = parse_duration(stuck_after, name="--stuck-after")
    if not 1 <= stuck <= 3600:
        raise ConfigError(f"--stuck-after {stuck_after!r}: expected between 1s and 1h")
    daemon_options = DaemonOptions(
        max_sleep=min(sleep, settings.policy.rotation_period),
        metrics_port=port,
        metrics_addr=metrics_addr,
        stuck_after=stuck,
    )
    try:
        code = Daemon(load, _rotator, daemon_options).run()
    except OSError as e:
        raise ConfigError(f"cannot start: {e.strerror or e}") from e
    sys.exit(code)


def _port(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    if not text.isascii() or not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ConfigError(f"--metrics-port {text!r}: expected a port number from 0 to 65535")
    return int(text)


# Kids are base64url, so one in 32 starts with "-": take unknown option-like
# tokens as the KID argument, and keep -h free of meaning on these commands.
_KID_COMMAND = {"ignore_unknown_options": True, "help_option_names": ["--help"]}


@main.command(name="retire", context_settings=_KID_COMMAND)
@click.argument("kid")
@_store_options
@_handle_errors
def retire_cmd(kid: str, **kwargs: Any) -> None:
    """Stop signing with KID now; it stays published for the retirement window."""
    settings = _settings(kwargs)
    rotator = _rotator(settings)
    result = rotator.step(operation=lambda state, now: retire(state, kid, now, settings.policy))
    _report(result, settings)


@main.command()
@click.option("--dry-run", is_flag=True, help="Print what recovery would change, and change nothing.")
@click.option("--yes", is_flag=True, help="Make the changes without asking (required when not at a terminal).")
@click.option(
    "--other-lineage",
    is_flag=True,
    help="Adopt from a publish target of another key set (this keystore was lost and started afresh).",
)
@_store_options
@_handle_errors
def recover(dry_run: bool, yes: bool, other_lineage: bool, **kwargs: Any) -> None:
    """Recover a restored or recreated keystore, or a state a fast clock wrote.

    When the publish target is ahead of the keystore, adopts every key it still serves
    (public half only, retired, so the tokens it signed keep verifying) and revokes
    restored keys it no longer serves; revokes every key the target records as revoked;
    sets stored times ahead of this host's clock to now; then runs a normal step. Lists
    the changes first and asks for --yes; changes nothing when nothing is wrong.
    """
    settings = _settings(kwargs)
    rotator = _rotator(settings)
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
    if settings.discovery and result.published and settings.issuer and settings.public_url:
        rotator.publisher.write_discovery(discovery_document(settings.issuer, settings.public_url))
    _report(result, settings)


@main.command(name="revoke", context_settings=_KID_COMMAND)
@click.argument("kid")
@_store_options
@_handle_errors
def revoke_cmd(kid: str, **kwargs: Any) -> None:
    """Emergency: remove KID from the JWKS now and destroy its private half."""
    settings = _settings(kwargs)
    result = _rotator(settings).step(operation=lambda state, now: revoke(state, kid, now))
    _report(result, settings)


def _private_status(state: State, settings: Settings) -> dict[str, str]:
    """kid -> present | destroyed | damaged. Sealed halves are test-decrypted when these
    settings can open the key set; otherwise a stored half shows as present."""
    from .keys import private_from_bytes
    from .sealing import open_sealer

    try:
        sealer = open_sealer(
            state.encryption,
            settings.resolved_passphrase(),
            settings.insecure_plaintext_keys,
            kms_key_id=settings.kms_key_id,
            passphrase_source=settings.passphrase_source(),
        )
    except RotatorError:
        sealer = None
    out: dict[str, str] = {}
    for key in state.keys:
        if key.revocation == "damaged":
            out[key.kid] = "damaged"
        elif key.private is None:
            out[key.kid] = "destroyed"
        elif sealer is None:
            out[key.kid] = "present"
        else:
            try:
                private_from_bytes(sealer.unseal(key.private, state.keyset, key.kid))
                out[key.kid] = "present"
            except (RotatorError, ValueError):
                out[key.kid] = "damaged"
    return out


def _key_row(key: KeyRecord, settings: Settings) -> dict[str, Any]:
    policy = settings.policy
    removal = key.retired_at + policy.retirement_window if key.retired_at is not None and key.removed_at is None else None
    return {
        "kid": key.kid,
        "state": key.state.value,
        "created_at": _iso(key.created_at),
        "published_at": _iso(key.published_at),
        "activated_at": _iso(key.activated_at),
        "activation": key.activation,
        "retired_at": _iso(key.retired_at),
        "removal_due_at": _iso(removal),
        "removed_at": _iso(key.removed_at),
        "revoked_at": _iso(key.revoked_at),
        "private_key": "present" if key.private is not None else "destroyed",
        "revocation": key.revocation,
    }


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_store_options
@_handle_errors
def status(as_json: bool, **kwargs: Any) -> None:
    """Show every key with its state and times (UTC)."""
    settings = _settings(kwargs)
    state = _keystore(settings).load()
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


@main.command()
@_store_options
@_handle_errors
def jwks(**kwargs: Any) -> None:
    """Print the published JWKS."""
    settings = _settings(kwargs)
    publisher = _publisher(settings)
    body = publisher.read_back()
    if body is None:
        raise ConfigError(f"nothing published at {publisher.location}: run `rotator rotate` first")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"the JWKS at {publisher.location} is not valid JSON ({e}): damaged; run `rotator rotate`") from e
    click.echo(json.dumps(doc, indent=2))


# Claims the command sets from its own options (the signer sets the others it reserves).
_CLAIM_OPTIONS = {"sub": "--sub", "aud": "--aud", "iss": "--issuer (or ROTATOR_ISSUER)"}


def _claim(text: str) -> tuple[str, Any]:
    """NAME=VALUE: VALUE as JSON when it parses as JSON, else as a string. Reserved names and
    values that are not finite are refused, never dropped."""
    from ._strict import strict_json

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


@main.command()
@click.option("--sub", "subject", default=None, help="Subject (sub claim); required unless --refresh.")
@click.option("--aud", "audience", default=None, help="Audience (aud claim); required unless --refresh.")
@click.option("--ttl", default=None, metavar="DURATION", help="Lifetime; default and maximum: token_lifetime.")
@click.option("--claim", "claims", multiple=True, metavar="NAME=VALUE", help="Extra claim (JSON value or string).")
@click.option("--issuer", default=None, help="Issuer (iss claim; ROTATOR_ISSUER).")
@click.option(
    "--refresh", "refresh_token", default=None, metavar="TOKEN",
    help="Refresh TOKEN: same subject, audience and claims, its chain's orig_iat, a new jti.",
)
@_store_options
@_handle_errors
def sign(
    subject: str | None, audience: str | None, ttl: str | None, claims: tuple[str, ...], refresh_token: str | None,
    **kwargs: Any,
) -> None:
    """Print a token signed with the active key, or a refreshed one (--refresh TOKEN)."""
    settings = _settings(kwargs)
    if refresh_token is not None and (subject or audience or claims):
        raise ConfigError("--refresh keeps the token's subject, audience and claims: give no --sub, --aud or --claim")
    if refresh_token is None and not (subject and audience):
        raise ConfigError("sign needs --sub and --aud (or --refresh TOKEN)")
    signer = Signer(
        _keystore(settings),
        settings.policy,
        passphrase=settings.resolved_passphrase(),
        allow_plaintext=settings.insecure_plaintext_keys,
        issuer=settings.issuer,
        kms_key_id=settings.kms_key_id,
        publisher=_publisher(settings),
        passphrase_source=settings.passphrase_source(),
        watch=False,  # one token, then exit
        # With ROTATOR_REVOCATION_URL set: stamp the session version, refuse revoked refreshes.
        revocations=_revocation_store(settings) if settings.revocation_url else None,
    )
    lifetime = parse_duration(ttl, name="--ttl") if ttl is not None else None
    if refresh_token is not None:
        click.echo(signer.refresh(refresh_token.strip(), ttl=lifetime))
        return
    extra = dict(_claim(c) for c in claims)
    click.echo(signer.sign(extra, subject=subject, audience=audience, ttl=lifetime))


# The preview replays the planner at every due instant; its cost grows with rotations
# times keys held (about (W + audit retention) / P). This bound keeps it to a few seconds.
_PLAN_BUDGET = 400_000


def _check_plan_horizon(policy: Any, days: float) -> None:
    rotations = days * 86400.0 / policy.rotation_period
    held = (policy.retirement_window + policy.audit_retention) / policy.rotation_period + 2
    if rotations * min(rotations, held) <= _PLAN_BUDGET:
        return
    most = _PLAN_BUDGET / held if _PLAN_BUDGET / held >= held else _PLAN_BUDGET**0.5
    raise ConfigError(
        f"plan --days {days:g} would replay {rotations:,.0f} rotations over up to {held:,.0f} keys; "
        f"with these settings preview at most {most * policy.rotation_period / 86400:.3g} days"
    )


@main.command(name="plan")
@click.option("--days", default=2.0, show_default=True, type=click.FloatRange(min=0, max=366), help="Days to preview.")
@_policy_options
@_handle_errors
def plan_cmd(days: float, **kwargs: Any) -> None:
    """Preview the key timeline the current settings produce."""
    from .timeline import timeline

    settings = _settings(kwargs)
    policy = settings.policy
    _check_plan_horizon(policy, days)
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
    click.echo(
        f"summary: {created} keys created, {rotations} activations, JWKS size max {max(sizes, default=0)} "
        f"(bound ceil(W/P) + 2 = {policy.max_jwks_keys})"
    )


@main.command()
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
@_handle_errors
def verify(token: str, jwks_url: str, audience: str | None, issuer: str | None, leeway: str, allow_http: bool) -> None:
    """Verify TOKEN against a JWKS and print its claims, or why it is rejected.

    Exit codes: 0 valid, 1 rejected, 6 no usable key set (JWKS unreachable or unusable).
    """
    import time

    from ._fs import path_from_url
    from .verifier import InvalidToken, KeysUnavailable, Verifier, verify_token

    leeway_s = parse_duration(leeway, name="--leeway")
    token = token.strip()
    try:
        if jwks_url.startswith("file://") or "://" not in jwks_url:
            keys = _file_key_set(path_from_url(jwks_url, "--jwks-url"), jwks_url)
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


# -- revocation ---------------------------------------------------------------------------------


def _revocation_options(func: F) -> F:
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
    return _policy_options(func)


def _revocation_store(settings: Settings) -> Any:
    from .revocation import store_for

    return store_for(settings)


def _when(text: str, name: str) -> float:
    """A moment: seconds since the epoch, an ISO 8601 time (UTC unless it says otherwise),
    or a duration from now (30m, 7d)."""
    value = text.strip()
    if not value.isascii():  # float() and fromisoformat() take any script's digits
        raise ConfigError(f"{name} {text!r} is not a time: use ASCII digits")
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(number) and "_" not in value:
            return number
        raise ConfigError(f"{name} {text!r} is not a time")
    if value[:1].isdigit() and "-" in value[:5] and len(value) >= 10:
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as e:
            raise ConfigError(f"{name} {text!r} is not an ISO 8601 time: {e}") from e
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        return moment.timestamp()
    try:
        return time.time() + parse_duration(value, name=name)
    except ConfigError:
        raise ConfigError(
            f"{name} {text!r} is neither seconds since the epoch, an ISO 8601 time nor a duration like 7d"
        ) from None


@main.command(name="deny-token")
@click.argument("token", required=False)
@click.option("--jti", default=None, help="Deny this token id instead of a whole TOKEN (with --exp).")
@click.option("--exp", default=None, metavar="WHEN", help="With --jti: the token's expiry (epoch seconds, ISO 8601 or a duration from now).")
@_revocation_options
@_handle_errors
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
    exp_at = _when(exp, "--exp") if exp is not None else None
    if token == "-":
        token = sys.stdin.readline()
    from .revocation import token_id

    store = _revocation_store(_settings(kwargs))
    if token is not None:
        jti, token_exp = token_id(token.strip())
    else:
        assert jti is not None and exp_at is not None
        token_exp = exp_at
    expires_at = store.deny(jti, token_exp)
    if expires_at <= time.time():
        click.echo(
            f"not denied: jti {jti!r} expired at {_iso(expires_at - store.grace)} (plus {store.grace:g}s grace), "
            "so every verifier already rejects it; nothing written"
        )
        return
    click.echo(f"denied: jti {jti!r} until {_iso(expires_at)}")


@main.command(name="revoke-subject")
@click.argument("subject")
@click.option("--until", default=None, metavar="WHEN", help="A ban: tokens issued until WHEN are void too (epoch seconds, ISO 8601 or a duration like 7d).")
@_revocation_options
@_handle_errors
def revoke_subject(subject: str, until: str | None, **kwargs: Any) -> None:
    """Void every token of SUBJECT issued until now (logout everywhere, password reset), or until WHEN."""
    until_at = _when(until, "--until") if until is not None else None
    cutoff = _revocation_store(_settings(kwargs)).revoke_subject(subject, until=until_at)
    click.echo(
        f"revoked: every token of {subject!r} issued before {_iso(cutoff.not_before)} "
        f"(record kept until {_iso(cutoff.expires_at)})"
    )


@main.command(name="bump-session")
@click.argument("subject")
@_revocation_options
@_handle_errors
def bump_session(subject: str, **kwargs: Any) -> None:
    """Void every token of SUBJECT that carries an older session version; prints the new version."""
    click.echo(_revocation_store(_settings(kwargs)).bump_session(subject))


@main.command(name="revocations")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_revocation_options
@_handle_errors
def revocations_cmd(as_json: bool, **kwargs: Any) -> None:
    """Show the revocations in force."""
    tables = _revocation_store(_settings(kwargs)).records()
    if as_json:
        click.echo(json.dumps(tables.as_json(), indent=2))
        return
    click.echo(
        f"{len(tables.denied)} denied jtis, {len(tables.cutoffs)} subject cutoffs, "
        f"{len(tables.versions)} session versions"
        + (f", {len(tables.malformed)} malformed records (skipped by every replica)" if tables.malformed else "")
    )
    for jti, expires in sorted(tables.denied.items()):
        click.echo(f"jti      {_shown(jti)}  until {_iso(expires)}")
    for c in sorted(tables.cutoffs.values(), key=lambda c: c.subject):
        click.echo(f"subject  {_shown(c.subject)}  issued before {_iso(c.not_before)}  until {_iso(c.expires_at)}")
    for v in sorted(tables.versions.values(), key=lambda v: v.subject):
        click.echo(f"session  {_shown(v.subject)}  version {v.version}  until {_iso(v.expires_at)}")
    for key, problem in sorted(tables.malformed.items()):
        click.echo(f"malformed  {_shown(key)}  {problem}")


def _shown(text: str) -> str:
    """An id as printed: itself when every character prints, else its escaped repr, so a
    direction override (U+202E) or another invisible character cannot disguise a listing."""
    return text if text.isprintable() else repr(text)


# The same cap the verifier puts on a fetched key set.
_MAX_JWKS_BYTES = 256 * 1024


def _file_key_set(path: Any, url: str) -> Any:
    """A key set from a file, under the verifier's size cap; KeysUnavailable (exit 6) when it
    cannot be read or holds no usable key, as over HTTP."""
    from .verifier import KeysUnavailable, parse_jwks

    try:
        with open(path, "rb") as fh:
            body = fh.read(_MAX_JWKS_BYTES + 1)
    except OSError as e:
        raise KeysUnavailable(f"cannot read JWKS {url}: {e.strerror}") from e
    if len(body) > _MAX_JWKS_BYTES:
        raise KeysUnavailable(f"JWKS {url} is larger than the {_MAX_JWKS_BYTES}-byte limit")
    try:
        keys = parse_jwks(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise KeysUnavailable(f"JWKS {url} is not a usable key set: {e}") from e
    if not keys:
        raise KeysUnavailable(f"JWKS {url} holds no usable ES256 key")
    return keys


if __name__ == "__main__":  # pragma: no cover
    main()
