"""The verifier's token checks: outside vectors, hostile tokens, claims, result cache, revocation hooks.

Every Verifier here fetches its JWKS from a real HTTP server on loopback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
from typing import Any, Iterator, Mapping

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from rotator._b64 import b64url_decode, b64url_encode
from rotator.jose import check_claims, decode_header, decode_segment, verify_signature
from rotator.keys import PublicKey, public_key_from_jwk
from rotator.verifier import (
    BadSignature,
    Expired,
    ForbiddenHeader,
    InvalidLifetime,
    InvalidToken,
    JtiDenylist,
    MalformedToken,
    MissingClaim,
    NotYetValid,
    Revoked,
    UnknownKey,
    UnsupportedAlgorithm,
    Verifier,
    WrongAudience,
    WrongIssuer,
    parse_jwks,
)

from .helpers import Clock, load_vectors, result_entries
from .jwks_server import JwksServer, SigningKey

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ISS = "https://issuer.example"
AUD = "orders-api"


# -- fixtures and token crafting -----------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey()


@pytest.fixture(scope="module")
def server(key: SigningKey) -> Iterator[JwksServer]:
    with JwksServer([key]) as srv:
        yield srv


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


@pytest.fixture
def verifier(server: JwksServer, clock: Clock) -> Verifier:
    return Verifier(server.url, issuer=ISS, audience=AUD, allow_http=True, clock=clock)


def claims_at(now: float, **extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"iss": ISS, "aud": AUD, "sub": "user-1", "iat": int(now), "exp": int(now) + 600}
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def segment(obj: Any) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return b64url_encode(raw)


def raw_signature(private: ec.EllipticCurvePrivateKey, signing_input: str) -> tuple[int, int]:
    return decode_dss_signature(private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))


def p1363(r: int, s: int, size: int = 32) -> bytes:
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def craft(key: SigningKey, header: Any, claims: Any, *, signature: bytes | None = None) -> str:
    """A token with any header and payload, signed correctly by ``key`` unless a signature is given."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    if signature is None:
        signature = p1363(*raw_signature(key.private, signing_input))
    return f"{signing_input}.{b64url_encode(signature)}"


# -- outside vectors -----------------------------------------------------------------------


def test_wycheproof_p1363_vectors_through_the_signature_check() -> None:
    """Every Wycheproof ECDSA P-256/SHA-256 P1363 vector gets its expected verdict from the
    verifier's signature check."""
    suite = load_vectors("ecdsa_secp256r1_sha256_p1363_test.json")
    outcomes = {"valid": 0, "invalid": 0}
    for group in suite["testGroups"]:
        public = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), bytes.fromhex(group["publicKey"]["uncompressed"])
        )
        for case in group["tests"]:
            msg, sig = bytes.fromhex(case["msg"]), bytes.fromhex(case["sig"])
            try:
                verify_signature(public, msg, sig)
                got = "valid"
            except BadSignature:
                got = "invalid"
            assert got == case["result"], f"tcId {case['tcId']} ({case['comment']}): expected {case['result']}, got {got}"
            outcomes[got] += 1
    assert outcomes == {"valid": 173, "invalid": 89}, outcomes
    assert suite["numberOfTests"] == sum(outcomes.values())


def jws_layer_result(jws: str, keys: Mapping[str, PublicKey]) -> str:
    """"valid" or "invalid" through the verifier's JWS layer: header checks, key lookup,
    strict base64url, the signature check (the claims are not looked at)."""
    try:
        header, parts = decode_header(jws, ("ES256",))
        key = keys.get(header["kid"])
        if key is None:
            raise UnknownKey("not in the key set")
        signature = decode_segment(parts[2], "signature")
        decode_segment(parts[1], "payload")
        verify_signature(key, f"{parts[0]}.{parts[1]}".encode(), signature)
        return "valid"
    except InvalidToken:
        return "invalid"


