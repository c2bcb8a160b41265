"""S3 keystore and publisher with KMS envelope encryption, against moto in-process."""

from __future__ import annotations

import json
from typing import Any, Iterator

import boto3
import pytest
from moto import mock_aws

from rotator._aws import S3Options, s3_client
from rotator.config import Policy
from rotator.errors import ConflictError, KeystoreError, PublishError
from rotator.issuer import Signer
from rotator.keystore.s3 import S3Keystore
from rotator.publish import build_jwks
from rotator.publish.s3 import S3Publisher
from rotator.reconcile import Rotator
from rotator.sealing import open_sealer

from .aws import BUCKET, count_requests, ignore_conditional_writes, inject_failures
from .harness import Crash, FaultyPublisher, check_target_rule
from .helpers import Clock, ec_private, verify_with

P, M = 900.0, 300.0


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        kms = boto3.client("kms")
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        yield {"s3": s3, "kms": kms, "key_id": key_id}


def make(aws: dict[str, Any], clock: Clock, *, client: Any = None, kms_key_id: str | None = None, single_writer: bool = False) -> Rotator:
    options = S3Options(single_writer=single_writer)
    s3 = client or s3_client(options)
    return Rotator(
        keystore=S3Keystore(s3, BUCKET, "keys/prod", options),
        publisher=S3Publisher(s3, BUCKET, "public/jwks.json", max_age=M),
        policy=Policy(),
        clock=clock,
        kms_key_id=kms_key_id or aws["key_id"],
        storage_clock=False,  # simulated time
    )


def get(aws: dict[str, Any], key: str) -> dict[str, Any]:
    response: dict[str, Any] = aws["s3"].get_object(Bucket=BUCKET, Key=key)
    response["body"] = response["Body"].read()
    return response


def test_rotation_on_s3_publishes_with_headers_and_generation(aws: dict[str, Any], clock: Clock) -> None:
    """A rotation on S3 publishes the JWKS with its content type, Cache-Control and generation
    marker."""
    rotator = make(aws, clock)
    state = rotator.step().state
    jwks = get(aws, "public/jwks.json")
    assert jwks["ContentType"] == "application/jwk-set+json"
    assert jwks["CacheControl"] == "public, max-age=300"
    assert jwks["body"] == build_jwks(state)
    assert int(jwks["Metadata"]["generation"]) <= state.generation
    assert state.published_etag == jwks["ETag"]
    clock.advance(P)
    rotated = rotator.step().state
    assert rotated.active is not None and rotated.active.kid == state.pending[0].kid
    assert get(aws, "public/jwks.json")["body"] == build_jwks(rotated)


def test_compare_and_swap_conflicts(aws: dict[str, Any], clock: Clock) -> None:
    """Create uses If-None-Match: *, update If-Match: <etag>; losing either is a ConflictError."""
    first, second = make(aws, clock), make(aws, clock)
    state = first.step().state
    loaded = second.keystore.load()
    assert loaded is not None
    clock.advance(P)
    first.step()
    with pytest.raises(ConflictError):
        second.keystore.save(loaded, loaded.generation)
    fresh = S3Keystore(boto3.client("s3"), BUCKET, "keys/other")
    fresh.save(state, 0)
    with pytest.raises(ConflictError):
        S3Keystore(boto3.client("s3"), BUCKET, "keys/other").save(state, 0)


def test_store_ignoring_conditional_writes_is_refused(aws: dict[str, Any], clock: Clock) -> None:
    """A store that ignores conditional writes is refused unless --s3-single-writer is given,
    and nothing is stored."""
    client = boto3.client("s3")
    ignore_conditional_writes(client)
    with pytest.raises(KeystoreError, match="does not enforce conditional writes.*--s3-single-writer"):
        make(aws, clock, client=client).step()
    assert "Contents" not in aws["s3"].list_objects_v2(Bucket=BUCKET, Prefix="keys/prod/state")
    state = make(aws, clock, client=client, single_writer=True).step().state
    assert state.active is not None


def test_keystore_object_holds_no_plaintext_private_key(aws: dict[str, Any], clock: Clock) -> None:
    """The keystore object on S3 holds no plaintext private key: KMS envelope encryption under
    the configured key."""
    rotator = make(aws, clock)
    state = rotator.step().state
    raw = get(aws, "keys/prod/state.json")["body"]
    assert b"PRIVATE KEY" not in raw and b'"d"' not in raw
    assert state.encryption["scheme"] == "kms-aes256gcm" and state.encryption["key_id"] == aws["key_id"]
    sealer = open_sealer(state.encryption, None, False, kms_key_id=aws["key_id"])
    for key in state.keys:
        assert key.private is not None
        scalar = ec_private(sealer.unseal(key.private, state.keyset, key.kid)).private_numbers().private_value
        for form in (scalar.to_bytes(32, "big"), scalar.to_bytes(32, "big").hex().encode(), str(scalar).encode()):
            assert form not in raw


