"""Single-thread signing speed: rotator's Signer against its peers, interleaved in one run.

Every contender signs the same claims (iss, sub, aud, iat, exp, jti, one custom claim) into
an ES256 JWT with a P-256 key already loaded:

  ceiling   cryptography's ECDSA sign of a fixed 200-byte input (nothing else)
  rotator   rotator.issuer.Signer.sign, keystore on disk, watcher running (no I/O per call)
  pyjwt     jwt.encode with the key object and a kid header
  joserfc   joserfc.jwt.encode with an imported ECKey
  jwcrypto  jwcrypto.jwt.JWT(header=..., claims=...).make_signed_token + serialize

Rounds are interleaved (every contender once per round, shuffled) so machine noise lands on
all alike; the median round is reported as ops/s and as ratios. Targets: rotator >= 0.75 of
the ceiling and >= 1.2x pyjwt. Then a table for each other algorithm (ES384, RS256, PS256,
EdDSA): rotator, PyJWT and the raw sign (bench/algorithms.py).

    .venv/bin/python bench/sign_bench.py [--rounds 15] [--seconds 0.2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from rotator.config import Policy  # noqa: E402
from rotator.issuer import Signer  # noqa: E402
from rotator.keys import private_from_bytes  # noqa: E402
from rotator.keystore import FileKeystore  # noqa: E402
from rotator.publish import FilePublisher  # noqa: E402
from rotator.reconcile import Rotator  # noqa: E402
from rotator.sealing import open_sealer  # noqa: E402
from bench import algorithms  # noqa: E402
from bench.interleaved import median_ops, report  # noqa: E402

ISS = "https://issuer.example"
AUD = "orders-api"
PASSPHRASE = "bench passphrase"


def contenders(directory: Path) -> dict[str, Callable[[], Any]]:
    import jwcrypto.jwk
    import jwcrypto.jwt
    import joserfc.jwk
    import joserfc.jwt
    import jwt as pyjwt

    policy = Policy()
    rotator = Rotator(FileKeystore(directory / "ks"), FilePublisher(directory / "pub"), policy,
                      passphrase=PASSPHRASE, scrypt_n=2**10)
    state = rotator.step().state
    assert state.active is not None and state.active.private is not None
    active = state.active
    private = private_from_bytes(open_sealer(state.encryption, PASSPHRASE, False).unseal(active.private, state.keyset, active.kid))
    signer = Signer(rotator.keystore, policy, passphrase=PASSPHRASE, issuer=ISS)
    signer.sign(subject="warm-up", audience=AUD)

    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    rfc_key = joserfc.jwk.ECKey.import_key(pem)
    jwc_key = jwcrypto.jwk.JWK.from_pem(pem)
    ecdsa = ec.ECDSA(hashes.SHA256())
    data = os.urandom(200)
    header = {"alg": "ES256", "kid": active.kid, "typ": "JWT"}

    def claims() -> dict[str, Any]:
        now = int(time.time())
        return {"iss": ISS, "sub": "user-1", "aud": AUD, "iat": now, "exp": now + 3600,
                "jti": os.urandom(16).hex(), "scope": "orders:read"}

    def jwcrypto_sign() -> str:
        token = jwcrypto.jwt.JWT(header=header, claims=claims())
        token.make_signed_token(jwc_key)
        return str(token.serialize())

    return {
        "ceiling": lambda: private.sign(data, ecdsa),
        "rotator": lambda: signer.sign({"scope": "orders:read"}, subject="user-1", audience=AUD, ttl=3600),
        "pyjwt": lambda: pyjwt.encode(claims(), private, algorithm="ES256", headers={"kid": active.kid}),
        "joserfc": lambda: joserfc.jwt.encode(header, claims(), rfc_key),
        "jwcrypto": jwcrypto_sign,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.2, help="time per contender per round")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        median = median_ops(contenders(Path(tmp)), args.rounds, args.seconds)
        others = algorithms.run("sign", Path(tmp), args.rounds, args.seconds)

    checks = {
        "rotator >= 0.75 of ceiling": median["rotator"] / median["ceiling"] >= 0.75,
        "rotator >= 1.2x pyjwt": median["rotator"] / median["pyjwt"] >= 1.2,
    }
    title = f"sign_bench: one ES256 token per call, single thread, {args.rounds} interleaved rounds x {args.seconds}s, median round"
    print()
    code = report(title, median, checks)
    print("per algorithm, rotator / ceiling and rotator / pyjwt: " + "; ".join(
        f"{alg} {m['rotator'] / m['ceiling']:.2f} / {m['rotator'] / m['pyjwt']:.2f}" for alg, m in others.items()
    ))
    return code


if __name__ == "__main__":
    sys.exit(main())
