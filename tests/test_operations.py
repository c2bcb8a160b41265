"""What a careful operator or an attacker does with bad input, damaged files and odd
set-ups: each case gets one clear line and a correct exit code, and loses nothing."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner, Result

from rotator._b64 import b64url_encode
from rotator.cli import main
from rotator.config import Policy
from rotator.health import Health, health_problems
from rotator.metrics import Metrics
from rotator.reconcile import Rotator
from rotator.state import KeyState
from rotator.stepping import observed_step

from .daemon_harness import ROTATOR, RunningDaemon, http_get, prom_values
from .helpers import PASSPHRASE, Clock, assert_clean_failure, fingerprint


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def bootstrapped(cli_env: dict[str, str]) -> dict[str, str]:
    result = run(cli_env, "rotate")
    assert result.exit_code == 0, result.output
    return cli_env


def one_line(result: Result, code: int, fragment: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr


# -- 3: not ready before the first successful step -------------------------------------


def test_healthz_not_ready_while_every_step_fails(daemon_factory: Callable[..., RunningDaemon], tmp_path: Path) -> None:
    """A wrong passphrase from the start: 503 at once, not after a rotation period."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}
    env.update(ROTATOR_KEYSTORE=f"file://{tmp_path / 'keystore'}", ROTATOR_PUBLISH=f"file://{tmp_path / 'public'}",
               ROTATOR_KEYSTORE_PASSPHRASE="another passphrase")
    assert subprocess.run([*ROTATOR, "rotate"], env=env, capture_output=True, timeout=60).returncode == 0
    d = daemon_factory()
    started = time.monotonic()
    deadline = started + 3.0  # well inside the 4 s rotation period
    answers = []
    while time.monotonic() < deadline:
        try:
            status, body = http_get(f"http://127.0.0.1:{d.port}/healthz")
            answers.append((status, json.loads(body)))
        except OSError:
            pass
        time.sleep(0.1)
    assert answers, "the health endpoint never answered"
    assert all(status == 503 for status, _ in answers), answers
    assert any("no successful reconcile step yet" in p for p in answers[-1][1]["problems"])
    assert not d.notify.has("READY=1")


# -- 4: a validated state ------------------------------------------------------------------


def _first_key(doc: dict[str, Any], **changes: Any) -> bytes:
    key = {**doc["keys"][0], **changes}
    return json.dumps({**doc, "keys": [key, *doc["keys"][1:]]}).encode()


def _off_curve(doc: dict[str, Any]) -> bytes:
    public = {**doc["keys"][0]["public"], "y": b64url_encode(b"\x01" * 32)}
    from rotator.keys import thumbprint

    return _first_key(doc, public=public, kid=thumbprint(public))


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda d: _first_key(d, public={**d["keys"][0]["public"], "x": "AAAA"}), "not a P-256 point"),
        (lambda d: _first_key(d, kid=d["keys"][1]["kid"][::-1]), "is not its public key's RFC 7638 thumbprint"),
        (_off_curve, "not a P-256 point"),
        (lambda d: _first_key(d, created_at="NaN").replace(b'"NaN"', b"NaN"), "non-standard JSON constant NaN"),
        (lambda d: _first_key(d, created_at="Inf").replace(b'"Inf"', b"Infinity"), "non-standard JSON constant Infinity"),
        (lambda d: _first_key(d, created_at="Big").replace(b'"Big"', b"1e999"), "not a time between 2001 and 9999"),
        (lambda d: _first_key(d, created_at=-5.0), "not a time between 2001 and 9999"),
        (lambda d: json.dumps(d).encode()[:-1] + b', "keyset": "x"}', "duplicate member 'keyset'"),
    ],
    ids=["short-x", "kid-not-thumbprint", "off-curve", "nan", "infinity", "overflow", "negative", "duplicate-member"],
)
@pytest.mark.parametrize("command", [["rotate"], ["status"], ["jwks"], ["sign", "--sub", "a", "--aud", "b"]])
def test_damaged_state_is_refused_with_exit_3(
    bootstrapped: dict[str, str], dirs: tuple[Path, Path], damage: Callable[[dict[str, Any]], bytes], fragment: str,
    command: list[str],
) -> None:
    """A damaged state file is refused with exit 3 and one line, and nothing is written: neither
    the keystore nor the published JWKS changes."""
    keystore, public = dirs
    state_file = keystore / "state.json"
    state_file.write_bytes(damage(json.loads(state_file.read_bytes())))
    before, served = fingerprint(keystore), (public / "jwks.json").read_bytes()
    if command == ["jwks"]:
        # jwks prints what is published and never reads the state; rotate must not change it.
        command = ["rotate"]
    result = run(bootstrapped, *command)
    assert_clean_failure(result, fragment, before, keystore)
    assert result.exit_code == 3
    assert (public / "jwks.json").read_bytes() == served


