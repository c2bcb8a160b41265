"""Parse a JWKS into the keys a verifier may use, each with the algorithms it may verify,
skipping entries that are not usable."""

from __future__ import annotations

import os
from typing import Any, Collection, Mapping

from ..jose import KeysUnavailable
from ..keys import PRIVATE_MEMBERS, PublicKey, public_key_from_jwk
from .._strict import strict_json

__all__ = ["KeySet", "parse_jwks", "load_jwks_file", "MAX_KEYS", "MAX_JWKS_BYTES"]

# What a verifier accepts of a JWKS document: the publisher's alerts warn well below both.
MAX_KEYS = 256
MAX_JWKS_BYTES = 256 * 1024


class KeySet(dict[str, PublicKey]):
    """kid -> public key, and in ``algs`` the algorithms each kid may verify: its JWK's
    ``alg`` where it names one (and it is allowed), else every allowed algorithm its key
    fits. The token layer checks a token's ``alg`` against it (strict pairing)."""

    def __init__(self) -> None:
        super().__init__()
        self.algs: dict[str, frozenset[str]] = {}


def parse_jwks(
    body: bytes | str | Mapping[str, Any], *, max_keys: int = MAX_KEYS, algorithms: Collection[str] = ("ES256",)
) -> KeySet:
    """Every signing key usable for one of ``algorithms``: of a type, curve and size that
    fits (RSA at least 2048 bits with exponent 65537), with a ``use`` of sig and
    ``key_ops`` allowing verify where given. ValueError for a malformed set, one with a
    private member, or one listing a kid twice with different keys."""
    doc = strict_json(body) if isinstance(body, (bytes, str)) else body
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise ValueError('JWKS is not an object with a "keys" list')
    if len(doc["keys"]) > max_keys:
        raise ValueError(f"JWKS has {len(doc['keys'])} keys, more than the limit of {max_keys}")
    keys = KeySet()
    seen: dict[str, tuple[Any, ...]] = {}
    for jwk in doc["keys"]:
        if not isinstance(jwk, Mapping):
            continue
        leaked = PRIVATE_MEMBERS.intersection(jwk)
        if leaked:
            # A host that publishes a private key is not one to trust for any key.
            raise ValueError(f"JWKS entry {jwk.get('kid')!r} carries private key members {sorted(leaked)}")
        kid = jwk.get("kid")
        if not isinstance(kid, str):
            continue
        material = tuple(jwk.get(m) for m in ("kty", "crv", "x", "y", "n", "e"))
        if kid in seen:
            if seen[kid] != material:
                raise ValueError(f"JWKS lists kid {kid!r} twice with different keys")
            continue
        seen[kid] = material
        if jwk.get("use", "sig") != "sig":
            continue
        key_ops = jwk.get("key_ops")
        if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
            continue  # RFC 7517 4.3: a key whose operations exclude "verify" must not verify
        named = jwk.get("alg")
        candidates = [named] if named is not None else list(algorithms)
        usable: dict[str, PublicKey] = {}
        for alg in candidates:
            if not isinstance(alg, str) or alg not in algorithms:
                continue
            try:
                usable[alg] = public_key_from_jwk(jwk, alg)
            except ValueError:
                continue
        if usable:
            keys[kid] = next(iter(usable.values()))
            keys.algs[kid] = frozenset(usable)
    return keys


def load_jwks_file(path: "str | os.PathLike[str]", name: str, algorithms: Collection[str] = ("ES256",)) -> KeySet:
    """The usable keys of a JWKS file, under the cap a fetched one has; KeysUnavailable
    naming ``name`` when it cannot be read or holds no usable key, as over HTTP."""
    try:
        with open(path, "rb") as fh:
            body = fh.read(MAX_JWKS_BYTES + 1)
    except OSError as e:
        raise KeysUnavailable(f"cannot read JWKS {name}: {e.strerror}") from e
    if len(body) > MAX_JWKS_BYTES:
        raise KeysUnavailable(f"JWKS {name} is larger than the {MAX_JWKS_BYTES}-byte limit")
    try:
        keys = parse_jwks(body, algorithms=algorithms)
    except (ValueError, UnicodeDecodeError) as e:
        raise KeysUnavailable(f"JWKS {name} is not a usable key set: {e}") from e
    if not keys:
        raise KeysUnavailable(f"JWKS {name} holds no usable {'/'.join(algorithms)} key")
    return keys