def test_wrong_kms_key_is_a_clear_error_and_overwrites_nothing(aws: dict[str, Any], clock: Clock) -> None:
    """A different KMS key than the key set's is a one-line error naming both, and the state
    object is not rewritten."""
    make(aws, clock).step()
    before = get(aws, "keys/prod/state.json")["ETag"]
    other = aws["kms"].create_key()["KeyMetadata"]["KeyId"]
    clock.advance(P)
    with pytest.raises(KeystoreError, match=f"encrypted under KMS key {aws['key_id']}, but ROTATOR_KMS_KEY_ID is {other}"):
        make(aws, clock, kms_key_id=other).step()
    assert get(aws, "keys/prod/state.json")["ETag"] == before


def test_tampered_ciphertext_is_a_clear_error(aws: dict[str, Any], clock: Clock) -> None:
    """A tampered ciphertext or wrapped data key is a clear error, never a key."""
    rotator = make(aws, clock)
    state = rotator.step().state
    active = state.active
    assert active is not None and active.private is not None
    wrapped, _, sealed = active.private.partition(".")
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    tampered = state.with_keys(k.with_(private=f"{wrapped}.{flipped}") if k.kid == active.kid else k for k in state.keys)
    rotator.keystore.save(tampered, state.generation)
    signer = Signer(rotator.keystore, Policy(), clock=clock, kms_key_id=aws["key_id"], storage_clock=False)
    with pytest.raises(KeystoreError, match=f"private key of {active.kid} cannot be decrypted"):
        signer.sign(subject="s")
    # Swapping a data key between kids is caught by the KMS encryption context.
    other = state.pending[0]
    assert other.private is not None
    swapped = tampered.with_keys(
        k.with_(private=other.private) if k.kid == active.kid else k for k in tampered.keys
    )
    rotator.keystore.save(swapped, tampered.generation + 1)
    with pytest.raises(KeystoreError, match="KMS Decrypt .* failed: InvalidCiphertextException"):
        Signer(rotator.keystore, Policy(), clock=clock, kms_key_id=aws["key_id"], storage_clock=False).sign(subject="s")


def test_signer_on_s3_keystore(aws: dict[str, Any], clock: Clock) -> None:
    """A Signer on the S3 keystore signs tokens the published JWKS verifies."""
    rotator = make(aws, clock)
    rotator.step()
    token = Signer(rotator.keystore, Policy(), clock=clock, kms_key_id=aws["key_id"], storage_clock=False).sign(subject="s", audience="a")
    assert verify_with(token, get(aws, "public/jwks.json")["body"], clock.now, audience="a")["sub"] == "s"


def test_signer_watches_s3_with_conditional_gets(aws: dict[str, Any], clock: Clock) -> None:
    """The watcher's check is one GET with If-None-Match: 304 (no body) while nothing changed."""
    rotator = make(aws, clock)
    state = rotator.step().state
    keystore = rotator.keystore
    token, loaded = keystore.load_if_changed(object())  # type: ignore[misc]
    assert loaded == state
    client = keystore._s3  # type: ignore[attr-defined]
    counts = count_requests(client)
    assert keystore.load_if_changed(token) is None and keystore.load_if_changed(token) is None
    assert dict(counts) == {"GetObject": 2}
    from rotator.lifecycle import revoke

    assert state.active is not None
    rotator.step(operation=lambda s, now: revoke(s, state.active.kid, now))  # type: ignore[union-attr]
    changed = keystore.load_if_changed(token)
    assert changed is not None and changed[1] is not None and changed[1].get(state.active.kid).state.value == "revoked"  # type: ignore[union-attr]
    assert changed[1].active is not None and changed[1].active.kid != state.active.kid


def test_s3_requests_per_step(aws: dict[str, Any], clock: Clock, capsys: pytest.CaptureFixture[str]) -> None:
    """At most 2 S3 requests when nothing is due, at most 5 when rotating (printed)."""
    client = boto3.client("s3")
    rotator = make(aws, clock, client=client)
    counts = count_requests(client)
    rotator.step()
    bootstrap = sum(counts.values())
    counts.clear()
    clock.advance(60)
    rotator.step()
    idle = dict(counts)
    counts.clear()
    clock.advance(P)
    rotator.step()
    rotating = dict(counts)
    with capsys.disabled():
        print(f"\n[s3 requests] bootstrap (incl. one-time CAS probe) {bootstrap}; nothing due {sum(idle.values())} {idle}; "
              f"rotating {sum(rotating.values())} {rotating}")
    assert sum(idle.values()) <= 2
    # Read the state and the JWKS's generation, write the state, the JWKS and the record, read back.
    assert sum(rotating.values()) <= 6


@pytest.mark.parametrize(
    "operation, status, code",
    [("PutObject", 503, "SlowDown"), ("PutObject", 500, "InternalError"), ("GetObject", 503, "ServiceUnavailable"),
     ("PutObject", 400, "ThrottlingException")],
)
def test_transient_errors_are_retried(aws: dict[str, Any], clock: Clock, operation: str, status: int, code: str) -> None:
    """Throttling and 5xx answered four times in a row: the standard retry mode's fifth attempt carries the step."""
    client = s3_client(S3Options())  # rotator's own client: standard retry mode, 5 attempts
    failed = inject_failures(client, operation, status, code, times=4)
    state = make(aws, clock, client=client).step().state
    assert failed() == 4 and state.active is not None


