"""Encryption of private keys at rest.

A state document names its scheme in an ``encryption`` header, fixed when the
key set is created:

- ``scrypt-aes256gcm``: a key derived from a passphrase with scrypt (salt and
  cost in the header) encrypts each private key with AES-256-GCM; the key set
  and kid are the associated data, so a ciphertext cannot be moved to another
  key. A check value in the header tells a wrong passphrase apart from damage
  before anything is written.
- ``kms-aes256gcm``: envelope encryption under an AWS KMS key. Each private
  key gets its own data key from KMS GenerateDataKey; only the KMS-encrypted
  data key is stored. The key set and kid are the AES-GCM associated data and
  the KMS encryption context, so neither ciphertext can be replayed elsewhere.
- ``none``: plaintext, only with the loudly named ``insecure_plaintext_keys``.

Longer than the project's usual module on purpose: the three schemes, the choice between
them (``SealerOptions``) and the probe of a sealed half are one security boundary, and
read together.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ._b64 import b64url_decode, b64url_encode
from .errors import KeystoreError, RotatorError, WrongPassphrase
from .keys import private_from_bytes
from .state import KeyRecord, State

__all__ = [
    "Sealer",
    "PassphraseSealer",
    "KmsSealer",
    "PlaintextSealer",
    "SealerOptions",
    "new_sealer",
    "open_sealer",
    "opens",
    "private_half_status",
]

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
    def open(
        cls, header: Mapping[str, Any], passphrase: str, source: str = "ROTATOR_KEYSTORE_PASSPHRASE"
    ) -> "PassphraseSealer":
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
            raise WrongPassphrase(f"wrong keystore passphrase (from {source})") from e
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


class KmsSealer:
    scheme = "kms-aes256gcm"

    def __init__(self, key_id: str, client_factory: Callable[[], Any]) -> None:
        self.key_id = key_id
        self._client_factory = client_factory
        self._client: Any = None
        self._check: str | None = None

    @property
    def _kms(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    @classmethod
    def create(cls, key_id: str, client_factory: Callable[[], Any]) -> "KmsSealer":
        sealer = cls(key_id, client_factory)
        sealer._check = sealer._seal(_CHECK_PLAINTEXT, "rotator", "check")
        return sealer

    @classmethod
    def open(cls, header: Mapping[str, Any], configured_key_id: str | None, client_factory: Callable[[], Any]) -> "KmsSealer":
        key_id, check = header.get("key_id"), header.get("check")
        if not isinstance(key_id, str) or not isinstance(check, str):
            raise KeystoreError("state file has a damaged KMS encryption header")
        if configured_key_id and configured_key_id != key_id:
            raise KeystoreError(
                f"keystore is encrypted under KMS key {key_id}, but ROTATOR_KMS_KEY_ID is {configured_key_id}"
            )
        sealer = cls(key_id, client_factory)
        if sealer._unseal(check, "rotator", "check") != _CHECK_PLAINTEXT:
            raise KeystoreError(f"KMS key {key_id} check value does not match")
        sealer._check = check
        return sealer

    def header(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "key_id": self.key_id, "check": self._check}

    @staticmethod
    def _context(keyset: str, kid: str) -> dict[str, str]:
        return {"rotator:keyset": keyset, "rotator:kid": kid}

    def _kms_call(self, action: str, kid: str, call: Callable[[], Any]) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "error")
            raise KeystoreError(f"KMS {action} for {kid} with key {self.key_id} failed: {code}") from e
        except BotoCoreError as e:
            raise KeystoreError(f"KMS {action} for {kid} with key {self.key_id} failed: {e}") from e

    def _seal(self, plaintext: bytes, keyset: str, kid: str) -> str:
        data_key = self._kms_call(
            "GenerateDataKey",
            kid,
            lambda: self._kms.generate_data_key(
                KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=self._context(keyset, kid)
            ),
        )
        nonce = os.urandom(12)
        sealed = AESGCM(data_key["Plaintext"]).encrypt(nonce, plaintext, _aad(keyset, kid))
        return f"{b64url_encode(data_key['CiphertextBlob'])}.{b64url_encode(nonce + sealed)}"

    def _unseal(self, blob: str, keyset: str, kid: str) -> bytes:
        try:
            wrapped_text, _, sealed_text = blob.partition(".")
            wrapped, sealed = b64url_decode(wrapped_text), b64url_decode(sealed_text)
        except ValueError as e:
            raise KeystoreError(f"private key of {kid} is damaged (not a KMS envelope)") from e
        data_key = self._kms_call(
            "Decrypt",
            kid,
            lambda: self._kms.decrypt(
                CiphertextBlob=wrapped, KeyId=self.key_id, EncryptionContext=self._context(keyset, kid)
            ),
        )
        try:
            return AESGCM(data_key["Plaintext"]).decrypt(sealed[:12], sealed[12:], _aad(keyset, kid))
        except (InvalidTag, ValueError) as e:
            raise KeystoreError(f"private key of {kid} cannot be decrypted: ciphertext damaged") from e

    def seal(self, plaintext: bytes, keyset: str, kid: str) -> str:
        return self._seal(plaintext, keyset, kid)

    def unseal(self, blob: str, keyset: str, kid: str) -> bytes:
        return self._unseal(blob, keyset, kid)


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


def _default_kms_client() -> Any:
    from ._aws import kms_client

    return kms_client()


def new_sealer(
    passphrase: str | None,
    allow_plaintext: bool,
    *,
    scrypt_n: int = DEFAULT_SCRYPT_N,
    kms_key_id: str | None = None,
    kms_client: Callable[[], Any] = _default_kms_client,
) -> Sealer:
    """The sealer for a key set being created: KMS if configured, else passphrase, else (if allowed) none."""
    if kms_key_id:
        return KmsSealer.create(kms_key_id, kms_client)
    if passphrase:
        return PassphraseSealer.create(passphrase, n=scrypt_n)
    if allow_plaintext:
        return PlaintextSealer()
    raise KeystoreError(_NO_PASSPHRASE)


def open_sealer(
    header: Mapping[str, Any],
    passphrase: str | None,
    allow_plaintext: bool,
    *,
    kms_key_id: str | None = None,
    kms_client: Callable[[], Any] = _default_kms_client,
    passphrase_source: str = "the passphrase argument",
) -> Sealer:
    """The sealer for an existing key set; refuses a scheme the settings do not allow.

    ``passphrase_source`` names where the passphrase came from, for the error on a wrong one."""
    scheme = header.get("scheme")
    if scheme == KmsSealer.scheme:
        return KmsSealer.open(header, kms_key_id, kms_client)
    if scheme == PassphraseSealer.scheme:
        if not passphrase:
            raise KeystoreError(_NO_PASSPHRASE.split(";")[0] + " (the keystore is encrypted)")
        return PassphraseSealer.open(header, passphrase, passphrase_source)
    if scheme == PlaintextSealer.scheme:
        if not allow_plaintext:
            raise KeystoreError(
                "keystore holds unencrypted private keys; refusing without --insecure-plaintext-keys"
            )
        return PlaintextSealer()
    raise KeystoreError(f"state file uses unknown encryption scheme {scheme!r}")


@dataclass(frozen=True)
class SealerOptions:
    """What opens a key set's sealer, as the settings give it: the one place the writer
    (``Rotator``), the signer (``KeySchedule``) and ``rotator status`` turn options into
    a sealer."""

    passphrase: str | None = field(default=None, repr=False)
    allow_plaintext: bool = False
    kms_key_id: str | None = None
    passphrase_source: str = "the passphrase argument"  # named in the wrong-passphrase error

    def open(self, state: State) -> Sealer:
        return open_sealer(
            state.encryption,
            self.passphrase,
            self.allow_plaintext,
            kms_key_id=self.kms_key_id,
            passphrase_source=self.passphrase_source,
        )

    def new(self, scrypt_n: int = DEFAULT_SCRYPT_N) -> Sealer:
        return new_sealer(self.passphrase, self.allow_plaintext, scrypt_n=scrypt_n, kms_key_id=self.kms_key_id)


def opens(sealer: Sealer, keyset: str, key: KeyRecord) -> bool:
    """Whether ``key``'s sealed private half opens into a usable key (it has one)."""
    assert key.private is not None
    try:
        private_from_bytes(sealer.unseal(key.private, keyset, key.kid), key.alg)
    except (RotatorError, ValueError):
        return False
    return True


def private_half_status(state: State, sealer: Sealer | None) -> dict[str, str]:
    """kid -> present | destroyed | damaged. With a ``sealer``, every stored half is
    test-decrypted; without one (these settings cannot open the key set), a stored half
    shows as present."""
    out: dict[str, str] = {}
    for key in state.keys:
        if key.revocation == "damaged":
            out[key.kid] = "damaged"
        elif key.private is None:
            out[key.kid] = "destroyed"
        else:
            out[key.kid] = "present" if sealer is None or opens(sealer, state.keyset, key) else "damaged"
    return out
