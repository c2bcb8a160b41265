"""Disaster recovery (README "Disaster recovery"): a restored keystore backup, a lost
keystore, a lost publish target. Each path is run the way the runbook tells an operator to."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from click.testing import CliRunner

from rotator._b64 import b64url_decode
from rotator.cli import main
from rotator.config import Policy
from rotator.errors import NoActiveKey, PublishTargetAhead
from rotator.issuer import Signer
from rotator.publish import jwks_kids
from rotator.reconcile import Rotator
from rotator.state import KeyState
from rotator.verifier import UnknownKey

from .helpers import PASSPHRASE, Clock, verify_with

P = Policy()  # P=15m, T=1h, L=60s, M=5m, W=24h
# Short enough that keys of an old backup are long gone from the JWKS: W = T + L + M.
BRIEF = Policy(rotation_period=60, token_lifetime=60, leeway=10, max_age=20, retirement_window=90,
               private_key_grace=10, audit_retention=60)


def rotate_times(rotator: Rotator, clock: Clock, policy: Policy, n: int) -> None:
    """n scheduled rotations, stepping as a daemon would (every max_age)."""
    start = rotator.step().state.active
    assert start is not None
    done = 0
    while done < n:
        clock.advance(policy.max_age)
        active = rotator.step().state.active
        if active is not None and active.kid != start.kid:
            done, start = done + 1, active


def signer(rotator: Rotator, clock: Clock, policy: Policy, with_publisher: bool = True) -> Signer:
    return Signer(
        rotator.keystore, policy, passphrase=PASSPHRASE, clock=clock,
        publisher=rotator.publisher if with_publisher else None, storage_clock=False)


def served(public: Path) -> bytes:
    return (public / "jwks.json").read_bytes()


@pytest.mark.parametrize("policy", [P, BRIEF], ids=["backup-within-W", "backup-older-than-W"])
def test_restored_backup_recovers_in_one_step(
    make_rotator: Callable[..., Rotator], clock: Clock, dirs: tuple[Path, Path], policy: Policy
) -> None:
    """A keystore restored from a backup is refused by the publish target, and one recover step
    adopts the published keys so old tokens keep verifying."""
    keystore, public = dirs
    rotator = make_rotator(policy)
    rotator.step()
    backup = (keystore / "state.json").read_bytes()
    backed_up = rotator.keystore.load()
    assert backed_up is not None and backed_up.active is not None

    # 40 rotations after the backup, a token signed by each active key on the way.
    tokens: list[tuple[str, float]] = []
    for _ in range(40):
        rotate_times(rotator, clock, policy, 1)
        tokens.append((signer(rotator, clock, policy).sign(subject="alice", audience="api"), clock.now))
    # One of the backup's keys was revoked after the backup: a restore must not bring it back.
    lost_timeline = rotator.keystore.load()
    assert lost_timeline is not None
    revoked_after_backup = backed_up.pending[0].kid
    if lost_timeline.get(revoked_after_backup) and lost_timeline.get(revoked_after_backup).published:  # type: ignore[union-attr]
        from rotator.lifecycle import revoke

        rotator.step(operation=lambda s, now: revoke(s, revoked_after_backup, now))
    before_restore = served(public)
    generation_before = json.loads((keystore / "state.json").read_text())["generation"]
    published_generation = json.loads((public / ".jwks.json.generation").read_text())["generation"]

    (keystore / "state.json").write_bytes(backup)  # the restore

    # The next ordinary step names the cause and the fix, and writes nothing: neither the
    # JWKS nor the state (its generation stays where the restore put it).
    clock.advance(1)
    with pytest.raises(PublishTargetAhead) as info:
        rotator.step()
    message = str(info.value)
    assert f"state generation {published_generation}, above this keystore's generation {backed_up.generation}" in message
    assert "rotator recover" in message
    assert served(public) == before_restore
    assert (keystore / "state.json").read_bytes() == backup

    restored_active = backed_up.active.kid
    if restored_active not in jwks_kids(before_restore):
        # The signer never signs with a key the served JWKS lacks.
        with pytest.raises(NoActiveKey, match="not in the JWKS served"):
            signer(rotator, clock, policy).sign(subject="alice", audience="api")

    # One recovery step.
    result = rotator.step(recover=True)
    state = result.state
    after = served(public)
    kids = jwks_kids(after)
    assert state.active is not None and kids[0] == state.active.kid
    assert set(jwks_kids(before_restore)) <= set(kids), "every key served before the restore stays served"
    assert revoked_after_backup not in kids
    assert state.get(revoked_after_backup).state is KeyState.REVOKED  # type: ignore[union-attr]
    assert state.generation > generation_before
    # Tokens signed before the restore keep verifying, until their exp + leeway.
    for token, signed_at in tokens:
        if signed_at + policy.token_lifetime > clock.now:
            verify_with(token, after, clock.now, audience="api", leeway=policy.leeway)
    # Signing works again, with a key every served copy from now on holds.
    fresh = signer(rotator, clock, policy).sign(subject="alice", audience="api")
    verify_with(fresh, after, clock.now, audience="api")
    # Later steps are ordinary again, and recovery run twice changes nothing.
    assert rotator.step(recover=True).state == rotator.keystore.load()
    rotate_times(rotator, clock, policy, 2)


def test_lost_keystore_recovers_with_a_new_key(
    make_rotator: Callable[..., Rotator], clock: Clock, dirs: tuple[Path, Path]
) -> None:
    """A lost keystore recovers with --other-lineage: the published keys are adopted, tokens
    they signed still verify, and a new key signs."""
    keystore, public = dirs
    rotator = make_rotator(P)
    rotate_times(rotator, clock, P, 3)
    token = signer(rotator, clock, P).sign(subject="alice", audience="api")
    old_copy = served(public)

    shutil.rmtree(keystore)  # lost, with no backup
    # A fresh keystore is another key set as far as the publish target can tell: a plain
    # step, and a plain recover, refuse and write nothing; the operator says it was lost.
    with pytest.raises(PublishTargetAhead, match="another key set .*rotator recover --other-lineage"):
        rotator.step()
    with pytest.raises(PublishTargetAhead, match="--other-lineage"):
        rotator.step(recover=True)
    assert not (keystore / "state.json").exists() and served(public) == old_copy

    state = rotator.step(recover=True, other_lineage=True).state
    after = served(public)
    adopted = [k for k in state.keys if k.retirement == "recovery"]
    assert {k.kid for k in adopted} == set(jwks_kids(old_copy))
    assert all(k.private is None and k.state is KeyState.RETIRED for k in adopted)
    # The tokens already out there keep verifying: their keys stay published for W.
    verify_with(token, after, clock.now, audience="api")
    # A new key signs at once. The cost: verifier copies up to M old lack it, until they
    # refetch on the unknown kid (rotator.verifier does; a verifier that never refetches
    # rejects its tokens for up to M).
    assert state.active is not None and state.active.kid not in jwks_kids(old_copy)
    fresh = signer(rotator, clock, P).sign(subject="bob", audience="api")
    verify_with(fresh, after, clock.now, audience="api")
    clock.advance(P.retirement_window + 1)
    later = rotator.step().state
    assert not any(k.published for k in later.keys if k.retirement == "recovery"), "adopted keys leave after W"


def test_lost_publish_target_is_republished_by_the_next_step(
    make_rotator: Callable[..., Rotator], clock: Clock, dirs: tuple[Path, Path]
) -> None:
    """A lost publish target is republished by the next step, and tokens signed before still
    verify."""
    _, public = dirs
    rotator = make_rotator(P)
    rotate_times(rotator, clock, P, 2)
    token = signer(rotator, clock, P).sign(subject="alice", audience="api")
    before = served(public)
    shutil.rmtree(public)
    clock.advance(1)
    result = rotator.step()
    assert result.published and served(public) == before
    verify_with(token, served(public), clock.now, audience="api")


def test_cli_restore_runbook(cli_env: dict[str, str], dirs: tuple[Path, Path]) -> None:
    """The runbook's commands: rotate fails with the cause (exit 4), recover, rotate again;
    a key revoked after the backup stays revoked."""
    import time

    keystore, public = dirs
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(main, list(args), env=cli_env, catch_exceptions=False)

    def status() -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(run("status", "--json").output)
        return doc

    assert run("rotate").exit_code == 0
    backup = (keystore / "state.json").read_bytes()
    revoked = next(k["kid"] for k in status()["keys"] if k["state"] == "pending")
    assert run("revoke", revoked).exit_code == 0
    before = served(public)
    (keystore / "state.json").write_bytes(backup)  # the restore

    failed = run("rotate")
    assert failed.exit_code == 4
    assert len(failed.stderr.strip().splitlines()) == 1
    assert "above this keystore's generation" in failed.stderr and "rotator recover" in failed.stderr
    assert served(public) == before

    # recover lists its plan and asks; off a terminal, without --yes it changes nothing.
    dry = run("recover", "--dry-run")
    assert dry.exit_code == 0
    assert f"would: rotator.key_revoked kid={revoked} reason=recovery" in dry.output
    unconfirmed = run("recover")
    assert unconfirmed.exit_code == 2 and "--yes" in unconfirmed.stderr
    assert f"would: rotator.key_revoked kid={revoked}" in unconfirmed.output
    assert (keystore / "state.json").read_bytes() == backup and served(public) == before

    recovered = run("recover", "--yes")
    assert recovered.exit_code == 0, recovered.output
    assert f"rotator.key_revoked kid={revoked} reason=recovery" in recovered.output
    after = served(public)
    assert revoked not in jwks_kids(after) and set(jwks_kids(before)) <= set(jwks_kids(after))
    assert run("rotate").exit_code == 0
    token = run("sign", "--sub", "alice", "--aud", "api").output.strip()
    verify_with(token, after, time.time(), audience="api", issuer="https://issuer.test")


@contextlib.contextmanager
def moto_rotator() -> Iterator[tuple[Any, Rotator, Clock]]:
    """A Rotator on S3 in moto (in process): state under ``keys/prod``, JWKS at ``keys/public/jwks.json``."""
    import boto3
    from moto import mock_aws

    from rotator._aws import S3Options
    from rotator.keystore.s3 import S3Keystore
    from rotator.publish.s3 import S3Publisher

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="keys")
        clock = Clock()
        rotator = Rotator(
            keystore=S3Keystore(s3, "keys", "prod", S3Options()),
            publisher=S3Publisher(s3, "keys", "public/jwks.json", max_age=P.max_age),
            policy=P, passphrase=PASSPHRASE, clock=clock, scrypt_n=2**10, storage_clock=False,
        )
        yield s3, rotator, clock


def test_restore_on_s3_recovers(tmp_path: Path) -> None:
    """The same on S3 (moto, in process): an older state object put back."""
    with moto_rotator() as (s3, rotator, clock):
        rotator.step()
        backup = s3.get_object(Bucket="keys", Key="prod/state.json")["Body"].read()
        rotate_times(rotator, clock, P, 5)
        token = Signer(rotator.keystore, P, passphrase=PASSPHRASE, clock=clock, storage_clock=False).sign(subject="a", audience="api")
        s3.put_object(Bucket="keys", Key="prod/state.json", Body=backup,
                      Metadata={"generation": str(json.loads(backup)["generation"])})
        clock.advance(1)
        with pytest.raises(PublishTargetAhead, match="rotator recover"):
            rotator.step()
        state = rotator.step(recover=True).state
        body = s3.get_object(Bucket="keys", Key="public/jwks.json")["Body"].read()
        assert state.active is not None and jwks_kids(body)[0] == state.active.kid
        verify_with(token, body, clock.now, audience="api")
        rotate_times(rotator, clock, P, 1)


RESTORES = ["one-behind", "same-generation", "jwks-lost-too"]


def backup_one_generation_behind(
    rotator: Rotator, clock: Clock, read_state: Callable[[], bytes], restore: Callable[[bytes], object],
    read_jwks: Callable[[], bytes | None], lose_jwks: Callable[[], None], how: str,
) -> None:
    """The review's case: a backup, then the active key revoked (one step: the JWKS of the
    next generation), then the backup put back: as it was (one generation behind the served
    JWKS), claiming the served generation, or with the JWKS lost too. Plain steps, as a
    daemon left running would take them, refuse and write nothing (the state keeps the
    backup's generation); recover keeps the revoked key out; a token signed with it never
    verifies again, at the instant it was signed."""
    rotate_times(rotator, clock, P, 1)
    clock.advance(P.max_age)
    rotator.step()
    backup = read_state()
    signed_at = clock.now
    stolen = signer(rotator, clock, P).sign(subject="alice", audience="api")
    revoked = json.loads(b64url_decode(stolen.split(".")[0]))["kid"]
    from rotator.lifecycle import revoke

    rotator.step(operation=lambda s, now: revoke(s, revoked, now))
    assert revoked not in jwks_kids(read_jwks() or b'{"keys":[]}')
    if how == "same-generation":
        document = json.loads(backup)
        document["generation"] = rotator.publisher.marker().generation  # type: ignore[union-attr]
        backup = json.dumps(document).encode()
    restore(backup)
    if how == "jwks-lost-too":
        lose_jwks()
    for _ in range(5):  # past a rotation period: the restored state would rotate and publish
        clock.advance(P.rotation_period)
        with pytest.raises(PublishTargetAhead, match="rotator recover"):
            rotator.step()
        assert read_state() == backup, "a refused step wrote the state"
        assert revoked not in jwks_kids(read_jwks() or b'{"keys":[]}')
    rotator.step(recover=True)
    for _ in range(3):
        body = read_jwks()
        assert body is not None and revoked not in jwks_kids(body)
        with pytest.raises(UnknownKey):
            verify_with(stolen, body, signed_at, audience="api")
        clock.advance(P.rotation_period)
        rotator.step()


@pytest.mark.parametrize("how", RESTORES)
def test_backup_one_generation_behind_never_brings_back_a_revoked_key_on_files(
    make_rotator: Callable[..., Rotator], clock: Clock, dirs: tuple[Path, Path], how: str
) -> None:
    """On files, a backup one generation behind a revocation never brings the revoked key back:
    the target's revoked list refuses it and recover revokes it again."""
    keystore, public = dirs
    state = keystore / "state.json"

    def lose() -> None:
        (public / "jwks.json").unlink()
        (public / ".jwks.json.generation").unlink()

    backup_one_generation_behind(
        make_rotator(P), clock, state.read_bytes, state.write_bytes,
        lambda: served(public) if (public / "jwks.json").exists() else None, lose, how,
    )


@pytest.mark.parametrize("how", RESTORES)
def test_backup_one_generation_behind_never_brings_back_a_revoked_key_on_s3(how: str) -> None:
    """On S3, a backup one generation behind a revocation never brings the revoked key back."""
    with moto_rotator() as (s3, rotator, clock):

        def read(key: str) -> bytes | None:
            try:
                return bytes(s3.get_object(Bucket="keys", Key=key)["Body"].read())
            except s3.exceptions.NoSuchKey:
                return None

        def restore(body: bytes) -> None:
            s3.put_object(Bucket="keys", Key="prod/state.json", Body=body,
                          Metadata={"generation": str(json.loads(body)["generation"])})

        backup_one_generation_behind(
            rotator, clock, lambda: read("prod/state.json") or b"", restore, lambda: read("public/jwks.json"),
            lambda: s3.delete_object(Bucket="keys", Key="public/jwks.json"), how,
        )


def test_keystore_lost_within_its_first_period_is_not_replaced_silently(
    make_rotator: Callable[..., Rotator], clock: Clock, dirs: tuple[Path, Path]
) -> None:
    """Lost before its first rotation, a keystore started afresh reaches the served JWKS's
    generation at once; the publish target still tells it apart (its lineage) and refuses
    it, so tokens already issued keep verifying, until the operator says the keystore was lost."""
    keystore, public = dirs
    rotator = make_rotator(P)
    rotator.step()
    token = signer(rotator, clock, P).sign(subject="alice", audience="api")
    before = served(public)
    shutil.rmtree(keystore)
    for _ in range(3):
        clock.advance(P.max_age)
        with pytest.raises(PublishTargetAhead, match="another key set"):
            rotator.step(force=True)
        assert served(public) == before
    verify_with(token, served(public), clock.now, audience="api")
    state = rotator.step(recover=True, other_lineage=True).state
    verify_with(token, served(public), clock.now, audience="api")
    assert state.active is not None and state.active.kid in jwks_kids(served(public))


def test_recover_on_a_healthy_keystore_adopts_nothing(
    make_rotator: Callable[..., Rotator], clock: Clock, dirs: tuple[Path, Path]
) -> None:
    """A key someone appended to the served JWKS is not adopted by `recover` on a keystore
    that is not behind (a plain rotate would have erased it); recover then changes nothing
    and the next publication drops the stranger."""
    _, public = dirs
    rotator = make_rotator(P)
    rotate_times(rotator, clock, P, 1)
    from rotator.keys import generate_private_key, public_jwk, thumbprint

    stranger = public_jwk(generate_private_key())
    stranger_kid = thumbprint(stranger)
    doc = json.loads(served(public))
    doc["keys"].append({**stranger, "kid": stranger_kid, "alg": "ES256", "use": "sig"})
    (public / "jwks.json").write_text(json.dumps(doc))
    assert rotator.recovery_plan().events == ()
    state = rotator.step(recover=True).state
    assert state.get(stranger_kid) is None
    assert stranger_kid not in jwks_kids(served(public))


@pytest.mark.parametrize("left", ["missing", "empty", "damaged"])
def test_recover_with_the_marker_ahead_and_no_readable_jwks(
    make_rotator: Callable[..., Rotator], clock: Clock, dirs: tuple[Path, Path], left: str
) -> None:
    """A restored keystore, and a publish target whose marker is ahead but whose JWKS is
    missing, empty or damaged: recover moves the state past the marker, applies the revoked
    list, publishes, and the next plain step is ordinary (before, recover failed and advised
    itself)."""
    keystore, public = dirs
    rotator = make_rotator(P)
    rotator.step()
    backup = (keystore / "state.json").read_bytes()
    revoked = rotator.keystore.load().pending[0].kid  # type: ignore[union-attr]
    rotate_times(rotator, clock, P, 2)
    from rotator.lifecycle import revoke

    clock.advance(P.max_age)
    rotator.step(operation=lambda s, now: revoke(s, revoked, now))
    (keystore / "state.json").write_bytes(backup)
    jwks = public / "jwks.json"
    if left == "missing":
        jwks.unlink()
    else:
        jwks.write_bytes(b'{"keys":[]}' if left == "empty" else b'{"keys":[{')
    marker = rotator.publisher.marker()
    assert marker is not None
    with pytest.raises(PublishTargetAhead):
        rotator.step()
    state = rotator.step(recover=True).state
    assert state.generation > marker.generation
    assert state.active is not None and jwks_kids(served(public))[0] == state.active.kid
    assert state.get(revoked).state is KeyState.REVOKED  # type: ignore[union-attr]
    assert revoked not in jwks_kids(served(public))
    clock.advance(P.max_age)
    assert rotator.step().state.active is not None
