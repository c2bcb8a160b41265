"""Every algorithm rotator signs with (ES256, ES384, RS256, PS256, EdDSA): Wycheproof's
signature vectors through the signature layer the verifier uses, key material and kids,
algorithm confusion at that layer, and a key set of each algorithm end to end (rotate,
seal, publish, sign, refresh) from the library and the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import jwcrypto.jwk
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator._b64 import b64url_decode, b64url_encode
from rotator.cli import main
from rotator.errors import ConfigError
from rotator.issuer import Signer
from rotator.jose import (
    BadSignature,
    UnsupportedAlgorithm,
    header_segment,
    sign,
    verify_signature,
    verify_token,
)
from rotator.keys import (
    ALGORITHMS,
    PRIVATE_MEMBERS,
    fits,
    generate_private_key,
    private_from_bytes,
    private_to_bytes,
    public_jwk,
    public_key_from_jwk,
    thumbprint,
)
from rotator.publish import jwks_size
from rotator.reconcile import Rotator

from .helpers import PASSPHRASE, Clock, load_vectors

VECTORS = {
    "ES384": "ecdsa_secp384r1_sha384_p1363_test.json",
    "EdDSA": "ed25519_test.json",
    "RS256": "rsa_signature_2048_sha256_test.json",
    "PS256": "rsa_pss_2048_sha256_mgf1_32_test.json",
    "ES256": "ecdsa_secp256r1_sha256_p1363_test.json",
}
MEMBERS = {"EC": {"kty", "crv", "x", "y"}, "RSA": {"kty", "n", "e"}, "OKP": {"kty", "crv", "x"}}


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_wycheproof_vectors_through_the_signature_layer(alg: str) -> None:
    """Each Wycheproof vector of ``alg`` gets its expected verdict from jose.verify_signature,
    the layer the verifier uses, with the key read from its JWK by rotator's own reader
    (valid: verifies; invalid: BadSignature; acceptable: either)."""
    suite = load_vectors(VECTORS[alg])
    outcomes = {"valid": 0, "invalid": 0, "acceptable": 0, "key refused": 0}
    for group in suite["testGroups"]:
        jwk = group.get("publicKeyJwk") or group.get("keyJwk")
        if jwk is None:  # some EC groups give the point only
            point = bytes.fromhex(group["publicKey"]["uncompressed"])
            size = (len(point) - 1) // 2
            crv = {"secp256r1": "P-256", "secp384r1": "P-384"}[group["publicKey"]["curve"]]
            jwk = {"kty": "EC", "crv": crv, "x": b64url_encode(point[1 : 1 + size]), "y": b64url_encode(point[1 + size :])}
        if jwk.get("e", "AQAB") != "AQAB":  # RSA with exponent 3: no key rotator reads
            with pytest.raises(ValueError, match="exponent 65537"):
                public_key_from_jwk(jwk, alg)
            outcomes["key refused"] += len(group["tests"])
            continue
        key = public_key_from_jwk(jwk, alg)
        for case in group["tests"]:
            msg, sig = bytes.fromhex(case["msg"]), bytes.fromhex(case["sig"])
            try:
                verify_signature(key, msg, sig, alg)
                verified = True
            except BadSignature:
                verified = False
            if case["result"] != "acceptable":
                assert verified == (case["result"] == "valid"), (alg, case["tcId"], case["comment"])
            outcomes[case["result"]] += 1
    assert outcomes["valid"] > 0 and outcomes["invalid"] > 0, outcomes
    print(f"\n[wycheproof] {alg}: {outcomes}")


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_each_algorithms_keys_round_trip_with_exactly_their_public_members(alg: str) -> None:
    """A generated key's JWK has exactly its type's public members (no private one), its kid
    is the RFC 7638 thumbprint jwcrypto computes, and JWK and PKCS#8 forms round-trip."""
    private = generate_private_key(alg)
    jwk = public_jwk(private)
    assert set(jwk) == MEMBERS[jwk["kty"]] and not PRIVATE_MEMBERS & set(jwk)
    assert thumbprint(jwk) == jwcrypto.jwk.JWK(**jwk).thumbprint()
    assert public_jwk(public_key_from_jwk(jwk, alg)) == jwk
    assert public_jwk(private_from_bytes(private_to_bytes(private), alg)) == jwk
    others = [a for a in ALGORITHMS if not fits(a, private)]
    for other in others:
        with pytest.raises(ValueError):
            private_from_bytes(private_to_bytes(private), other)
        with pytest.raises(ValueError):
            public_key_from_jwk(jwk, other)


@pytest.mark.parametrize("bits", [2048, 3072])
def test_rsa_keys_are_the_size_asked_and_small_or_odd_ones_are_refused(bits: int) -> None:
    """RSA keys are generated at the size asked (2048 by default); a public RSA key under
    2048 bits or with an exponent other than 65537 is not a key rotator reads."""
    assert generate_private_key("RS256", bits).key_size == bits  # type: ignore[union-attr]
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="at least 2048 bits"):
        public_key_from_jwk(public_jwk(small), "RS256")
    odd = rsa.generate_private_key(public_exponent=3, key_size=2048)
    with pytest.raises(ValueError, match="exponent 65537"):
        public_key_from_jwk(public_jwk(odd), "PS256")
    with pytest.raises(ValueError, match="2048, 3072, 4096"):
        generate_private_key("RS256", 1024)


def _token(alg: str, kid: str, private: Any, claims: dict[str, Any]) -> str:
    signing_input = f"{header_segment(kid, alg)}.{b64url_encode(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url_encode(sign(alg, private, signing_input.encode()))}"


