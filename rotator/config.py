"""Policy and settings: defaults, sources, validation.

Precedence, highest first: CLI flags, ``ROTATOR_*`` environment variables, a
TOML file (``--config`` or ``ROTATOR_CONFIG``), built-in defaults. Everything is
validated once, here, so the rest of the code can trust a Policy it is given.
Longer than the project's usual module on purpose: every setting's name, variable,
conversion and check live together, so no setting is ever read two ways (the sidecar's
table, rotator.authz, uses the same checks: ``parse_count``).
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Mapping

from ._fs import read_secret_file
from .durations import format_duration, parse_duration
from .errors import ConfigError
from .keys import ALG, ALGORITHMS, RSA_BITS

if TYPE_CHECKING:
    from ._aws import S3Options
    from .keystore import Keystore
    from .publish import Publisher
    from .sealing import SealerOptions

__all__ = ["Policy", "Settings", "load_settings", "read_config", "resolve", "parse_count"]


DEFAULT_CLOCK_SKEW = 60.0
# How long the revocation change log keeps an entry: a replica away longer loads every record.
DEFAULT_LOG_RETENTION = 3600.0


@dataclass(frozen=True)
class Policy:
    """Lifecycle timing, in seconds (see DESIGN.md: P, T, L, M, W)."""

    rotation_period: float = 900.0  # P
    token_lifetime: float = 3600.0  # T
    leeway: float = 60.0  # L
    max_age: float = 300.0  # M
    retirement_window: float = 86400.0  # W
    private_key_grace: float = 300.0  # retired key's private half kept this long for issuers' caches
    audit_retention: float = 86400.0  # removed/revoked key metadata kept this long
    # Stored times ahead of this host's clock by more are refused or repaired. 0: the
    # default, 60 s or half of max_age, whichever is less (DEFAULT_CLOCK_SKEW).
    max_clock_skew: float = 0.0
    refresh_max_age: float = 86400.0  # absolute session lifetime of a refresh chain, from its orig_iat
    refresh_grace: float = 0.0  # how long after exp a token may still be refreshed

    def __post_init__(self) -> None:
        if self.max_clock_skew == 0:
            object.__setattr__(self, "max_clock_skew", min(DEFAULT_CLOCK_SKEW, self.max_age / 2))
        self.validate()

    def validate(self) -> None:
        fmt = format_duration
        if self.rotation_period <= 0:
            raise ConfigError("rotation_period must be greater than zero")
        if self.max_age < 2:
            raise ConfigError(
                f"max_age ({fmt(self.max_age)}) must be at least 2s: max_clock_skew, at least 1s "
                "(storage clocks tell whole seconds), must be at most half of it"
            )
        if not 1 <= self.max_clock_skew <= 3600:
            raise ConfigError(f"max_clock_skew ({fmt(self.max_clock_skew)}) must be between 1s and 1h")
        if self.max_clock_skew * 2 > self.max_age:
            raise ConfigError(
                f"max_clock_skew ({fmt(self.max_clock_skew)}) must be at most half of max_age "
                f"({fmt(self.max_age)}): a clock off by that much could cut the wait that lets "
                "verifier caches learn a new key before it signs"
            )
        if self.refresh_max_age < self.token_lifetime:
            raise ConfigError(
                f"refresh_max_age ({fmt(self.refresh_max_age)}) must be at least token_lifetime "
                f"({fmt(self.token_lifetime)})"
            )
        if self.refresh_grace > self.token_lifetime:
            raise ConfigError(
                f"refresh_grace ({fmt(self.refresh_grace)}) must not exceed token_lifetime ({fmt(self.token_lifetime)})"
            )
        if self.token_lifetime <= 0:
            raise ConfigError("token_lifetime must be greater than zero")
        if self.max_age * 2 > self.rotation_period:
            raise ConfigError(
                f"max_age ({fmt(self.max_age)}) must be at most half of rotation_period "
                f"({fmt(self.rotation_period)}): a successor must be published for max_age "
                "before it is due to sign"
            )
        needed = self.token_lifetime + self.leeway + self.max_age
        if self.retirement_window < needed:
            raise ConfigError(
                f"retirement_window ({fmt(self.retirement_window)}) must be at least "
                f"token_lifetime + leeway + max_age ({fmt(needed)}): tokens signed just "
                "before retirement would stop verifying"
            )
        if self.private_key_grace > self.retirement_window:
            raise ConfigError(
                f"private_key_grace ({fmt(self.private_key_grace)}) must not exceed "
                f"retirement_window ({fmt(self.retirement_window)})"
            )

    @property
    def max_jwks_keys(self) -> int:
        """Upper bound on published keys under scheduled rotation: ceil(W/P) + 2.

        Retired keys are published for W and retire at least P apart; add the
        active key and its pending successor.
        """
        return math.ceil(self.retirement_window / self.rotation_period) + 2


_POLICY_FIELDS = tuple(f.name for f in fields(Policy))


@dataclass(frozen=True)
class Settings:
    """Everything a command needs, resolved from all sources."""

    keystore: str = "file://./rotator-data/keystore"
    publish: str = "file://./rotator-data/public"
    issuer: str | None = None
    passphrase: str | None = field(default=None, repr=False)
    passphrase_file: str | None = None
    insecure_plaintext_keys: bool = False
    kms_key_id: str | None = None
    s3_endpoint_url: str | None = None
    s3_single_writer: bool = False
    public_url: str | None = None
    discovery: bool = False
    revocation_url: str | None = None
    revocation_prefix: str = "rotator:"
    revocation_password_file: str | None = None
    revocation_snapshot: str | None = None  # where the records' snapshot is published and read
    revocation_snapshot_interval: float = 20.0  # under the verifiers' 30 s bound: see the README
    revocation_min_replicas: int = 0  # Redis replicas that must hold a revocation before a write returns
    revocation_log_retention: float = DEFAULT_LOG_RETENTION  # how long the change log keeps an entry
    algorithm: str = ALG
    rsa_bits: int = 2048
    jwks_key_budget: int = 100
    key_set: str = "default"  # the key set's name, in a configuration that names several
    shared_publish: bool = False  # other key sets publish into the same JWKS document
    policy: Policy = field(default_factory=Policy)

    def resolved_passphrase(self) -> str | None:
        if self.passphrase:
            return self.passphrase
        if self.passphrase_file:
            return read_secret_file(self.passphrase_file, "passphrase file", ConfigError)
        return None


    def sealer_options(self) -> "SealerOptions":
        """What opens this key set's sealed private keys: the passphrase or KMS key."""
        from .sealing import SealerOptions

        return SealerOptions(self.resolved_passphrase(), self.insecure_plaintext_keys, self.kms_key_id, self.passphrase_source())

    def open_keystore(self) -> "Keystore":
        """The keystore these settings name."""
        from .keystore import open_keystore

        return open_keystore(self.keystore, self._s3())

    def open_publisher(self) -> "Publisher":
        """The publish target these settings name."""
        from .publish import open_publisher

        return open_publisher(
            self.publish, s3=self._s3(), max_age=self.policy.max_age, public_url=self.public_url,
            key_set=self.key_set if self.shared_publish else None,
        )

    def _s3(self) -> "S3Options":
        from ._aws import S3Options

        return S3Options(endpoint_url=self.s3_endpoint_url, single_writer=self.s3_single_writer)

    def passphrase_source(self) -> str:
        """Where the passphrase comes from, for errors (never the passphrase itself)."""
        if self.passphrase:
            return "ROTATOR_KEYSTORE_PASSPHRASE"
        if self.passphrase_file:
            return f"passphrase file {self.passphrase_file}"
        return "no passphrase set"