def test_wycheproof_jws_es256_cases_through_the_jws_layer() -> None:
    """Wycheproof's compact-JWS cases for ES256 keys (payload "foo", so the JWS layer only:
    header checks, key lookup in a parsed JWKS, strict base64url, the signature check)."""
    suite = load_vectors("wycheproof_json_web_signature_test.json")
    groups = [g for g in suite["testGroups"] if g["comment"] in ("es256", "SpecialCaseEs256", "ec_key_for_encryption")]
    checked = 0
    for group in groups:
        keys = parse_jwks({"keys": [group["public"]]})
        for case in group["tests"]:
            got = jws_layer_result(case["jws"], keys)
            assert got == case["result"], f"tcId {case['tcId']} ({case['comment']}): expected {case['result']}, got {got}"
            checked += 1
    assert checked == 41


def test_wycheproof_jwk_es256_cases_through_jwks_parsing() -> None:
    """Wycheproof's key-set cases whose JWS uses ES256: a key with the wrong alg, use, curve, kty
    or an off-curve point must not verify. (Its HS/RS cases test algorithms we never accept.)"""
    suite = load_vectors("wycheproof_json_web_key_test.json")
    checked = 0
    for group in suite["testGroups"]:
        for case in group["tests"]:
            header = json.loads(b64url_decode(case["jws"].split(".")[0]))
            if header["alg"] != "ES256":
                continue
            public = group["public"]
            keys = parse_jwks(public if "keys" in public else {"keys": [public]})
            got = jws_layer_result(case["jws"], keys)
            assert got == case["result"], f"tcId {case['tcId']} ({case['comment']}): expected {case['result']}, got {got}"
            checked += 1
    assert checked == 6


def test_rfc7515_a3_signature_verifies_then_token_is_expired() -> None:
    """RFC 7515 A.3's ES256 example verifies; its claims are refused as expired today and
    accepted within their lifetime."""
    vector = load_vectors("rfc_examples.json")["rfc7515_A3_es256"]
    public = public_key_from_jwk(vector["jwk_public"])
    verify_signature(public, vector["signing_input"].encode(), bytes(vector["signature_octets"]))
    claims = json.loads(vector["payload_utf8"])
    with pytest.raises(Expired):
        check_claims(claims, now=1_800_000_000, leeway=60, audience=None, issuer="joe")
    # Within its lifetime the same claims pass: the rejection is about time and nothing else.
    check_claims(claims, now=claims["exp"] - 10, leeway=60, audience=None, issuer="joe")


# -- the happy path ------------------------------------------------------------------------


