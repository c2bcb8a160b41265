"""Several key sets publishing into one JWKS document: the deterministic union, each set's
own marker and confirmation, the guard over the whole document, self-repair when the
document loses a set's keys, concurrent writers on files and on S3, and the daemon."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest
from moto import mock_aws

from rotator.config import Policy
from rotator.errors import PublicationGuardError
from rotator.issuer import Signer
from rotator.jose import verify_token
from rotator.keys import public_key_from_jwk
from rotator.keysets import load_key_sets
from rotator.keystore import FileKeystore
from rotator.publish import open_publisher
from rotator.publish.shared import union_document
from rotator.reconcile import Rotator

from .daemon_harness import RunningDaemon, http_get, metrics
from .helpers import PASSPHRASE, TEST_SCRYPT_N, Clock, wait_for

SHORT = Policy(rotation_period=4, max_age=2, token_lifetime=2, leeway=1, retirement_window=6, private_key_grace=2)


def shared_rotators(tmp_path: Path, clock: Clock, publish: str, **s3: Any) -> dict[str, Rotator]:
    """An ES256 set and an RS256 set publishing into ``publish``."""
    out = {}
    for name, alg in (("access", "ES256"), ("federation", "RS256")):
        out[name] = Rotator(
            FileKeystore(tmp_path / name), open_publisher(publish, key_set=name, max_age=SHORT.max_age, **s3), SHORT,
            passphrase=PASSPHRASE, clock=clock, scrypt_n=TEST_SCRYPT_N, storage_clock=False, algorithm=alg,
        )
    return out


def served(path: Path) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = json.loads(path.read_text())["keys"]
    return keys


def test_key_sets_publish_the_union_and_confirm_their_own_keys(tmp_path: Path, clock: Clock) -> None:
    """Two key sets publishing into one file: the document is the union (access's keys, then
    federation's, each with its alg), each set confirms and activates its own keys, and the
    document's bytes depend only on the parts."""
    doc = tmp_path / "public" / "jwks.json"
    rotators = shared_rotators(tmp_path, clock, f"file://{doc}")
    states = {name: r.step().state for name, r in rotators.items()}
    assert all(s.active is not None and s.published_digest for s in states.values())
    keys = served(doc)
    assert [k["alg"] for k in keys] == ["ES256", "ES256", "RS256", "RS256"]
    assert [k["kid"] for k in keys] == [k.kid for n in ("access", "federation") for k in (states[n].active, states[n].pending[0])]  # type: ignore[union-attr]
    before = doc.read_bytes()
    rotators["federation"].step()  # nothing changed: the same bytes
    assert doc.read_bytes() == before
    for _ in range(3):  # rotations of both, each confirmed against the shared document
        clock.advance(SHORT.rotation_period)
        for r in rotators.values():
            state = r.step().state
            assert {k.kid for k in state.keys if k.published} <= {k["kid"] for k in served(doc)}
    signer = Signer(rotators["federation"].keystore, SHORT, passphrase=PASSPHRASE, clock=clock, watch=False, storage_clock=False)
    token = signer.sign(subject="s", audience="a")
    public = {k["kid"]: public_key_from_jwk(k, k["alg"]) for k in served(doc)}
    assert verify_token(token, public, now=clock.now, audience="a", algorithms=("RS256",))["sub"] == "s"


def test_a_set_whose_keys_left_the_document_confirms_nothing_and_repairs_it(tmp_path: Path, clock: Clock) -> None:
    """When the served document loses one set's keys (overwritten by hand, a stale copy), that
    set's read-back no longer matches: its next step republishes the union, and a pending
    key is never confirmed from a document that lacks it."""
    doc = tmp_path / "public" / "jwks.json"
    rotators = shared_rotators(tmp_path, clock, f"file://{doc}")
    for r in rotators.values():
        r.step()
    access_kids = {k["kid"] for k in served(doc) if k["alg"] == "ES256"}
    doc.write_text(json.dumps({"keys": [k for k in served(doc) if k["alg"] == "RS256"]}))
    assert rotators["access"].publisher.read_back() != rotators["access"].publisher._part.read_back()  # type: ignore[attr-defined]
    rotators["access"].step()
    assert access_kids <= {k["kid"] for k in served(doc)}


def test_the_union_refuses_private_members_and_a_kid_two_sets_share() -> None:
    """The guard over the document: a part with a private member, or one kid in two parts,
    is refused and nothing is written."""
    part = json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "x", "kid": "k", "alg": "EdDSA", "use": "sig"}]}).encode()
    leaky = json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "x", "d": "secret", "kid": "j", "alg": "EdDSA"}]}).encode()
    with pytest.raises(PublicationGuardError, match="private members"):
        union_document([("a", part), ("b", leaky)])
    with pytest.raises(PublicationGuardError, match="both publish kid k"):
        union_document([("a", part), ("b", part)])
    assert union_document([("b", part), ("a", b'{"keys":[]}')]) == union_document([("a", b'{"keys":[]}'), ("b", part)])


