"""The shipped alert rules (helm/rotator/files/rotator-alerts.yml) under Prometheus's own rule engine:
`promtool check rules`, then `promtool test rules` with, for every alert, series that make it
fire (with its labels and annotations) and series of a healthy deployment that keep it quiet.
Every series a rule names is one rotator exports."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.config import Policy
from rotator.metrics import Metrics
from rotator.state import State

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "helm" / "rotator" / "files" / "rotator-alerts.yml"  # the chart ships it as a PrometheusRule
TARGET = 'instance="rotator-1:9464",job="rotator"'
LABELS = {"instance": "rotator-1:9464", "job": "rotator"}

# The default policy as the daemon exports it: P = 900 s, M = 300 s.
POLICY = [
    (f'rotator_policy_seconds{{{TARGET},setting="rotation_period"}}', "900x120"),
    (f'rotator_policy_seconds{{{TARGET},setting="max_age"}}', "300x120"),
]
# (alert, series that make it fire, when to look, extra labels on the alert, healthy series)
SCENARIOS: list[tuple[str, list[tuple[str, str]], str, dict[str, str], list[tuple[str, str]]]] = [
    # Age grows a minute a minute from 0: past 1.5 P + M = 1650 s at 27.5 min, firing 5 min later.
    ("RotatorRotationOverdue", POLICY + [(f"rotator_active_key_age_seconds{{{TARGET}}}", "0+60x120")], "40m", {},
     POLICY + [(f"rotator_active_key_age_seconds{{{TARGET}}}", "0+60x14 0+60x14 0+60x14 0+60x14 0+60x14 0+60x14")]),
    # Last confirmed at t = 0 (Unix time 0 in promtool's clock): stale after 1650 s.
    ("RotatorPublicationUnconfirmed", POLICY + [(f"rotator_publication_confirmed_timestamp_seconds{{{TARGET}}}", "0x120")], "40m", {},
     POLICY + [(f"rotator_publication_confirmed_timestamp_seconds{{{TARGET}}}", "0+60x120")]),
    ("RotatorStepsFailing",
     [(f'rotator_step_failures_total{{{TARGET},stage="publish"}}', "0+1x120"), (f"rotator_steps_total{{{TARGET}}}", "5x120")],
     "30m", {"stage": "publish"},
     [(f'rotator_step_failures_total{{{TARGET},stage="publish"}}', "0+1x120"), (f"rotator_steps_total{{{TARGET}}}", "5+1x120")]),
    ("RotatorNoRecentSuccess", POLICY + [(f"rotator_last_success_timestamp_seconds{{{TARGET}}}", "0x120")], "40m", {},
     POLICY + [(f"rotator_last_success_timestamp_seconds{{{TARGET}}}", "0+60x120")]),
    ("RotatorClockSkew", [(f"rotator_clock_skew_seconds{{{TARGET}}}", "0 0 3600x20")], "10m", {},
     [(f"rotator_clock_skew_seconds{{{TARGET}}}", "0x20")]),
    ("RotatorUnhealthy", [(f"rotator_healthy{{{TARGET}}}", "1 0x30")], "20m", {},
     [(f"rotator_healthy{{{TARGET}}}", "1 0 0 0 1x30")]),
    ("RotatorPrivateKeysPastGrace", [(f"rotator_private_keys_past_grace{{{TARGET}}}", "1x30")], "20m", {},
     [(f"rotator_private_keys_past_grace{{{TARGET}}}", "0x30")]),
    ("RotatorJwksOverBudget",
     [(f"rotator_jwks_keys{{{TARGET}}}", "200x60"), (f"rotator_jwks_max_keys{{{TARGET}}}", "98x60")], "40m", {},
     [(f"rotator_jwks_keys{{{TARGET}}}", "98x60"), (f"rotator_jwks_max_keys{{{TARGET}}}", "98x60")]),
    ("RotatorJwksNearVerifierLimits",
     [(f"rotator_jwks_keys{{{TARGET}}}", "210x60"), (f"rotator_jwks_bytes{{{TARGET}}}", "40000x60")], "40m", {},
     [(f"rotator_jwks_keys{{{TARGET}}}", "98x60"), (f"rotator_jwks_bytes{{{TARGET}}}", "19000x60")]),
    ("RotatorRevocationReplicaStale", [(f"rotator_revocation_replica_age_seconds{{{TARGET}}}", "1 1 45x10")], "5m", {},
     [(f"rotator_revocation_replica_age_seconds{{{TARGET}}}", "1x10")]),
    ("RotatorRevocationDatasetLost", [(f"rotator_revocation_dataset_losses{{{TARGET}}}", "0 0 1x10")], "3m", {},
     [(f"rotator_revocation_dataset_losses{{{TARGET}}}", "0x10")]),
    ("RotatorRevocationSnapshotStale",
     [(f"rotator_revocation_snapshot_published_timestamp_seconds{{{TARGET}}}", "60x30"),
      (f"rotator_revocation_snapshot_interval_seconds{{{TARGET}}}", "20x30")], "15m", {},
     [(f"rotator_revocation_snapshot_published_timestamp_seconds{{{TARGET}}}", "0+60x30"),
      (f"rotator_revocation_snapshot_interval_seconds{{{TARGET}}}", "20x30")]),
    ("RotatorRevocationMalformedRecords", [(f"rotator_revocation_malformed_records{{{TARGET}}}", "2x30")], "15m", {},
     [(f"rotator_revocation_malformed_records{{{TARGET}}}", "0x30")]),
]


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool (Debian package prometheus) is missing: scripts/test-deps.sh installs it"
    return path


def rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for group in doc["groups"] for r in group["rules"]}


def test_the_rules_file_is_valid() -> None:
    """promtool accepts the shipped alert rules."""
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_every_alert_has_a_test_and_a_runbook() -> None:
    """Each alert: a scenario below, a severity, a summary, and a description naming a
    README section that exists."""
    readme = (ROOT / "README.md").read_text()
    assert sorted(rules()) == sorted(s[0] for s in SCENARIOS)
    for name, rule in rules().items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"], name
        sections = re.findall(r'README\.md, "([^"]+)"', rule["annotations"]["description"])
        assert sections, f"{name} names no README section"
        for section in sections:
            assert re.search(rf"^#+ {re.escape(section)}$", readme, re.MULTILINE), f"{name}: no README section {section!r}"


def test_every_series_a_rule_names_is_exported() -> None:
    """The names the rules use against what rotator's metrics expose (counters with _total)."""
    metrics = Metrics()
    metrics.observe(State(encryption={}), Policy())
    exported = {m.name + ("_total" if m.type == "counter" else "") for m in metrics.registry.collect()}
    used = set()
    for rule in rules().values():
        used |= set(re.findall(r"\brotator_[a-z_]+", rule["expr"]))
    assert used and used <= exported, used - exported


