"""The package as users get it: the sdist and wheel built from a copy of the checkout
(`python -m build`), their metadata checked (`twine check`), the wheel installed with its
redis extra into a fresh virtualenv outside the checkout, and rotator run from there:
`--version`, a rotation, a signed token verified, the revocation module importable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".venv", ".git", ".*cache", ".hypothesis", "demo", "*.egg-info", "build", "dist", "__pycache__", "node_modules")


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    result = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result.stdout


def test_the_wheel_installs_and_works_outside_the_checkout(tmp_path: Path) -> None:
    """The sdist and wheel build, pass twine check, and the wheel installed outside the checkout
    rotates, signs, verifies and revokes."""
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=SKIP)
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", str(dist), str(source), cwd=tmp_path)
    wheel = next(dist.glob("rotator-*-py3-none-any.whl"))
    sdist = next(dist.glob("rotator-*.tar.gz"))
    assert "PASSED" in run(sys.executable, "-m", "twine", "check", str(wheel), str(sdist), cwd=tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "rotator/py.typed" in names and "rotator/verifier/__init__.py" in names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
    import tarfile

    packed = {m.name.split("/", 1)[1] for m in tarfile.open(sdist).getmembers() if "/" in m.name}
    assert {"systemd/rotator.service", "systemd/rotator.sysusers", "helm/rotator/files/rotator-alerts.yml",
            "helm/rotator/files/rotator-dashboard.json", "helm/rotator/Chart.yaml"} <= packed

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
    run(str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{wheel}[redis]", cwd=tmp_path, timeout=600)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTATOR_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(
        HOME=str(home),
        ROTATOR_KEYSTORE=f"file://{home / 'keystore'}",
        ROTATOR_PUBLISH=f"file://{home / 'public'}",
        ROTATOR_ISSUER="https://issuer.packaged",
        ROTATOR_KEYSTORE_PASSPHRASE="packaging test passphrase",
    )
    rotator = str(venv / "bin" / "rotator")
    assert run(rotator, "--version", cwd=home, env=env).strip() == "rotator, version 0.1.0"
    assert "rotator.key_activated" in run(rotator, "rotate", cwd=home, env=env)
    token = run(rotator, "sign", "--sub", "alice", "--aud", "api", cwd=home, env=env).strip()
    verified = run(rotator, "verify", token, "--jwks-url", f"file://{home / 'public' / 'jwks.json'}",
                   "--aud", "api", "--iss", "https://issuer.packaged", cwd=home, env=env)
    assert '"sub": "alice"' in verified
    # The installed package, not the checkout: imported from the venv, with its redis extra.
    where = run(str(venv / "bin" / "python"), "-c",
                "import rotator, redis, rotator.revocation; rotator.revocation.RevocationStore; print(rotator.__file__)",
                cwd=home, env=env)
    assert where.strip().startswith(str(venv)) and str(ROOT) not in where