# name -> (environment variable, kind)
_SETTINGS: dict[str, tuple[str, str]] = {
    "keystore": ("ROTATOR_KEYSTORE", "str"),
    "publish": ("ROTATOR_PUBLISH", "str"),
    "issuer": ("ROTATOR_ISSUER", "str"),
    "passphrase": ("ROTATOR_KEYSTORE_PASSPHRASE", "secret"),
    "passphrase_file": ("ROTATOR_KEYSTORE_PASSPHRASE_FILE", "str"),
    "insecure_plaintext_keys": ("ROTATOR_INSECURE_PLAINTEXT_KEYS", "bool"),
    "kms_key_id": ("ROTATOR_KMS_KEY_ID", "str"),
    "s3_endpoint_url": ("ROTATOR_S3_ENDPOINT_URL", "str"),
    "s3_single_writer": ("ROTATOR_S3_SINGLE_WRITER", "bool"),
    "public_url": ("ROTATOR_PUBLIC_URL", "str"),
    "discovery": ("ROTATOR_DISCOVERY", "bool"),
    "revocation_url": ("ROTATOR_REVOCATION_URL", "str"),
    "revocation_prefix": ("ROTATOR_REVOCATION_PREFIX", "str"),
    "revocation_password_file": ("ROTATOR_REVOCATION_PASSWORD_FILE", "str"),
    "revocation_snapshot": ("ROTATOR_REVOCATION_SNAPSHOT", "str"),
    "revocation_snapshot_interval": ("ROTATOR_REVOCATION_SNAPSHOT_INTERVAL", "duration"),
    "revocation_min_replicas": ("ROTATOR_REVOCATION_MIN_REPLICAS", "replicas"),
    "revocation_log_retention": ("ROTATOR_REVOCATION_LOG_RETENTION", "duration"),
    "algorithm": ("ROTATOR_ALGORITHM", "algorithm"),
    "rsa_bits": ("ROTATOR_RSA_BITS", "rsa_bits"),
    "jwks_key_budget": ("ROTATOR_JWKS_KEY_BUDGET", "count"),
    **{name: (f"ROTATOR_{name.upper()}", "duration") for name in _POLICY_FIELDS},
}

