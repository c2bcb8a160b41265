"""End to end over real HTTP, against two S3 implementations: moto.server.ThreadedMotoServer
(with KMS) and a real SeaweedFS server (``weed mini``, passphrase scheme: it has no KMS), both
on loopback. The CLI as a subprocess, the daemon, concurrent reconcile runs from threads, the
conditional-write probe and the requests per step run against each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Iterator

import boto3
import jwt
import pytest
from moto.server import ThreadedMotoServer

from rotator._aws import S3Options
from rotator.config import Policy
from rotator.keystore.s3 import S3Keystore
from rotator.publish import build_jwks
from rotator.publish.s3 import S3Publisher
from rotator.reconcile import Rotator
from rotator.state import KeyState

from .aws import count_requests
from .helpers import PASSPHRASE, TEST_SCRYPT_N, Clock, wait_for
from .seaweed import SeaweedServer, weed_version

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def seaweed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed")).start()
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["moto", "seaweedfs"])
def target(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The S3 server under test: moto (S3 and KMS) or SeaweedFS (S3; keys sealed with a passphrase)."""
    if request.param == "moto":
        return {"name": "moto", "endpoint": request.getfixturevalue("moto_server"), "kms": True}
    return {"name": "seaweedfs", "endpoint": request.getfixturevalue("seaweed_server"), "kms": False}


def _bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    bucket = f"rotator-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=bucket)
    return bucket, s3


@pytest.fixture
def aws(target: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    bucket, s3 = _bucket(target["endpoint"], monkeypatch)
    key_id = None
    if target["kms"]:
        monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", target["endpoint"])
        key_id = boto3.client("kms", endpoint_url=target["endpoint"]).create_key()["KeyMetadata"]["KeyId"]
    return {"endpoint": target["endpoint"], "target": target["name"], "bucket": bucket, "s3": s3, "key_id": key_id}


def sealing(aws: dict[str, Any]) -> dict[str, str]:
    """The settings that seal private keys on this target: KMS on moto, a passphrase elsewhere."""
    if aws["key_id"]:
        return {"ROTATOR_KMS_KEY_ID": aws["key_id"], "AWS_ENDPOINT_URL_KMS": aws["endpoint"]}
    return {"ROTATOR_KEYSTORE_PASSPHRASE": PASSPHRASE}


def cli_env(aws: dict[str, Any], extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTATOR_", "AWS_"))}
    env.update(CREDENTIALS)
    env.update(
        ROTATOR_S3_ENDPOINT_URL=aws["endpoint"],
        ROTATOR_KEYSTORE=f"s3://{aws['bucket']}/keys",
        ROTATOR_PUBLISH=f"s3://{aws['bucket']}/public/jwks.json",
        ROTATOR_ISSUER="https://issuer.e2e",
        **sealing(aws),
    )
    env.update(extra or {})
    return env


def s3_rotator(aws: dict[str, Any], client: Any, name: str, clock: Clock, **options: Any) -> Rotator:
    """A Rotator on ``client`` with keystore prefix ``name`` and JWKS at ``name-public/jwks.json``,
    sealing as this target does, in simulated time."""
    return Rotator(
        keystore=S3Keystore(client, aws["bucket"], name, S3Options(endpoint_url=aws["endpoint"])),
        publisher=S3Publisher(client, aws["bucket"], f"{name}-public/jwks.json", max_age=300),
        policy=Policy(),
        clock=clock,
        kms_key_id=aws["key_id"],
        passphrase=None if aws["key_id"] else PASSPHRASE,
        scrypt_n=TEST_SCRYPT_N,
        storage_clock=False,  # simulated time
        **options,
    )


def cli(aws: dict[str, Any], *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rotator.cli", *args], env=cli_env(aws, extra), capture_output=True, text=True, timeout=120
    )


def test_cli_over_http(aws: dict[str, Any]) -> None:
    """rotate, status, jwks and sign through the CLI over HTTP; PyJWT verifies the token."""
    rotated = cli(aws, "rotate")
    assert rotated.returncode == 0, rotated.stderr
    status = json.loads(cli(aws, "status", "--json").stdout)
    assert sorted(k["state"] for k in status["keys"]) == ["active", "pending"]
    printed = json.loads(cli(aws, "jwks").stdout)
    # Fetched with a signed request (moto sends unsigned GETs of */.well-known/jwks.json to its Cognito mock).
    stored = aws["s3"].get_object(Bucket=aws["bucket"], Key="public/jwks.json")
    assert stored["ContentType"] == "application/jwk-set+json" and stored["CacheControl"] == "public, max-age=300"
    body = stored["Body"].read()
    assert json.loads(body) == printed
    token = cli(aws, "sign", "--sub", "bob", "--aud", "api").stdout.strip()
    key = next(k for k in jwt.PyJWKSet.from_json(body.decode()).keys if k.key_id == jwt.get_unverified_header(token)["kid"])
    assert jwt.decode(token, key.key, algorithms=["ES256"], audience="api", issuer="https://issuer.e2e")["sub"] == "bob"
    raw_state = aws["s3"].get_object(Bucket=aws["bucket"], Key="keys/state.json")["Body"].read()
    scheme = b"kms-aes256gcm" if aws["key_id"] else b"scrypt-aes256gcm"
    assert b"PRIVATE KEY" not in raw_state and b'"scheme":"' + scheme + b'"' in raw_state


def test_confirmation_through_public_url(aws: dict[str, Any]) -> None:
    """With --public-url, the read-back goes through that URL (the path-style object URL; moto
    needs a bucket policy for an anonymous read, SeaweedFS without identities allows it)."""
    url = f"{aws['endpoint']}/{aws['bucket']}/public/jwks.json"
    if aws["target"] == "moto":
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                           "Resource": f"arn:aws:s3:::{aws['bucket']}/public/*"}],
        }
        aws["s3"].put_bucket_policy(Bucket=aws["bucket"], Policy=json.dumps(policy))
    done = cli(aws, "rotate", "--public-url", url, "--discovery")
    assert done.returncode == 0, done.stderr
    assert f"published at {url}" in done.stdout
    discovery = json.loads(aws["s3"].get_object(Bucket=aws["bucket"], Key="public/openid-configuration")["Body"].read())
    assert discovery["jwks_uri"] == url and discovery["issuer"] == "https://issuer.e2e"


