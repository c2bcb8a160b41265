"""The command line, through click's CliRunner and, for the quickstart, a real shell."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import jwt
import pytest
from click.testing import CliRunner, Result

from rotator.cli import main
from rotator.publish import jwks_size

from .helpers import PASSPHRASE, assert_clean_failure, ec_private, fingerprint

ROOT = Path(__file__).resolve().parents[1]


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def bootstrapped(cli_env: dict[str, str], dirs: tuple[Path, Path]) -> dict[str, str]:
    result = run(cli_env, "rotate")
    assert result.exit_code == 0, result.output
    return cli_env


def test_rotate_status_jwks(bootstrapped: dict[str, str], dirs: tuple[Path, Path]) -> None:
    """rotate creates the key set; status lists it; jwks prints the published public keys only."""
    status = run(bootstrapped, "status", "--json")
    doc = json.loads(status.output)
    assert sorted(k["state"] for k in doc["keys"]) == ["active", "pending"]
    table = run(bootstrapped, "status").output.splitlines()
    assert table[0].split()[:2] == ["KID", "STATE"] and len(table) == 3
    published = json.loads(run(bootstrapped, "jwks").output)
    assert [k["kid"] for k in published["keys"]][0] == next(k["kid"] for k in doc["keys"] if k["state"] == "active")
    assert all(set(k) == {"kty", "crv", "x", "y", "kid", "alg", "use"} for k in published["keys"])
    keystore, _ = dirs
    assert oct(keystore.stat().st_mode & 0o777) == "0o700"
    assert oct((keystore / "state.json").stat().st_mode & 0o777) == "0o600"


def test_signed_token_verifies_with_pyjwt(bootstrapped: dict[str, str], dirs: tuple[Path, Path]) -> None:
    """`rotator sign` tokens verify with PyJWT (>= 2.13) against the published JWKS."""
    assert tuple(int(p) for p in jwt.__version__.split(".")[:2]) >= (2, 13)
    token = run(bootstrapped, "sign", "--sub", "alice", "--aud", "api", "--ttl", "10m", "--claim", "role=admin", "--claim", "n=3").output.strip()
    _, public = dirs
    jwks = jwt.PyJWKSet.from_json((public / "jwks.json").read_text())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims = jwt.decode(token, key.key, algorithms=["ES256"], audience="api", issuer="https://issuer.test")
    assert claims["sub"] == "alice" and claims["role"] == "admin" and claims["n"] == 3
    assert claims["exp"] - claims["iat"] == 600


def test_sign_refuses_ttl_above_token_lifetime(bootstrapped: dict[str, str]) -> None:
    """sign refuses a ttl above token_lifetime with exit 2."""
    result = run(bootstrapped, "sign", "--sub", "a", "--aud", "b", "--ttl", "2h")
    assert result.exit_code == 2 and "token_lifetime" in result.stderr


def test_verify_command(bootstrapped: dict[str, str], dirs: tuple[Path, Path]) -> None:
    """verify prints the claims of a valid token and refuses a wrong audience with exit 1."""
    token = run(bootstrapped, "sign", "--sub", "s", "--aud", "api").output.strip()
    url = f"file://{dirs[1] / 'jwks.json'}"
    ok = run(bootstrapped, "verify", token, "--jwks-url", url, "--aud", "api")
    assert ok.exit_code == 0 and json.loads(ok.output)["sub"] == "s"
    wrong = run(bootstrapped, "verify", token, "--jwks-url", url, "--aud", "other")
    assert wrong.exit_code == 1 and "wrong_audience" in wrong.stderr


def test_verify_command_over_http(bootstrapped: dict[str, str], dirs: tuple[Path, Path]) -> None:
    """The published JWKS served by a real HTTP server on loopback, fetched by the verifier."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(dirs[1]))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json"
        token = run(bootstrapped, "sign", "--sub", "s", "--aud", "api").output.strip()
        refused = run(bootstrapped, "verify", token, "--jwks-url", url, "--aud", "api")
        assert refused.exit_code == 2 and "plain http" in refused.stderr and len(refused.stderr.splitlines()) == 1
        ok = run(bootstrapped, "verify", token, "--jwks-url", url, "--aud", "api", "--allow-http")
        assert ok.exit_code == 0 and json.loads(ok.stdout)["sub"] == "s", ok.stderr
        wrong = run(bootstrapped, "verify", token, "--jwks-url", url, "--aud", "api", "--iss", "https://other", "--allow-http")
        assert wrong.exit_code == 1 and "wrong_issuer" in wrong.stderr
        missing = run(bootstrapped, "verify", token, "--jwks-url", url + ".missing", "--aud", "api", "--allow-http")
        assert missing.exit_code == 6 and "HTTP 404" in missing.stderr and len(missing.stderr.splitlines()) == 1
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_plan_prints_timeline_and_bound() -> None:
    """plan prints the timeline and its JWKS size, which stays within ceil(W/P) + 2."""
    result = CliRunner().invoke(main, ["plan", "--days", "2"], env={})
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert "retirement_window=1d" in lines[0]
    assert lines[-1].startswith("summary:") and "JWKS size max 98" in lines[-1] and "bound ceil(W/P) + 2 = 98" in lines[-1]
    assert f"ES256 keys: at most {jwks_size('ES256', 98):,} bytes" in lines[-1], lines[-1]
    assert "98 of a key budget of 100 EC keys" in lines[-1], lines[-1]
    rsa = CliRunner().invoke(main, ["plan", "--days", "1", "--algorithm", "RS256"], env={}).output.splitlines()[-1]
    assert "RS256 keys: at most 4" in rsa and "RSA keys" in rsa, rsa
    assert any("key_removed" in line for line in lines)


