"""The JWKS document: deterministic bytes from a state, and the publication guard."""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any, Iterable

from .._strict import strict_json
from ..errors import PublicationGuardError
from ..keys import (
    ALG,
    ALGORITHMS,
    PRIVATE_MEMBERS,
    PublicJWK,
    generate_private_key,
    public_jwk,
    public_jwk_problem,
    public_members,
    thumbprint,
)
from ..state import KeyState, State

__all__ = [
    "build_jwks",
    "jwks_digest",
    "check_jwks",
    "jwks_kids",
    "required_kids",
    "discovery_document",
    "published_keys",
    "jwks_size",
]


def _order(state: State) -> list[Any]:
    active = state.in_state(KeyState.ACTIVE)
    pending = state.pending
    retired = sorted(state.in_state(KeyState.RETIRED), key=lambda k: (-(k.retired_at or 0.0), k.kid))
    return active + pending + retired


def build_jwks(state: State) -> bytes:
    """Public halves of every published key, active first; identical bytes for identical states."""
    keys = [
        {**key.public, "kid": key.kid, "alg": key.alg, "use": "sig"}
        for key in _order(state)
    ]
    return (json.dumps({"keys": keys}, sort_keys=True, separators=(",", ":")) + "\n").encode("ascii")


def jwks_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def required_kids(state: State) -> tuple[str | None, tuple[str, ...]]:
    """(active kid, pending kids): what every JWKS published for this state must hold."""
    active = state.active
    return (active.kid if active else None, tuple(k.kid for k in state.pending))


def jwks_kids(body: bytes) -> list[str]:
    doc = json.loads(body)
    return [k["kid"] for k in doc["keys"]]


def published_keys(body: bytes | None) -> tuple[list[tuple[str, str, PublicJWK]], list[str]]:
    """The rotator keys a served JWKS lists, in its order, as (kid, alg, public JWK); and
    the kids of entries that are not (not a key of its alg, or a kid that is not the thumbprint)."""
    if body is None:
        return [], []
    try:
        doc = strict_json(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise PublicationGuardError(f"the served JWKS is not valid JSON: {e}") from e
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise PublicationGuardError('the served JWKS is not an object with a "keys" list')
    keys: list[tuple[str, str, PublicJWK]] = []
    skipped: list[str] = []
    for entry in entries:
        if not isinstance(entry, dict):
            skipped.append("?")
            continue
        kid, alg = entry.get("kid"), entry.get("alg", ALG)
        jwk = public_members(entry)
        if (
            jwk is not None and isinstance(alg, str) and not PRIVATE_MEMBERS.intersection(entry)
            and public_jwk_problem(jwk, kid, alg) is None
        ):
            keys.append((str(kid), alg, jwk))
        else:
            skipped.append(str(kid))
    return keys, skipped


def check_jwks(body: bytes, active: str | None, pending: Iterable[str]) -> None:
    """The publication guard. Raises PublicationGuardError unless ``body`` is safe to publish.

    Safe: a ``{"keys": [...]}`` object of public keys of a known type, each with its kid
    and alg, unique kids, no private member anywhere, the active key first and every
    pending key present.
    """
    try:
        doc = strict_json(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise PublicationGuardError(f"JWKS is not valid JSON: {e}") from e
    if not isinstance(doc, dict) or set(doc) != {"keys"} or not isinstance(doc["keys"], list):
        raise PublicationGuardError('JWKS must be an object with exactly one member, "keys" (a list)')
    kids: list[str] = []
    for key in doc["keys"]:
        if not isinstance(key, dict):
            raise PublicationGuardError("JWKS entry is not an object")
        leaked = PRIVATE_MEMBERS.intersection(key)
        if leaked:
            raise PublicationGuardError(f"JWKS entry {key.get('kid')!r} carries private members {sorted(leaked)}")
        if public_members(key) is None or not isinstance(key.get("kid"), str) or key.get("alg") not in ALGORITHMS:
            raise PublicationGuardError(f"JWKS entry {key.get('kid')!r} is not a public key with a kid and an alg rotator knows")
        kids.append(key["kid"])
    if len(set(kids)) != len(kids):
        raise PublicationGuardError("JWKS lists a kid twice")
    if active is not None and (not kids or kids[0] != active):
        raise PublicationGuardError(f"JWKS does not list the active key {active} first")
    missing = [kid for kid in pending if kid not in kids]
    if missing:
        raise PublicationGuardError(f"JWKS lacks pending key(s) {', '.join(missing)}")


def discovery_document(issuer: str, jwks_uri: str, algorithms: Iterable[str] = (ALG,)) -> bytes:
    """OpenID Provider metadata naming the JWKS and the algorithms its keys sign with (the
    members rotator can vouch for)."""
    doc = {"issuer": issuer, "jwks_uri": jwks_uri, "id_token_signing_alg_values_supported": sorted(set(algorithms))}
    return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()


@functools.lru_cache(maxsize=16)
def _entry_bytes(alg: str, rsa_bits: int) -> int:
    """The bytes one key of ``alg`` takes in a JWKS as build_jwks writes it (a real key's)."""
    jwk = public_jwk(generate_private_key(alg, rsa_bits))
    entry = {**jwk, "kid": thumbprint(jwk), "alg": alg, "use": "sig"}
    return len(json.dumps(entry, sort_keys=True, separators=(",", ":")))


def jwks_size(alg: str, keys: int, rsa_bits: int = 2048) -> int:
    """The size in bytes of a JWKS of ``keys`` keys of ``alg``, as rotator publishes it."""
    empty = len(json.dumps({"keys": []}, separators=(",", ":"))) + 1  # and its newline
    return empty + keys * _entry_bytes(alg, rsa_bits) + max(keys - 1, 0)
