"""End to end over real HTTP: moto.server.ThreadedMotoServer on loopback, the rotator CLI as a
subprocess, and concurrent reconcile runs from threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
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

from .conftest import Clock

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


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", moto_server)
    bucket = f"rotator-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=moto_server)
    s3.create_bucket(Bucket=bucket)
    key_id = boto3.client("kms", endpoint_url=moto_server).create_key()["KeyMetadata"]["KeyId"]
    return {"endpoint": moto_server, "bucket": bucket, "s3": s3, "key_id": key_id}


def cli(aws: dict[str, Any], *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTATOR_", "AWS_"))}
    env.update(CREDENTIALS)
    env.update(
        AWS_ENDPOINT_URL_KMS=aws["endpoint"],
        ROTATOR_S3_ENDPOINT_URL=aws["endpoint"],
        ROTATOR_KEYSTORE=f"s3://{aws['bucket']}/keys",
        ROTATOR_PUBLISH=f"s3://{aws['bucket']}/public/jwks.json",
        ROTATOR_KMS_KEY_ID=aws["key_id"],
        ROTATOR_ISSUER="https://issuer.e2e",
    )
    env.update(extra or {})
    return subprocess.run([sys.executable, "-m", "rotator.cli", *args], env=env, capture_output=True, text=True, timeout=120)


def test_cli_against_moto_server(aws: dict[str, Any]) -> None:
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
    assert b"PRIVATE KEY" not in raw_state and b'"scheme":"kms-aes256gcm"' in raw_state


def test_confirmation_through_public_url(aws: dict[str, Any]) -> None:
    """With --public-url, the read-back goes through that URL (here moto's path-style object URL)."""
    url = f"{aws['endpoint']}/{aws['bucket']}/public/jwks.json"
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


def test_wrong_kms_key_over_http(aws: dict[str, Any]) -> None:
    assert cli(aws, "rotate").returncode == 0
    before = aws["s3"].head_object(Bucket=aws["bucket"], Key="keys/state.json")["ETag"]
    other = boto3.client("kms", endpoint_url=aws["endpoint"]).create_key()["KeyMetadata"]["KeyId"]
    failed = cli(aws, "rotate", "--force", extra={"ROTATOR_KMS_KEY_ID": other})
    assert failed.returncode == 3
    assert failed.stderr.strip().count("\n") == 0 and "encrypted under KMS key" in failed.stderr
    assert aws["s3"].head_object(Bucket=aws["bucket"], Key="keys/state.json")["ETag"] == before


ROUNDS = 6
RUNNERS = 8


def test_eight_concurrent_reconcile_runs(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """Eight racing steps per due rotation, repeated: exactly one new key per rotation, no key
    lost, and the published JWKS always matches the latest state."""
    clock = Clock()
    options = S3Options(endpoint_url=aws["endpoint"])

    def rotator() -> Rotator:
        client = boto3.client("s3", endpoint_url=aws["endpoint"])
        return Rotator(
            keystore=S3Keystore(client, aws["bucket"], "race", options),
            publisher=S3Publisher(client, aws["bucket"], "race-public/jwks.json", max_age=300),
            policy=Policy(),
            clock=clock,
            kms_key_id=aws["key_id"],
            max_attempts=20,
            storage_clock=False,  # simulated time
        )

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
        print(f"\n[s3 race] {ROUNDS} rounds x {RUNNERS} runners: {total_conflicts} compare-and-swap conflicts resolved")
    assert total_conflicts > 0  # the runs did race
