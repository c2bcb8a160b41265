"""The sidecar's settings: the ``[authz]`` table of the settings file, and ``ROTATOR_AUTHZ_*``
variables for a single issuer and the listening addresses. Revocation uses the file's own
``revocation_url``, ``revocation_prefix``, ``revocation_password_file`` and
``revocation_snapshot`` (with ``s3_endpoint_url``).

    [authz]
    listen = "127.0.0.1:9191"
    workers = 0                       # one per core
    result_cache_size = 100000
    decision_max_age = "0s"           # off: proxies do not cache decisions

    [[authz.issuers]]
    issuer = "https://auth.example.com"
    jwks_url = "https://auth.example.com/.well-known/jwks.json"   # none: OpenID discovery
    audience = "orders-api"
    algorithms = ["ES256"]

    [authz.headers]                   # claim = header sent to the upstream on allow
    sub = "X-Auth-Subject"

    [[authz.rules]]                   # the first rule whose path and method match applies
    path = "/admin/"
    methods = ["POST", "DELETE"]
    scopes = ["orders:admin"]
    claims = { tenant = "acme" }
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from ..config import load_settings, parse_count, read_config
from ..durations import parse_duration
from ..errors import ConfigError
from ..keys import ALGORITHMS

__all__ = ["AuthzSettings", "IssuerSettings", "Rule", "load_authz", "parse_listen"]

_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
_CLAIM_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# Headers no claim may set: hop-by-hop, framing, and what proxies route or authenticate by.
_RESERVED = {
    "authorization", "connection", "content-length", "content-type", "cookie", "host", "keep-alive",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "set-cookie",
}
_TABLE_KEYS = {
    "listen", "grpc_listen", "workers", "envoy_prefix", "result_cache_size", "decision_max_age",
    "max_header_bytes", "revocation_max_staleness", "realm", "issuers", "headers", "rules",
}
_ISSUER_KEYS = {
    "issuer", "jwks_url", "audience", "algorithms", "leeway", "max_lifetime", "allow_http", "min_max_age",
    "max_stale", "unknown_kid_cooldown",
}
# The key cache's timings, passed to the Verifier where set (README, "How keys are fetched").
_CACHE_OPTIONS = ("min_max_age", "max_stale", "unknown_kid_cooldown")
_RULE_KEYS = {"path", "methods", "scopes", "claims"}
_ENV = {
    "listen": "ROTATOR_AUTHZ_LISTEN",
    "grpc_listen": "ROTATOR_AUTHZ_GRPC_LISTEN",
    "workers": "ROTATOR_AUTHZ_WORKERS",
}


@dataclass(frozen=True)
class IssuerSettings:
    issuer: str
    jwks_url: str | None  # None: OpenID discovery from the issuer URL
    audience: tuple[str, ...]
    algorithms: tuple[str, ...] = ("ES256",)
    leeway: float = 60.0
    max_lifetime: float | None = None
    allow_http: bool = False  # http:// JWKS and discovery URLs, on loopback hosts only
    cache: tuple[tuple[str, float], ...] = ()  # min_max_age, max_stale, unknown_kid_cooldown where set


@dataclass(frozen=True)
class Rule:
    """Requests whose path is ``path`` or below it (a prefix ending in '/') and whose method
    is one of ``methods`` (empty: any) need every scope of ``scopes`` and every claim value."""

    path: str
    methods: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    claims: tuple[tuple[str, str], ...] = ()

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        return path == self.path or (self.path.endswith("/") and path.startswith(self.path))


@dataclass(frozen=True)
class AuthzSettings:
    issuers: tuple[IssuerSettings, ...]
    listen: tuple[str, int] = ("127.0.0.1", 9191)
    grpc_listen: tuple[str, int] | None = None
    workers: int = 0  # 0: one per core
    envoy_prefix: str = "/envoy"
    result_cache_size: int = 100_000
    decision_max_age: float = 0.0
    max_header_bytes: int = 1024
    revocation_max_staleness: float = 30.0
    realm: str = "api"
    headers: tuple[tuple[str, str], ...] = ()  # (claim, header)
    rules: tuple[Rule, ...] = ()
    revocation_url: str | None = None
    revocation_prefix: str = "rotator:"
    revocation_password_file: str | None = None
    revocation_snapshot: str | None = None
    s3_endpoint_url: str | None = None
    source: str = field(default="", compare=False)

    @property
    def worker_count(self) -> int:
        return self.workers or len(os.sched_getaffinity(0))


_DEFAULTS = {f.name: f.default for f in fields(AuthzSettings)}


def parse_listen(value: Any, name: str) -> tuple[str, int]:
    """``HOST:PORT`` ('[::1]:PORT' for IPv6); ConfigError naming ``name`` otherwise."""
    text = str(value)
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"invalid {name} {text!r}: expected HOST:PORT, such as 127.0.0.1:9191")
    return host, int(port)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{what} must be a string or a list of strings")
    return tuple(value)


def _table(table: Any, keys: set[str], where: str) -> Mapping[str, Any]:
    """``table`` if it is a table of only ``keys``; ConfigError naming the first other key."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = set(table) - keys
    if unknown:
        raise ConfigError(f"unknown setting {sorted(unknown)[0]!r} in {where}")
    return table