def test_retire_and_revoke_commands(bootstrapped: dict[str, str]) -> None:
    """retire refuses without a published successor; revoke removes the key from the JWKS at
    once."""
    doc = json.loads(run(bootstrapped, "status", "--json").output)
    active = next(k["kid"] for k in doc["keys"] if k["state"] == "active")
    refused = run(bootstrapped, "retire", active)
    assert refused.exit_code == 5 and "no successor has been published for max_age" in refused.stderr
    revoked = run(bootstrapped, "revoke", active)
    assert revoked.exit_code == 0 and f"rotator.key_revoked kid={active}" in revoked.output
    doc = json.loads(run(bootstrapped, "status", "--json").output)
    assert next(k for k in doc["keys"] if k["kid"] == active)["state"] == "revoked"
    assert active not in run(bootstrapped, "jwks").output


@pytest.mark.parametrize("command", ["retire", "revoke"])
@pytest.mark.parametrize("kid", ["-r0XdOmXtI0PcwbG9yrK7xKSij7vepA2OAY0FmHEuWE", "-hAbc", "--x-y"])
def test_kid_starting_with_dash_is_an_argument(bootstrapped: dict[str, str], command: str, kid: str) -> None:
    """base64url kids may start with '-'; they are taken as the KID, not as options."""
    result = run(bootstrapped, command, kid)
    assert result.exit_code == 5 and f"no key with kid {kid!r}" in result.stderr