def test_wrong_sealing_key_over_http(aws: dict[str, Any]) -> None:
    """Another KMS key (moto) or a wrong passphrase (SeaweedFS): one line, exit 3, nothing written."""
    assert cli(aws, "rotate").returncode == 0
    before = aws["s3"].head_object(Bucket=aws["bucket"], Key="keys/state.json")["ETag"]
    if aws["key_id"]:
        other = boto3.client("kms", endpoint_url=aws["endpoint"]).create_key()["KeyMetadata"]["KeyId"]
        wrong, expected = {"ROTATOR_KMS_KEY_ID": other}, "encrypted under KMS key"
    else:
        wrong, expected = {"ROTATOR_KEYSTORE_PASSPHRASE": "not the passphrase"}, "passphrase"
    failed = cli(aws, "rotate", "--force", extra=wrong)
    assert failed.returncode == 3, failed.stderr
    assert failed.stderr.strip().count("\n") == 0 and expected in failed.stderr
    assert aws["s3"].head_object(Bucket=aws["bucket"], Key="keys/state.json")["ETag"] == before


ROUNDS = 6
RUNNERS = 8


def test_eight_concurrent_reconcile_runs(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """Eight racing steps per due rotation, repeated: exactly one new key per rotation, no key
    lost, and the published JWKS always matches the latest state."""
    clock = Clock()

    def rotator() -> Rotator:
        return s3_rotator(aws, boto3.client("s3", endpoint_url=aws["endpoint"]), "race", clock, max_attempts=20)

    rotators = [rotator() for _ in range(RUNNERS)]
    observer = rotator()
    seen: set[str] = set()
    total_conflicts = 0
    for round_ in range(ROUNDS):
        before = seen
        barrier = threading.Barrier(RUNNERS)
        errors: list[BaseException] = []
        conflicts: list[int] = []

        def run(r: Rotator) -> None:
            try:
                barrier.wait()
                conflicts.append(r.step().conflicts)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(r,)) for r in rotators]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        total_conflicts += sum(conflicts)
        state = observer.keystore.load()
        assert state is not None
        kids = {k.kid for k in state.keys}
        assert seen <= kids, f"lost keys {seen - kids}"
        assert len(kids - before) == (2 if round_ == 0 else 1)
        assert len(state.in_state(KeyState.ACTIVE)) == 1
        published = aws["s3"].get_object(Bucket=aws["bucket"], Key="race-public/jwks.json")["Body"].read()
        assert published == build_jwks(state)
        seen = kids
        clock.advance(900)
    with capsys.disabled():
        print(f"\n[s3 race, {aws['target']}] {ROUNDS} rounds x {RUNNERS} runners: {total_conflicts} compare-and-swap conflicts resolved")
    assert total_conflicts > 0  # the runs did race