def _issuer(table: Any, where: str) -> IssuerSettings:
    table = _table(table, _ISSUER_KEYS, where)
    issuer = table.get("issuer")
    if not isinstance(issuer, str) or not issuer.startswith(("https://", "http://")):
        raise ConfigError(f"{where} needs issuer, the exact iss its tokens carry (an https URL)")
    if "audience" not in table:
        raise ConfigError(f"{where} ({issuer}) needs audience: the sidecar accepts only tokens meant for its services")
    given: dict[str, Any] = {}  # the rest keep IssuerSettings' defaults
    if "algorithms" in table:
        given["algorithms"] = _strings(table["algorithms"], f"{where} algorithms")
        for alg in given["algorithms"]:
            if alg not in ALGORITHMS:
                raise ConfigError(f"{where} algorithm {alg!r} is not one of {', '.join(ALGORITHMS)}")
    jwks_url = table.get("jwks_url")
    if jwks_url is not None and not isinstance(jwks_url, str):
        raise ConfigError(f"{where} jwks_url must be a string")
    for name in ("leeway", "max_lifetime"):
        if name in table:
            given[name] = parse_duration(table[name], name=name, source=where)
    return IssuerSettings(
        issuer=issuer,
        jwks_url=jwks_url,
        audience=_strings(table["audience"], f"{where} audience"),
        allow_http=table.get("allow_http") is True,
        cache=tuple((name, parse_duration(table[name], name=name, source=where)) for name in _CACHE_OPTIONS if name in table),
        **given,
    )


def _rule(table: Any, where: str) -> Rule:
    table = _table(table, _RULE_KEYS, where)
    path = table.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f"{where} needs path, an absolute path or a prefix ending in '/'")
    claims = table.get("claims", {})
    if not isinstance(claims, Mapping) or not all(isinstance(v, str) for v in claims.values()):
        raise ConfigError(f"{where} claims must be a table of claim = string value")
    return Rule(
        path=path,
        methods=tuple(m.upper() for m in _strings(table.get("methods", []), f"{where} methods")) if table.get("methods") else (),
        scopes=_strings(table["scopes"], f"{where} scopes") if table.get("scopes") else (),
        claims=tuple(sorted(claims.items())),
    )


def _headers(table: Any, source: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"[authz.headers] in {source} must be a table of claim = header name")
    out = []
    for claim, header in table.items():
        if not _CLAIM_NAME.fullmatch(claim):
            raise ConfigError(f"[authz.headers] claim {claim!r} is not a plain claim name")
        if not isinstance(header, str) or not _HEADER_NAME.fullmatch(header) or header.lower() in _RESERVED:
            raise ConfigError(f"[authz.headers] {claim} = {header!r}: not a header name the sidecar may set")
        out.append((claim, header))
    if len({h.lower() for _, h in out}) != len(out):
        raise ConfigError("[authz.headers] names one header for two claims")
    return tuple(out)


def _envoy_prefix(prefix: Any) -> str:
    if not isinstance(prefix, str) or not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", prefix):
        raise ConfigError(f"invalid envoy_prefix {prefix!r}: expected a path such as /envoy")
    return prefix