@pytest.mark.parametrize(
    "args, env_change, fragment",
    [
        (["rotate"], {"ROTATOR_KEYSTORE_PASSPHRASE": "wrong"}, "wrong keystore passphrase"),
        (["sign", "--sub", "a", "--aud", "b"], {"ROTATOR_KEYSTORE_PASSPHRASE": "wrong"}, "wrong keystore passphrase"),
        (["rotate"], {"ROTATOR_KEYSTORE_PASSPHRASE": ""}, "no keystore passphrase"),
        (["retire", "no-such-kid"], {}, "no key with kid 'no-such-kid'"),
        (["revoke", "no-such-kid"], {}, "no key with kid 'no-such-kid'"),
        (["rotate", "--rotation-period", "15 minutes"], {}, "invalid rotation_period '15 minutes'"),
        (["rotate"], {"ROTATOR_LEEWAY": "1x"}, "invalid leeway '1x' (from ROTATOR_LEEWAY)"),
        (["rotate", "--retirement-window", "30m"], {}, "retirement_window (30m) must be at least"),
        (["rotate", "--max-age", "10m"], {}, "max_age (10m) must be at most half of rotation_period"),
        (["rotate", "--max-clock-skew", "3m"], {}, "max_clock_skew (3m) must be at most half of max_age (5m)"),
        (["rotate", "--max-age", "1s"], {}, "max_age (1s) must be at least 2s"),
        (["rotate", "--keystore", "ftp://x/y"], {}, "unsupported keystore URL scheme 'ftp'"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    bootstrapped: dict[str, str], dirs: tuple[Path, Path], args: list[str], env_change: dict[str, str], fragment: str
) -> None:
    """Bad input to any command is one line on stderr and leaves the keystore as it was."""
    keystore, _ = dirs
    before = fingerprint(keystore)
    assert_clean_failure(run({**bootstrapped, **env_change}, *args), fragment, before, keystore)


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda b: b[: len(b) // 2], "is not valid JSON"),
        (lambda b: b"", "is not valid JSON"),
        (lambda b: os.urandom(64), "state.json"),
        (lambda b: b"[1, 2, 3]", "does not hold a JSON object"),
        (lambda b: json.dumps({**json.loads(b), "schema_version": 9}).encode(), "schema version 9, newer than this rotator supports (1)"),
        (lambda b: json.dumps({**json.loads(b), "keys": "x"}).encode(), "wrong type"),
    ],
    ids=["truncated", "empty", "garbage", "array", "newer-schema", "wrong-type"],
)
@pytest.mark.parametrize("command", [["rotate"], ["status"], ["sign", "--sub", "a", "--aud", "b"]])
def test_damaged_state_file_is_refused(
    bootstrapped: dict[str, str], dirs: tuple[Path, Path], damage: Callable[[bytes], bytes], fragment: str, command: list[str]
) -> None:
    """A damaged state file is refused by every command with one line, and nothing changes."""
    keystore, _ = dirs
    state_file = keystore / "state.json"
    state_file.write_bytes(damage(state_file.read_bytes()))
    before = fingerprint(keystore)
    assert_clean_failure(run(bootstrapped, *command), fragment, before, keystore)


@pytest.mark.parametrize("target, mode", [("", 0o755), ("", 0o701), ("state.json", 0o644), ("state.json", 0o640)])
def test_loose_permissions_refused(bootstrapped: dict[str, str], dirs: tuple[Path, Path], target: str, mode: int) -> None:
    """A keystore directory or file readable by others is refused, naming the mode to set."""
    keystore, _ = dirs
    path = keystore / target if target else keystore
    path.chmod(mode)
    before = fingerprint(keystore)
    result = run(bootstrapped, "rotate")
    assert_clean_failure(result, "accessible to group or others", before, keystore)
    assert f"mode {mode:04o}" in result.stderr and "chmod" in result.stderr


def test_plaintext_keystore_needs_loud_option(cli_env: dict[str, str], dirs: tuple[Path, Path]) -> None:
    """A plaintext keystore is made and opened only with --insecure-plaintext-keys."""
    env = {**cli_env, "ROTATOR_KEYSTORE_PASSPHRASE": ""}
    created = run(env, "rotate", "--insecure-plaintext-keys")
    assert created.exit_code == 0
    keystore, _ = dirs
    before = fingerprint(keystore)
    assert_clean_failure(run(env, "rotate"), "unencrypted private keys", before, keystore)


def test_state_file_holds_no_plaintext_private_key(bootstrapped: dict[str, str], dirs: tuple[Path, Path]) -> None:
    """Encrypted at rest: neither PEM/DER forms nor JWK 'd' members appear in the state file."""
    from rotator.keystore import FileKeystore

    keystore, _ = dirs
    raw = (keystore / "state.json").read_bytes()
    assert b"PRIVATE KEY" not in raw and b'"d"' not in raw
    state = FileKeystore(keystore).load()
    assert state is not None and state.encryption["scheme"] == "scrypt-aes256gcm"
    from rotator.sealing import open_sealer

    sealer = open_sealer(state.encryption, PASSPHRASE, False)
    for key in state.keys:
        assert key.private is not None
        scalar = ec_private(sealer.unseal(key.private, state.keyset, key.kid)).private_numbers().private_value
        assert scalar.to_bytes(32, "big") not in raw
        assert scalar.to_bytes(32, "big").hex().encode() not in raw


def test_quickstart_demo_script(tmp_path: Path) -> None:
    """scripts/demo.sh (what `make demo` runs) shows the main job happening: the daemon
    activates a first key, then two rotations, each a new kid; a token signed before the
    first rotation verifies after it (the printed claims are the token's); the printed
    times are in order and the first rotation comes within the 20 s target; with a
    redis-server (the suite installs one), a denied token goes from accepted to rejected."""
    import re

    rotator_bin = shutil.which("rotator", path=str(Path(sys.executable).parent))
    assert rotator_bin is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}
    env.update(ROTATOR_BIN=rotator_bin, DEMO_DIR=str(tmp_path / "demo"))
    proc = subprocess.run(["sh", str(ROOT / "scripts" / "demo.sh")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    out = proc.stdout
    first = re.search(r"^first key active after ([0-9.]+) s: (\S+)$", out, re.MULTILINE)
    one = re.search(r"^== first rotation after ([0-9.]+) s: (\S+) signs now; (\S+) is retired", out, re.MULTILINE)
    two = re.search(r"^== second rotation after ([0-9.]+) s: (\S+) signs now$", out, re.MULTILINE)
    assert first and one and two, out
    assert one.group(3) == first.group(2) and len({first.group(2), one.group(2), two.group(2)}) == 3
    assert float(first.group(1)) < float(one.group(1)) < float(two.group(1))
    assert float(one.group(1)) < 20, "the first rotation came later than the 20 s target"
    print(f"\n[demo] first key {first.group(1)} s, first rotation {one.group(1)} s, second {two.group(1)} s")
    claims = json.loads(out.split("verified against the JWKS published after it\n", 1)[1].split("\n}\n", 1)[0] + "\n}")
    assert claims["sub"] == "alice" and claims["aud"] == "demo-api" and claims["role"] == "reader"
    events = out.split("== daemon log (events)", 1)[1]
    assert events.count("rotator.key_activated") >= 3 and "rotator.key_retired" in events
    assert "bob's token: accepted\n$ rotator deny-token" in out
    assert out.rstrip().endswith("bob's token: rejected: token id (jti) is revoked")
