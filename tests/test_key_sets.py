"""Several key sets from one configuration: loading and checks, the JWKS key budget, the CLI's
--key-set, a Signer opened for a named set, and one `rotator run` scheduling them all with
per-set metrics and health, one set's failure never stopping another."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from rotator._b64 import b64url_decode
from rotator.cli import main
from rotator.config import Settings
from rotator.errors import ConfigError
from rotator.issuer import open_signer
from rotator.jose import verify_token
from rotator.keys import public_key_from_jwk
from rotator.keysets import check_budget, load_key_sets, select

from .daemon_harness import RunningDaemon, http_get, metrics
from .helpers import PASSPHRASE, wait_for


def two_sets(tmp_path: Path, extra: str = "") -> Path:
    """A settings file naming an ES256 set and an RS256 set, each with its own locations."""
    config = tmp_path / "rotator.toml"
    config.write_text(
        f'rotation_period = "4s"\nmax_age = "2s"\ntoken_lifetime = "2s"\nleeway = "1s"\nretirement_window = "6s"\n'
        f'private_key_grace = "2s"\nissuer = "https://issuer.test"\n{extra}'
        f'[key_sets.access]\nkeystore = "file://{tmp_path}/access/ks"\npublish = "file://{tmp_path}/access/pub"\n'
        f'[key_sets.federation]\nalgorithm = "RS256"\nkeystore = "file://{tmp_path}/fed/ks"\n'
        f'publish = "file://{tmp_path}/fed/pub"\nissuer = "https://federation.test"\n'
    )
    return config


def test_a_file_names_key_sets_over_its_top_level_defaults(tmp_path: Path) -> None:
    """Each [key_sets.NAME] table overrides the file's top-level values for that set only;
    the environment overrides every set; a file without key sets is one set, default."""
    sets = load_key_sets({}, env={"ROTATOR_LEEWAY": "0s"}, config_file=str(two_sets(tmp_path)))
    assert list(sets) == ["access", "federation"]
    access, federation = sets["access"], sets["federation"]
    assert (access.key_set, access.algorithm, access.issuer) == ("access", "ES256", "https://issuer.test")
    assert (federation.algorithm, federation.issuer) == ("RS256", "https://federation.test")
    assert access.policy.rotation_period == federation.policy.rotation_period == 4
    assert access.policy.leeway == federation.policy.leeway == 0
    plain = tmp_path / "plain.toml"
    plain.write_text('keystore = "file:///srv/ks"\n')
    assert {n: s.keystore for n, s in load_key_sets({}, env={}, config_file=str(plain)).items()} == {"default": "file:///srv/ks"}


@pytest.mark.parametrize(
    "table, fragment",
    [
        ('[key_sets.a]\nkeystore = "file:///x/ks"\npublish = "file:///x/a"\n[key_sets.b]\nkeystore = "file:///x/ks"\npublish = "file:///x/b"\n',
         "key sets a and b share the keystore file:///x/ks: each key set needs its own"),
        ('[key_sets.A]\nkeystore = "file:///x/ks"\n', "key set name 'A'"),
        ('[key_sets.a]\nalgorithm = "HS256"\n', "key set a: invalid algorithm 'HS256'"),
        ('[key_sets.a]\nsurprise = 1\n', "key set a: unknown setting 'surprise'"),
        ('[key_sets.a]\npassphrase = "x"\n', "keep secrets out of config files"),
        ("key_sets = 3\n", "must be tables of settings"),
    ],
)
def test_bad_key_sets_are_one_line(tmp_path: Path, table: str, fragment: str) -> None:
    """Key sets sharing a keystore, bad names, bad settings in a set and secrets in the file
    are refused with one line naming the set."""
    config = tmp_path / "bad.toml"
    config.write_text(table)
    with pytest.raises(ConfigError) as info:
        load_key_sets({}, env={}, config_file=str(config))
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_the_jwks_key_budget_is_checked_when_settings_load(tmp_path: Path) -> None:
    """The default configuration is within the budget of 100 keys of a type; one whose JWKS
    would hold more (P = 10 min, W = 24 h: 146) is refused with one line naming the numbers
    and the ways out; a larger budget takes it. Keys of different types count apart."""
    default = load_key_sets({}, env={})["default"]
    assert default.policy.max_jwks_keys == 98 and default.jwks_key_budget == 100
    with pytest.raises(ConfigError) as info:
        load_key_sets({"rotation_period": "10m"}, env={})
    message = str(info.value)
    assert "would hold up to 146 EC keys" in message and "over the budget of 100" in message
    assert all(way in message for way in ("retirement_window", "rotation_period", "fewer key sets", "jwks_key_budget"))
    assert load_key_sets({"rotation_period": "10m", "jwks_key_budget": "146"}, env={})
    one_place = "file:///srv/public"
    es, rs = Settings(publish=one_place), Settings(publish=one_place, algorithm="RS256", key_set="rs")
    check_budget([es, rs])  # 98 EC keys and 98 RSA keys: each type within 100
    with pytest.raises(ConfigError, match="196 EC keys"):
        check_budget([es, Settings(publish=one_place, algorithm="ES384", key_set="es384")])


def test_the_cli_acts_on_the_key_set_named(tmp_path: Path) -> None:
    """With several key sets a command needs --key-set (or ROTATOR_KEY_SET); given one, it
    acts on that set alone, with that set's algorithm."""
    runner = CliRunner()
    env = {"ROTATOR_CONFIG": str(two_sets(tmp_path)), "ROTATOR_KEYSTORE_PASSPHRASE": PASSPHRASE}
    vague = runner.invoke(main, ["rotate"], env=env)
    assert vague.exit_code == 2 and "several key sets (access, federation): give --key-set NAME" in vague.stderr
    unknown = runner.invoke(main, ["rotate", "--key-set", "nope"], env=env)
    assert unknown.exit_code == 2 and "no key set named 'nope'" in unknown.stderr
    assert runner.invoke(main, ["rotate", "--key-set", "federation"], env=env).exit_code == 0
    assert not (tmp_path / "access").exists()
    jwks = json.loads((tmp_path / "fed" / "pub" / "jwks.json").read_text())
    assert {k["alg"] for k in jwks["keys"]} == {"RS256"}
    token = runner.invoke(main, ["sign", "--sub", "s", "--aud", "a"], env={**env, "ROTATOR_KEY_SET": "federation"})
    assert token.exit_code == 0, token.output
    keys = {k["kid"]: public_key_from_jwk(k, "RS256") for k in jwks["keys"]}
    claims = verify_token(token.output.strip(), keys, now=time.time(), algorithms=("RS256",), audience="a")
    assert claims["iss"] == "https://federation.test"