def _race(rotators: dict[str, Rotator], clock_for: dict[str, Clock], rounds: int, doc_keys: Callable[[], set[str]]) -> int:
    """Each set's rotator forces rotations on its own thread; after each of its steps its
    published keys must all be in the served document. Returns the checks made."""
    errors: list[BaseException] = []
    checks = [0]
    lock = threading.Lock()

    def work(name: str) -> None:
        try:
            for _ in range(rounds):
                clock_for[name].advance(SHORT.rotation_period)
                state = rotators[name].step(force=True).state
                mine = {k.kid for k in state.keys if k.published}
                missing = mine - doc_keys()
                assert not missing, (name, missing)
                with lock:
                    checks[0] += 1
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in rotators]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return checks[0]


def test_concurrent_sets_never_drop_each_others_keys_on_files(tmp_path: Path) -> None:
    """Two key sets rotating at once into one file never drop each other's keys: after every
    step, every key a set has confirmed is in the served document."""
    doc = tmp_path / "public" / "jwks.json"
    clocks = {"access": Clock(), "federation": Clock()}
    rotators = {}
    for name, r in shared_rotators(tmp_path, Clock(), f"file://{doc}").items():
        r.clock = clocks[name]
        rotators[name] = r
    assert _race(rotators, clocks, 12, lambda: {k["kid"] for k in served(doc)}) == 24


