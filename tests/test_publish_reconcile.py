"""The publisher's guard, its refusal to roll back, and the reconcile step under faults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from rotator._b64 import b64url_decode
from rotator._strict import strict_json
from rotator.config import Policy
from rotator.errors import NoActiveKey, PublicationGuardError, PublishError
from rotator.issuer import Signer
from rotator.jose import check_claims, verify_signature
from rotator.keys import public_key_from_jwk
from rotator.keystore import FileKeystore
from rotator.publish import FilePublisher, build_jwks, check_jwks, publish
from rotator.reconcile import STAGES, Rotator
from rotator.state import KeyState
from rotator.verifier import BadSignature, Expired

from .harness import Crash, FaultyPublisher, check_target_rule
from .helpers import PASSPHRASE, Clock, load_vectors, verify_with


def _jwks(*keys: dict[str, object]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


EC = {"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "alg": "ES256"}


@pytest.mark.parametrize(
    "body, active, pending, fragment",
    [
        (_jwks({**EC, "kid": "p"}), "a", ["p"], "does not list the active key a first"),
        (_jwks({**EC, "kid": "p"}, {**EC, "kid": "a"}), "a", ["p"], "does not list the active key a first"),
        (_jwks({**EC, "kid": "a"}), "a", ["p"], "lacks pending key(s) p"),
        (_jwks({**EC, "kid": "a", "d": "secret"}), "a", [], "carries private members ['d']"),
        (_jwks({"kty": "oct", "kid": "a", "k": "secret"}), "a", [], "private members ['k']"),
        (_jwks({"kty": "RSA", "kid": "a", "n": "n", "e": "e"}), "a", [], "not a public key with a kid and an alg"),
        (_jwks({"kty": "RSA", "kid": "a", "n": "n", "e": "e", "alg": "HS256"}), "a", [], "an alg rotator knows"),
        (_jwks({"kty": "RSA", "kid": "a", "n": "n", "e": "e", "alg": "RS256", "p": "s", "q": "s"}), "a", [], "private members ['p', 'q']"),
        (_jwks({"kty": "OKP", "crv": "Ed25519", "kid": "a", "x": "x", "alg": "EdDSA", "d": "s"}), "a", [], "private members ['d']"),
        (_jwks({**EC, "kid": "a"}, {**EC, "kid": "a"}), "a", [], "lists a kid twice"),
        (b'{"keys": [], "keys": []}', None, [], "duplicate member"),
        (b'{"keys": [], "extra": 1}', None, [], "exactly one member"),
        (b"{not json", None, [], "not valid JSON"),
    ],
)
def test_publication_guard_refuses(body: bytes, active: str | None, pending: list[str], fragment: str) -> None:
    """The publication guard refuses a JWKS missing the active or a pending key, or carrying a
    private member."""
    with pytest.raises(PublicationGuardError) as info:
        check_jwks(body, active, pending)
    assert fragment in str(info.value)


def test_guard_sits_in_the_publisher(make_rotator: Callable[..., Rotator], dirs: tuple[Path, Path]) -> None:
    """publish() checks the document against the state, whatever produced the document."""
    rotator = make_rotator()
    state = rotator.step().state
    before = rotator.publisher.read_back()
    pending_only = state.with_keys([k for k in state.keys if k.state is KeyState.PENDING])
    with pytest.raises(PublicationGuardError, match="active key"):
        publish(rotator.publisher, state, build_jwks(pending_only))
    assert rotator.publisher.read_back() == before


def test_jwks_bytes_are_deterministic(make_rotator: Callable[..., Rotator]) -> None:
    """The JWKS bytes depend only on the keys, not on their order in the state."""
    state = make_rotator().step().state
    assert build_jwks(state) == build_jwks(state)
    reordered = state.with_keys(reversed(state.keys))
    assert build_jwks(reordered) == build_jwks(state)


def test_older_generation_never_overwrites_newer(tmp_path: Path) -> None:
    """A file publish target refuses a JWKS of an older generation, another lineage or other
    keys."""
    check_target_rule(lambda: FilePublisher(tmp_path / "pub"))
    assert FilePublisher(tmp_path / "pub").path.name == "jwks.json"
    assert FilePublisher(tmp_path / "custom.json").path.name == "custom.json"


@pytest.mark.parametrize("stage", STAGES)
def test_crash_at_any_stage_is_repaired_by_next_step(make_rotator: Callable[..., Rotator], clock: Clock, stage: str) -> None:
    """A step killed at any stage leaves a valid state; the next step converges."""
    rotator = make_rotator()
    rotator.step()
    clock.advance(900)
    before = rotator.keystore.load()
    assert before is not None

    def crash(at: str) -> None:
        if at == stage:
            raise Crash(at)

    try:
        rotator.step(checkpoint=crash)
    except Crash:
        pass
    middle = rotator.keystore.load()
    assert middle is not None and middle.active is not None
    repaired = rotator.step().state
    assert repaired.published_digest is not None
    assert rotator.publisher.read_back() == build_jwks(repaired)
    assert repaired.active is not None and repaired.active.kid != before.active.kid  # type: ignore[union-attr]
    assert all(k.published_at is not None for k in repaired.pending)
    assert rotator.step().events == ()


def test_failed_publication_keeps_current_key_signing(make_rotator: Callable[..., Rotator], dirs: tuple[Path, Path], clock: Clock) -> None:
    """A failed publication keeps the current key signing and activates nothing unconfirmed."""
    keystore_dir, public_dir = dirs
    faulty = FaultyPublisher(FilePublisher(public_dir), clock)
    rotator = make_rotator(publisher=faulty)
    first = rotator.step().state
    clock.advance(900)
    faulty.fail_writes = True
    published = faulty.read_back()
    with pytest.raises(PublishError, match="503"):
        rotator.step()
    state = rotator.keystore.load()
    assert state is not None
    # The rotation itself was stored (the successor was confirmed long ago), but the new
    # pending key is unconfirmed and the old document is still served.
    assert faulty.inner.read_back() == published
    assert [k.published_at for k in state.pending] == [None]
    faulty.fail_writes = False
    repaired = rotator.step().state
    assert [k.published_at for k in repaired.pending] == [clock.now]
    assert first.active is not None


def test_stale_read_back_confirms_nothing(make_rotator: Callable[..., Rotator], dirs: tuple[Path, Path], clock: Clock) -> None:
    """A read-back that shows an older document (a cache in front) leaves keys pending."""
    _, public_dir = dirs
    faulty = FaultyPublisher(FilePublisher(public_dir), clock)
    rotator = make_rotator(publisher=faulty)
    rotator.step()
    clock.advance(900)
    faulty.stale_reads = True
    with pytest.raises(PublishError, match="does not match the JWKS just written"):
        rotator.step()
    state = rotator.keystore.load()
    assert state is not None and [k.published_at for k in state.pending] == [None]
    clock.advance(900)
    # Still unconfirmed, so the next rotation cannot happen: the current key keeps signing.
    with pytest.raises(PublishError):
        rotator.step()
    assert rotator.keystore.load().active.kid == state.active.kid  # type: ignore[union-attr]
    faulty.stale_reads = False
    assert rotator.step().state.pending[0].published_at == clock.now


def test_signer_uses_active_key_and_follows_rotation(make_rotator: Callable[..., Rotator], clock: Clock, dirs: tuple[Path, Path]) -> None:
    """A Signer signs with the active key and follows rotations; without a key set it says to
    run rotate."""
    keystore_dir, public_dir = dirs
    signer = Signer(FileKeystore(keystore_dir), Policy(), passphrase=PASSPHRASE, issuer="iss", clock=clock, storage_clock=False)
    with pytest.raises(NoActiveKey, match="run `rotator rotate` first"):
        signer.sign(subject="s")
    rotator = make_rotator()
    state = rotator.step().state
    signer.reload()  # what the background watcher does every refresh_interval
    token = signer.sign({"scope": "read"}, subject="s", audience="api")
    claims = verify_with(token, (public_dir / "jwks.json").read_bytes(), clock.now, audience="api", issuer="iss")
    assert claims["scope"] == "read" and signer.kid == state.active.kid  # type: ignore[union-attr]
    clock.advance(900)
    # The successor takes over at its activation instant from the cached schedule, before
    # any read of the new state.
    assert signer.kid == state.pending[0].kid
    rotated = rotator.step().state
    signer.reload()
    assert signer.kid == rotated.active.kid != state.active.kid  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="set by the signer"):
        signer.sign({"exp": 1})


def test_signer_refuses_unconfirmed_active_key(make_rotator: Callable[..., Rotator], dirs: tuple[Path, Path], clock: Clock) -> None:
    """Defence in depth: a state whose active key lacks a confirmation is not signed with."""
    rotator = make_rotator()
    state = rotator.step().state
    active = state.active
    assert active is not None
    tampered = state.with_keys(k.with_(published_at=None) if k.kid == active.kid else k for k in state.keys)
    rotator.keystore.save(tampered, state.generation)
    signer = Signer(rotator.keystore, Policy(), passphrase=PASSPHRASE, clock=clock, storage_clock=False)
    with pytest.raises(NoActiveKey, match="unconfirmed"):
        signer.sign(subject="s")


def test_rfc7515_a3_verifies_then_is_expired() -> None:
    """RFC 7515 A.3: the ES256 signature verifies; its claims (exp in 2011) are rejected as expired."""
    vector = load_vectors("rfc_examples.json")["rfc7515_A3_es256"]
    key = public_key_from_jwk(vector["jwk_public"])
    verify_signature(key, vector["signing_input"].encode(), b64url_decode(vector["signature_b64u"]))
    with pytest.raises(BadSignature):
        verify_signature(key, vector["signing_input"].encode() + b"x", b64url_decode(vector["signature_b64u"]))
    claims = strict_json(b64url_decode(vector["payload_b64u"]))
    check_claims(claims, now=1300819380, leeway=0, audience=None, issuer=None)
    with pytest.raises(Expired):
        check_claims(claims, now=1_800_000_000, leeway=60, audience=None, issuer=None)