def test_an_algorithm_never_verifies_with_a_key_of_another() -> None:
    """The token layer refuses algorithm confusion: an RS256 token against an EC key, ES256
    against RSA, PS256 against a key published for RS256, HS256 keyed with the RSA public
    key, and none."""
    now = time.time()
    claims = {"sub": "a", "exp": int(now) + 60}
    ec_key, rsa_key = generate_private_key("ES256"), generate_private_key("RS256")
    ec_public, rsa_public = ec_key.public_key(), rsa_key.public_key()
    with pytest.raises(UnsupportedAlgorithm):
        verify_token(_token("RS256", "k", rsa_key, claims), {"k": ec_public}, now=now, algorithms=ALGORITHMS)
    with pytest.raises(UnsupportedAlgorithm):
        verify_token(_token("ES256", "k", ec_key, claims), {"k": rsa_public}, now=now, algorithms=ALGORITHMS)
    # PS256 with the RS256 key's own private half: verifies only where PS256 is allowed.
    with pytest.raises(UnsupportedAlgorithm):
        verify_token(_token("PS256", "k", rsa_key, claims), {"k": rsa_public}, now=now, algorithms=("RS256",))
    pem = rsa_public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    payload = b64url_encode(json.dumps(claims).encode())
    signing_input = b64url_encode(b'{"alg":"HS256","kid":"k"}') + "." + payload
    mac = hmac.HMAC(pem, hashes.SHA256())
    mac.update(signing_input.encode())
    with pytest.raises(UnsupportedAlgorithm):
        verify_token(f"{signing_input}.{b64url_encode(mac.finalize())}", {"k": rsa_public}, now=now, algorithms=ALGORITHMS)
    none = b64url_encode(b'{"alg":"none","kid":"k"}') + "." + payload + "."
    with pytest.raises(UnsupportedAlgorithm):
        verify_token(none, {"k": rsa_public}, now=now, algorithms=ALGORITHMS)
    with pytest.raises(UnsupportedAlgorithm):
        verify_signature(rsa_public, b"x", b"y", "HS256")


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_key_set_of_each_algorithm_rotates_seals_publishes_signs_and_refreshes(
    make_rotator: Callable[..., Rotator], dirs: tuple[Path, Path], clock: Clock, alg: str
) -> None:
    """A key set of ``alg``: its keys carry the alg, are sealed at rest, published with their
    alg and only public members; the Signer's tokens carry the alg, verify against the JWKS,
    and refresh."""
    keystore, public = dirs
    rotator = make_rotator(algorithm=alg)
    state = rotator.step().state
    assert state.alg == alg and all(k.alg == alg for k in state.keys)
    stored = json.loads((keystore / "state.json").read_text())["keys"]
    assert all(set(k["public"]) == MEMBERS[k["public"]["kty"]] for k in stored)
    for key in stored:  # sealed: neither PKCS#8 DER (base64 "MI...") nor PEM
        assert key["private"] and not key["private"].startswith(("MI", "-----")), key["private"][:12]
    jwks = json.loads((public / "jwks.json").read_text())
    assert [k["alg"] for k in jwks["keys"]] == [alg, alg]
    assert len((public / "jwks.json").read_bytes()) == jwks_size(alg, 2)  # what rotator plan reports
    assert all(not PRIVATE_MEMBERS & set(k) for k in jwks["keys"])
    keys = {k["kid"]: public_key_from_jwk(k, alg) for k in jwks["keys"]}
    signer = Signer(rotator.keystore, rotator.policy, passphrase=PASSPHRASE, clock=clock, watch=False, storage_clock=False)
    token = signer.sign(subject="alice", audience="api")
    header = json.loads(b64url_decode(token.split(".")[0]))
    assert header == {"alg": alg, "kid": state.active.kid, "typ": "JWT"}  # type: ignore[union-attr]
    assert verify_token(token, keys, now=clock.now, audience="api", algorithms=(alg,))["sub"] == "alice"
    clock.advance(60)
    refreshed = signer.refresh(token)
    assert verify_token(refreshed, keys, now=clock.now, audience="api", algorithms=(alg,))["orig_iat"] == int(clock.now - 60)


def test_a_key_set_keeps_its_algorithm(make_rotator: Callable[..., Rotator], cli_env: dict[str, str]) -> None:
    """Settings naming another algorithm than the key set's are refused with one line and
    nothing written; from the CLI, exit 2."""
    make_rotator().step()
    with pytest.raises(ConfigError, match="signs ES256, but the settings say algorithm RS256"):
        make_rotator(algorithm="RS256").step()
    result = CliRunner().invoke(main, ["rotate", "--algorithm", "RS256"], env=cli_env)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert "a key set keeps its algorithm" in result.stderr


@pytest.mark.parametrize("alg", ["EdDSA", "PS256"])
def test_the_cli_rotates_and_signs_with_the_algorithm_given(cli_env: dict[str, str], alg: str) -> None:
    """rotate --algorithm starts a key set of that algorithm; sign mints its tokens; a bad
    algorithm or RSA size is one line, exit 2."""
    runner = CliRunner()
    env = {**cli_env, "ROTATOR_ALGORITHM": alg}
    assert runner.invoke(main, ["rotate"], env=env).exit_code == 0
    token = runner.invoke(main, ["sign", "--sub", "s", "--aud", "a"], env=env).output.strip()
    assert json.loads(b64url_decode(token.split(".")[0]))["alg"] == alg
    status = json.loads(runner.invoke(main, ["status", "--json"], env=env).output)
    assert len(status["keys"]) == 2
    for args, fragment in ((["--algorithm", "HS256"], "expected one of ES256, ES384, RS256, PS256, EdDSA"),
                           (["--rsa-bits", "1024"], "expected one of 2048, 3072, 4096")):
        bad = runner.invoke(main, ["status", *args], env=env)
        assert bad.exit_code == 2 and fragment in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