def test_concurrent_sets_never_drop_each_others_keys_on_s3(tmp_path: Path) -> None:
    """The same on S3 (moto): the document is replaced by conditional puts of the version
    read, so concurrent rebuilds retry instead of losing a part."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="shared-jwks")
        clocks = {"access": Clock(), "federation": Clock()}
        rotators = {}
        for name, r in shared_rotators(tmp_path, Clock(), "s3://shared-jwks/public/jwks.json").items():
            r.clock = clocks[name]
            rotators[name] = r

        def doc_keys() -> set[str]:
            body = client.get_object(Bucket="shared-jwks", Key="public/jwks.json")["Body"].read()
            return {k["kid"] for k in json.loads(body)["keys"]}

        assert _race(rotators, clocks, 8, doc_keys) == 16
        algs = {k["alg"] for k in json.loads(client.get_object(Bucket="shared-jwks", Key="public/jwks.json")["Body"].read())["keys"]}
        assert algs == {"ES256", "RS256"}


def test_key_sets_sharing_a_document_must_agree_on_its_readers(tmp_path: Path) -> None:
    """Sets sharing a document are marked shared; they must have one max_age and public_url."""
    config = tmp_path / "rotator.toml"
    config.write_text(
        f'[key_sets.a]\nkeystore = "file://{tmp_path}/a"\npublish = "file://{tmp_path}/pub"\n'
        f'[key_sets.b]\nalgorithm = "EdDSA"\nkeystore = "file://{tmp_path}/b"\npublish = "file://{tmp_path}/pub/"\n'
    )
    sets = load_key_sets({}, env={}, config_file=str(config))
    assert sets["a"].shared_publish and sets["b"].shared_publish
    config.write_text(config.read_text() + 'max_age = "60s"\n')
    with pytest.raises(Exception, match="different max_age or public_url"):
        load_key_sets({}, env={}, config_file=str(config))


def test_one_daemon_publishes_several_sets_into_one_jwks_with_discovery(
    daemon_factory: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    """rotator run with an ES256 and an RS256 set sharing one publish location serves one JWKS
    holding both sets' keys; the discovery document lists both algorithms."""
    config = tmp_path / "rotator.toml"
    config.write_text(
        'rotation_period = "4s"\nmax_age = "2s"\ntoken_lifetime = "2s"\nleeway = "1s"\nretirement_window = "6s"\n'
        'private_key_grace = "2s"\nissuer = "https://issuer.test"\ndiscovery = true\n'
        f'public_url = "file://{tmp_path}/pub/jwks.json"\npublish = "file://{tmp_path}/pub"\n'
        f'[key_sets.access]\nkeystore = "file://{tmp_path}/access"\n'
        f'[key_sets.federation]\nalgorithm = "RS256"\nkeystore = "file://{tmp_path}/federation"\n'
    )
    d = daemon_factory("--config", str(config), locations=False)
    wait_for(lambda: d.notify.has("READY=1"), what="READY=1")
    doc = tmp_path / "pub" / "jwks.json"
    wait_for(lambda: doc.exists() and {k["alg"] for k in served(doc)} == {"ES256", "RS256"}, what="both sets in one JWKS")
    wait_for(lambda: all(metrics(d.port, s)["rotator_steps_total"] >= 3 for s in ("access", "federation")), what="steps")
    discovery = json.loads((tmp_path / "pub" / "openid-configuration").read_text())
    assert discovery["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]
    assert http_get(f"http://127.0.0.1:{d.port}/healthz")[0] == 200
    assert d.stop() == 0


# -- property: any interleaving of two sets' steps, crashes and races --------------------------

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule  # noqa: E402

from rotator.keys import PRIVATE_MEMBERS  # noqa: E402
from rotator.reconcile import STAGES  # noqa: E402
from rotator.state import KeyState  # noqa: E402

from .harness import Crash  # noqa: E402

PROPERTY = Policy()
SETS = {"access": "ES256", "edge": "EdDSA"}


class SharedJwksMachine(RuleBasedStateMachine):
    """Two key sets (ES256 and EdDSA) sharing one JWKS on files, driven by Hypothesis through
    ticks, delays, crashes at every stage, a second host of a set racing it, and the other
    set stepping in the middle of a step."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.tmp = Path(tempfile.mkdtemp(prefix="rotator-shared-prop-"))
        self.clock = Clock()
        self.doc = self.tmp / "pub" / "jwks.json"

    def rotator(self, name: str) -> Rotator:
        return Rotator(
            FileKeystore(self.tmp / name), open_publisher(f"file://{self.doc}", key_set=name), PROPERTY,
            passphrase=PASSPHRASE, clock=self.clock, scrypt_n=TEST_SCRYPT_N, storage_clock=False, algorithm=SETS[name],
        )

    def teardown(self) -> None:
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize()
    def bootstrap(self) -> None:
        for name in SETS:
            self.rotator(name).step()

    @rule(delay=st.sampled_from([0.0, 1.0, PROPERTY.max_age, PROPERTY.rotation_period, PROPERTY.retirement_window]))
    def time_passes(self, delay: float) -> None:
        self.clock.advance(delay)

    @rule(name=st.sampled_from(sorted(SETS)), force=st.booleans())
    def step(self, name: str, force: bool) -> None:
        self.rotator(name).step(force=force)

    @rule(name=st.sampled_from(sorted(SETS)), stage=st.sampled_from(STAGES))
    def crash_during_step(self, name: str, stage: str) -> None:
        def checkpoint(at: str) -> None:
            if at == stage:
                raise Crash(at)

        try:
            self.rotator(name).step(checkpoint=checkpoint, force=True)
        except Crash:
            pass

    @rule(name=st.sampled_from(sorted(SETS)), stage=st.sampled_from(STAGES[:-1]), same_set=st.booleans())
    def interrupted_step(self, name: str, stage: str, same_set: bool) -> None:
        """While ``name`` is at ``stage``, a second host of the same set, or the other set,
        runs a whole step; both finish (a conflict is retried from a fresh read)."""
        other = name if same_set else next(n for n in SETS if n != name)
        fired = False

        def checkpoint(at: str) -> None:
            nonlocal fired
            if at == stage and not fired:
                fired = True
                self.rotator(other).step(force=True)

        self.rotator(name).step(checkpoint=checkpoint, force=True)

    @invariant()
    def every_confirmed_key_of_every_set_is_served(self) -> None:
        if not self.doc.exists():
            return
        served = json.loads(self.doc.read_text())["keys"]
        kids = [k["kid"] for k in served]
        assert len(kids) == len(set(kids)), "a kid twice in the shared document"
        assert not any(PRIVATE_MEMBERS & set(k) for k in served)
        for name in SETS:
            state = FileKeystore(self.tmp / name).load()
            if state is None:
                continue
            live = {k.kid for k in state.keys if k.published_at is not None and k.state in (KeyState.PENDING, KeyState.ACTIVE, KeyState.RETIRED)}
            assert live <= set(kids), (name, live - set(kids))
            assert {k["alg"] for k in served if k["kid"] in live} <= {SETS[name]}


TestSharedJwksMachine = SharedJwksMachine.TestCase
TestSharedJwksMachine.settings = settings(
    max_examples=25, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
