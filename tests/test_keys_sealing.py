"""Keys, thumbprints (RFC 7638) and encryption at rest."""

from __future__ import annotations

import pytest

from rotator.errors import KeystoreError, WrongPassphrase
from rotator.keys import (
    generate_private_key,
    private_from_bytes,
    private_to_bytes,
    public_jwk,
    public_key_from_jwk,
    thumbprint,
)
from rotator.sealing import PassphraseSealer, PlaintextSealer, new_sealer, open_sealer

from .helpers import TEST_SCRYPT_N, load_vectors


def test_rfc7638_thumbprint_example() -> None:
    """RFC 7638 section 3.1: the RSA example key's thumbprint; alg and kid are ignored."""
    vector = load_vectors("rfc_examples.json")["rfc7638_3_1_thumbprint"]
    assert thumbprint(vector["jwk"]) == vector["expected_thumbprint"]


def test_ec_thumbprint_uses_crv_kty_x_y() -> None:
    """The RFC 7515 A.3 P-256 key: thumbprint over crv, kty, x, y only."""
    vector = load_vectors("rfc_examples.json")["rfc7515_A3_es256"]
    expected = vector["computed_thumbprint_rfc7638"]["value"]
    assert thumbprint(vector["jwk_public"]) == expected
    assert thumbprint({**vector["jwk_private"], "kid": "x", "use": "sig"}) == expected


def test_generated_key_roundtrip() -> None:
    """A generated key round-trips through its JWK and its private encoding."""
    key = generate_private_key()
    jwk = public_jwk(key)
    assert set(jwk) == {"kty", "crv", "x", "y"}
    assert public_key_from_jwk(jwk) == key.public_key()
    assert private_to_bytes(private_from_bytes(private_to_bytes(key))) == private_to_bytes(key)
    assert len(thumbprint(jwk)) == 43


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
        {"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43},  # not on the curve
    ],
)
def test_public_key_from_jwk_rejects(jwk: dict[str, str]) -> None:
    """JWKs that are not EC P-256 points are refused."""
    with pytest.raises(ValueError):
        public_key_from_jwk(jwk)


def test_passphrase_sealing_binds_kid_and_keyset() -> None:
    """A ciphertext only opens under the same key set and kid (AES-GCM associated data)."""
    sealer = PassphraseSealer.create("pw", n=TEST_SCRYPT_N)
    blob = sealer.seal(b"secret key bytes", "default", "kid-1")
    assert b"secret key bytes" not in blob.encode()
    assert sealer.unseal(blob, "default", "kid-1") == b"secret key bytes"
    with pytest.raises(KeystoreError, match="kid-2"):
        sealer.unseal(blob, "default", "kid-2")
    with pytest.raises(KeystoreError):
        sealer.unseal(blob, "other", "kid-1")


def test_wrong_passphrase_detected_from_header() -> None:
    """A wrong passphrase is told apart from damage by the header's check value."""
    header = PassphraseSealer.create("right", n=TEST_SCRYPT_N).header()
    assert open_sealer(header, "right", False).scheme == "scrypt-aes256gcm"
    with pytest.raises(WrongPassphrase, match="wrong keystore passphrase"):
        open_sealer(header, "wrong", False)


def test_plaintext_needs_the_loud_option() -> None:
    """Plaintext keys are made or opened only with the loud option."""
    with pytest.raises(KeystoreError, match="ROTATOR_KEYSTORE_PASSPHRASE"):
        new_sealer(None, False)
    assert isinstance(new_sealer(None, True), PlaintextSealer)
    with pytest.raises(KeystoreError, match="--insecure-plaintext-keys"):
        open_sealer({"scheme": "none"}, "pw", False)
    with pytest.raises(KeystoreError, match="encrypted"):
        open_sealer(PassphraseSealer.create("pw", n=TEST_SCRYPT_N).header(), None, True)


@pytest.mark.parametrize(
    "header",
    [{"scheme": "rot13"}, {"scheme": "scrypt-aes256gcm"}, {"scheme": "scrypt-aes256gcm", "salt": "AA", "n": 3, "r": 8, "p": 1, "check": "x"}],
)
def test_damaged_encryption_headers(header: dict[str, object]) -> None:
    """Damaged encryption headers are refused with a keystore error."""
    with pytest.raises(KeystoreError):
        open_sealer(header, "pw", False)