def test_a_signer_opens_a_named_key_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rotator.issuer.open_signer opens the set the settings name, as rotator reads them."""
    config = two_sets(tmp_path)
    monkeypatch.setenv("ROTATOR_KEYSTORE_PASSPHRASE", PASSPHRASE)
    assert CliRunner().invoke(main, ["rotate", "--config", str(config), "--key-set", "access"]).exit_code == 0
    with open_signer("access", config_file=str(config), watch=False) as signer:
        token = signer.sign(subject="s", audience="a")
    header = json.loads(b64url_decode(token.split(".")[0]))
    assert header["alg"] == "ES256"
    with pytest.raises(ConfigError, match="give --key-set"):
        open_signer(config_file=str(config))
    assert select(load_key_sets({}, env={}, config_file=str(config)), "federation").algorithm == "RS256"


def test_one_daemon_runs_every_key_set_and_one_failing_never_stops_another(
    daemon_factory: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    """rotator run schedules every key set: each rotates and publishes its own JWKS, metrics
    carry a key_set label, /healthz reports each; when one set's publish target breaks,
    that set fails and is unhealthy while the other keeps rotating and stays healthy."""
    config = two_sets(tmp_path)
    d = daemon_factory("--config", str(config), locations=False)
    wait_for(lambda: d.notify.has("READY=1"), what="READY=1")
    for name, alg in (("access", "ES256"), ("fed", "RS256")):
        published = wait_for(lambda: (tmp_path / name / "pub" / "jwks.json").exists(), what=f"{name} JWKS")
        assert published and {k["alg"] for k in json.loads((tmp_path / name / "pub" / "jwks.json").read_text())["keys"]} == {alg}
    wait_for(lambda: all(metrics(d.port, s)["rotator_steps_total"] >= 2 for s in ("access", "federation")), what="steps in both")
    status, body = http_get(f"http://127.0.0.1:{d.port}/healthz")
    report = json.loads(body)
    assert status == 200 and set(report["key_sets"]) == {"access", "federation"}, report

    public = tmp_path / "fed" / "pub"
    shutil.rmtree(public)
    public.write_text("not a directory")  # the federation set's publish target breaks
    wait_for(lambda: metrics(d.port, "federation")["rotator_step_failures_total{stage=publish}"]
             + metrics(d.port, "federation")["rotator_step_failures_total{stage=confirm}"] >= 1, what="federation failing")
    before = metrics(d.port, "access")["rotator_steps_total"]
    wait_for(lambda: metrics(d.port, "access")["rotator_steps_total"] >= before + 2, what="access still rotating")
    assert '"key_set":"federation"' in d.log()  # log lines name their key set

    def sets_health() -> dict[str, str] | None:
        report = json.loads(http_get(f"http://127.0.0.1:{d.port}/healthz")[1])
        health = {name: body["status"] for name, body in report["key_sets"].items()}
        return health if health["federation"] == "unhealthy" else None

    assert wait_for(sets_health, what="federation unhealthy") == {"access": "ok", "federation": "unhealthy"}
    assert d.stop() == 0


def test_a_key_set_a_reload_adds_publishes_its_revocation_snapshot(
    daemon_factory: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    """A key set added by SIGHUP gets the revocation duties a set named at start gets: its
    daemon publishes the snapshot its settings name, on their interval."""
    import signal

    from .redis_server import RedisServer

    redis_srv = RedisServer(tmp_path / "redis").start()
    try:
        config = tmp_path / "rotator.toml"
        config.write_text(
            f'rotation_period = "4s"\nmax_age = "2s"\ntoken_lifetime = "2s"\nleeway = "1s"\nretirement_window = "6s"\n'
            f'private_key_grace = "2s"\nissuer = "https://issuer.test"\n'
            f'[key_sets.access]\nkeystore = "file://{tmp_path}/access/ks"\npublish = "file://{tmp_path}/access/pub"\n'
        )
        d = daemon_factory("--config", str(config), locations=False)
        wait_for(lambda: d.notify.has("READY=1"), what="READY=1")
        snapshot = tmp_path / "fed-revocations.json.gz"
        config.write_text(
            config.read_text()
            + f'[key_sets.federation]\nalgorithm = "RS256"\nkeystore = "file://{tmp_path}/fed/ks"\n'
            f'publish = "file://{tmp_path}/fed/pub"\nissuer = "https://federation.test"\n'
            f'revocation_url = "{redis_srv.url}"\nrevocation_prefix = "fed:"\nrevocation_snapshot = "{snapshot}"\n'
            f'revocation_snapshot_interval = "1s"\n'
        )
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: '"event":"daemon.key_set_started"' in d.log(), what="the added key set")
        wait_for(snapshot.exists, timeout=10, what="the added key set's revocation snapshot")
        assert d.stop() == 0
    finally:
        redis_srv.stop()
