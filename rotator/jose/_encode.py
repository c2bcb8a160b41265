"""The issuing half of the compact format: the header segment of a key, the payload."""

from __future__ import annotations

import json
from typing import Any, Mapping

from .._b64 import b64url_encode

__all__ = ["header_segment", "payload_segment"]

# Built once: json.dumps with non-default options would build an encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_HEADER_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def header_segment(kid: str, alg: str = "ES256") -> str:
    """The encoded JWS header {alg, kid, typ: JWT}: the same for every token of a key."""
    return b64url_encode(_HEADER_ENCODER.encode({"alg": alg, "kid": kid, "typ": "JWT"}).encode("utf-8"))


def payload_segment(claims: Mapping[str, Any]) -> str:
    """The encoded payload; ValueError naming the value when the claims are not finite JSON."""
    try:
        data = _ENCODER.encode(claims).encode("utf-8")
    except ValueError as e:
        raise ValueError(f"claims hold a number that is not finite ({e})") from e
    except TypeError as e:
        raise ValueError(f"claims hold a value that is not JSON ({e})") from e
    return b64url_encode(data)