# Tables of the file read elsewhere: key sets (rotator.keysets) and the sidecar (rotator.authz).
_TABLES = ("key_sets", "authz")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_count(value: Any, *, name: str, source: str, low: int = 1, high: int = 10_000_000) -> int:
    """A whole number from ``low`` to ``high`` (ASCII digits); ConfigError naming ``name``."""
    text = str(value).strip() if not isinstance(value, bool) else ""
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise ConfigError(f"invalid {name} {value!r} (from {source}): expected a whole number from {low} to {high}")
    return int(text)


def _convert(name: str, kind: str, value: Any, source: str) -> Any:
    if kind == "duration":
        return parse_duration(value, name=name, source=source)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"invalid {name} {value!r} (from {source}): expected true or false")
    if kind == "algorithm":
        if value not in ALGORITHMS:
            raise ConfigError(f"invalid {name} {value!r} (from {source}): expected one of {', '.join(ALGORITHMS)}")
        return value
    if kind == "count":
        return parse_count(value, name=name, source=source)
    if kind == "replicas":
        return parse_count(value, name=name, source=source, low=0, high=16)
    if kind == "rsa_bits":
        text = str(value).strip() if not isinstance(value, bool) else ""
        if not text.isascii() or not text.isdigit() or int(text) not in RSA_BITS:
            raise ConfigError(f"invalid {name} {value!r} (from {source}): expected one of {', '.join(map(str, RSA_BITS))}")
        return int(text)
    if not isinstance(value, str):
        raise ConfigError(f"invalid {name} {value!r} (from {source}): expected a string")
    return value


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path} does not exist") from e
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start})") from e
    if "passphrase" in data:
        raise ConfigError(
            f"config file {path} sets 'passphrase': keep secrets out of config files; "
            "use ROTATOR_KEYSTORE_PASSPHRASE or passphrase_file"
        )
    for key in data:
        if key not in _SETTINGS and key not in _TABLES:
            raise ConfigError(f"unknown setting {key!r} in config file {path}")
    return data


def read_config(env: Mapping[str, str], config_file: str | None) -> tuple[str | None, dict[str, Any]]:
    """The settings file (``config_file``, else ROTATOR_CONFIG) and its values (none: {})."""
    config_file = config_file or env.get("ROTATOR_CONFIG") or None
    return config_file, (_read_toml(config_file) if config_file else {})


def load_settings(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Merge the sources (CLI > environment > TOML > defaults) and validate. In a file that
    names key sets, the top-level values (see ``rotator.keysets`` for the sets)."""
    env = os.environ if env is None else env
    config_file, file_values = read_config(env, config_file)
    file_values = {k: v for k, v in file_values.items() if k not in _TABLES}
    return resolve(cli, env, file_values, str(config_file))


def resolve(
    cli: Mapping[str, Any] | None, env: Mapping[str, str], file_values: Mapping[str, Any], source: str, **fixed: Any
) -> Settings:
    """One key set's settings from its sources (CLI > environment > ``file_values``, read from
    ``source``, > defaults), validated; ``fixed``: values no source sets (its name)."""
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    for key in cli:
        if key not in _SETTINGS:
            raise ConfigError(f"unknown setting {key!r}")
    for key in file_values:
        if key not in _SETTINGS:
            raise ConfigError(f"unknown setting {key!r} in {source}")
    config_file = source

    values: dict[str, Any] = {}
    for name, (var, kind) in _SETTINGS.items():
        if name in cli:
            values[name] = _convert(name, kind, cli[name], "command line")
        elif env.get(var) not in (None, ""):
            values[name] = _convert(name, kind, env[var], var)
        elif name in file_values:
            values[name] = _convert(name, kind, file_values[name], str(config_file))

    policy = Policy(**{k: values.pop(k) for k in _POLICY_FIELDS if k in values})
    settings = Settings(policy=policy, **values, **fixed)
    if settings.revocation_url is not None:
        from .revocation import RevocationError, check_log_retention, check_prefix, check_url

        try:
            check_url(settings.revocation_url)
            check_prefix(settings.revocation_prefix)
            check_log_retention(settings.revocation_log_retention)
        except RevocationError as e:
            raise ConfigError(str(e)) from e
    if settings.revocation_snapshot is not None:
        from .revocation import SnapshotTarget

        SnapshotTarget(settings.revocation_snapshot)  # a location it can read and write, or ConfigError
    if not settings.revocation_snapshot_interval > 0:
        raise ConfigError(f"revocation_snapshot_interval must be more than 0, got {settings.revocation_snapshot_interval:g}s")
    if settings.revocation_snapshot is not None and (
        settings.revocation_log_retention < 2 * settings.revocation_snapshot_interval
    ):
        raise ConfigError(
            f"revocation_log_retention ({format_duration(settings.revocation_log_retention)}) must be at least twice "
            f"revocation_snapshot_interval ({format_duration(settings.revocation_snapshot_interval)}): a snapshot is "
            "of use only while the change log still holds its position"
        )
    if settings.discovery and not (settings.issuer and settings.public_url):
        raise ConfigError("discovery needs issuer and public_url (the jwks_uri verifiers fetch)")
    return settings
