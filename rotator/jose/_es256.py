"""ES256 signatures as JWS carries them (RFC 7518 section 3.4): ECDSA P-256 with SHA-256,
the raw 64-byte r||s instead of DER. One ECDSA parameter object for signing and verifying."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from .._b64 import b64url_encode
from .errors import BadSignature

__all__ = ["es256_signature", "verify_signature"]

_ECDSA = ec.ECDSA(hashes.SHA256())
# P-256 group order.
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def es256_signature(private: ec.EllipticCurvePrivateKey, signing_input: bytes) -> str:
    """The encoded JWS signature of ``signing_input``: base64url of the raw r||s."""
    r, s = decode_dss_signature(private.sign(signing_input, _ECDSA))
    return b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def verify_signature(key: ec.EllipticCurvePublicKey, signing_input: bytes, signature: bytes) -> None:
    """ES256 raw r||s check; high-S signatures are accepted, as ECDSA and RFC 7518 allow."""
    if len(signature) != 64:
        raise BadSignature(f"ES256 signature must be 64 bytes, got {len(signature)}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < _N and 0 < s < _N):
        raise BadSignature("ES256 signature r or s out of range")
    try:
        key.verify(encode_dss_signature(r, s), signing_input, _ECDSA)
    except InvalidSignature as e:
        raise BadSignature("signature does not verify") from e