def _realm(realm: Any) -> str:
    if not isinstance(realm, str) or not re.fullmatch(r"[A-Za-z0-9 ._-]{1,64}", realm):
        raise ConfigError(f"invalid realm {realm!r}: letters, digits, spaces and ._- only")
    return realm


def load_authz(env: Mapping[str, str] | None = None, config_file: str | None = None) -> AuthzSettings:
    """The sidecar's settings from the file's ``[authz]`` table and the environment
    (ROTATOR_AUTHZ_LISTEN, _GRPC_LISTEN, _WORKERS; a single issuer by ROTATOR_AUTHZ_ISSUER,
    _JWKS_URL, _AUDIENCE when the file names none). ConfigError, one line, on anything wrong."""
    env = os.environ if env is None else env
    path, values = read_config(env, config_file)
    source = path or "the environment"
    table = _table(values.get("authz", {}), _TABLE_KEYS, f"[authz] of {source}")
    raw_issuers = table.get("issuers", [])
    if not isinstance(raw_issuers, list):
        raise ConfigError(f"authz.issuers in {source} must be an array of tables ([[authz.issuers]])")
    issuers = [_issuer(t, f"[[authz.issuers]] #{i + 1} of {source}") for i, t in enumerate(raw_issuers)]
    if not issuers and env.get("ROTATOR_AUTHZ_ISSUER"):
        issuers.append(_issuer({
            "issuer": env["ROTATOR_AUTHZ_ISSUER"],
            **({"jwks_url": env["ROTATOR_AUTHZ_JWKS_URL"]} if env.get("ROTATOR_AUTHZ_JWKS_URL") else {}),
            **({"audience": env["ROTATOR_AUTHZ_AUDIENCE"].split(",")} if env.get("ROTATOR_AUTHZ_AUDIENCE") else {}),
        }, "ROTATOR_AUTHZ_ISSUER"))
    if not issuers:
        raise ConfigError(f"rotator authz needs at least one issuer: [[authz.issuers]] in {source}, or ROTATOR_AUTHZ_ISSUER")
    if len({i.issuer for i in issuers}) != len(issuers):
        raise ConfigError(f"[[authz.issuers]] in {source} names one issuer twice")
    found = {name: env[var] for name, var in _ENV.items() if env.get(var)}
    merged = {**table, **found}
    # The revocation settings are the file's own (the same Redis the CLI writes to).
    base = load_settings(env=env, config_file=path)

    def given(name: str, convert: Any) -> Any:
        """The setting converted and checked, or AuthzSettings' default when not given."""
        return convert(merged[name]) if name in merged else _DEFAULTS[name]

    def duration(name: str) -> Any:
        return lambda value: parse_duration(value, name=name, source=source)

    return AuthzSettings(
        issuers=tuple(issuers),
        listen=given("listen", lambda v: parse_listen(v, "listen")),
        grpc_listen=given("grpc_listen", lambda v: parse_listen(v, "grpc_listen") if v else None),
        workers=given("workers", lambda v: parse_count(v, name="workers", source=source, low=0, high=256)),
        envoy_prefix=given("envoy_prefix", _envoy_prefix),
        result_cache_size=given("result_cache_size", lambda v: parse_count(v, name="result_cache_size", source=source, low=0)),
        decision_max_age=given("decision_max_age", duration("decision_max_age")),
        max_header_bytes=given(
            "max_header_bytes", lambda v: parse_count(v, name="max_header_bytes", source=source, low=16, high=8192)
        ),
        revocation_max_staleness=given("revocation_max_staleness", duration("revocation_max_staleness")),
        realm=given("realm", _realm),
        headers=given("headers", lambda v: _headers(v, source)),
        rules=given("rules", lambda v: tuple(_rule(t, f"[[authz.rules]] #{i + 1} of {source}") for i, t in enumerate(v))),
        revocation_url=base.revocation_url,
        revocation_prefix=base.revocation_prefix,
        revocation_password_file=base.revocation_password_file,
        revocation_snapshot=base.revocation_snapshot,
        s3_endpoint_url=base.s3_endpoint_url,
        source=source,
    )
