"""Chaos soak: the whole system at once, under random failures, for minutes.

    .venv/bin/python bench/soak.py [--duration 600] [--report soak-report.json]

Runs against a real SeaweedFS (``weed mini``, on loopback, started and stopped here):
- three ``rotator run`` daemons on one key set with a short schedule (P=6s, M=2s, T=3s,
  L=1s, W=12s), each SIGKILLed and restarted at random;
- a fault proxy between every rotator process and the store that, at random, stalls
  connections, answers 500 or 503, or resets them;
- a signer process (``rotator.issuer.Signer``, through the proxy) signing continuously;
- verifier processes fetching the published JWKS over HTTP straight from SeaweedFS (as a
  CDN would) and verifying every token twice: on arrival and just before it expires;
- now and then an operator revokes a key that just retired (``rotator revoke``);
- token revocations through a real redis-server (append-only file): a revoker denies live
  tokens by jti and revokes subjects (logout everywhere) continuously, while Redis is
  SIGKILLed and restarted from its append-only file, SIGSTOPped and continued; every
  verifier follows it through a replica (``revocations=``, staleness bound 1.5 s).

A poller reads the state and the JWKS every 0.25 s. Checks, each reported with its count
of violations (all must be zero): no false rejection (a token rejected before exp that was
not revoked), no token accepted from a revoked key later than M + 1.5 s after the
revocation, at most one activation per period, no state that fails validation, no key
lost, the JWKS always holds the active key, the JWKS within ceil(W/P) + 2 keys. Figures:
steps, activations, kills, injected faults by kind, tokens signed and verified, the worst
publication delay. Two more for token revocations: no token accepted later than the fleet's
bound (the staleness bound, 1.5 s, plus 0.25 s) after its revocation was written, and none
rejected as revoked that no revocation written before covers. Exit 0 when every check holds.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

P, M, T, L, W = 6.0, 2.0, 3.0, 1.0, 12.0
POLICY_FLAGS = [
    "--rotation-period", "6s", "--max-age", "2s", "--token-lifetime", "3s", "--leeway", "1s",
    "--retirement-window", "12s", "--private-key-grace", "3s", "--audit-retention", "30s",
]
BUCKET = "soak"
ISS = "https://issuer.soak"
AUD = "soak"
PASSPHRASE = "soak passphrase, not a secret"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "soak", "AWS_SECRET_ACCESS_KEY": "soak", "AWS_DEFAULT_REGION": "us-east-1"}
REVOCATION_SLACK = M + 1.5  # a verifier's copy is at most M old, plus its fetch
SUBJECTS = [f"soak-user-{i}" for i in range(8)]
REDIS_PREFIX = "soak:"
REVOCATION_STALENESS = 1.5  # the verifiers' revocation_max_staleness
# A replica that accepts at t confirmed it was current at some c >= t - S; a write that
# returned at R was published before R; so past R + S every replica rejects or fails closed.
# The quarter second covers the ordering of the timestamps written by separate processes.
TOKEN_REVOCATION_BOUND = REVOCATION_STALENESS + 0.25


def _env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTATOR_", "AWS_"))}
    env.update(CREDENTIALS)
    env.update(
        PYTHONPATH=str(ROOT),
        ROTATOR_S3_ENDPOINT_URL=endpoint,
        ROTATOR_KEYSTORE=f"s3://{BUCKET}/keys",
        ROTATOR_PUBLISH=f"s3://{BUCKET}/public/jwks.json",
        ROTATOR_KEYSTORE_PASSPHRASE=PASSPHRASE,
        ROTATOR_ISSUER=ISS,
    )
    return env


# -- the signer process ----------------------------------------------------------------------------


def signer_main(endpoint: str, out: str) -> None:
    from rotator._aws import S3Options, s3_client
    from rotator.config import Policy
    from rotator.errors import RotatorError
    from rotator.issuer import Signer
    from rotator.keystore.s3 import S3Keystore
    from rotator.publish.s3 import S3Publisher
    from rotator.jose import decode_header, decode_segment, parse_claims

    os.environ.update(CREDENTIALS)
    options = S3Options(endpoint_url=endpoint, max_attempts=2)
    client = s3_client(options)
    policy = Policy(rotation_period=P, max_age=M, token_lifetime=T, leeway=L, retirement_window=W, private_key_grace=3, audit_retention=30)
    signer = Signer(
        S3Keystore(client, BUCKET, "keys", options),
        policy,
        passphrase=PASSPHRASE,
        issuer=ISS,
        publisher=S3Publisher(client, BUCKET, "public/jwks.json", max_age=M),
        refresh_interval=0.5,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    refusals = 0
    count = 0
    with open(out, "w") as fh:
        while not stop.is_set():
            count += 1
            try:
                token = signer.sign(subject=SUBJECTS[count % len(SUBJECTS)], audience=AUD)
            except RotatorError as e:
                refusals += 1
                fh.write(json.dumps({"refused": str(e)[:200], "at": time.time()}) + "\n")
                fh.flush()
                stop.wait(0.2)
                continue
            header, parts = decode_header(token, ("ES256",))
            claims = parse_claims(decode_segment(parts[1], "payload"))
            fh.write(json.dumps({"token": token, "kid": header["kid"], "jti": claims["jti"], "iat": claims["iat"],
                                 "exp": claims["exp"], "sub": claims["sub"], "at": time.time()}) + "\n")
            fh.flush()
            stop.wait(0.05)


# -- a verifier process ------------------------------------------------------------------------------


def verifier_main(jwks_url: str, tokens_path: str, out: str, redis_url: str) -> None:
    from rotator.revocation import RevocationStore
    from rotator.verifier import InvalidToken, KeysUnavailable, RevocationUnavailable, Verifier

    verifier = Verifier(
        jwks_url, issuer=ISS, audience=AUD, allow_http=True, leeway=L, min_max_age=0.5, max_max_age=M,
        unknown_kid_cooldown=1.0, timeout=2.0, connect_timeout=1.0,
        revocations=RevocationStore.from_url(redis_url, prefix=REDIS_PREFIX, token_lifetime=T, grace=L,
                                             connect_timeout=0.5, timeout=0.5),
        revocation_max_staleness=REVOCATION_STALENESS,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    due: list[tuple[float, str, str, str]] = []  # (when, jti, token, phase)
    offset = 0
    with open(out, "w") as results:

        def check(jti: str, token: str, phase: str) -> None:
            try:
                verifier.verify(token)
                outcome = "ok"
            except InvalidToken as e:
                outcome = e.code
            except KeysUnavailable:
                outcome = "keys_unavailable"
            except RevocationUnavailable:
                outcome = "revocation_unavailable"
            results.write(json.dumps({"jti": jti, "phase": phase, "outcome": outcome, "at": time.time()}) + "\n")

        while not stop.is_set():
            try:
                with open(tokens_path) as fh:
                    fh.seek(offset)
                    chunk = fh.read()
            except FileNotFoundError:
                chunk = ""
            complete = chunk[: chunk.rfind("\n") + 1]
            offset += len(complete.encode())
            for line in complete.splitlines():
                entry = json.loads(line)
                if "token" not in entry:
                    continue
                check(entry["jti"], entry["token"], "arrival")
                heapq.heappush(due, (entry["exp"] - 0.3, entry["jti"], entry["token"], "before-exp"))
            now = time.time()
            while due and due[0][0] <= now:
                _, jti, token, phase = heapq.heappop(due)
                check(jti, token, phase)
            results.flush()
            stop.wait(0.02)


# -- the controller --------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        from tests.faultproxy import FaultProxy
        from tests.redis_server import RedisServer
        from tests.seaweed import SeaweedServer, weed_version

        self.args = args
        self.tmp = tmp
        self.seed = args.seed if args.seed is not None else random.randrange(2**32)
        self.rng = random.Random(self.seed)
        self.weed = SeaweedServer(tmp / "weed").start()
        self.weed_version = weed_version()
        self.direct = self.weed.client()
        self.direct.create_bucket(Bucket=BUCKET)
        self.proxy = FaultProxy("127.0.0.1", int(self.weed.endpoint.rsplit(":", 1)[1]))
        # Token revocations: a real redis-server with its append-only file (fsync always), so
        # a SIGKILL and restart loses nothing; the verifiers follow it through replicas.
        self.redis = RedisServer(tmp / "redis", appendonly=True).start()
        self.redis_faults = {"kill_restart": 0, "stop_continue": 0}
        # jti -> (write sent, write returned); sub -> [(sent, returned, not_before)]; and the
        # writes that failed, which may or may not have landed (their tokens are left out).
        self.denials: dict[str, tuple[float, float]] = {}
        self.cutoffs: dict[str, list[tuple[float, float, int]]] = {}
        self.uncertain_jtis: set[str] = set()
        self.uncertain_subjects: dict[str, list[float]] = {}  # sub -> when failed writes were sent
        self.revocation_write_failures = 0
        self.proxied = f"http://127.0.0.1:{self.proxy.port}"
        self.jwks_url = f"{self.weed.endpoint}/{BUCKET}/public/jwks.json"
        self.stop = threading.Event()
        self.daemons: list[subprocess.Popen[bytes] | None] = [None] * args.daemons
        self.logs: list[Path] = [tmp / f"daemon{i}.log" for i in range(args.daemons)]
        self.lock = threading.Lock()
        self.faults = {"stall": 0, "http_500": 0, "http_503": 0, "drop": 0}
        self.kills = 0
        self.revocations: dict[str, float] = {}  # kid -> revoked_at (from the state)
        self.revoke_requests = 0
        self.revoked_by_operator: set[str] = set()  # kids whose `rotator revoke` exited 0
        self.revokers: list[threading.Thread] = []
        self.revocation_reasons: dict[str, int] = {}
        self.violations: dict[str, list[str]] = {
            "false_rejection": [], "accepted_after_revocation": [], "two_activations_in_a_period": [],
            "token_accepted_after_revocation": [], "token_rejected_not_revoked": [],
            "state_fails_validation": [], "key_lost": [], "jwks_lacks_active_key": [], "jwks_over_bound": [],
        }
        self.state_seen: dict[str, float] = {}
        self.jwks_seen: dict[str, float] = {}
        self.timeline: dict[str, list[str]] = {}  # kid -> its state changes and JWKS entries/exits, as seen
        self.in_jwks: set[str] = set()
        self.activations: dict[str, float] = {}
        self.publication: dict[str, float] = {}  # kid -> confirmed publication - creation, from the records
        self.states_read = 0
        self.max_jwks = 0
        self.last_retire_revoke = 0.0

    # processes
    def start_daemon(self, i: int) -> None:
        from tests.ports import free_port

        log = open(self.logs[i], "ab")
        self.daemons[i] = subprocess.Popen(
            [sys.executable, "-m", "rotator.cli", "run", *POLICY_FLAGS, "--metrics-port", str(free_port()),
             "--log-format", "json", "--stuck-after", "30s"],
            env=_env(self.proxied), stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()

    def spawn(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, __file__, role, *args], env=_env(self.proxied))

    # threads
    def chaos(self) -> None:
        while not self.stop.wait(self.rng.uniform(1.0, 4.0)):
            kind = self.rng.choice(["none", "none", "stall", "http_500", "http_503", "drop"])
            if kind == "none":
                continue
            length = self.rng.uniform(0.5, 3.0)
            with self.lock:
                self.faults[kind] += 1
            if kind == "stall":
                self.proxy.stall()
            elif kind == "drop":
                self.proxy.drop()
            else:
                self.proxy.error(int(kind[-3:]))
            self.stop.wait(length)
            self.proxy.resume()
            self.proxy.drop(False)
            self.proxy.error(None)

    def redis_chaos(self) -> None:
        """redis-server SIGKILLed and restarted from its append-only file, or SIGSTOPped and
        continued, every few seconds."""
        while not self.stop.wait(self.rng.uniform(4.0, 9.0)):
            if self.rng.random() < 0.5:
                self.redis.kill()
                self.stop.wait(self.rng.uniform(0.3, 2.0))
                self.redis.start()
                self.redis_faults["kill_restart"] += 1
            else:
                self.redis.pause()
                self.stop.wait(self.rng.uniform(0.3, 2.5))
                self.redis.resume()
                self.redis_faults["stop_continue"] += 1

    def revoker(self, tokens: Path) -> None:
        """Deny live tokens by jti, and now and then revoke a subject (logout everywhere),
        recording when each write was sent and when it returned."""
        from rotator.revocation import RevocationError, RevocationStore

        store = RevocationStore.from_url(self.redis.url, prefix=REDIS_PREFIX, token_lifetime=T, grace=L,
                                         connect_timeout=0.5, timeout=0.5, check=False)
        offset = 0
        live: list[dict[str, Any]] = []
        writes = 0
        while not self.stop.wait(self.rng.uniform(0.2, 0.6)):
            try:
                with open(tokens) as fh:
                    fh.seek(offset)
                    chunk = fh.read()
            except FileNotFoundError:
                continue
            complete = chunk[: chunk.rfind("\n") + 1]
            offset += len(complete.encode())
            live.extend(e for e in map(json.loads, complete.splitlines()) if "token" in e)
            now = time.time()
            # Tokens with most of their life ahead, so each is verified again (just before exp)
            # well past the fleet's bound after its revocation.
            live = [e for e in live if e["exp"] > now + T - 0.5][-200:]
            if not live:
                continue
            writes += 1
            sent = time.time()
            if writes % 8 == 0:
                sub = self.rng.choice(SUBJECTS)
                try:
                    cutoff = store.revoke_subject(sub)
                    self.cutoffs.setdefault(sub, []).append((sent, time.time(), cutoff.not_before))
                except RevocationError:
                    self.revocation_write_failures += 1
                    self.uncertain_subjects.setdefault(sub, []).append(sent)
            else:
                entry = self.rng.choice(live)
                try:
                    store.deny(entry["jti"], entry["exp"])
                    self.denials.setdefault(entry["jti"], (sent, time.time()))
                except RevocationError:
                    self.revocation_write_failures += 1
                    self.uncertain_jtis.add(entry["jti"])
        store.close()

    def killer(self) -> None:
        while not self.stop.wait(self.rng.uniform(3.0, 10.0)):
            i = self.rng.randrange(len(self.daemons))
            proc = self.daemons[i]
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
                self.kills += 1
            self.stop.wait(self.rng.uniform(0.5, 3.0))
            if not self.stop.is_set():
                self.start_daemon(i)

    def poller(self) -> None:
        from rotator.state import KeyState, parse_state

        previous: dict[str, KeyState] = {}
        bound = int(-(-W // P)) + 2
        while not self.stop.wait(0.25):
            now = time.time()
            try:
                raw = self.direct.get_object(Bucket=BUCKET, Key="keys/state.json")["Body"].read()
                jwks_raw = self.direct.get_object(Bucket=BUCKET, Key="public/jwks.json")["Body"].read()
            except Exception:  # noqa: BLE001 - not there yet
                continue
            try:
                state = parse_state(raw, "soak state")
            except Exception as e:  # noqa: BLE001 - a violation, reported
                self.violations["state_fails_validation"].append(str(e)[:200])
                continue
            self.states_read += 1
            kids = {k["kid"] for k in json.loads(jwks_raw)["keys"]}
            self.max_jwks = max(self.max_jwks, len(kids))
            if len(kids) > bound:
                self.violations["jwks_over_bound"].append(f"{len(kids)} keys > {bound} at {now:.1f}")
            current = {k.kid: k.state for k in state.keys}
            for kid, was in previous.items():
                if kid not in current and was in (KeyState.PENDING, KeyState.ACTIVE, KeyState.RETIRED):
                    self.violations["key_lost"].append(f"{kid} ({was.value}) vanished at {now:.1f}")
            for k in state.keys:
                if previous.get(k.kid) != k.state:
                    self.timeline.setdefault(k.kid, []).append(
                        f"{now:.2f} gen {state.generation} {k.state.value}{' (' + k.revocation + ')' if k.revocation else ''}")
            for kid in kids ^ self.in_jwks:
                self.timeline.setdefault(kid, []).append(f"{now:.2f} {'in' if kid in kids else 'out of'} the JWKS")
            self.in_jwks = kids
            for k in state.keys:
                self.state_seen.setdefault(k.kid, now)
                if k.activated_at is not None:
                    self.activations.setdefault(k.kid, k.activated_at)
                if k.published_at is not None:
                    self.publication.setdefault(k.kid, k.published_at - k.created_at)
            self.note_revocations(state)
            for kid in kids:
                self.jwks_seen.setdefault(kid, now)
            active = state.in_state(KeyState.ACTIVE)
            if active and active[0].kid not in kids:
                # The JWKS read came after the state read: it must hold the active key.
                self.violations["jwks_lacks_active_key"].append(f"{active[0].kid} at {now:.1f}")
            # An operator revokes a key that just retired, now and then.
            for k in state.keys:
                if (k.state == KeyState.RETIRED and previous.get(k.kid) == KeyState.ACTIVE
                        and now - self.last_retire_revoke > 4 * P and self.rng.random() < 0.5
                        and not self.stop.is_set()):
                    self.last_retire_revoke = now
                    revoker = threading.Thread(target=self.revoke, args=(k.kid,), daemon=True)
                    self.revokers.append(revoker)
                    revoker.start()
            previous = current

    def note_revocations(self, state: Any) -> None:
        """Record each revoked key with its moment, from the state's own records."""
        for k in state.keys:
            if k.revoked_at is not None:
                if k.kid not in self.revocations:
                    reason = k.revocation or "manual"
                    self.revocation_reasons[reason] = self.revocation_reasons.get(reason, 0) + 1
                self.revocations.setdefault(k.kid, k.revoked_at)

    def revoke(self, kid: str) -> None:
        self.revoke_requests += 1
        for _ in range(5):
            done = subprocess.run([sys.executable, "-m", "rotator.cli", "revoke", kid, *POLICY_FLAGS],
                                  env=_env(self.weed.endpoint), capture_output=True, text=True, timeout=60)
            if done.returncode == 0:
                self.revoked_by_operator.add(kid)
                return
            time.sleep(0.5)

    # the run
    def run(self) -> dict[str, Any]:
        from rotator.state import parse_state

        started = time.time()
        self.start_daemon(0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.direct.head_object(Bucket=BUCKET, Key="public/jwks.json")
                break
            except Exception:  # noqa: BLE001 - not yet
                time.sleep(0.2)
        else:
            raise RuntimeError("the first daemon did not bootstrap the key set: " + self.logs[0].read_text()[-2000:])
        for i in range(1, len(self.daemons)):
            self.start_daemon(i)
        tokens = self.tmp / "tokens.jsonl"
        signer = self.spawn("signer", self.proxied, str(tokens))
        verifiers = [self.spawn("verifier", self.jwks_url, str(tokens), str(self.tmp / f"results{v}.jsonl"), self.redis.url)
                     for v in range(self.args.verifiers)]
        threads = [threading.Thread(target=f, daemon=True) for f in (self.chaos, self.killer, self.poller, self.redis_chaos)]
        threads.append(threading.Thread(target=self.revoker, args=(tokens,), daemon=True))
        for t in threads:
            t.start()
        time.sleep(self.args.duration)
        self.stop.set()
        for t in threads:
            t.join(timeout=30)
        # A revocation requested in the poller's last round lands after the poller stopped;
        # wait for it and record it, or its tokens' rejections would look false.
        for t in self.revokers:
            t.join(timeout=330)
        self.note_revocations(parse_state(
            self.direct.get_object(Bucket=BUCKET, Key="keys/state.json")["Body"].read(), "soak state"))
        self.proxy.resume()
        self.proxy.drop(False)
        self.proxy.error(None)
        signer.terminate()
        signer.wait(timeout=30)
        time.sleep(T + 1)  # let the verifiers do their before-exp checks of the last tokens
        for v in verifiers:
            v.terminate()
            v.wait(timeout=30)
        for proc in self.daemons:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        self.proxy.close()
        self.weed.stop()
        self.redis.stop()
        return self.report(tokens, started)

    def _implicated(self) -> list[str]:
        """The keys named in violations, for their timelines in the report."""
        kids: set[str] = set()
        for found in self.violations.values():
            for text in found:
                kids.update(word for word in text.split() if word in self.timeline)
        return sorted(kids)

    def token_revoked(self, token: dict[str, Any]) -> tuple[float, float] | None:
        """(sent, returned) of the earliest revocation write that covers ``token``: a denial of
        its jti, or a cutoff of its subject after its iat. None when none does."""
        covering = []
        if token["jti"] in self.denials:
            covering.append(self.denials[token["jti"]])
        for sent, returned, not_before in self.cutoffs.get(token["sub"], []):
            if token["iat"] < not_before:
                covering.append((sent, returned))
        return min(covering) if covering else None

    def token_revocation_violation(self, token: dict[str, Any], r: dict[str, Any]) -> bool:
        """Judge one verification against the token revocations written. True when it is
        settled here (a violation recorded, or a token a failed write may have touched)."""
        # A write that failed (a timeout while redis-server was stopped) may still land when it
        # continues: the tokens it would cover get no verdict either way.
        if token["jti"] in self.uncertain_jtis or any(
            token["iat"] < sent + 2 for sent in self.uncertain_subjects.get(token["sub"], [])
        ):
            return r["outcome"] in ("revoked", "ok")
        revoked = self.token_revoked(token)
        if r["outcome"] == "ok":
            if revoked is not None and r["at"] > revoked[1] + TOKEN_REVOCATION_BOUND:
                self.violations["token_accepted_after_revocation"].append(
                    f"{r['jti']} ({token['sub']}) accepted {r['at'] - revoked[1]:.2f}s after its revocation returned")
            return False
        if r["outcome"] == "revoked":
            if revoked is None or r["at"] < revoked[0]:
                self.violations["token_rejected_not_revoked"].append(
                    f"{r['jti']} ({token['sub']}, iat {token['iat']}) rejected as revoked at {r['at']:.2f}"
                    + (f", before its revocation was sent at {revoked[0]:.2f}" if revoked else ", never revoked"))
            return True
        return False

    def report(self, tokens_path: Path, started: float) -> dict[str, Any]:
        signed: dict[str, dict[str, Any]] = {}
        refusals = 0
        for line in tokens_path.read_text().splitlines():
            entry = json.loads(line)
            if "token" in entry:
                signed[entry["jti"]] = entry
            else:
                refusals += 1
        checks = 0
        unverified = set(signed)
        outcomes: dict[str, int] = {}
        for v in range(self.args.verifiers):
            for line in (self.tmp / f"results{v}.jsonl").read_text().splitlines():
                r = json.loads(line)
                token = signed[r["jti"]]
                unverified.discard(r["jti"])
                checks += 1
                outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
                if self.token_revocation_violation(token, r):
                    continue
                revoked_at = self.revocations.get(token["kid"])
                if r["outcome"] in ("revoked", "revocation_unavailable"):
                    continue  # token revocation's own outcomes, judged above (503 is fail-closed by design)
                if r["outcome"] == "ok":
                    if revoked_at is not None and r["at"] > revoked_at + REVOCATION_SLACK:
                        self.violations["accepted_after_revocation"].append(
                            f"{r['jti']} of {token['kid']} accepted {r['at'] - revoked_at:.1f}s after its revocation")
                elif revoked_at is None or r["at"] < revoked_at:
                    if r["at"] < token["exp"]:
                        self.violations["false_rejection"].append(
                            f"{r['jti']} of {token['kid']} rejected ({r['outcome']}) {r['phase']}, {token['exp'] - r['at']:.1f}s before exp")
        activated = sorted(self.activations.values())
        for a, b in zip(activated, activated[1:]):
            if b - a < P * 0.95:
                self.violations["two_activations_in_a_period"].append(f"activations {b - a:.2f}s apart at {b:.1f}")
        delays = [self.jwks_seen[k] - self.state_seen[k] for k in self.state_seen if k in self.jwks_seen]
        steps_ok = sum(log.read_text(errors="replace").count('"daemon.step_succeeded"') for log in self.logs)
        steps_failed = sum(log.read_text(errors="replace").count('"daemon.step_failed"') for log in self.logs)
        revoked_tokens = sum(1 for t in signed.values() if t["kid"] in self.revocations)
        return {
            "duration_seconds": round(time.time() - started, 1),
            "seaweedfs_version": self.weed_version,
            "seed": self.seed,  # chooses the faults and kills; their timing still varies
            "policy": {"P": P, "M": M, "T": T, "L": L, "W": W},
            "daemons": len(self.daemons),
            "verifiers": self.args.verifiers,
            "figures": {
                "steps_succeeded": steps_ok,
                "steps_failed": steps_failed,
                "activations": len(activated),
                "kills": self.kills,
                "faults": dict(self.faults),
                "revocations": dict(self.revocation_reasons),
                "revocations_requested": self.revoke_requests,
                # Revocations the CLI reported done that the state never showed: must be 0.
                "revocations_unrecorded": len(self.revoked_by_operator - set(self.revocations)),
                "token_denials_written": len(self.denials),
                "subject_cutoffs_written": sum(len(c) for c in self.cutoffs.values()),
                "revocation_writes_failed": self.revocation_write_failures,
                "redis_faults": dict(self.redis_faults),
                "outcomes": outcomes,
                "tokens_signed": len(signed),
                "tokens_of_revoked_keys": revoked_tokens,
                "signer_refusals": refusals,
                "verifications": checks,
                "tokens_never_verified": len(unverified),
                "states_read": self.states_read,
                "max_jwks_keys": self.max_jwks,
                # Key created -> its publication confirmed by a read-back, from the state's own records.
                "worst_publication_delay_seconds": round(max(self.publication.values(), default=0.0), 2),
                "median_publication_delay_seconds": round(sorted(self.publication.values())[len(self.publication) // 2], 2)
                if self.publication else 0.0,
                # In the state -> in the JWKS, as the poller saw them (resolution 0.25 s).
                "worst_state_to_jwks_seconds": round(max(delays, default=0.0), 2),
            },
            "violations": {name: len(found) for name, found in self.violations.items()},
            "examples": {name: found[:5] for name, found in self.violations.items() if found},
            "timelines": {kid: self.timeline.get(kid, []) for kid in self._implicated()},
        }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "signer":
        signer_main(*sys.argv[2:4])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "verifier":
        verifier_main(*sys.argv[2:6])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of chaos")
    parser.add_argument("--daemons", type=int, default=3)
    parser.add_argument("--verifiers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--report", default="soak-report.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rotator-soak-") as tmp:
        report = Soak(args, Path(tmp)).run()
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    ok = not any(report["violations"].values()) and report["figures"]["verifications"] > 0
    print(("PASS" if ok else "FAIL") + f": every invariant held over {report['duration_seconds']} s" if ok else
          "FAIL: " + ", ".join(f"{k} {v}" for k, v in report["violations"].items() if v))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