def test_valid_token_returns_its_claims(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """A valid token gives back exactly the claims it carries."""
    claims = claims_at(clock.now, scope=["read", "write"])
    assert verifier.verify(key.sign(claims)) == claims


def test_signature_is_checked_for_a_known_kid(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """A known kid is not enough: a payload swapped under a valid signature is refused."""
    token = key.sign(claims_at(clock.now))
    head, payload, sig = token.split(".")
    other = segment(claims_at(clock.now, sub="admin"))
    with pytest.raises(BadSignature):
        verifier.verify(f"{head}.{other}.{sig}")


def test_high_s_signature_is_accepted(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """Decision: high-S accepted. ES256 (RFC 7518 3.4) and ECDSA allow both s and n - s; JWTs are
    not transaction ids, so malleability gains an attacker nothing, and rejecting high-S would
    refuse tokens from conforming signers that do not normalise s."""
    header = {"alg": "ES256", "kid": key.kid}
    claims = claims_at(clock.now)
    signing_input = f"{segment(header)}.{segment(claims)}"
    r, s = raw_signature(key.private, signing_input)
    low, high = min(s, N - s), max(s, N - s)
    for variant in (low, high):
        assert verifier.verify(f"{signing_input}.{b64url_encode(p1363(r, variant))}") == claims


# -- hostile tokens, each named ------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "NoNe"])
def test_alg_none_in_any_casing(verifier: Verifier, key: SigningKey, clock: Clock, alg: str) -> None:
    """alg none, in any casing, is refused as an unsupported algorithm."""
    token = f"{segment({'alg': alg, 'kid': key.kid})}.{segment(claims_at(clock.now))}."
    with pytest.raises(UnsupportedAlgorithm):
        verifier.verify(token)


@pytest.mark.parametrize("encoding", ["pem", "der", "x962", "jwk"])
def test_hs256_keyed_with_the_public_key(verifier: Verifier, key: SigningKey, clock: Clock, encoding: str) -> None:
    """HS256 with the public key (PEM, DER, X9.62 or JWK) as the HMAC secret is refused: no
    algorithm confusion."""
    public = key.private.public_key()
    secret = {
        "pem": public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "der": public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        "x962": public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint),
        "jwk": json.dumps(key.jwk).encode(),
    }[encoding]
    signing_input = f"{segment({'alg': 'HS256', 'kid': key.kid})}.{segment(claims_at(clock.now))}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(UnsupportedAlgorithm):
        verifier.verify(f"{signing_input}.{b64url_encode(mac)}")


def test_embedded_jwk(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """A header carrying its own jwk is refused, even naming a known kid."""
    attacker = SigningKey()
    header = {"alg": "ES256", "kid": key.kid, "jwk": attacker.jwk}
    with pytest.raises(ForbiddenHeader, match="jwk"):
        verifier.verify(craft(attacker, header, claims_at(clock.now)))


@pytest.mark.parametrize(
    "member, value",
    [
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("x5c", ["MIIBszCCAVmgAwIBAgIUQ"]),
    ],
)
def test_jku_x5u_x5c(verifier: Verifier, key: SigningKey, clock: Clock, member: str, value: Any) -> None:
    """Headers that point at keys elsewhere (jku, x5u, x5c) are refused."""
    with pytest.raises(ForbiddenHeader, match=member):
        verifier.verify(craft(key, {"alg": "ES256", "kid": key.kid, member: value}, claims_at(clock.now)))


def test_crit(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """A header with crit is refused: no extension is understood."""
    header = {"alg": "ES256", "kid": key.kid, "crit": ["exp"], "exp": 1}
    with pytest.raises(ForbiddenHeader, match="crit"):
        verifier.verify(craft(key, header, claims_at(clock.now)))


def test_b64_false(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """Unencoded payloads (b64 false, with or without crit) are refused."""
    header = {"alg": "ES256", "kid": key.kid, "b64": False, "crit": ["b64"]}
    with pytest.raises(ForbiddenHeader):
        verifier.verify(craft(key, header, claims_at(clock.now)))
    with pytest.raises(ForbiddenHeader, match="b64"):
        verifier.verify(craft(key, {"alg": "ES256", "kid": key.kid, "b64": False}, claims_at(clock.now)))


@pytest.mark.parametrize(
    "kid", ["../../etc/passwd", "keys/current", "a\\b", "k'", 'k"', "k' OR '1'='1", "k%2F..", "", "k" * 129, "k\u00e9"]
)
def test_kid_with_path_or_quote_characters(verifier: Verifier, key: SigningKey, clock: Clock, kid: str) -> None:
    """A kid with path, quote or other characters outside base64url is refused before any
    lookup."""
    with pytest.raises(MalformedToken, match="kid"):
        verifier.verify(craft(key, {"alg": "ES256", "kid": kid}, claims_at(clock.now)))


def test_missing_kid(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """A header without a kid is malformed."""
    with pytest.raises(MalformedToken, match="kid"):
        verifier.verify(craft(key, {"alg": "ES256"}, claims_at(clock.now)))


def test_der_signature(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """A DER-encoded ECDSA signature is refused: JWS carries the raw 64-byte r||s."""
    header = {"alg": "ES256", "kid": key.kid}
    claims = claims_at(clock.now)
    signing_input = f"{segment(header)}.{segment(claims)}"
    der = key.private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(BadSignature, match="64 bytes"):
        verifier.verify(f"{signing_input}.{b64url_encode(der)}")


@pytest.mark.parametrize("length", [63, 65])
def test_63_or_65_byte_signature(verifier: Verifier, key: SigningKey, clock: Clock, length: int) -> None:
    """Signatures one byte short or long are refused."""
    header = {"alg": "ES256", "kid": key.kid}
    signing_input = f"{segment(header)}.{segment(claims_at(clock.now))}"
    sig = p1363(*raw_signature(key.private, signing_input))
    forged = sig[:63] if length == 63 else b"\x00" + sig
    with pytest.raises(BadSignature, match="64 bytes"):
        verifier.verify(f"{signing_input}.{b64url_encode(forged)}")


@pytest.mark.parametrize("which", ["r=0", "s=0", "r=s=0"])
def test_r_or_s_zero(verifier: Verifier, key: SigningKey, clock: Clock, which: str) -> None:
    """A signature with r or s zero is refused as out of range (the psychic signature class)."""
    header = {"alg": "ES256", "kid": key.kid}
    signing_input = f"{segment(header)}.{segment(claims_at(clock.now))}"
    r, s = raw_signature(key.private, signing_input)
    r, s = {"r=0": (0, s), "s=0": (r, 0), "r=s=0": (0, 0)}[which]
    with pytest.raises(BadSignature, match="out of range"):
        verifier.verify(f"{signing_input}.{b64url_encode(p1363(r, s))}")


@pytest.mark.parametrize("which", ["r=n", "s=n", "r=s=n", "r=2**256-1", "s=2**256-1"])
def test_r_or_s_at_least_n(verifier: Verifier, key: SigningKey, clock: Clock, which: str) -> None:
    """r + n style variants (congruent to a valid signature) need r < 2**256 - n, which a real
    signature almost never has; Wycheproof's RangeCheck and IntegerOverflow cases cover them."""
    header = {"alg": "ES256", "kid": key.kid}
    signing_input = f"{segment(header)}.{segment(claims_at(clock.now))}"
    r, s = raw_signature(key.private, signing_input)
    r2, s2 = {
        "r=n": (N, s),
        "s=n": (r, N),
        "r=s=n": (N, N),
        "r=2**256-1": (2**256 - 1, s),
        "s=2**256-1": (r, 2**256 - 1),
    }[which]
    with pytest.raises(BadSignature, match="out of range"):
        verifier.verify(f"{signing_input}.{b64url_encode(p1363(r2, s2))}")


def test_missing_exp(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """A token without exp is refused."""
    with pytest.raises(MissingClaim, match="exp"):
        verifier.verify(key.sign(claims_at(clock.now, exp=None)))


def test_exp_not_a_number(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """exp as a string, a boolean or a list is malformed."""
    for bad in ("1900000000", True, None and 0, [1]):
        if bad is None:
            continue
        with pytest.raises(MalformedToken, match="exp"):
            verifier.verify(key.sign(claims_at(clock.now, exp=bad)))


def test_expired_beyond_leeway(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """Expiry past the leeway is refused; within the leeway the token passes."""
    token = key.sign(claims_at(clock.now - 700))  # exp = now - 100, leeway 60
    with pytest.raises(Expired):
        verifier.verify(token)
    assert verifier.verify(key.sign(claims_at(clock.now - 650)))  # exp = now - 50: inside the leeway


def test_nbf_in_the_future(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """nbf further ahead than the leeway is refused; within it the token passes."""
    with pytest.raises(NotYetValid, match="nbf"):
        verifier.verify(key.sign(claims_at(clock.now, nbf=int(clock.now) + 120)))
    assert verifier.verify(key.sign(claims_at(clock.now, nbf=int(clock.now) + 30)))  # within leeway


def test_iat_in_the_future(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """A token issued further in the future than the leeway is refused."""
    with pytest.raises(NotYetValid, match="iat"):
        verifier.verify(key.sign(claims_at(clock.now, iat=int(clock.now) + 300)))


@pytest.mark.parametrize("aud", ["other-api", ["other-api", "billing"], 17, None])
def test_wrong_aud(verifier: Verifier, key: SigningKey, clock: Clock, aud: Any) -> None:
    """An audience other than the configured one is refused, as a string or a list."""
    with pytest.raises(WrongAudience):
        verifier.verify(key.sign(claims_at(clock.now, aud=aud)))


def test_aud_list_containing_ours(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """An audience list that names ours is accepted."""
    assert verifier.verify(key.sign(claims_at(clock.now, aud=["billing", AUD])))["aud"] == ["billing", AUD]


def test_token_with_aud_refused_by_a_verifier_without_audience(server: JwksServer, key: SigningKey, clock: Clock) -> None:
    """A verifier configured without an audience refuses tokens that name one, and accepts
    tokens that name none."""
    v = Verifier(server.url, issuer=ISS, allow_http=True, clock=clock)
    with pytest.raises(WrongAudience, match="no audience is configured"):
        v.verify(key.sign(claims_at(clock.now)))
    assert v.verify(key.sign(claims_at(clock.now, aud=None)))["sub"] == "user-1"


@pytest.mark.parametrize("iss", ["https://issuer.example/", "https://evil.example", "", None])
def test_wrong_iss(verifier: Verifier, key: SigningKey, clock: Clock, iss: Any) -> None:
    """An issuer other than the configured one is refused."""
    with pytest.raises(WrongIssuer):
        verifier.verify(key.sign(claims_at(clock.now, iss=iss)))


def test_non_json_header(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """A header that is not a JSON object is malformed."""
    with pytest.raises(MalformedToken, match="header"):
        verifier.verify(craft(key, b"alg=ES256;kid=x", claims_at(clock.now)))
    with pytest.raises(MalformedToken, match="header is not a JSON object"):
        verifier.verify(craft(key, ["ES256"], claims_at(clock.now)))


def test_json_array_payload(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """A payload that is a JSON array, not an object, is malformed."""
    with pytest.raises(MalformedToken, match="payload is not a JSON object"):
        verifier.verify(craft(key, {"alg": "ES256", "kid": key.kid}, [claims_at(clock.now)]))


def test_non_json_payload(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """A payload that is not JSON is malformed."""
    with pytest.raises(MalformedToken, match="payload"):
        verifier.verify(craft(key, {"alg": "ES256", "kid": key.kid}, b"\xff\xfe not json"))


def test_1mb_header(verifier: Verifier, key: SigningKey, clock: Clock, server: JwksServer) -> None:
    """Oversized tokens and headers are refused before any parsing or fetch."""
    before = server.requests
    header = {"alg": "ES256", "kid": key.kid, "pad": "x" * (1024 * 1024)}
    with pytest.raises(MalformedToken, match="at most"):
        verifier.verify(craft(key, header, claims_at(clock.now)))
    small_enough_overall = {"alg": "ES256", "kid": key.kid, "pad": "x" * 2000}
    with pytest.raises(MalformedToken, match="header is too large"):
        verifier.verify(craft(key, small_enough_overall, claims_at(clock.now)))
    assert server.requests == before


@pytest.mark.parametrize("parts", [1, 2, 4, 5])
def test_wrong_part_count(verifier: Verifier, key: SigningKey, clock: Clock, parts: int) -> None:
    """Tokens with other than three parts are malformed."""
    pieces = key.sign(claims_at(clock.now)).split(".")
    token = ".".join((pieces * 2)[:parts])
    with pytest.raises(MalformedToken, match="parts"):
        verifier.verify(token)


@pytest.mark.parametrize("where", [0, 1, 2])
@pytest.mark.parametrize("damage", ["padding", "plus", "slash", "space", "newline", "non-ascii", "trailing-bits"])
def test_padding_or_non_base64url_characters(
    verifier: Verifier, key: SigningKey, clock: Clock, where: int, damage: str
) -> None:
    """Padding, + or /, whitespace or non-canonical spare bits in any segment are refused."""
    parts = _token_with_spare_bits_everywhere(key, clock)
    seg = parts[where]
    if damage == "padding":
        seg = seg + "=" * (-len(seg) % 4 or 4)
    elif damage == "plus":
        seg = seg.replace("-", "+") if "-" in seg else seg[:-1] + "+"
    elif damage == "slash":
        seg = seg.replace("_", "/") if "_" in seg else seg[:-1] + "/"
    elif damage == "space":
        seg = seg[:4] + " " + seg[4:]
    elif damage == "newline":
        seg = seg + "\n"
    elif damage == "non-ascii":
        seg = seg[:4] + "\u00e9" + seg[4:]
    elif damage == "trailing-bits":
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        seg = seg[:-1] + alphabet[alphabet.index(seg[-1]) | 1]
    parts[where] = seg
    with pytest.raises(MalformedToken):
        verifier.verify(".".join(parts))


def _token_with_spare_bits_everywhere(key: SigningKey, clock: Clock) -> list[str]:
    """A valid token whose three segments all end in a character with unused low bits."""
    for pad in range(16):
        header = {"alg": "ES256", "kid": key.kid, "typ": "JWT" + "+" * (pad % 4)}
        parts = craft(key, header, claims_at(clock.now, jti="x" * (pad // 4))).split(".")
        if all(len(p) % 4 for p in parts):
            return parts
    raise AssertionError("no padding combination gave spare bits in every segment")


@pytest.mark.parametrize(
    "raw_header",
    [
        b'{"alg":"ES256","kid":"%s","alg":"none"}',
        b'{"alg":"none","kid":"%s","alg":"ES256"}',
        b'{"alg":"ES256","kid":"%s","kid":"other"}',
    ],
)
def test_duplicate_header_members(verifier: Verifier, key: SigningKey, clock: Clock, raw_header: bytes) -> None:
    """A header with a duplicated member is malformed."""
    with pytest.raises(MalformedToken, match="duplicate"):
        verifier.verify(craft(key, raw_header % key.kid.encode(), claims_at(clock.now)))


def test_duplicate_payload_members(verifier: Verifier, key: SigningKey, clock: Clock) -> None:
    """A payload with a duplicated claim is malformed, never resolved to one of the values."""
    payload = b'{"sub":"user-1","sub":"admin","exp":%d}' % (clock.now + 600)
    with pytest.raises(MalformedToken, match="duplicate"):
        verifier.verify(craft(key, {"alg": "ES256", "kid": key.kid}, payload))


def test_non_string_token(verifier: Verifier) -> None:
    """Bytes, None or a number instead of a token string are malformed."""
    for bad in (b"a.b.c", None, 17):
        with pytest.raises(MalformedToken):
            verifier.verify(bad)  # type: ignore[arg-type]


def test_unknown_algorithms_are_refused_at_construction(server: JwksServer) -> None:
    """A verifier asked to allow an algorithm it does not implement refuses at construction."""
    for unknown in (("ES256", "HS256"), ("none",), ("RS512",), ()):
        with pytest.raises(ValueError, match="each must be one of ES256, ES384, RS256, PS256, EdDSA"):
            Verifier(server.url, allow_http=True, algorithms=unknown)


def test_max_lifetime(server: JwksServer, key: SigningKey, clock: Clock) -> None:
    """With max_lifetime, a token whose exp - iat exceeds it is refused."""
    v = Verifier(server.url, issuer=ISS, audience=AUD, allow_http=True, clock=clock, max_lifetime=3600)
    assert v.verify(key.sign(claims_at(clock.now)))
    with pytest.raises(InvalidLifetime):
        v.verify(key.sign(claims_at(clock.now, exp=int(clock.now) + 7200)))


# -- strict base64url ----------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_b64url_round_trip_and_canonical_form(data: bytes) -> None:
    """base64url encoding round-trips and matches the standard library without padding."""
    text = b64url_encode(data)
    assert b64url_decode(text) == data
    assert text == base64.urlsafe_b64encode(data).decode().rstrip("=")


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/= \n", max_size=40))
def test_b64url_accepts_exactly_the_canonical_encodings(text: str) -> None:
    """The decoder accepts exactly the texts the encoder produces."""
    try:
        decoded = b64url_decode(text)
    except ValueError:
        assert not _is_canonical(text)
    else:
        assert b64url_encode(decoded) == text


def _is_canonical(text: str) -> bool:
    try:
        return b64url_encode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))) == text
    except ValueError:
        return False


# -- result cache --------------------------------------------------------------------------


@pytest.fixture
def cached(server: JwksServer, clock: Clock) -> Verifier:
    return Verifier(server.url, issuer=ISS, audience=AUD, allow_http=True, clock=clock, result_cache_size=100)


def test_result_cache_is_off_by_default(verifier: Verifier) -> None:
    """The result cache is off unless result_cache_size is set."""
    assert verifier._results is None


def test_result_cache_hit_gives_each_caller_its_own_copy(cached: Verifier, key: SigningKey, clock: Clock) -> None:
    """A cache hit gives each caller its own copy of the claims: one caller's changes never
    reach another."""
    token = key.sign(claims_at(clock.now, roles=["reader"], profile={"tier": "gold"}))
    first = cached.verify(token)
    first["roles"].append("admin")
    first["profile"]["tier"] = "root"
    second = cached.verify(token)
    assert second["roles"] == ["reader"] and second["profile"] == {"tier": "gold"}
    assert len(result_entries(cached)) == 1


def test_result_cache_does_not_vouch_for_another_signature(cached: Verifier, key: SigningKey, clock: Clock) -> None:
    """A cached token's signing input with another signature misses the cache and is refused."""
    token = key.sign(claims_at(clock.now))
    cached.verify(token)
    signing_input, _, sig = token.rpartition(".")
    forged = bytearray(b64url_decode(sig))
    forged[-1] ^= 1
    with pytest.raises(BadSignature):
        cached.verify(f"{signing_input}.{b64url_encode(bytes(forged))}")
    assert cached.verify(token)["sub"] == "user-1"


def test_result_cache_hit_still_expires(cached: Verifier, key: SigningKey, clock: Clock) -> None:
    """A cached result expires with its token."""
    token = key.sign(claims_at(clock.now))
    cached.verify(token)
    clock.advance(600 + 61)
    with pytest.raises(Expired):
        cached.verify(token)


def test_result_cache_never_caches_failures(cached: Verifier, key: SigningKey, clock: Clock) -> None:
    """A refused token is not cached, and is accepted once it becomes valid."""
    token = key.sign(claims_at(clock.now, nbf=int(clock.now) + 120))
    with pytest.raises(NotYetValid):
        cached.verify(token)
    assert not result_entries(cached)
    clock.advance(120)
    assert cached.verify(token)["sub"] == "user-1"


def test_result_cache_is_bounded(server: JwksServer, key: SigningKey, clock: Clock) -> None:
    """The result cache holds at most result_cache_size entries."""
    v = Verifier(server.url, issuer=ISS, audience=AUD, allow_http=True, clock=clock, result_cache_size=10)
    for i in range(50):
        v.verify(key.sign(claims_at(clock.now, jti=f"t{i}")))
    assert len(result_entries(v)) <= 10


def test_result_cache_drops_results_of_a_key_no_longer_published(clock: Clock) -> None:
    """A result whose key left the JWKS stops being served from the cache at once."""
    old, new = SigningKey(), SigningKey()
    with JwksServer([old, new], max_age=60) as srv:
        v = Verifier(srv.url, issuer=ISS, audience=AUD, allow_http=True, clock=clock, result_cache_size=10)
        token = old.sign(claims_at(clock.now))
        assert v.verify(token)
        srv.keys = [new]  # revoked: gone from the JWKS
        clock.advance(61)
        v.refresh()
        with pytest.raises(UnknownKey):
            v.verify(token)


# -- revocation hooks ----------------------------------------------------------------------


@pytest.mark.parametrize("cache_size", [0, 10])
def test_jti_denylist_runs_on_every_accepted_token(server: JwksServer, key: SigningKey, clock: Clock, cache_size: int) -> None:
    """The jti denylist is checked on every accepted token, cache hits included."""
    denylist = JtiDenylist(clock=clock)
    v = Verifier(
        server.url, issuer=ISS, audience=AUD, allow_http=True, clock=clock,
        jti_denylist=denylist, result_cache_size=cache_size,
    )
    claims = claims_at(clock.now, jti="session-42")
    token = key.sign(claims)
    assert v.verify(token)["jti"] == "session-42"
    denylist.add("session-42", claims["exp"])
    with pytest.raises(Revoked, match="jti"):
        v.verify(token)
    assert v.verify(key.sign(claims_at(clock.now, jti="session-43")))


def test_jti_denylist_entries_expire_with_the_token(clock: Clock) -> None:
    """Denylist entries are dropped after their token's exp plus the grace, not before."""
    denylist = JtiDenylist(grace=120, clock=clock)
    denylist.add("a", clock.now + 600)
    denylist.add("b", clock.now + 60)
    assert "a" in denylist and "b" in denylist and len(denylist) == 2
    clock.advance(60 + 121)
    assert "b" not in denylist and "a" in denylist and len(denylist) == 1
    clock.advance(600)
    assert len(denylist) == 0


def test_jti_denylist_grace_must_cover_the_leeway(server: JwksServer) -> None:
    """A denylist whose grace is shorter than the leeway is refused at construction."""
    with pytest.raises(ValueError, match="leeway"):
        Verifier(server.url, allow_http=True, leeway=600, jti_denylist=JtiDenylist(grace=60))


@pytest.mark.parametrize("cache_size", [0, 10])
def test_subject_not_before_cutoff(server: JwksServer, key: SigningKey, clock: Clock, cache_size: int) -> None:
    """A subject cutoff rejects tokens issued before it (and tokens without iat), cache hits
    included."""
    cutoffs: dict[str, float] = {}
    v = Verifier(
        server.url, issuer=ISS, audience=AUD, allow_http=True, clock=clock,
        subject_not_before=cutoffs.get, result_cache_size=cache_size,
    )
    before = key.sign(claims_at(clock.now))
    no_iat = key.sign(claims_at(clock.now, iat=None))
    assert v.verify(before) and v.verify(no_iat)
    clock.advance(10)
    cutoffs["user-1"] = clock.now  # password reset: tokens issued before now stop working
    for token in (before, no_iat):
        with pytest.raises(Revoked, match="cutoff"):
            v.verify(token)
    assert v.verify(key.sign(claims_at(clock.now)))
    assert v.verify(key.sign(claims_at(clock.now - 100, sub="user-2")))


@pytest.mark.parametrize("cache_size", [0, 10])
def test_session_version_lookup(server: JwksServer, key: SigningKey, clock: Clock, cache_size: int) -> None:
    """A token whose session version is not the subject's current one is rejected, cache hits
    included."""
    versions = {"user-1": 3}
    v = Verifier(
        server.url, issuer=ISS, audience=AUD, allow_http=True, clock=clock,
        session_version=lambda claims: versions.get(str(claims.get("sub"))), result_cache_size=cache_size,
    )
    token = key.sign(claims_at(clock.now, sv=3))
    assert v.verify(token)["sv"] == 3
    versions["user-1"] = 4  # "log out everywhere"
    with pytest.raises(Revoked, match="session version"):
        v.verify(token)
    with pytest.raises(Revoked):
        v.verify(key.sign(claims_at(clock.now)))  # no sv claim at all
    assert v.verify(key.sign(claims_at(clock.now, sv=4)))
    assert v.verify(key.sign(claims_at(clock.now, sub="user-9")))  # no record: not checked


# -- what the verifier imports -------------------------------------------------------------


def test_verifier_imports_only_the_standard_library_and_cryptography() -> None:
    """import rotator.verifier loads only the standard library, cryptography and rotator's own
    verifier, token format and backoff modules."""
    code = "import sys, json, rotator.verifier; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True)
    attempted = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    loaded = set(json.loads(result.stdout))
    assert "rotator.verifier" in attempted and "cryptography" in loaded
    for forbidden in ("boto3", "botocore", "apscheduler", "jwcrypto", "click", "s3transfer"):
        assert not any(m == forbidden or m.startswith(forbidden + ".") for m in attempted | loaded), forbidden
    # What actually loaded (importtime also lists optional imports that failed, such as
    # cryptography's probe for bcrypt): the standard library, cryptography and its cffi.
    tops = {m.split(".")[0] for m in loaded} - set(sys.stdlib_module_names)
    tops = {m for m in tops if not m.startswith("__editable__")} - {"__main__", "_distutils_hack"}  # venv .pth hooks
    assert tops <= {"rotator", "cryptography", "_cffi_backend", "_openssl", "cffi"}, tops
    ours = {m for m in loaded if m.startswith("rotator")}
    assert ours <= {"rotator", "rotator._b64", "rotator._strict", "rotator.keys"} | {
        m for m in ours if m.startswith(("rotator.verifier", "rotator.jose")) or m in ("rotator._backoff", "rotator._instants")
    }, f"the verifier pulled in rotator's server side: {sorted(ours)}"


def test_invalid_token_errors_share_one_base(verifier: Verifier) -> None:
    """Every token error is an InvalidToken with a stable code."""
    with pytest.raises(InvalidToken) as caught:
        verifier.verify("not-a-token")
    assert caught.value.code == "malformed"
