"""The systemd units: each directive explained, `systemd-analyze verify` clean, exposure <= 2.0,
and rotator itself working under the restrictions the units impose where they can be imposed here."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import time
import sys
from pathlib import Path

import pytest

from rotator.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
ROTATOR_BIN = Path(sys.executable).parent / "rotator"


def analyze() -> str:
    path = shutil.which("systemd-analyze")
    assert path, "systemd-analyze not found: install Debian's systemd package (scripts/test-deps.sh does)"
    return path


@pytest.fixture
def units(tmp_path: Path) -> Path:
    """The unit files with ExecStart pointing at this checkout's rotator (verify checks it exists)."""
    assert ROTATOR_BIN.exists()
    for unit in UNITS.glob("rotator*.*"):
        if unit.suffix in (".service", ".timer"):
            (tmp_path / unit.name).write_text(unit.read_text().replace("/usr/local/bin/rotator", str(ROTATOR_BIN)))
    return tmp_path


@pytest.mark.parametrize("name", ["rotator.service", "rotator-rotate.service", "rotator-rotate.timer", "rotator-authz.service"])
def test_every_directive_has_its_reason_on_the_line_above(name: str) -> None:
    """Every directive in the systemd units has its reason in a comment on the line above."""
    lines = (UNITS / name).read_text().splitlines()
    directives = [i for i, line in enumerate(lines) if re.match(r"^[A-Za-z]+=", line)]
    assert directives
    unexplained = [lines[i] for i in directives if not lines[i - 1].startswith("# ")]
    assert unexplained == []


