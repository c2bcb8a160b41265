"""The chaos soak's short form (bench/soak.py; `make soak` runs the 10-minute one): three
daemons SIGKILLed at random, a fault proxy stalling, failing and dropping the store's
traffic, a signer and two verifier processes, against a real SeaweedFS; token revocations
written through a real redis-server that is SIGKILLed and restarted from its append-only
file, and SIGSTOPped. Every invariant must hold, and the run must have exercised what it
claims to."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_soak_short_form(tmp_path: Path) -> None:
    """The soak's short form runs with faults and both invariants hold."""
    report_path = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, "bench/soak.py", "--duration", "75", "--report", str(report_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    report = json.loads(report_path.read_text())
    print(json.dumps(report["figures"]))
    assert report["violations"] == {
        "false_rejection": 0, "accepted_after_revocation": 0, "two_activations_in_a_period": 0,
        "token_accepted_after_revocation": 0, "token_rejected_not_revoked": 0,
        "state_fails_validation": 0, "key_lost": 0, "jwks_lacks_active_key": 0, "jwks_over_bound": 0,
    }, json.dumps({"seed": report["seed"], "examples": report.get("examples"), "timelines": report.get("timelines")})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    figures = report["figures"]
    assert figures["activations"] >= 8 and figures["kills"] >= 3
    assert sum(figures["faults"].values()) >= 5
    assert figures["tokens_signed"] > 500 and figures["verifications"] >= 2 * figures["tokens_signed"]
    assert figures["tokens_never_verified"] == 0
    assert figures["revocations_unrecorded"] == 0
    assert figures["states_read"] > 100
    # Token revocations were written, covered tokens were rejected, and Redis was faulted.
    assert figures["token_denials_written"] >= 20 and figures["subject_cutoffs_written"] >= 3
    assert figures["outcomes"].get("revoked", 0) >= 20
    assert sum(figures["redis_faults"].values()) >= 3
