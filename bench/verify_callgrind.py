"""A warm ES256 verify against the raw ECDSA verify, counted in instructions (valgrind's
callgrind), not timed.

    .venv/bin/python bench/verify_callgrind.py [--small 200] [--large 1200]

Each variant runs in its own process under ``valgrind --tool=callgrind`` twice, once doing
``--small`` operations and once ``--large``; the difference of the two main-thread totals,
divided by the difference of the counts, is the cost of one operation with every set-up
cost (the interpreter, imports, the JWKS fetch) cancelled out.

  ceiling   cryptography's ECDSA P-256 verify of the token's signing input (DER signature),
            in its fastest form: SHA-256 by hashlib, the digest verified as prehashed
  rotator   rotator.verifier.Verifier.verify, warm (JWKS fetched from a local HTTP server),
            the full path: split, header, key lookup, pairing, signature, claims

Target: rotator >= 0.90 of the ceiling.
"""

from __future__ import annotations

import argparse
from functools import partial
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.callgrind import per_call  # noqa: E402

ISS = "https://issuer.example"
AUD = "orders-api"


def child(variant: str, n: int) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

    from rotator._b64 import b64url_decode
    from rotator.verifier import Verifier
    from tests.jwks_server import JwksServer, SigningKey

    key = SigningKey()
    now = int(time.time())
    token = key.sign({"iss": ISS, "aud": AUD, "sub": "user-1", "iat": now, "exp": now + 3600, "scope": "orders:read"})
    signing_input, _, segment = token.rpartition(".")
    raw = b64url_decode(segment)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public, data, ecdsa = key.private.public_key(), signing_input.encode(), ec.ECDSA(Prehashed(hashes.SHA256()))
    with JwksServer([key]) as server:
        verifier = Verifier(server.url, issuer=ISS, audience=AUD, allow_http=True)
        for _ in range(20):  # warm: the key set fetched, the header cached
            verifier.verify(token)
            public.verify(der, hashlib.sha256(data).digest(), ecdsa)
        if variant == "rotator":
            for _ in range(n):
                verifier.verify(token)
        else:
            for _ in range(n):
                public.verify(der, hashlib.sha256(data).digest(), ecdsa)


def child_args(variant: str, n: int) -> list[str]:
    return ["--child", variant, str(n)]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=1200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rotator-callgrind-") as tmp:
        work = Path(tmp)
        per = {
            variant: per_call(__file__, partial(child_args, variant), args.small, args.large, work / f"callgrind.{variant}")
            for variant in ("ceiling", "rotator")
        }
    ratio = per["ceiling"] / per["rotator"]
    print(f"ceiling {per['ceiling']:>11,.0f} instructions per verify")
    print(f"rotator {per['rotator']:>11,.0f} instructions per verify ({ratio:.3f} of the ceiling)")
    ok = ratio >= 0.90
    print(("PASS" if ok else "MISS") + f": rotator >= 0.90 of the ceiling in instructions ({ratio:.3f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
