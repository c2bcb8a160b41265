"""Strict unpadded base64url (RFC 7515 section 2)."""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["b64url_encode", "b64url_decode"]

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode, rejecting padding, other alphabets and non-canonical trailing bits."""
    if not _ALPHABET.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as e:
        raise ValueError("not unpadded base64url") from e
    if b64url_encode(data) != text:
        raise ValueError("non-canonical base64url")
    return data
