"""Durations and settings: parsing, precedence and policy validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.config import Policy, load_settings
from rotator.durations import format_duration, parse_duration
from rotator.errors import ConfigError


@pytest.mark.parametrize(
    "text, seconds",
    [("90s", 90), ("15m", 900), ("24h", 86400), ("1d", 86400), ("1h30m", 5400), ("500ms", 0.5), ("300", 300), (" 2H ", 7200)],
)
def test_durations_parse(text: str, seconds: float) -> None:
    """Unit-tagged durations and bare seconds are accepted."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "15", "m15", "15 m", "15min", "1h-5m", "-5s", "abc", "1e3s", "nan", "15m3"])
def test_durations_malformed(text: str) -> None:
    """Malformed durations are a one-line ConfigError naming the value (bare numbers aside)."""
    if text == "15":
        assert parse_duration(text) == 15
        return
    with pytest.raises(ConfigError) as info:
        parse_duration(text, name="leeway")
    message = str(info.value)
    assert "\n" not in message and "leeway" in message and repr(text) in message


@pytest.mark.parametrize("seconds, text", [(900, "15m"), (5400, "1h30m"), (86400, "1d"), (90, "1m30s"), (0, "0s"), (0.5, "0.5s")])
def test_format_duration(seconds: float, text: str) -> None:
    """Durations print in the largest units that are exact."""
    assert format_duration(seconds) == text


def test_defaults_match_design() -> None:
    """P=15m, T=1h, L=60s, M=300s, W=24h."""
    policy = load_settings({}, env={}).policy
    assert (policy.rotation_period, policy.token_lifetime, policy.leeway, policy.max_age, policy.retirement_window) == (
        900,
        3600,
        60,
        300,
        86400,
    )
    assert policy.max_jwks_keys == 98


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    """CLI flags beat ROTATOR_* variables, which beat the TOML file, which beats defaults."""
    cfg = tmp_path / "rotator.toml"
    cfg.write_text('rotation_period = "30m"\nleeway = "10s"\nmax_age = "2m"\nissuer = "file-iss"\n')
    env = {"ROTATOR_LEEWAY": "20s", "ROTATOR_ISSUER": "env-iss"}
    settings = load_settings({"issuer": "cli-iss"}, env=env, config_file=str(cfg))
    assert settings.issuer == "cli-iss"
    assert settings.policy.leeway == 20
    assert settings.policy.rotation_period == 1800
    assert settings.policy.max_age == 120
    assert settings.policy.token_lifetime == 3600


def test_config_file_from_environment(tmp_path: Path) -> None:
    """ROTATOR_CONFIG names the settings file."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('keystore = "file:///srv/ks"\n')
    assert load_settings({}, env={"ROTATOR_CONFIG": str(cfg)}).keystore == "file:///srv/ks"


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("rotation_period = [", "not valid TOML"),
        ('bogus = "1"\n', "unknown setting 'bogus'"),
        ('passphrase = "x"\n', "keep secrets out of config files"),
        ('leeway = "soon"\n', "invalid leeway"),
        ("insecure_plaintext_keys = 3\n", "expected true or false"),
    ],
)
def test_bad_config_files(tmp_path: Path, content: str, fragment: str) -> None:
    """A settings file with bad TOML, unknown settings or wrong types is one line naming the
    problem."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=fragment):
        load_settings({}, env={}, config_file=str(cfg))


def test_missing_config_file(tmp_path: Path) -> None:
    """A settings file that does not exist is named as such."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, env={}, config_file=str(tmp_path / "none.toml"))


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (dict(retirement_window=3600), "retirement_window (1h) must be at least"),
        (dict(max_age=600), "max_age (10m) must be at most half of rotation_period"),
        (dict(rotation_period=0), "rotation_period must be greater than zero"),
        (dict(token_lifetime=0), "token_lifetime must be greater than zero"),
        (dict(private_key_grace=90000), "private_key_grace"),
    ],
)
def test_impossible_policies_refused(overrides: dict[str, float], fragment: str) -> None:
    """Settings that would let a valid token fail, or a rotation never qualify, are refused."""
    with pytest.raises(ConfigError) as info:
        Policy(**overrides)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_clock_skew_is_checked_against_max_age() -> None:
    """max_clock_skew is at most half of max_age: a clock off by that much must not cut the
    wait that lets verifier caches learn a new key. Unset, it is 60 s or half of max_age."""
    assert Policy().max_clock_skew == 60
    assert Policy(max_age=30, rotation_period=60, retirement_window=3690).max_clock_skew == 15
    assert Policy(max_age=2, rotation_period=4, token_lifetime=2, leeway=1, retirement_window=5, private_key_grace=1).max_clock_skew == 1
    assert Policy(max_clock_skew=150).max_clock_skew == 150
    with pytest.raises(ConfigError, match=r"max_clock_skew \(2m31s\) must be at most half of max_age \(5m\)"):
        Policy(max_clock_skew=151)
    with pytest.raises(ConfigError, match=r"max_age \(1s\) must be at least 2s"):
        Policy(max_age=1, rotation_period=4, token_lifetime=2, leeway=1, retirement_window=5, private_key_grace=1)


def test_window_exactly_at_minimum_is_allowed() -> None:
    """A retirement window exactly T + L + M is allowed."""
    policy = Policy(retirement_window=3600 + 60 + 300)
    assert policy.retirement_window == 3960


def test_passphrase_file(tmp_path: Path) -> None:
    """A passphrase file's content is the passphrase, its trailing newline stripped; an empty
    one is refused."""
    secret = tmp_path / "pass"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    assert load_settings({"passphrase_file": str(secret)}, env={}).resolved_passphrase() == "s3cret"
    secret.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_settings({"passphrase_file": str(secret)}, env={}).resolved_passphrase()


@pytest.mark.parametrize("mode, accepted", [(0o600, True), (0o400, True), (0o640, True), (0o440, True),
                                           (0o644, False), (0o604, False), (0o660, False), (0o602, False)])
def test_secret_files_open_to_others_are_refused(tmp_path: Path, mode: int, accepted: bool) -> None:
    """A passphrase or Redis password file readable by others (or writable by its group or
    others) is refused like a 0644 state file, with the fix; group-readable (a Kubernetes
    Secret at defaultMode 0440, a root:service 0640 file) is fine."""
    from rotator.revocation import RevocationError, RevocationStore

    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(mode)
    if accepted:
        assert load_settings({"passphrase_file": str(secret)}, env={}).resolved_passphrase() == "s3cret"
        return
    with pytest.raises(ConfigError) as info:
        load_settings({"passphrase_file": str(secret)}, env={}).resolved_passphrase()
    assert str(info.value) == (
        f"passphrase file {secret} is {'readable by others' if mode & 0o004 else 'open to others'} "
        f"(mode {mode:04o}): run chmod 600 {secret} (or 640 for a group the service runs in)"
    )
    with pytest.raises(RevocationError, match=f"password file {secret} is .*chmod 600"):
        RevocationStore.from_url("redis://127.0.0.1:1/0", password_file=str(secret))


def test_settings_repr_hides_passphrase() -> None:
    """The settings' repr never shows the passphrase."""
    settings = load_settings({}, env={"ROTATOR_KEYSTORE_PASSPHRASE": "hunter2"})
    assert settings.resolved_passphrase() == "hunter2"
    assert "hunter2" not in repr(settings)