@pytest.mark.parametrize("name", [s[0] for s in SCENARIOS])
def test_alert_fires_when_it_should_and_stays_quiet_when_healthy(name: str, tmp_path: Path) -> None:
    """Each alert fires on its failure and stays quiet on a healthy series (promtool unit
    tests)."""
    alert, firing, at, extra, healthy = next(s for s in SCENARIOS if s[0] == name)
    rule = rules()[alert]
    expected = {
        "exp_labels": {**LABELS, **extra, **rule["labels"]},
        "exp_annotations": rule["annotations"],
    }
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in firing],
                "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": [expected]}],
            },
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in healthy],
                "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": []}],
            },
        ],
    }
    path = tmp_path / "alert-test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_real_prometheus_fires_the_overdue_alert_on_a_stuck_daemon(tmp_path: Path) -> None:
    """A real Prometheus server (Debian's) scrapes a real `rotator run` on loopback every
    second and evaluates the shipped rules, their `for:` waits set to 0 (the expressions
    unchanged: the policy here is P = 4 s, M = 2 s, so "overdue" is 8 s). Healthy, nothing
    fires; then the publish directory is replaced by a file, rotation stops, and
    RotatorRotationOverdue reaches firing in Prometheus's own API."""
    import json
    import urllib.request

    from .daemon_harness import RunningDaemon
    from .helpers import wait_for
    from .ports import free_port

    binary = shutil.which("prometheus")
    assert binary, "prometheus (Debian package prometheus) is missing: scripts/test-deps.sh installs it"
    daemon = RunningDaemon(tmp_path)
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(doc))
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "scrape_configs": [{"job_name": "rotator", "static_configs": [{"targets": [f"127.0.0.1:{daemon.port}"]}]}],
    }))
    server = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"),
    )

    def alerts() -> dict[str, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=2) as r:
                return {a["labels"]["alertname"]: a["state"] for a in json.load(r)["data"]["alerts"]}
        except OSError:
            return {}

    def scraped() -> bool:
        try:
            query = f"http://127.0.0.1:{port}/api/v1/query?query=rotator_active_key_age_seconds"
            with urllib.request.urlopen(query, timeout=2) as r:
                return bool(json.load(r)["data"]["result"])
        except OSError:
            return False

    try:
        wait_for(lambda: daemon.notify.has("READY=1"), what="the daemon ready")
        wait_for(scraped, timeout=30, what="Prometheus scraping the daemon")
        time.sleep(3)  # several evaluations of a healthy daemon
        assert "RotatorRotationOverdue" not in alerts(), alerts()
        shutil.rmtree(daemon.public)
        daemon.public.write_text("not a directory")  # every publication now fails
        firing = wait_for(lambda: alerts().get("RotatorRotationOverdue") == "firing", timeout=60,
                          what="RotatorRotationOverdue firing in Prometheus")
        assert firing
        print(f"\n[alerts] firing: {sorted(k for k, v in alerts().items() if v == 'firing')}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        daemon.proc.kill()
        daemon.proc.wait()


def test_the_dashboard_queries_only_exported_series_and_parse() -> None:
    """helm/rotator/files/rotator-dashboard.json (Grafana): every query names only series
    rotator exports, and every query is valid PromQL (promtool parses each as a rule)."""
    import json

    dashboard = json.loads((ROOT / "helm" / "rotator" / "files" / "rotator-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    metrics = Metrics()
    metrics.observe(State(encryption={}), Policy())
    exported = {m.name + ("_total" if m.type == "counter" else "") for m in metrics.registry.collect()}
    used = {name for e in exprs for name in re.findall(r"\brotator_[a-z_]+", e)}
    assert used and used <= exported, used - exported
    assert {"rotator_active_key_age_seconds", "rotator_keys", "rotator_revocation_replica_age_seconds"} <= used
    # promtool has no expression checker of its own; a rule file of records does parse each.
    return_code = subprocess.run(
        [promtool(), "check", "rules", "/dev/stdin"],
        input=yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)
        ]}]}),
        capture_output=True, text=True, timeout=60,
    )
    assert return_code.returncode == 0, return_code.stdout + return_code.stderr
