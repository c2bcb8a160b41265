"""Strict unpadded base64url (RFC 7515 section 2)."""

from __future__ import annotations

import base64
import binascii

__all__ = ["b64url_encode", "b64url_decode"]

# The urlsafe alphabet to the standard one; '+', '/' and '=' (the standard alphabet's own and
# padding) to '*', which the strict decoder refuses: one translation both maps and rejects.
_URLSAFE_TO_STD = bytes.maketrans(b"-_+/=", b"+/***")
_VALUE = {c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")}
# Bits of the last character that must be zero when the text is 2 or 3 characters past a multiple of 4.
_SPARE_BITS = (0, 0, 0x0F, 0x03)
_PADDING = (b"", b"", b"==", b"=")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode, rejecting padding, other alphabets, whitespace and non-canonical trailing bits."""
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("not unpadded base64url") from None
    rem = len(raw) & 3
    if rem == 1:
        raise ValueError("not unpadded base64url")
    if rem and (_VALUE.get(raw[-1], 0) & _SPARE_BITS[rem]):
        raise ValueError("non-canonical base64url")
    try:
        # strict_mode refuses any byte outside the standard alphabet: whitespace, and the
        # '*' that '+', '/' and '=' became.
        return binascii.a2b_base64(raw.translate(_URLSAFE_TO_STD) + _PADDING[rem], strict_mode=True)
    except binascii.Error:
        raise ValueError("not unpadded base64url") from None
