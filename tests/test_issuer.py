"""The issuer under outages (README "Signing from an issuer"): signing never waits on storage,
the successor takes over without I/O, an outage past the cached schedule ends in a clear
refusal, retire and revoke reach a running signer within the documented bound, and refresh
chains are bounded."""

from __future__ import annotations

import statistics
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from rotator._aws import S3Options, s3_client
from rotator._b64 import b64url_decode, b64url_encode
from rotator.config import Policy
from rotator.errors import NoActiveKey
from rotator.issuer import RefreshRefused, Signer
from rotator.keystore import FileKeystore
from rotator.keystore.s3 import S3Keystore
from rotator.publish.s3 import S3Publisher
from rotator.reconcile import Rotator
from rotator.verifier import parse_jwks, verify_token
from rotator.verifier._revocation import Revocation

from .daemon_harness import ROTATOR, SHORT
from .faultproxy import FaultProxy
from .helpers import PASSPHRASE, Clock, wait_for

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def proxied_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """ThreadedMotoServer (S3 and KMS) behind a fault proxy; every rotator client goes through it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    proxy = FaultProxy(host, port)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", proxy.url)
    direct = f"http://{host}:{port}"
    bucket = f"rotator-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=direct).create_bucket(Bucket=bucket)
    key_id = boto3.client("kms", endpoint_url=direct).create_key()["KeyMetadata"]["KeyId"]
    try:
        yield {"proxy": proxy, "bucket": bucket, "key_id": key_id, "direct": direct}
    finally:
        proxy.close()
        server.stop()


def s3_rotator(aws: dict[str, Any], policy: Policy) -> Rotator:
    options = S3Options(endpoint_url=aws["proxy"].url)
    client = s3_client(options)
    return Rotator(
        keystore=S3Keystore(client, aws["bucket"], "keys", options),
        publisher=S3Publisher(client, aws["bucket"], "public/jwks.json", max_age=policy.max_age),
        policy=policy,
        kms_key_id=aws["key_id"],
    )


def test_storage_hang_across_an_activation(proxied_aws: dict[str, Any]) -> None:
    """S3 and KMS stop answering (connections open, nothing forwarded) for 60 s spanning the
    successor's activation instant: four signing threads never wait and never fail, the kid
    switches on time, and every token verifies against the JWKS published before the hang."""
    policy = Policy(rotation_period=40, max_age=5, token_lifetime=10, leeway=1, retirement_window=20, private_key_grace=5)
    rotator = s3_rotator(proxied_aws, policy)
    state = rotator.step().state
    active, successor = state.active, state.pending[0]
    assert active is not None and active.activated_at is not None and successor.published_at is not None
    switch_at = max(active.activated_at + policy.rotation_period, successor.published_at + policy.max_age)
    jwks_before = rotator.publisher.read_back()
    assert jwks_before is not None
    signer = Signer(rotator.keystore, policy, kms_key_id=proxied_aws["key_id"], refresh_interval=0.5)
    assert signer.kid == active.kid  # prepared: the active key and its successor are decrypted

    results: list[tuple[float, float, str]] = []  # (signed at, seconds taken, token)
    errors: list[BaseException] = []
    stop = threading.Event()

    def sign_loop() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                token = signer.sign(subject="alice", audience="api", ttl=10)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                return
            results.append((time.time(), time.perf_counter() - started, token))
            time.sleep(0.002)

    hang_seconds = 60.0
    assert switch_at - time.time() > 10, "the activation must fall inside the hang"
    with proxied_aws["proxy"].stalled():
        hang_started = time.time()
        threads = [threading.Thread(target=sign_loop) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(max(0.0, hang_started + hang_seconds - time.time()))
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors[:3]
    assert switch_at < hang_started + hang_seconds
    latencies = sorted(r[1] for r in results)
    p99 = latencies[int(len(latencies) * 0.99)]
    keys = parse_jwks(jwks_before)
    kids = [(at, b64url_json(token.split(".")[0])["kid"]) for at, _, token in results]
    last_old = max(at for at, kid in kids if kid == active.kid)
    first_new = min(at for at, kid in kids if kid == successor.kid)
    print(
        f"\n[issuer hang] {len(results)} tokens from 4 threads during a {hang_seconds:.0f}s S3+KMS stall; "
        f"p50 {statistics.median(latencies) * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms, max {latencies[-1] * 1e3:.1f} ms; "
        f"switch {first_new - switch_at:+.3f}s after the activation instant"
    )
    assert p99 < 0.005
    assert {kid for _, kid in kids} == {active.kid, successor.kid}
    assert last_old <= switch_at + 0.05 and switch_at <= first_new <= switch_at + 1.0
    for signed_at, _, token in results[:: max(1, len(results) // 2000)]:
        verify_token(token, keys, now=signed_at, leeway=policy.leeway, audience="api")


def b64url_json(segment: str) -> dict[str, Any]:
    import json

    claims: dict[str, Any] = json.loads(b64url_decode(segment))
    return claims


def test_outage_past_the_cached_schedule_is_a_clear_refusal(proxied_aws: dict[str, Any]) -> None:
    """Through a storage and KMS outage a signer keeps signing by its cached schedule, switches
    at the successor's instant, and past what it covers refuses with the cause."""
    policy = Policy(rotation_period=6, max_age=2, token_lifetime=2, leeway=1, retirement_window=5, private_key_grace=1)
    rotator = s3_rotator(proxied_aws, policy)
    state = rotator.step().state
    assert state.active is not None and state.active.activated_at is not None
    signer = Signer(rotator.keystore, policy, kms_key_id=proxied_aws["key_id"], refresh_interval=0.5)
    signer.sign(subject="a", audience="b", ttl=1)
    covered_until = max(state.active.activated_at + 6, state.pending[0].published_at + 1) + 6  # type: ignore[operator]
    with proxied_aws["proxy"].stalled():
        last_good = signer.last_good_read
        assert last_good is not None
        refused_at = None
        while time.time() < covered_until + signer.stale_after + 5:
            started = time.perf_counter()
            try:
                signer.sign(subject="a", audience="b", ttl=1)
            except NoActiveKey as e:
                refused_at, message, took = time.time(), str(e), time.perf_counter() - started
                break
            time.sleep(0.05)
        assert refused_at is not None, "the signer kept signing past its schedule"
        assert refused_at >= covered_until - 0.05
        assert took < 0.01, "the refusal must not wait on storage"
        assert "signing refused" in message and "has not been read since" in message
        assert time.strftime("%H:%M", time.gmtime(last_good)) in message
    wait_for(lambda: _signs(signer), timeout=60, what="signing to resume after the outage")