@pytest.mark.parametrize(
    "operation, target",
    [("PutObject", "public/jwks.json"), ("PutObject", "keys/prod/state.json"), ("GetObject", "public/jwks.json"),
     ("GetObject", "keys/prod/state.json")],
)
def test_persistent_failure_leaves_previous_jwks_and_next_run_repairs(aws: dict[str, Any], clock: Clock, operation: str, target: str) -> None:
    """A persistent S3 failure leaves the previous JWKS in place; the next good run repairs it."""
    good = make(aws, clock)
    good.step()
    published = get(aws, "public/jwks.json")["body"]
    signing = good.keystore.load().active.kid  # type: ignore[union-attr]
    clock.advance(P)
    client = s3_client(S3Options())
    inject_failures(client, operation, 503, "ServiceUnavailable", when=lambda request: target in request.url)
    with pytest.raises((KeystoreError, PublishError)) as info:
        make(aws, clock, client=client).step()
    assert "\n" not in str(info.value)
    state = good.keystore.load()
    assert state is not None
    if state.generation == 2:  # nothing was written: the same key signs, the same JWKS is served
        assert state.active.kid == signing  # type: ignore[union-attr]
    served = get(aws, "public/jwks.json")["body"]
    if (operation, target) == ("GetObject", "public/jwks.json"):
        # The write went through and only its read-back failed: what is served is the
        # stored state's JWKS (active key first), and nothing was confirmed from it.
        assert served == build_jwks(state) and [k.published_at for k in state.pending] == [None]
    else:
        assert served == published
    # Whatever is served holds the key issuers sign with now.
    assert state.active.kid in [k["kid"] for k in json.loads(served)["keys"]]  # type: ignore[union-attr]
    for key in state.keys:  # no key signs unconfirmed
        if key.activated_at is not None:
            assert key.published_at is not None
    repaired = good.step().state
    assert get(aws, "public/jwks.json")["body"] == build_jwks(repaired)
    assert repaired.active is not None and repaired.active.kid != signing
    assert all(k.published_at is not None for k in repaired.pending)


def test_crash_between_state_write_and_publish(aws: dict[str, Any], clock: Clock) -> None:
    """A crash between the state write and the publish is repaired by the next step."""
    rotator = make(aws, clock)
    rotator.step()
    published = get(aws, "public/jwks.json")["body"]
    clock.advance(P)

    def crash(stage: str) -> None:
        if stage == "state_written":
            raise Crash(stage)

    with pytest.raises(Crash):
        rotator.step(checkpoint=crash)
    assert get(aws, "public/jwks.json")["body"] == published
    state = rotator.keystore.load()
    assert state is not None and [k.published_at for k in state.pending] == [None]
    repaired = rotator.step().state
    assert get(aws, "public/jwks.json")["body"] == build_jwks(repaired)
    assert repaired.pending[0].published_at is not None


def test_stale_read_back_activates_nothing(aws: dict[str, Any], clock: Clock) -> None:
    """A stale read-back of the JWKS confirms nothing, so no key is activated on it."""
    rotator = make(aws, clock)
    faulty = FaultyPublisher(rotator.publisher, clock)  # type: ignore[arg-type]
    rotator.publisher = faulty
    rotator.step()
    clock.advance(P)
    rotator.step()
    clock.advance(P)
    faulty.stale_reads = True
    with pytest.raises(PublishError, match="does not match"):
        rotator.step()
    state = rotator.keystore.load()
    assert state is not None and [k.published_at for k in state.pending] == [None]
    faulty.stale_reads = False
    assert rotator.step().state.pending[0].published_at is not None


def test_older_generation_never_overwrites_newer_jwks(aws: dict[str, Any]) -> None:
    """On S3 too, the publish target refuses a JWKS of an older generation, another lineage or
    other keys."""
    assert S3Publisher(aws["s3"], BUCKET, "public", max_age=M).key == "public/jwks.json"
    check_target_rule(lambda: S3Publisher(aws["s3"], BUCKET, "public", max_age=M))


def test_discovery_document(aws: dict[str, Any]) -> None:
    """The OpenID discovery document is written beside the JWKS on S3 and names the jwks_uri."""
    from rotator.publish import discovery_document

    publisher = S3Publisher(aws["s3"], BUCKET, "public/jwks.json", max_age=M)
    publisher.write_discovery(discovery_document("https://auth.example", "https://cdn.example/public/jwks.json"))
    doc = json.loads(get(aws, "public/openid-configuration")["body"])
    assert doc == {
        "issuer": "https://auth.example",
        "jwks_uri": "https://cdn.example/public/jwks.json",
        "id_token_signing_alg_values_supported": ["ES256"],
    }