# -- 5: a pending key that cannot be decrypted -------------------------------------------------


def test_damaged_pending_key_is_replaced_not_promoted(
    make_rotator: Callable[..., Rotator], clock: Clock, dirs: tuple[Path, Path], cli_env: dict[str, str]
) -> None:
    """A pending key whose sealed half no longer opens is revoked as damaged and replaced; the
    working key keeps signing and the metric counts it."""
    from rotator.issuer import Signer

    policy = Policy()
    rotator = make_rotator(policy)
    state = rotator.step().state
    active, pending = state.active, state.pending[0]
    assert active is not None and pending.private is not None
    # Flip bits in the sealed half (a damaged disk, a bad edit), keeping the document valid.
    damaged_blob = b64url_encode(bytes(b ^ 0xFF for b in pending.private.encode()[:10])) + pending.private[13:]
    state = state.with_keys(k.with_(private=damaged_blob) if k.kid == pending.kid else k for k in state.keys)
    rotator.keystore.save(state, state.generation)
    assert json.loads(run(cli_env, "status", "--json").output)["keys"][0]["private_key"] in ("damaged", "present")
    rows = {r["kid"]: r for r in json.loads(run(cli_env, "status", "--json").output)["keys"]}
    assert rows[pending.kid]["private_key"] == "damaged"

    clock.advance(policy.rotation_period)
    metrics = Metrics(health=Health(clock=clock))
    result = observed_step(rotator, (metrics.health, metrics))
    names = [e.name for e in result.events]
    assert "rotator.pending_key_damaged" in names
    after = result.state
    assert after.active is not None and after.active.kid == active.kid, "the working key keeps signing"
    assert after.get(pending.kid).state is KeyState.REVOKED  # type: ignore[union-attr]
    assert after.get(pending.kid).revocation == "damaged"  # type: ignore[union-attr]
    assert len(after.pending) == 1 and after.pending[0].kid != pending.kid
    assert prom_values(metrics.render().decode())["rotator_damaged_keys"] == 1
    signer = Signer(rotator.keystore, policy, passphrase=PASSPHRASE, clock=clock, storage_clock=False)
    assert signer.kid == active.kid and signer.sign(subject="a", audience="b")
    rows = {r["kid"]: r for r in json.loads(run(cli_env, "status", "--json").output)["keys"]}
    assert rows[pending.kid]["private_key"] == "damaged" and rows[pending.kid]["revocation"] == "damaged"
    # The replacement takes over once published for max_age.
    clock.advance(policy.max_age)
    assert rotator.step().state.active.kid == after.pending[0].kid  # type: ignore[union-attr]