def _signs(signer: Signer) -> bool:
    try:
        signer.sign(subject="a", audience="b", ttl=1)
        return True
    except NoActiveKey:
        return False



@pytest.mark.parametrize("command", ["retire", "revoke"])
def test_retire_or_revoke_reaches_a_running_signer_within_the_bound(cli_env: dict[str, str], dirs: tuple[Path, Path], command: str) -> None:
    """A retire or revoke run from the CLI reaches a running signer within the refresh bound."""
    keystore, _ = dirs
    assert subprocess.run([*ROTATOR, "rotate", *SHORT], env=cli_env, timeout=60).returncode == 0
    time.sleep(2.2)  # the successor published for max_age (2 s), so retire can promote it
    signer = Signer(FileKeystore(keystore), Policy(rotation_period=4, max_age=2, token_lifetime=2, leeway=1,
                                                   retirement_window=6, private_key_grace=2), passphrase=PASSPHRASE)
    old = signer.kid
    done = subprocess.run([*ROTATOR, command, old, *SHORT], env=cli_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    written = time.monotonic()
    wait_for(lambda: signer.kid != old, timeout=10, poll=0.02, what="the signer to drop the old key")
    seen = time.monotonic() - written
    print(f"\n[issuer] {command} visible to a running signer after {seen:.2f}s (bound 5s, refresh every {signer.refresh_interval:.0f}s)")
    assert seen < 5.0
    token = signer.sign(subject="a", audience="b", ttl=1)
    assert b64url_json(token.split(".")[0])["kid"] != old


# -- refresh chains, on an injected clock ------------------------------------------------------

REFRESH = Policy(refresh_max_age=4 * 3600, refresh_grace=300)


@pytest.fixture
def chain(make_rotator: Callable[..., Rotator], clock: Clock) -> tuple[Rotator, Signer]:
    rotator = make_rotator(REFRESH)
    rotator.step()
    return rotator, Signer(rotator.keystore, REFRESH, passphrase=PASSPHRASE, clock=clock, issuer="https://iss", watch=False, storage_clock=False)


def test_refresh_chain_stops_at_its_absolute_bound(chain: tuple[Rotator, Signer], clock: Clock) -> None:
    """A refresh chain keeps its orig_iat and stops at orig_iat + refresh_max_age, its last
    token cut short to the bound."""
    rotator, signer = chain
    login = int(clock.now)
    token = signer.sign({"role": "admin"}, subject="alice", audience="api")
    first = claims_of(token)
    refreshes = 0
    while True:
        clock.advance(50 * 60)
        rotator.step()
        signer.reload()
        try:
            token = signer.refresh(token)
        except RefreshRefused as e:
            assert "reached refresh_max_age" in str(e)
            break
        refreshes += 1
        c = claims_of(token)
        assert c["orig_iat"] == login and c["sub"] == "alice" and c["aud"] == "api" and c["role"] == "admin"
        assert c["iss"] == "https://iss" and c["jti"] != first["jti"] and c["exp"] <= login + REFRESH.refresh_max_age
    assert clock.now >= login + REFRESH.refresh_max_age
    assert refreshes == 4  # 50, 100, 150, 200 minutes; 250 minutes is past 4 h


def test_refresh_keeps_orig_iat_signed_and_refuses_tampering(chain: tuple[Rotator, Signer], clock: Clock) -> None:
    """A refreshed token carries orig_iat under its signature; a tampered token is not
    refreshed."""
    rotator, signer = chain
    token = signer.sign(subject="alice", audience="api")
    clock.advance(60)
    refreshed = signer.refresh(token)
    header, payload, signature = refreshed.split(".")
    claims = claims_of(refreshed)
    # Moving orig_iat forward (to outlive the chain's bound) breaks the signature.
    forged = b64url_encode(__import__("json").dumps({**claims, "orig_iat": claims["orig_iat"] + 3600}).encode())
    with pytest.raises(RefreshRefused, match="signature"):
        signer.refresh(f"{header}.{forged}.{signature}")
    with pytest.raises(RefreshRefused):
        signer.refresh(f"{header}.{payload}.{signature[:-4]}AAAA")
    with pytest.raises(RefreshRefused):
        signer.refresh("not.a.token")
    # Expired within the grace: refreshed; past it: refused.
    clock.advance(3600 + 200)
    rotator.step()
    signer.reload()
    signer.refresh(refreshed)
    clock.advance(200)
    with pytest.raises(RefreshRefused, match="more than refresh_grace"):
        signer.refresh(refreshed)


def test_a_cutoff_after_login_voids_every_refresh_of_the_chain(make_rotator: Callable[..., Rotator], clock: Clock) -> None:
    """A cutoff after a login voids every later refresh of that chain, while a new login starts
    a chain it does not touch."""
    rotator = make_rotator(REFRESH)
    rotator.step()
    cutoffs: dict[str, float] = {}
    revocation = Revocation(subject_not_before=cutoffs.get, session_version=None, session_claim="sv", jti_denylist=None)
    signer = Signer(rotator.keystore, REFRESH, passphrase=PASSPHRASE, clock=clock, revocation_hooks=revocation, watch=False, storage_clock=False)
    token = signer.sign(subject="alice", audience="api")
    clock.advance(60)
    token = signer.refresh(token)
    clock.advance(60)
    cutoffs["alice"] = clock.now  # password reset
    with pytest.raises(RefreshRefused, match="session is revoked"):
        signer.refresh(token)
    # A later login starts a new chain, which the cutoff does not touch.
    clock.advance(1)
    fresh = signer.sign(subject="alice", audience="api")
    clock.advance(60)
    signer.refresh(fresh)


def test_refresh_from_the_cli(cli_env: dict[str, str]) -> None:
    """sign --refresh keeps the subject, audience, claims and orig_iat, and refuses mixed
    options or a bad token with one line."""
    from click.testing import CliRunner

    from rotator.cli import main

    runner = CliRunner()
    assert runner.invoke(main, ["rotate"], env=cli_env).exit_code == 0
    token = runner.invoke(main, ["sign", "--sub", "alice", "--aud", "api", "--claim", "role=admin"], env=cli_env).output.strip()
    refreshed = runner.invoke(main, ["sign", "--refresh", token], env=cli_env)
    assert refreshed.exit_code == 0, refreshed.output
    claims = claims_of(refreshed.output.strip())
    assert claims["sub"] == "alice" and claims["role"] == "admin" and claims["orig_iat"] == claims_of(token)["iat"]
    mixed = runner.invoke(main, ["sign", "--refresh", token, "--sub", "bob"], env=cli_env)
    assert mixed.exit_code == 2 and "--refresh keeps the token's subject" in mixed.stderr
    bad = runner.invoke(main, ["sign", "--refresh", "x.y.z"], env=cli_env)
    assert bad.exit_code == 1 and len(bad.stderr.strip().splitlines()) == 1 and "cannot be refreshed" in bad.stderr


def claims_of(token: str) -> dict[str, Any]:
    return b64url_json(token.split(".")[1])


# -- the second review's issuer items ---------------------------------------------------------------


@pytest.mark.parametrize("off", [+300.0, -300.0])
def test_a_signer_whose_clock_is_off_the_stores_refuses(cli_env: dict[str, str], dirs: tuple[Path, Path], off: float) -> None:
    """A host five minutes off the store's clock (the filesystem's, here) would mint tokens
    verifiers reject (ahead) or that die early (behind): the Signer refuses with the rule and
    words writers use, and signs again once its clock agrees."""
    from rotator.errors import ClockSkewError

    keystore, _ = dirs
    assert subprocess.run([*ROTATOR, "rotate"], env=cli_env, timeout=60).returncode == 0
    skew = [off]
    signer = Signer(FileKeystore(keystore), Policy(), passphrase=PASSPHRASE, clock=lambda: time.time() + skew[0], watch=False)
    with pytest.raises(ClockSkewError) as info:
        signer.sign(subject="alice", audience="api")
    message = str(info.value)
    assert f"this host's clock is 300s {'ahead of' if off > 0 else 'behind'} the clock of file://" in message
    assert "(tolerance 60s): fix its time (NTP); signing refused" in message and "\n" not in message
    skew[0] = 0.0
    signer.reload()
    assert signer.sign(subject="alice", audience="api")


def test_refresh_checks_a_given_ttl_as_sign_does(chain: tuple[Rotator, Signer]) -> None:
    """refresh(ttl=…) refuses what sign refuses (it clamped them silently); the chain's end
    still shortens a valid one."""
    _, signer = chain
    token = signer.sign(subject="alice", audience="api")
    for ttl in (0, -5, 0.5, REFRESH.token_lifetime + 1):
        with pytest.raises(ValueError, match="ttl"):
            signer.sign(subject="alice", audience="api", ttl=ttl)
        with pytest.raises(ValueError, match="ttl"):
            signer.refresh(token, ttl=ttl)
    refreshed = claims_of(signer.refresh(token, ttl=60))
    assert refreshed["exp"] - refreshed["iat"] == 60


def test_signer_messages_name_the_right_step_and_source(
    make_rotator: Callable[..., Rotator], clock: Clock, dirs: tuple[Path, Path]
) -> None:
    """A keystore that vanished under a running signer is not "run rotate first"; a wrong
    passphrase passed as an argument is not reported as the environment variable."""
    import shutil

    from rotator.errors import KeystoreError

    keystore, _ = dirs
    make_rotator(Policy()).step()
    wrong = Signer(FileKeystore(keystore), Policy(), passphrase="not it", clock=clock, watch=False, storage_clock=False)
    with pytest.raises(KeystoreError) as info:
        wrong.sign(subject="alice")
    assert "the passphrase argument" in str(info.value) and "ROTATOR_KEYSTORE_PASSPHRASE" not in str(info.value)

    signer = Signer(FileKeystore(keystore), Policy(), passphrase=PASSPHRASE, clock=clock, watch=False, storage_clock=False)
    assert signer.sign(subject="alice")
    shutil.rmtree(keystore)
    signer.reload()
    with pytest.raises(NoActiveKey) as gone:
        signer.sign(subject="alice")
    assert "is gone" in str(gone.value) and "run `rotator rotate` first" not in str(gone.value)
    fresh = Signer(FileKeystore(keystore), Policy(), passphrase=PASSPHRASE, clock=clock, watch=False, storage_clock=False)
    with pytest.raises(NoActiveKey, match="run `rotator rotate` first"):
        fresh.sign(subject="alice")