def test_conditional_writes_and_the_probe(aws: dict[str, Any]) -> None:
    """What rotator needs from a store, asked of the real server: If-None-Match: * and If-Match
    refuse with 412, and the keystore's one-time probe accepts the store."""
    s3, bucket = aws["s3"], aws["bucket"]
    first = s3.put_object(Bucket=bucket, Key="cas", Body=b"1", IfNoneMatch="*")["ETag"]
    for kwargs in ({"IfNoneMatch": "*"}, {"IfMatch": '"0123456789abcdef0123456789abcdef"'}):
        with pytest.raises(s3.exceptions.ClientError) as info:
            s3.put_object(Bucket=bucket, Key="cas", Body=b"2", **kwargs)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.put_object(Bucket=bucket, Key="cas", Body=b"3", IfMatch=first)["ETag"] != first
    assert s3.get_object(Bucket=bucket, Key="cas")["Body"].read() == b"3"

    keystore = S3Keystore(boto3.client("s3", endpoint_url=aws["endpoint"]), bucket, "probe", S3Options(endpoint_url=aws["endpoint"]))
    keystore._probe()  # raises KeystoreError for a store that ignores conditional writes
    assert keystore._probed


def test_requests_per_step_over_http(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """At most 2 requests when nothing is due, at most 5 when rotating, on each server."""
    clock = Clock()
    client = boto3.client("s3", endpoint_url=aws["endpoint"])
    rotator = s3_rotator(aws, client, "count", clock)
    counts = count_requests(client)
    rotator.step()
    counts.clear()
    clock.advance(60)
    rotator.step()
    idle = dict(counts)
    counts.clear()
    clock.advance(900)
    rotator.step()
    rotating = dict(counts)
    with capsys.disabled():
        print(f"\n[s3 requests, {aws['target']}] nothing due {sum(idle.values())} {idle}; rotating {sum(rotating.values())} {rotating}")
    assert sum(idle.values()) <= 2
    # Read the state and the JWKS's generation, write the state, the JWKS and the record, read back.
    assert sum(rotating.values()) <= 6


def test_daemon_over_http(aws: dict[str, Any], tmp_path: Any) -> None:
    """`rotator run` on the server with a 4 s period: keys rotate and the JWKS follows the state."""
    from .daemon_harness import ROTATOR, SHORT, http_get
    from .ports import free_port

    port = free_port()
    log = open(tmp_path / "daemon.log", "w")
    proc = subprocess.Popen([*ROTATOR, "run", *SHORT, "--metrics-port", str(port)], env=cli_env(aws), stdout=log, stderr=subprocess.STDOUT)
    try:
        keystore = S3Keystore(aws["s3"], aws["bucket"], "keys", S3Options(endpoint_url=aws["endpoint"]))

        def activations() -> set[str]:
            state = keystore.load()
            return {k.kid for k in state.keys if k.activated_at is not None} if state else set()

        wait_for(lambda: len(activations()) >= 3, timeout=60, what="three activations on the daemon's schedule")
        state = keystore.load()
        assert state is not None
        active = state.in_state(KeyState.ACTIVE)[0].kid

        def published() -> set[str]:
            body = aws["s3"].get_object(Bucket=aws["bucket"], Key="public/jwks.json")["Body"].read()
            return {k["kid"] for k in json.loads(body)["keys"]}

        wait_for(lambda: active in published(), timeout=10, what="the active key published")
        status, body = http_get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200, body
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
        log.close()
    assert "PRIVATE KEY" not in (tmp_path / "daemon.log").read_text()


def test_seaweedfs_binds_only_loopback_and_is_the_pinned_version(tmp_path: Any) -> None:
    """The SeaweedFS test server listens on loopback only and is the pinned version."""
    server = SeaweedServer(tmp_path / "weed").start()
    try:
        addresses = server.listening_addresses()
        assert addresses and all(a.startswith("127.0.0.1:") for a in addresses), addresses
        assert weed_version() == "4.48"
    finally:
        server.stop()


@pytest.mark.parametrize("verb", [("rotate",), ("rotate", "--force"), ("recover",)])
def test_a_deleted_jwks_object_is_republished(aws: dict[str, Any], verb: tuple[str, ...]) -> None:
    """The published JWKS object is deleted (an operator's mistake, a lifecycle rule): the next
    rotate, forced rotate or recover writes it again. The conditional put carried If-Match
    with the ETag of the deleted object, which S3 answers with 404 NoSuchKey."""
    first = cli(aws, "rotate")
    assert first.returncode == 0, first.stderr
    before = aws["s3"].get_object(Bucket=aws["bucket"], Key="public/jwks.json")["Body"].read()
    aws["s3"].delete_object(Bucket=aws["bucket"], Key="public/jwks.json")
    again = cli(aws, *verb)
    assert again.returncode == 0, again.stderr
    after = aws["s3"].get_object(Bucket=aws["bucket"], Key="public/jwks.json")["Body"].read()
    kids = {k["kid"] for k in json.loads(before)["keys"]}
    assert kids <= {k["kid"] for k in json.loads(after)["keys"]}, (before, after)
    if verb == ("rotate",):
        assert after == before  # nothing was due: the same document, byte for byte


@pytest.mark.parametrize("restore", ["one-behind", "same-generation", "jwks-lost-too"])
def test_a_restored_backup_never_brings_back_a_key_revoked_after_it(aws: dict[str, Any], restore: str) -> None:
    """The runbook over HTTP, with a 4 s rotation period: a backup of the state object, a token
    signed, its key revoked, the backup put back one generation behind the served JWKS, at
    the served generation itself, or one behind with the JWKS object deleted too. A period
    later a plain rotate (a rotation due, so the step has something to save) is refused
    with exit 4 and writes nothing; recover keeps the revoked key out; the token never
    verifies again."""
    from rotator.verifier import UnknownKey, parse_jwks, verify_token

    from .daemon_harness import SHORT

    def read(key: str) -> bytes:
        return bytes(aws["s3"].get_object(Bucket=aws["bucket"], Key=key)["Body"].read())

    assert cli(aws, "rotate", *SHORT).returncode == 0
    backup = read("keys/state.json")
    token = cli(aws, "sign", "--sub", "alice", "--aud", "api", "--ttl", "2s", *SHORT).stdout.strip()
    revoked = jwt.get_unverified_header(token)["kid"]
    signed_at = jwt.decode(token, options={"verify_signature": False})["iat"]
    done = cli(aws, "revoke", revoked, *SHORT)
    assert done.returncode == 0, done.stderr
    # A backup from one generation behind the served JWKS (as if taken between the revoke's
    # publication and its record), or claiming the served generation itself.
    served_generation = int(aws["s3"].head_object(Bucket=aws["bucket"], Key="public/jwks.json")["Metadata"]["generation"])
    document = json.loads(backup)
    document["generation"] = served_generation - (0 if restore == "same-generation" else 1)
    backup = json.dumps(document).encode()
    aws["s3"].put_object(Bucket=aws["bucket"], Key="keys/state.json", Body=backup,
                         Metadata={"generation": str(document["generation"])})
    if restore == "jwks-lost-too":
        aws["s3"].delete_object(Bucket=aws["bucket"], Key="public/jwks.json")
    time.sleep(4.5)  # a rotation period: the restored state has a rotation due
    refused = cli(aws, "rotate", *SHORT)
    assert refused.returncode == 4 and "rotator recover" in refused.stderr, refused.stderr
    if restore == "jwks-lost-too":
        assert f"records key(s) {revoked} as revoked" in refused.stderr
    assert read("keys/state.json") == backup, "the refused step wrote the state"
    if restore != "jwks-lost-too":
        assert revoked not in {k["kid"] for k in json.loads(read("public/jwks.json"))["keys"]}
    recovered = cli(aws, "recover", "--yes", *SHORT)
    assert recovered.returncode == 0, recovered.stderr
    assert f"rotator.key_revoked kid={revoked} reason=recovery" in recovered.stdout
    for _ in range(2):  # and the steps after it
        body = read("public/jwks.json")
        assert revoked not in {k["kid"] for k in json.loads(body)["keys"]}
        with pytest.raises(UnknownKey):
            verify_token(token, parse_jwks(body), now=signed_at, audience="api", issuer="https://issuer.e2e")
        time.sleep(4.5)
        assert cli(aws, "rotate", *SHORT).returncode == 0


def test_rotator_sign_on_a_host_minutes_ahead_is_refused(aws: dict[str, Any]) -> None:
    """`rotator sign` under libfaketime five minutes ahead: the S3 server's Date header shows
    the skew, and the command exits 3 with one line instead of printing a token every
    verifier would reject; with the right time it signs."""
    import shutil

    faketime = shutil.which("faketime")
    assert faketime, "faketime (Debian package faketime) is missing: scripts/test-deps.sh installs it"
    assert cli(aws, "rotate").returncode == 0
    fast = subprocess.run(
        [faketime, "-f", "+5m", sys.executable, "-m", "rotator.cli", "sign", "--sub", "alice", "--aud", "api"],
        env={**cli_env(aws), "DONT_FAKE_MONOTONIC": "1"}, capture_output=True, text=True, timeout=120,
    )
    assert fast.returncode == 3 and fast.stdout == "", (fast.returncode, fast.stdout, fast.stderr)
    assert len(fast.stderr.strip().splitlines()) == 1
    import re

    assert re.search(r"this host's clock is (299|300|301)s ahead of the clock of s3://", fast.stderr), fast.stderr
    assert "signing refused" in fast.stderr
    right = cli(aws, "sign", "--sub", "alice", "--aud", "api")
    assert right.returncode == 0 and right.stdout.count(".") == 2
