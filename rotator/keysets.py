"""Several key sets from one configuration.

A settings file may name key sets, each a table of settings over the file's top-level
values (which are the defaults of every set)::

    rotation_period = "15m"            # every set's, unless its table says otherwise
    [key_sets.access]
    keystore = "file:///var/lib/rotator/access"
    publish = "file:///var/lib/rotator/public/access"
    [key_sets.federation]
    algorithm = "RS256"
    keystore = "file:///var/lib/rotator/federation"
    publish = "file:///var/lib/rotator/public/federation"

The environment and the command line override every set they apply to (``--key-set``
picks one). A file without key sets is one set, named ``default``, exactly as before.
Across the sets: each needs a keystore of its own; sets may publish into one JWKS document
(``publish.shared``: the union of their keys), which must fit its key budget
(``jwks_key_budget``, per key type).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import replace
from typing import Any, Mapping

from .config import Settings, read_config, resolve
from .errors import ConfigError
from .keys import key_type

__all__ = ["DEFAULT", "load_key_sets", "select", "check_budget"]

DEFAULT = "default"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def load_key_sets(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> dict[str, Settings]:
    """Every key set the sources name (one, ``default``, when the file names none), in the
    file's order, each validated and all checked together."""
    env = os.environ if env is None else env
    path, values = read_config(env, config_file)
    tables = values.pop("key_sets", None)
    values.pop("authz", None)  # the sidecar's table: rotator.authz reads it
    if tables is None:
        sets = {DEFAULT: resolve(cli, env, values, str(path))}
    else:
        if not isinstance(tables, dict) or not tables or not all(isinstance(t, dict) for t in tables.values()):
            raise ConfigError(f"key_sets in {path} must be tables of settings, one per key set ([key_sets.NAME])")
        sets = {}
        for name, table in tables.items():
            if not _NAME.fullmatch(name):
                raise ConfigError(f"key set name {name!r} in {path}: use 1 to 32 of a-z 0-9 _ -, starting with a letter or digit")
            if "passphrase" in table:
                raise ConfigError(f"key set {name} in {path} sets 'passphrase': keep secrets out of config files")
            where = f"{path} [key_sets.{name}]"
            try:
                sets[name] = resolve(cli, env, {**values, **table}, where, key_set=name)
            except ConfigError as e:
                raise ConfigError(f"key set {name}: {e}") from e
    _check_distinct_keystores(sets)
    check_budget(sets.values())
    return _mark_shared(sets)


def select(sets: Mapping[str, Settings], name: str | None) -> Settings:
    """The key set ``name``; with no name, the only one (several need ``--key-set``)."""
    if name is not None:
        if name not in sets:
            raise ConfigError(f"no key set named {name!r} (key sets: {', '.join(sets)})")
        return sets[name]
    if len(sets) > 1:
        raise ConfigError(f"the configuration names several key sets ({', '.join(sets)}): give --key-set NAME")
    return next(iter(sets.values()))


def _check_distinct_keystores(sets: Mapping[str, Settings]) -> None:
    seen: dict[str, str] = {}
    for name, settings in sets.items():
        other = seen.setdefault(_location(settings.keystore), name)
        if other != name:
            raise ConfigError(
                f"key sets {other} and {name} share the keystore {settings.keystore}: each key set needs its own"
            )


def _mark_shared(sets: dict[str, Settings]) -> dict[str, Settings]:
    """Key sets publishing into one document: each marked (its publisher then writes a part
    and the union), once checked to agree on what the document's readers see."""
    by_place: dict[str, list[str]] = defaultdict(list)
    for name, settings in sets.items():
        by_place[_location(settings.publish)].append(name)
    out = dict(sets)
    for names in by_place.values():
        if len(names) < 2:
            continue
        first = sets[names[0]]
        for name in names[1:]:
            other = sets[name]
            if (other.policy.max_age, other.public_url) != (first.policy.max_age, first.public_url):
                raise ConfigError(
                    f"key sets {names[0]} and {name} publish into {first.publish} with different max_age or "
                    "public_url: a shared JWKS has one Cache-Control and one URL"
                )
        for name in names:
            out[name] = replace(sets[name], shared_publish=True)
    return out


def _location(url: str) -> str:
    """A location as compared across key sets: a file path made absolute."""
    if url.startswith("file://") or "://" not in url:
        from ._fs import path_from_url

        try:
            return "file://" + str(path_from_url(url, "location").absolute())
        except Exception:  # noqa: BLE001 (a bad location is reported when it is opened)
            return url
    return url.rstrip("/")


def check_budget(sets: Any) -> None:
    """Refuse a configuration whose JWKS would hold more keys of one type than its budget:
    each key set publishes up to ceil(W/P) + 2 keys of its algorithm's type."""
    counts: dict[tuple[str, str], list[Settings]] = defaultdict(list)
    for settings in sets:
        counts[(_location(settings.publish), key_type(settings.algorithm))].append(settings)
    for (where, kty), members in counts.items():
        total = sum(s.policy.max_jwks_keys for s in members)
        budget = min(s.jwks_key_budget for s in members)
        if total > budget:
            parts = ", ".join(
                f"{s.key_set}: ceil(W/P) + 2 = {s.policy.max_jwks_keys}" for s in members
            )
            raise ConfigError(
                f"the JWKS at {members[0].publish} would hold up to {total} {kty} keys ({parts}), over the budget "
                f"of {budget} (jwks_key_budget; AWS IAM takes at most 100 keys of a type): shorten "
                "retirement_window, lengthen rotation_period, publish fewer key sets there, or raise "
                "jwks_key_budget if no consumer of this JWKS limits it"
            )
