"""Encryption of private keys at rest.

A state document names its scheme in an ``encryption`` header, fixed when the
key set is created:

- ``scrypt-aes256gcm``: a key derived from a passphrase with scrypt (salt and
  cost in the header) encrypts each private key with AES-256-GCM; the key set
  and kid are the associated data, so a ciphertext cannot be moved to another
  key. A check value in the header tells a wrong passphrase apart from damage
  before anything is written.
- ``none``: plaintext, only with the loudly named ``insecure_plaintext_keys``.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any, Mapping, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ._b64 import b64url_decode, b64url_encode
from .errors import KeystoreError, WrongPassphrase

__all__ = ["Sealer", "PassphraseSealer", "PlaintextSealer", "new_sealer", "open_sealer"]

DEFAULT_SCRYPT_N = 2**15
_MIN_SCRYPT_N = 2**10
_CHECK_PLAINTEXT = b"rotator passphrase check v1"


class Sealer(Protocol):
    scheme: str

    def header(self) -> dict[str, Any]: ...

    def seal(self, plaintext: bytes, keyset: str, kid: str) -> str: ...

    def unseal(self, blob: str, keyset: str, kid: str) -> bytes: ...


def _aad(keyset: str, kid: str) -> bytes:
    return f"rotator/{keyset}/{kid}".encode("utf-8")


@functools.lru_cache(maxsize=16)
def _derive(secret_digest: bytes, passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    # secret_digest only makes the cache key explicit; the passphrase itself is the input.
    del secret_digest
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


class PassphraseSealer:
    scheme = "scrypt-aes256gcm"

    def __init__(self, passphrase: str, salt: bytes, n: int, r: int, p: int) -> None:
        raw = passphrase.encode("utf-8")
        self._params = {"salt": b64url_encode(salt), "n": n, "r": r, "p": p}
        self._aead = AESGCM(_derive(hashlib.sha256(raw).digest(), raw, salt, n, r, p))
        self._check: str | None = None

    @classmethod
    def create(cls, passphrase: str, *, n: int = DEFAULT_SCRYPT_N) -> "PassphraseSealer":
        sealer = cls(passphrase, os.urandom(16), n, 8, 1)
        sealer._check = sealer._encrypt(_CHECK_PLAINTEXT, b"rotator/check")
        return sealer

    @classmethod
    def open(cls, header: Mapping[str, Any], passphrase: str) -> "PassphraseSealer":
        try:
            salt = b64url_decode(header["salt"])
            n, r, p = int(header["n"]), int(header["r"]), int(header["p"])
            check = header["check"]
        except (KeyError, TypeError, ValueError) as e:
            raise KeystoreError("state file has a damaged encryption header") from e
        if n < _MIN_SCRYPT_N or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
            raise KeystoreError("state file has out-of-range scrypt parameters")
        sealer = cls(passphrase, salt, n, r, p)
        try:
            if sealer._decrypt(check, b"rotator/check") != _CHECK_PLAINTEXT:
                raise InvalidTag()
        except (InvalidTag, ValueError) as e:
            raise WrongPassphrase("wrong keystore passphrase (ROTATOR_KEYSTORE_PASSPHRASE)") from e
        sealer._check = check
        return sealer

    def header(self) -> dict[str, Any]:
        return {"scheme": self.scheme, **self._params, "check": self._check}

    def _encrypt(self, plaintext: bytes, aad: bytes) -> str:
        nonce = os.urandom(12)
        return b64url_encode(nonce + self._aead.encrypt(nonce, plaintext, aad))

    def _decrypt(self, blob: str, aad: bytes) -> bytes:
        raw = b64url_decode(blob)
        return self._aead.decrypt(raw[:12], raw[12:], aad)

    def seal(self, plaintext: bytes, keyset: str, kid: str) -> str:
        return self._encrypt(plaintext, _aad(keyset, kid))

    def unseal(self, blob: str, keyset: str, kid: str) -> bytes:
        try:
            return self._decrypt(blob, _aad(keyset, kid))
        except (InvalidTag, ValueError) as e:
            raise KeystoreError(f"private key of {kid} cannot be decrypted: ciphertext damaged") from e


class PlaintextSealer:
    scheme = "none"

    def header(self) -> dict[str, Any]:
        return {"scheme": self.scheme}

    def seal(self, plaintext: bytes, keyset: str, kid: str) -> str:
        return b64url_encode(plaintext)

    def unseal(self, blob: str, keyset: str, kid: str) -> bytes:
        try:
            return b64url_decode(blob)
        except ValueError as e:
            raise KeystoreError(f"private key of {kid} is damaged") from e


_NO_PASSPHRASE = (
    "no keystore passphrase: set ROTATOR_KEYSTORE_PASSPHRASE (or passphrase_file); "
    "--insecure-plaintext-keys stores keys unencrypted, for local experiments only"
)


def new_sealer(passphrase: str | None, allow_plaintext: bool, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> Sealer:
    """The sealer for a key set being created."""
    if passphrase:
        return PassphraseSealer.create(passphrase, n=scrypt_n)
    if allow_plaintext:
        return PlaintextSealer()
    raise KeystoreError(_NO_PASSPHRASE)


def open_sealer(header: Mapping[str, Any], passphrase: str | None, allow_plaintext: bool) -> Sealer:
    """The sealer for an existing key set; refuses a scheme the settings do not allow."""
    scheme = header.get("scheme")
    if scheme == PassphraseSealer.scheme:
        if not passphrase:
            raise KeystoreError(_NO_PASSPHRASE.split(";")[0] + " (the keystore is encrypted)")
        return PassphraseSealer.open(header, passphrase)
    if scheme == PlaintextSealer.scheme:
        if not allow_plaintext:
            raise KeystoreError(
                "keystore holds unencrypted private keys; refusing without --insecure-plaintext-keys"
            )
        return PlaintextSealer()
    raise KeystoreError(f"state file uses unknown encryption scheme {scheme!r}")
