"""Parse a JWKS into usable ES256 keys, skipping entries that are not."""

from __future__ import annotations

import os
from typing import Any, Mapping

from cryptography.hazmat.primitives.asymmetric import ec

from ..jose import KeysUnavailable
from ..keys import PRIVATE_MEMBERS, public_key_from_jwk
from .._strict import strict_json

__all__ = ["parse_jwks", "load_jwks_file", "MAX_KEYS", "MAX_JWKS_BYTES"]

# What a verifier accepts of a JWKS document: the publisher's alerts warn well below both.
MAX_KEYS = 256
MAX_JWKS_BYTES = 256 * 1024


def parse_jwks(
    body: bytes | str | Mapping[str, Any], *, max_keys: int = MAX_KEYS
) -> dict[str, ec.EllipticCurvePublicKey]:
    """kid -> P-256 public key for every ES256-usable signing key; ValueError for a malformed set."""
    doc = strict_json(body) if isinstance(body, (bytes, str)) else body
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise ValueError('JWKS is not an object with a "keys" list')
    if len(doc["keys"]) > max_keys:
        raise ValueError(f"JWKS has {len(doc['keys'])} keys, more than the limit of {max_keys}")
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    seen: dict[str, tuple[Any, Any, Any, Any]] = {}
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
        material = (jwk.get("kty"), jwk.get("crv"), jwk.get("x"), jwk.get("y"))
        if kid in seen:
            if seen[kid] != material:
                raise ValueError(f"JWKS lists kid {kid!r} twice with different keys")
            continue
        seen[kid] = material
        if jwk.get("alg", "ES256") != "ES256" or jwk.get("use", "sig") != "sig":
            continue
        key_ops = jwk.get("key_ops")
        if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
            continue  # RFC 7517 4.3: a key whose operations exclude "verify" must not verify
        try:
            key = public_key_from_jwk(jwk)
            assert isinstance(key, ec.EllipticCurvePublicKey)  # ES256 only, so far
            keys[kid] = key
        except ValueError:
            continue
    return keys


def load_jwks_file(path: "str | os.PathLike[str]", name: str) -> dict[str, ec.EllipticCurvePublicKey]:
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
        keys = parse_jwks(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise KeysUnavailable(f"JWKS {name} is not a usable key set: {e}") from e
    if not keys:
        raise KeysUnavailable(f"JWKS {name} holds no usable ES256 key")
    return keys