def test_systemd_analyze_verify_passes(units: Path) -> None:
    """systemd-analyze verify accepts the units without a warning."""
    names = ["rotator.service", "rotator-rotate.service", "rotator-rotate.timer", "rotator-authz.service"]
    result = subprocess.run([analyze(), "verify", *names], cwd=units, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_systemd_analyze_verify_catches_a_missing_executable(tmp_path: Path) -> None:
    """The check is real: the shipped path does not exist here, and verify says so."""
    unit = tmp_path / "rotator.service"
    unit.write_text((UNITS / "rotator.service").read_text().replace("/usr/local/bin/rotator", "/nonexistent/rotator"))
    result = subprocess.run([analyze(), "verify", unit.name], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "/nonexistent/rotator" in result.stderr


@pytest.mark.parametrize("name", ["rotator.service", "rotator-rotate.service", "rotator-authz.service"])
def test_security_exposure_at_most_2(units: Path, name: str) -> None:
    """systemd-analyze security rates each service's exposure at most 2."""
    result = subprocess.run(
        [analyze(), "security", "--offline=true", "--no-pager", name], cwd=units, capture_output=True, text=True, timeout=120
    )
    match = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    print(f"\n[systemd] {name}: exposure {exposure}")
    assert exposure <= 2.0


def test_units_share_user_state_and_config() -> None:
    """The service and the oneshot share the user, state directories, sandbox and settings file."""
    for name in ("rotator.service", "rotator-rotate.service"):
        text = (UNITS / name).read_text()
        for line in ("User=rotator", "StateDirectory=rotator rotator/public rotator/metrics", "StateDirectoryMode=0755",
                     "ProtectSystem=strict", "MemoryDenyWriteExecute=yes", "CapabilityBoundingSet=",
                     "SystemCallFilter=@system-service", "EnvironmentFile=-/etc/rotator/rotator.env", "UMask=0077",
                     "LoadCredential=passphrase:/etc/rotator/passphrase",
                     "Environment=ROTATOR_KEYSTORE_PASSPHRASE_FILE=%d/passphrase"):
            assert f"\n{line}\n" in text, (name, line)
        assert "--config /etc/rotator/rotator.toml" in text
        # A static user (systemd/rotator.sysusers): DynamicUser= would put the state directory,
        # the public JWKS and the metrics textfile with it, under the root-only /var/lib/private.
        assert "DynamicUser" not in text
    assert "u     rotator" in (UNITS / "rotator.sysusers").read_text()
    assert "Type=notify" in (UNITS / "rotator.service").read_text()
    assert "WatchdogSec=" in (UNITS / "rotator.service").read_text()


def test_example_configuration_loads() -> None:
    """The example settings file shipped with the units loads."""
    settings = load_settings({}, env={}, config_file=str(UNITS / "rotator.toml"))
    assert settings.keystore == "file:///var/lib/rotator/keystore"
    assert settings.policy.rotation_period == 900


PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1


def test_rotator_works_without_writable_executable_memory(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes, imposed here with prctl(PR_SET_MDWE) (the same refusal, Linux 6.3+):
    a reconcile step (scrypt, AES-GCM, ECDSA, file I/O) and the daemon's start-up run under it."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) >= 0, "this kernel has no PR_SET_MDWE (Linux 6.3+ needed)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}
    env.update(
        ROTATOR_KEYSTORE=f"file://{tmp_path / 'ks'}",
        ROTATOR_PUBLISH=f"file://{tmp_path / 'pub'}",
        ROTATOR_KEYSTORE_PASSPHRASE="a passphrase for this test",
    )
    wrapper = (
        "import ctypes, runpy, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"assert libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) == 0, ctypes.get_errno()\n"
        f"assert libc.prctl({PR_GET_MDWE}, 0, 0, 0, 0) == {PR_MDWE_REFUSE_EXEC_GAIN}\n"
        "sys.argv = ['rotator'] + sys.argv[1:]\n"
        "runpy.run_module('rotator.cli', run_name='__main__')\n"
    )
    rotate = subprocess.run([sys.executable, "-c", wrapper, "rotate"], env=env, capture_output=True, text=True, timeout=120)
    assert rotate.returncode == 0, rotate.stderr
    sign = subprocess.run(
        [sys.executable, "-c", wrapper, "sign", "--sub", "s", "--aud", "a"], env=env, capture_output=True, text=True, timeout=120
    )
    assert sign.returncode == 0 and sign.stdout.count(".") == 2, sign.stderr
    daemon = subprocess.Popen(
        [sys.executable, "-c", wrapper, "run", "--max-sleep", "1s", "--log-format", "json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert daemon.stdout is not None
        seen = []
        for line in daemon.stdout:
            seen.append(line)
            if '"daemon.step_succeeded"' in line:
                break
        assert any('"daemon.step_succeeded"' in line for line in seen), "".join(seen)
    finally:
        daemon.terminate()
        assert daemon.wait(timeout=30) == 0


def test_authz_works_without_writable_executable_memory(tmp_path: Path) -> None:
    """rotator-authz.service's MemoryDenyWriteExecute=yes, imposed with prctl(PR_SET_MDWE) on the
    supervisor (its workers inherit it): the workers start (uvicorn with httptools and uvloop,
    grpcio), serve /healthz, and allow a valid token over HTTP and over gRPC."""
    import grpc
    from envoy.service.auth.v3 import attribute_context_pb2 as attributes
    from envoy.service.auth.v3 import external_auth_pb2 as ext
    from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc

    from .authz_harness import request
    from .helpers import AUD, ISS, claims_at, wait_for
    from .jwks_server import JwksServer, SigningKey
    from .ports import free_port

    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) >= 0, "this kernel has no PR_SET_MDWE (Linux 6.3+ needed)"
    port, grpc_port = free_port(), free_port()
    key = SigningKey()
    wrapper = (
        "import ctypes, runpy, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"assert libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) == 0, ctypes.get_errno()\n"
        "sys.argv = ['rotator'] + sys.argv[1:]\n"
        "runpy.run_module('rotator.cli', run_name='__main__')\n"
    )
    with JwksServer([key]) as jwks:
        config = tmp_path / "authz.toml"
        config.write_text(
            f'[authz]\nlisten = "127.0.0.1:{port}"\ngrpc_listen = "127.0.0.1:{grpc_port}"\nworkers = 1\n'
            f'[[authz.issuers]]\nissuer = "{ISS}"\njwks_url = "{jwks.url}"\naudience = "{AUD}"\nallow_http = true\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}
        log = tmp_path / "authz.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-c", wrapper, "authz", "--config", str(config)], env=env,
                                    stdout=out, stderr=out)
        try:
            def healthy() -> bool:
                try:
                    return request(port, "/healthz")[0] == 200
                except OSError:
                    assert proc.poll() is None, log.read_text()
                    return False

            wait_for(healthy, timeout=30, what="rotator authz to serve under MDWE")
            token = key.sign(claims_at(time.time()))
            assert request(port, "/envoy/orders", {"Authorization": f"Bearer {token}"})[0] == 200
            http = attributes.AttributeContext.HttpRequest(method="GET", path="/", headers={"authorization": f"Bearer {token}"})
            check = ext.CheckRequest(attributes=attributes.AttributeContext(request=attributes.AttributeContext.Request(http=http)))
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                assert ext_grpc.AuthorizationStub(channel).Check(check, timeout=10).status.code == 0
        finally:
            proc.terminate()
            assert proc.wait(timeout=30) == 0, log.read_text()