# -- 6, 22: verify's exit code does not depend on the transport ------------------------------------


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "cannot read JWKS"),
        (b"not json", "not a usable key set"),
        (b'{"keys": []}', "holds no usable ES256 key"),
        (json.dumps({"keys": [{"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}]}).encode(), "holds no usable ES256 key"),
        (b'{"keys": [' + b" " * (300 * 1024) + b"]}", "larger than the 262144-byte limit"),
    ],
    ids=["missing", "not-json", "empty", "rsa-only", "oversized"],
)
def test_verify_file_key_set_unusable_is_exit_6(bootstrapped: dict[str, str], tmp_path: Path, content: bytes | None, fragment: str) -> None:
    """rotator verify against a JWKS file that is missing, empty or unusable exits 6 with one
    line."""
    token = run(bootstrapped, "sign", "--sub", "a", "--aud", "api").output.strip()
    path = tmp_path / "jwks.json"
    if content is not None:
        path.write_bytes(content)
    result = run(bootstrapped, "verify", token, "--jwks-url", f"file://{path}", "--aud", "api")
    one_line(result, 6, fragment)


def test_verify_dev_zero_is_capped(bootstrapped: dict[str, str]) -> None:
    """A JWKS file that never ends (/dev/zero) is read only up to the verifier's cap, then
    refused with exit 6."""
    token = run(bootstrapped, "sign", "--sub", "a", "--aud", "api").output.strip()
    one_line(run(bootstrapped, "verify", token, "--jwks-url", "file:///dev/zero"), 6, "larger than")


# -- 7, 8, 9: sign's claims and ttl ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--claim", "x=NaN"], "not a finite JSON number"),
        (["--claim", "x=Infinity"], "not a finite JSON number"),
        (["--claim", "x=-Infinity"], "not a finite JSON number"),
        (["--claim", "x=1e999"], "not a finite JSON number"),
        (["--claim", "x=[1, 1e999]"], "not a finite JSON number"),
        (["--ttl", "500ms"], "whole seconds"),
        (["--ttl", "1.9s"], "whole seconds"),
        (["--claim", "sub=mallory"], "'sub' is set with --sub"),
        (["--claim", "aud=other"], "'aud' is set with --aud"),
        (["--claim", "iss=https://evil.test"], "'iss' is set with --issuer"),
        (["--claim", "exp=1"], "'exp' is set by the signer"),
        (["--claim", "orig_iat=1"], "'orig_iat' is set by the signer"),
        (["--claim", "novalue"], "is not NAME=VALUE"),
    ],
)
@pytest.mark.parametrize("issuer", ["https://issuer.test", ""])
def test_sign_refuses_bad_claims_and_ttls(bootstrapped: dict[str, str], args: list[str], fragment: str, issuer: str) -> None:
    """rotator sign refuses reserved claims, non-finite numbers and out-of-range ttls with exit
    2 and prints no token."""
    result = run({**bootstrapped, "ROTATOR_ISSUER": issuer}, "sign", "--sub", "alice", "--aud", "api", *args)
    one_line(result, 2, fragment)
    assert result.stdout == ""


def test_signer_library_refuses_the_same() -> None:
    """The library refuses what the CLI refuses: a claim given twice, a non-finite number, a
    value that is not JSON."""
    from rotator.issuer._signer import _check_claims
    from rotator.jose import payload_segment

    with pytest.raises(ValueError, match="given twice"):
        _check_claims({"sub": "x"}, {"sub": "alice"})
    with pytest.raises(ValueError, match="not finite"):
        payload_segment({"n": float("nan")})
    with pytest.raises(ValueError, match="not JSON"):
        payload_segment({"n": object()})
    _check_claims({"sub": "x"}, {"sub": None})  # given once: fine


# -- 10, 11, 21: settings types and bounds ------------------------------------------------------------


@pytest.mark.parametrize(
    "toml, fragment",
    [
        ("leeway = [1, 2]\n", "invalid leeway [1, 2]"),
        ("leeway = {a = 1}\n", "invalid leeway {'a': 1}"),
        ("leeway = 1979-05-27\n", "invalid leeway 'date'"),
        ("leeway = 07:32:00\n", "invalid leeway 'time'"),
        ("leeway = true\n", "invalid leeway True"),
        ("retirement_window = \"99999999999999999999d\"\n", "longer than the limit of 3650d"),
        ("s3_endpoint_url = 5\n", "expected a string"),
    ],
)
@pytest.mark.parametrize("command", ["rotate", "status", "run"])
def test_wrong_toml_types_are_one_line(bootstrapped: dict[str, str], tmp_path: Path, toml: str, fragment: str, command: str) -> None:
    """A settings file value of the wrong type is one line naming the setting, exit 2."""
    config = tmp_path / "rotator.toml"
    config.write_text(toml)
    one_line(run(bootstrapped, command, "--config", str(config)), 2, fragment)


@pytest.mark.parametrize("port", ["70000", "-1", "http", "٣"])
def test_metrics_port_out_of_range(bootstrapped: dict[str, str], port: str) -> None:
    """A metrics port outside 0-65535 is refused with one line."""
    one_line(run(bootstrapped, "run", "--metrics-port", port), 2, "expected a port number from 0 to 65535")


@pytest.mark.parametrize("value", ["99999999999999999999d", "9999999d", "3651d"])
def test_durations_are_capped(bootstrapped: dict[str, str], value: str) -> None:
    """Durations longer than ten years are refused with one line."""
    one_line(run(bootstrapped, "status", "--retirement-window", value), 2, "longer than the limit of 3650d")


@pytest.mark.parametrize("value", ["5m5m", "1s1h", "١٥m", "15m٣"])
def test_duration_grammar_is_strict(bootstrapped: dict[str, str], value: str) -> None:
    """Durations outside the grammar (spaces, other digits, units out of order) are refused with
    one line."""
    one_line(run(bootstrapped, "rotate", "--leeway", value), 2, f"invalid leeway {value!r}")


# -- 12: temp files of crashed writers -----------------------------------------------------------------


def test_crashed_writers_temp_files_are_removed(bootstrapped: dict[str, str], dirs: tuple[Path, Path]) -> None:
    """Temp files a crashed writer left beside the state and the JWKS are removed by the next
    write."""
    keystore, public = dirs
    stale = keystore / ".state.json.4242.tmp"
    stale.write_bytes((keystore / "state.json").read_bytes())  # sealed private halves, as a crash leaves them
    stale.chmod(0o600)
    stale_public = public / ".jwks.json.4242.tmp"
    stale_public.write_bytes(b"{}")
    assert run(bootstrapped, "revoke", json.loads(run(bootstrapped, "status", "--json").output)["keys"][0]["kid"]).exit_code == 0
    assert not stale.exists() and not stale_public.exists()


def test_temp_file_left_by_a_killed_writer(bootstrapped: dict[str, str], dirs: tuple[Path, Path]) -> None:
    """A real writer SIGKILLed between its temp-file write and its rename."""
    keystore, _ = dirs
    pending = next(k["kid"] for k in json.loads(run(bootstrapped, "status", "--json").output)["keys"] if k["state"] == "pending")
    script = (
        "import os, signal, rotator._fs as fs\n"
        "real = os.replace\n"
        "def die(src, dst):\n"
        "    if str(src).endswith('.tmp') and 'state.json' in str(src): os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(src, dst)\n"
        "os.replace = die\n"
        "from rotator.cli import main\n"
        f"main(['revoke', {pending!r}])\n"
    )
    subprocess.run([*ROTATOR[:1], "-c", script], env=bootstrapped, timeout=60)
    leftovers = list(keystore.glob(".state.json.*.tmp"))
    assert leftovers, "the killed writer left no temp file"
    assert run(bootstrapped, "rotate").exit_code == 0
    assert not list(keystore.glob(".state.json.*.tmp"))


# -- 13: an unwritable metrics file --------------------------------------------------------------------


def test_unwritable_metrics_file_keeps_the_steps_exit_code(bootstrapped: dict[str, str], tmp_path: Path) -> None:
    """A metrics file that cannot be written is a warning; the exit code stays the step's own."""
    target = str(tmp_path / "no-such-dir" / "rotator.prom")
    ok = run(bootstrapped, "rotate", "--metrics-file", target)
    assert ok.exit_code == 0 and "warning: cannot write metrics file" in ok.stderr
    wrong = run({**bootstrapped, "ROTATOR_KEYSTORE_PASSPHRASE": "wrong"}, "rotate", "--metrics-file", target)
    assert wrong.exit_code == 3 and "wrong keystore passphrase" in wrong.stderr


# -- 14, 15: ownership and symbolic links -----------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
@pytest.mark.parametrize("target", ["", "state.json"])
def test_keystore_owned_by_another_user_is_refused(bootstrapped: dict[str, str], dirs: tuple[Path, Path], target: str) -> None:
    """A keystore directory or file owned by another user is refused, naming the owner, and
    nothing changes."""
    keystore, _ = dirs
    path = keystore / target if target else keystore
    os.chown(path, 54321, -1)
    before = fingerprint(keystore)
    assert_clean_failure(run(bootstrapped, "rotate"), "owned by uid 54321, not by this user", before, keystore)


def test_symlinked_state_file_is_named_as_such(bootstrapped: dict[str, str], dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """A state file that is a symbolic link is refused as such, without advice to chmod."""
    keystore, _ = dirs
    elsewhere = tmp_path / "elsewhere.json"
    (keystore / "state.json").rename(elsewhere)
    (keystore / "state.json").symlink_to(elsewhere)
    result = run(bootstrapped, "rotate")
    one_line(result, 3, "is a symbolic link")
    assert "chmod" not in result.stderr


# -- 16: errors name their source ------------------------------------------------------------------------


def test_wrong_passphrase_names_the_passphrase_file(bootstrapped: dict[str, str], tmp_path: Path) -> None:
    """A wrong passphrase from a file names that file, never the environment variable."""
    secret = tmp_path / "passphrase"
    secret.write_text("not the passphrase\n")
    secret.chmod(0o600)
    env = {**bootstrapped, "ROTATOR_KEYSTORE_PASSPHRASE": ""}
    result = run(env, "rotate", "--passphrase-file", str(secret))
    one_line(result, 3, f"wrong keystore passphrase (from passphrase file {secret})")
    assert "ROTATOR_KEYSTORE_PASSPHRASE" not in result.stderr


@pytest.mark.parametrize("what", ["passphrase", "config"])
def test_non_utf8_files_are_named(bootstrapped: dict[str, str], tmp_path: Path, what: str) -> None:
    """A passphrase or settings file that is not UTF-8 is named in one line."""
    path = tmp_path / what
    path.write_bytes(b"\xff\xfe\x00bad")
    path.chmod(0o600)
    env = {**bootstrapped, "ROTATOR_KEYSTORE_PASSPHRASE": ""}
    args = ["--passphrase-file", str(path)] if what == "passphrase" else ["--config", str(path)]
    one_line(run(env, "rotate", *args), 2, f"{path} is not UTF-8 text")


def test_jwks_on_a_damaged_file_is_one_line(bootstrapped: dict[str, str], dirs: tuple[Path, Path]) -> None:
    """rotator jwks on a published file that is not JSON says so in one line."""
    _, public = dirs
    (public / "jwks.json").write_bytes(b"\x00not json")
    one_line(run(bootstrapped, "jwks"), 2, "is not valid JSON")


# -- 17: file URLs -------------------------------------------------------------------------------------------


def test_file_localhost_url_is_the_absolute_path(cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """file://localhost/path means the absolute path, never a directory named localhost."""
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "abs"
    env = {**cli_env, "ROTATOR_KEYSTORE": f"file://localhost{target}/ks", "ROTATOR_PUBLISH": f"file://localhost{target}/pub"}
    assert run(env, "rotate").exit_code == 0
    assert (target / "ks" / "state.json").exists() and (target / "pub" / "jwks.json").exists()
    assert not (tmp_path / "localhost").exists()


@pytest.mark.parametrize(
    "option, value, fragment",
    [
        ("--keystore", "", "keystore location is empty"),
        ("--publish", "", "publish location is empty"),
        ("--keystore", "file://", "keystore location is empty"),
        ("--keystore", "file://fileserver/srv/ks", "names the host 'fileserver'"),
    ],
)
def test_empty_or_remote_locations_are_refused(cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str, value: str, fragment: str) -> None:
    """Empty locations and file URLs naming another host are refused, and nothing is created."""
    monkeypatch.chdir(tmp_path)
    one_line(run(cli_env, "rotate", option, value), 2, fragment)
    assert list(tmp_path.iterdir()) == []


# -- 18: the publish directory's mode ------------------------------------------------------------------------


def test_publish_directory_is_0755_whatever_the_umask(cli_env: dict[str, str], dirs: tuple[Path, Path]) -> None:
    """The publish directory is created 0755 whatever the umask."""
    _, public = dirs
    old = os.umask(0)
    try:
        assert run(cli_env, "rotate").exit_code == 0
    finally:
        os.umask(old)
    assert public.stat().st_mode & 0o777 == 0o755


def test_world_writable_publish_directory_is_refused(cli_env: dict[str, str], dirs: tuple[Path, Path]) -> None:
    """A world-writable publish directory is refused before anything is published."""
    _, public = dirs
    public.mkdir()
    public.chmod(0o777)
    one_line(run(cli_env, "rotate"), 4, "writable by everyone")
    assert not (public / "jwks.json").exists()


# -- 19: the unconfirmed-JWKS age counts from the last confirmation -----------------------------------------------


def test_unconfirmed_age_counts_from_the_last_confirmation(make_rotator: Callable[..., Rotator], clock: Clock) -> None:
    """Health counts an unconfirmed JWKS from the last confirmation, so a publish outage stays
    reported while the state is rewritten."""
    policy = Policy()
    state = make_rotator(policy).step().state
    confirmed_at = state.published_confirmed_at
    assert confirmed_at is not None
    # A publish outage: the state is rewritten (a new key, a fresh updated_at) but never confirmed.
    later = confirmed_at + policy.rotation_period
    rewritten = state.with_keys(state.keys[:1], updated_at=later)
    problems = health_problems(rewritten, policy, later + 1, last_success=later, since=confirmed_at)
    assert any("has not been confirmed published for 901s" in p for p in problems), problems


# -- 20: plan's horizon -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--days", "366"], "preview at most 21.5 days"),
        (["--days", "0.1", "--rotation-period", "4s", "--max-age", "2s", "--token-lifetime", "1s", "--leeway", "0s",
          "--jwks-key-budget", "30000"], "preview at most 0.0293 days"),
    ],
)
def test_plan_horizon_is_bounded(args: list[str], fragment: str) -> None:
    """rotator plan refuses a preview too long to replay quickly, naming the longest it would
    show."""
    result = CliRunner().invoke(main, ["plan", *args], env={"ROTATOR_CONFIG": ""})
    one_line(result, 2, fragment)


def test_status_survives_the_largest_durations(bootstrapped: dict[str, str]) -> None:
    """rotator status works with the largest durations allowed."""
    result = run(bootstrapped, "status", "--retirement-window", "3650d", "--audit-retention", "3650d", "--jwks-key-budget", "400000")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("value, fragment", [("0s", "expected between 1s and 1h"), ("2h", "expected between 1s and 1h"), ("soon", "invalid --stuck-after")])
def test_stuck_after_is_checked(bootstrapped: dict[str, str], value: str, fragment: str) -> None:
    """--stuck-after outside 1 s to 1 h is refused with one line."""
    one_line(run(bootstrapped, "run", "--stuck-after", value), 2, fragment)


def test_two_damaged_candidates_are_both_replaced(make_rotator: Callable[..., Rotator], clock: Clock) -> None:
    """No active key and two confirmed pending keys, neither of which decrypts: both are marked
    and replaced in one step (marking one must not unmark the other)."""
    rotator = make_rotator(Policy())
    state = rotator.step().state
    assert state.active is not None and len(state.pending) == 1

    def spoil(blob: str) -> str:
        return b64url_encode(bytes(b ^ 0xFF for b in blob.encode()[:10])) + blob[13:]

    # Both keys pending and confirmed, both sealed halves damaged.
    tampered = state.with_keys(
        k.with_(activated_at=None, activation=None, private=spoil(k.private or "")) for k in state.keys
    )
    rotator.keystore.save(tampered, state.generation)
    clock.advance(1)
    result = rotator.step()
    damaged = [e.kid for e in result.events if e.name == "rotator.pending_key_damaged" and e.kid is not None]
    assert sorted(damaged) == sorted(k.kid for k in state.keys)
    assert all(result.state.get(kid).revocation == "damaged" for kid in damaged)  # type: ignore[union-attr]
    assert result.state.active is not None and result.state.active.kid not in damaged
