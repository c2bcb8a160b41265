"""What several test modules share: constants, a hand-driven clock, polling, vectors,
token claims, a TLS certificate, the CLI's clean-failure rule, and revocation helpers.

Fixtures live in ``conftest.py``; the daemon harness in ``daemon_harness.py``.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from click.testing import Result
from cryptography.hazmat.primitives.asymmetric import ec

from rotator.config import Policy
from rotator.keys import private_from_bytes
from rotator.keystore import FileKeystore
from rotator.publish import FilePublisher
from rotator.reconcile import Rotator
from rotator.verifier import Revoked, Verifier, parse_jwks, verify_token

from .jwks_server import SigningKey

ISS = "https://issuer.example"
AUD = "orders-api"
VECTORS = Path(__file__).parent / "vectors"
SHARED_VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
PASSPHRASE = "correct horse battery staple"
TEST_SCRYPT_N = 2**10  # the default cost is slow on purpose; tests exercise the same code path
T0 = 1_800_000_000.0


def load_vectors(name: str) -> Any:
    path = VECTORS / name
    if not path.exists():
        path = SHARED_VECTORS / name
    return json.loads(path.read_text())


def wait_for(
    predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition", poll: float = 0.01
) -> Any:
    """Poll ``predicate`` until it returns something true (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


class Clock:
    """A hand-driven clock, injected wherever rotator reads time."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def verify_with(token: str, jwks_body: bytes, now: float, **kwargs: Any) -> dict[str, Any]:
    return verify_token(token, parse_jwks(jwks_body), now=now, **kwargs)


def claims_at(now: float, **extra: Any) -> dict[str, Any]:
    return {"iss": ISS, "aud": AUD, "sub": "user-1", "iat": int(now), "exp": int(now) + 3600, **extra}


def self_signed_cert(tmp_path: Any) -> tuple[str, str]:
    """A certificate for localhost and 127.0.0.1, made with cryptography; returns (cert, key) paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def fingerprint(directory: Path) -> dict[str, str]:
    """Every file under the keystore with its content hash and mode: 'unchanged' means equal."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def assert_clean_failure(result: Result, fragment: str, before: dict[str, str], keystore: Path) -> None:
    """A CLI failure as the rules want it: a non-zero exit, one line on stderr naming
    ``fragment``, and the keystore exactly as it was."""
    assert result.exit_code not in (0, None), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rotator: error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert fingerprint(keystore) == before


def token(key: SigningKey, sub: str = "alice", jti: str | None = None, iat: int | None = None, **extra: Any) -> str:
    now = int(time.time()) if iat is None else iat
    claims = {"sub": sub, "iat": now, "exp": now + 600, "jti": jti or uuid.uuid4().hex, **extra}
    return key.sign(claims)


def rejected(verifier: Verifier, tok: str) -> bool:
    try:
        verifier.verify(tok)
    except Revoked:
        return True
    return False


def bootstrapped_key_set(tmp_path: Path) -> tuple[FileKeystore, FilePublisher, Policy]:
    """A file keystore and JWKS file after one step, for a Signer to sign from."""
    policy = Policy(rotation_period=600, token_lifetime=300, max_age=60, retirement_window=3600, refresh_grace=60)
    ks, pub = FileKeystore(tmp_path / "ks"), FilePublisher(tmp_path / "pub")
    Rotator(
        keystore=ks, publisher=pub, policy=policy, passphrase=PASSPHRASE, scrypt_n=TEST_SCRYPT_N, storage_clock=False
    ).step()
    return ks, pub, policy


def ec_private(data: bytes) -> ec.EllipticCurvePrivateKey:
    """An ES256 key set's stored private key (PKCS#8 DER), typed as the EC key it is."""
    key = private_from_bytes(data, "ES256")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def result_entries(verifier: Verifier) -> dict[bytes, Any]:
    """The verifier's result cache, entry by entry (the verifier must have one)."""
    assert verifier._results is not None
    return verifier._results.entries
