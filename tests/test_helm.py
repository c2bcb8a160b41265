"""The Helm chart, rendered and linted by Helm's own Go SDK (helm-python-sdk: libhelm_c over
helm.sh/helm/v4, no cluster), every manifest checked against the Kubernetes API schemas
(kubernetes-validate, strict), and values checked against values.schema.json."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from rotator.config import load_settings
from rotator.keysets import load_key_sets

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "rotator"
BAD_VALUES = Path(__file__).parent / "helm" / "bad-values"
KUBE_VERSION = "1.30.0"

SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "deployment": {"mode": "deployment"},
    "deployment-monitored-kms": {
        "mode": "deployment",
        "deployment": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "secrets": {"kmsKeyId": "alias/rotator"},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/rotator"}},
        "config": {"issuer": "https://auth.example.com", "publicUrl": "https://auth.example.com/.well-known/jwks.json", "discovery": True},
        "extraEnv": [{"name": "AWS_REGION", "value": "eu-west-1"}],
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "auth", "effect": "NoSchedule"}],
        "imagePullSecrets": [{"name": "regcred"}],
        "podAnnotations": {"team": "identity"},
    },
    "deployment-alerts": {
        "mode": "deployment",
        "deployment": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}}},
    },
    "deployment-revocation": {
        "mode": "deployment",
        "revocation": {"url": "rediss://redis.auth.svc:6380/0", "prefix": "auth:", "password": {"existingSecret": "redis-auth"}},
    },
    "deployment-revocation-sentinel": {
        "mode": "deployment",
        "revocation": {"url": "redis+sentinel://sentinel-0.redis:26379,sentinel-1.redis:26379/auth/0?sentinel_auth=yes",
                       "prefix": "auth:", "password": {"existingSecret": "redis-auth"},
                       "snapshot": "s3://auth-jwks/revocations.json.gz", "snapshotInterval": "15s", "minReplicas": 1,
                       "logRetention": "2h"},
    },
    "cronjob-existing-account": {"serviceAccount": {"create": False, "name": "rotator-irsa"}, "image": {"tag": "0.1.0-rc1"}},
    "deployment-key-sets": {"mode": "deployment", "config": {"keySets": [
        {"name": "access", "keystore": "s3://my-rotator-bucket/keystore/access", "publish": "s3://my-rotator-bucket/jwks/access.json"},
        {"name": "federation", "algorithm": "RS256", "issuer": "https://federation.example",
         "keystore": "s3://my-rotator-bucket/keystore/federation", "publish": "s3://my-rotator-bucket/jwks/federation.json"},
    ]}},
    "cronjob-key-sets": {"config": {"algorithm": "EdDSA", "keySets": [
        {"name": "a", "keystore": "s3://my-rotator-bucket/keystore/a", "publish": "s3://my-rotator-bucket/jwks/a.json"},
        {"name": "b", "keystore": "s3://my-rotator-bucket/keystore/b", "publish": "s3://my-rotator-bucket/jwks/b.json"},
    ]}},
}
SCENARIOS["authz"] = {
    "mode": "authz",
    "revocation": {"url": "redis://redis.auth.svc:6379/0", "prefix": "auth:", "password": {"existingSecret": "redis-auth"}},
    "authz": {
        "issuers": [
            {"issuer": "https://auth.example.com", "audience": "orders-api",
             "jwksUrl": "https://auth.example.com/.well-known/jwks.json", "algorithms": ["ES256", "RS256"]},
            {"issuer": "https://login.partner.example", "audience": ["orders-api", "billing"]},
        ],
        "headers": {"sub": "X-Auth-Subject", "scope": "X-Auth-Scope"},
        "rules": [{"path": "/admin/", "methods": ["POST"], "scopes": ["orders:admin"], "claims": {"tenant": "acme", "tier": "gold"}}],
    },
}
KEY_SET_SCENARIOS = ("deployment-key-sets", "cronjob-key-sets")


def render(values: dict[str, Any]) -> dict[str, str]:
    chart = helm_python.Chart.load(CHART)
    return chart.render(values, name="auth", namespace="identity", is_install=True)


def manifests(values: dict[str, Any]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name, text in render(values).items():
        if name.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = (
        doc["spec"]["jobTemplate"]["spec"]["template"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]["template"]["spec"]
    )
    return spec


# -- lint and render -----------------------------------------------------------------------


def test_helm_lint_strict_passes() -> None:
    """helm lint --strict (the Helm SDK) finds no warnings or errors in the chart."""
    report = helm_python.lint(CHART, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report["messages"]
    print(f"\n[helm] lint (Helm SDK {helm_python.helm_sdk_version()}): {len(report['messages'])} info message(s), no warnings or errors")


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_rendered_manifest_passes_the_kubernetes_schema(scenario: str) -> None:
    """Every manifest each scenario renders validates against the Kubernetes API schema."""
    docs = manifests(SCENARIOS[scenario])
    assert docs
    checked = []
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            check_service_monitor(doc)
            continue
        if doc["kind"] == "PrometheusRule":
            check_prometheus_rule(doc)
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        checked.append(doc["kind"])
    print(f"\n[helm] {scenario}: {', '.join(sorted(checked))} valid against Kubernetes {KUBE_VERSION} (strict)")


def check_prometheus_rule(doc: dict[str, Any]) -> None:
    """A CRD kind the Kubernetes schemas do not have: the shipped rule file, whole, as its spec
    (tests/test_alerts.py runs those rules under promtool)."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    shipped = yaml.safe_load((CHART / "files" / "rotator-alerts.yml").read_text())
    assert doc["spec"] == shipped and len(doc["spec"]["groups"][0]["rules"]) >= 10


def test_prometheus_rule_only_when_asked_in_deployment_mode() -> None:
    """Off by default; on in Deployment mode it carries the shipped rules and the labels asked
    for; a CronJob has no endpoint to scrape, so none is made there."""
    assert "PrometheusRule" not in by_kind(manifests(SCENARIOS["deployment"]))
    rule = by_kind(manifests(SCENARIOS["deployment-alerts"]))["PrometheusRule"]
    check_prometheus_rule(rule)
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert "PrometheusRule" not in by_kind(manifests({"deployment": {"prometheusRule": {"enabled": True}}}))


def check_service_monitor(doc: dict[str, Any]) -> None:
    """A CRD kind the Kubernetes schemas do not have: the fields Prometheus Operator requires."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["spec"]["selector"]["matchLabels"]
    (endpoint,) = doc["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "30s"}


def test_schema_check_is_real() -> None:
    """kubernetes-validate rejects a manifest with a misspelt field, so passing means something."""
    doc = by_kind(manifests({}))["CronJob"]
    doc["spec"]["concurrencyPolicyy"] = "Forbid"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_cronjob_by_default() -> None:
    """By default the chart renders a CronJob (every two minutes, never concurrent) with its
    ConfigMap and ServiceAccount."""
    kinds = by_kind(manifests({}))
    assert set(kinds) == {"CronJob", "ConfigMap", "ServiceAccount"}
    spec = kinds["CronJob"]["spec"]
    assert spec["schedule"] == "*/2 * * * *" and spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == 120
    assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 3
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 2
    container = pod_spec(kinds["CronJob"])["containers"][0]
    assert container["args"] == ["rotate", "--config", "/etc/rotator/rotator.toml"]
    assert pod_spec(kinds["CronJob"])["restartPolicy"] == "Never"


def test_schedule_comes_from_values() -> None:
    """The CronJob schedule is the one values give."""
    assert by_kind(manifests({"cronjob": {"schedule": "* * * * *"}}))["CronJob"]["spec"]["schedule"] == "* * * * *"


def test_deployment_mode_runs_the_daemon_with_probes_service_and_monitor() -> None:
    """Deployment mode runs rotator run with health probes, a Service and a ServiceMonitor on
    the metrics port."""
    kinds = by_kind(manifests(SCENARIOS["deployment-monitored-kms"]))
    assert set(kinds) == {"Deployment", "ConfigMap", "ServiceAccount", "Service", "ServiceMonitor"}
    container = pod_spec(kinds["Deployment"])["containers"][0]
    assert container["args"][:1] == ["run"] and "--metrics-port" in container["args"]
    # Every address, IPv6 and IPv4 on one socket: IPv4-only, dual-stack and IPv6-only clusters.
    assert container["args"][container["args"].index("--metrics-addr") + 1] == "*"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    assert kinds["Service"]["spec"]["ports"][0]["targetPort"] == "metrics"
    assert kinds["ServiceMonitor"]["metadata"]["labels"]["release"] == "prometheus"
    assert kinds["ServiceAccount"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AWS_REGION"] == "eu-west-1" and "ROTATOR_KEYSTORE_PASSPHRASE_FILE" not in env  # KMS: no passphrase


def test_service_monitor_without_service_is_refused() -> None:
    """A ServiceMonitor without its Service is refused at render time with a message saying what
    is needed."""
    values = {"mode": "deployment", "deployment": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}
    with pytest.raises(helm_python.HelmError, match="needs deployment.service.enabled"):
        render(values)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_secure_defaults_in_every_pod(scenario: str) -> None:
    """Every pod runs as non-root uid 10001, read-only, without capabilities or a service
    account token."""
    workloads = [d for d in manifests(SCENARIOS[scenario]) if d["kind"] in ("CronJob", "Deployment")]
    sets = len(helm_python.Chart.load(CHART).merge_values(SCENARIOS[scenario])["config"]["keySets"])
    assert len(workloads) == (sets if sets and workloads[0]["kind"] == "CronJob" else 1)  # a CronJob per key set
    for workload in workloads:
        spec = pod_spec(workload)
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp", "/etc/rotator"}


def test_passphrase_comes_from_the_existing_secret_as_a_file() -> None:
    """The keystore passphrase comes from the existing Secret as a mounted file, never an
    environment value."""
    spec = pod_spec(by_kind(manifests({}))["CronJob"])
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ROTATOR_KEYSTORE_PASSPHRASE_FILE"] == "/var/run/secrets/rotator/passphrase"
    volume = next(v for v in spec["volumes"] if v["name"] == "passphrase")
    assert volume["secret"]["secretName"] == "rotator-passphrase"
    assert volume["secret"]["items"] == [{"key": "passphrase", "path": "passphrase"}]


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s not in KEY_SET_SCENARIOS])
def test_the_rendered_configuration_is_one_rotator_accepts(scenario: str, tmp_path: Path) -> None:
    """The settings file the chart renders is accepted by rotator's own settings loader, with
    the values given."""
    configmap = by_kind(manifests(SCENARIOS[scenario]))["ConfigMap"]
    path = tmp_path / "rotator.toml"
    path.write_text(configmap["data"]["rotator.toml"])
    settings = load_settings({}, env={}, config_file=str(path))
    values = helm_python.Chart.load(CHART).merge_values(SCENARIOS[scenario])
    assert settings.keystore == values["config"]["keystore"]
    assert settings.publish == values["config"]["publish"]
    assert settings.policy.rotation_period == 900 and settings.policy.retirement_window == 86400
    assert settings.kms_key_id == (values["secrets"]["kmsKeyId"] or None)
    assert settings.discovery is values["config"]["discovery"]
    assert settings.revocation_url == (values["revocation"]["url"] or None)
    if settings.revocation_url:
        assert settings.revocation_prefix == values["revocation"]["prefix"]
        assert settings.revocation_min_replicas == values["revocation"]["minReplicas"]
        assert settings.revocation_log_retention == {"1h": 3600, "2h": 7200}[values["revocation"]["logRetention"]]
        assert settings.revocation_snapshot == (values["revocation"]["snapshot"] or None)
        if settings.revocation_snapshot:
            assert settings.revocation_snapshot_interval == 15


@pytest.mark.parametrize("scenario", KEY_SET_SCENARIOS)
def test_a_list_of_key_sets_renders_the_key_sets_rotator_reads(scenario: str, tmp_path: Path) -> None:
    """config.keySets renders a [key_sets.NAME] table per set, which rotator's loader reads
    back as those sets with their locations and algorithms; in cronjob mode each set gets a
    CronJob running rotate --key-set NAME, and the notes name each set."""
    values = helm_python.Chart.load(CHART).merge_values(SCENARIOS[scenario])
    docs = manifests(SCENARIOS[scenario])
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    path = tmp_path / "rotator.toml"
    path.write_text(configmap["data"]["rotator.toml"])
    sets = load_key_sets({}, env={}, config_file=str(path))
    given = values["config"]["keySets"]
    assert list(sets) == [s["name"] for s in given]
    for item in given:
        loaded = sets[item["name"]]
        assert (loaded.keystore, loaded.publish) == (item["keystore"], item["publish"])
        assert loaded.algorithm == item.get("algorithm", values["config"]["algorithm"])
    cronjobs = [d for d in docs if d["kind"] == "CronJob"]
    if values["mode"] == "cronjob":
        args = [pod_spec(c)["containers"][0]["args"] for c in cronjobs]
        assert args == [["rotate", "--config", "/etc/rotator/rotator.toml", "--key-set", s["name"]] for s in given]
    else:
        assert cronjobs == [] and pod_spec(next(d for d in docs if d["kind"] == "Deployment"))["containers"][0]["args"][0] == "run"
    notes = render(SCENARIOS[scenario])["rotator/templates/NOTES.txt"]
    assert all(f"{s['name']} (" in notes and s["publish"] in notes for s in given)


def test_redis_password_comes_from_its_secret_as_a_file() -> None:
    """The revocation Redis password comes from its Secret as a mounted file."""
    spec = pod_spec(by_kind(manifests(SCENARIOS["deployment-revocation"]))["Deployment"])
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ROTATOR_REVOCATION_PASSWORD_FILE"] == "/var/run/secrets/rotator-redis/password"
    volume = next(v for v in spec["volumes"] if v["name"] == "redis-password")
    assert volume["secret"]["secretName"] == "redis-auth"
    assert volume["secret"]["items"] == [{"key": "password", "path": "password"}]
    assert {"name": "redis-password", "mountPath": "/var/run/secrets/rotator-redis", "readOnly": True} in container["volumeMounts"]
    # Without a Secret: no variable, no volume.
    default = pod_spec(by_kind(manifests({}))["CronJob"])
    assert "ROTATOR_REVOCATION_PASSWORD_FILE" not in {e["name"] for e in default["containers"][0]["env"]}


def test_notes_say_where_the_jwks_will_be() -> None:
    """The install notes say where the JWKS and the discovery document will be published."""
    notes = render(SCENARIOS["deployment-monitored-kms"])["rotator/templates/NOTES.txt"]
    assert "s3://my-rotator-bucket/jwks/jwks.json" in notes
    assert "https://auth.example.com/.well-known/jwks.json" in notes
    assert "discovery document" in notes
    default_notes = render({})["rotator/templates/NOTES.txt"]
    assert "s3://my-rotator-bucket/jwks/jwks.json" in default_notes and "create secret generic rotator-passphrase" in default_notes


# -- values and their schema -------------------------------------------------------------


def schema() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return doc


def test_values_yaml_satisfies_the_schema() -> None:
    """values.yaml satisfies the chart's own JSON schema."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator.check_schema(schema())
    jsonschema.Draft7Validator(schema()).validate(values)
    helm_python.Chart.load(CHART).validate_schema(values)


BAD = sorted(BAD_VALUES.glob("*.yaml"))


def test_there_are_bad_value_examples() -> None:
    """The bad-values examples exist in number, so the rejection test below covers something."""
    assert len(BAD) >= 10


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_values_are_rejected(path: Path) -> None:
    """Each bad-values example is rejected by the chart's schema."""
    overrides = yaml.safe_load(path.read_text())
    chart = helm_python.Chart.load(CHART)
    merged = chart.merge_values(overrides)
    errors = list(jsonschema.Draft7Validator(schema()).iter_errors(merged))
    assert errors, f"{path.name} passed the schema"
    with pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema(overrides)
    with pytest.raises(helm_python.HelmValuesError):
        render(overrides)  # helm install/template would refuse the same values


def test_every_value_is_documented() -> None:
    """Every key in values.yaml has a comment on the line above it, or sits inside a value
    documented as a whole (a "# --" comment above its parent, e.g. securityContext)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented_blocks: list[int] = []  # indents of open "# --"-documented parents
    undocumented = []
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        documented_blocks = [d for d in documented_blocks if d < indent]
        above = lines[i - 1].strip() if i else ""
        if above.startswith("# --"):
            documented_blocks.append(indent)
        elif not above.startswith("#") and not documented_blocks:
            undocumented.append(line.strip())
    assert undocumented == []


def test_dockerfile_runs_as_the_chart_user_on_a_slim_base() -> None:
    """The Dockerfile builds on a slim Python base and runs as the uid the chart expects."""
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim$", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["repository"] == "rotator"
    assert values["podSecurityContext"]["runAsUser"] == 10001 and values["podSecurityContext"]["runAsGroup"] == 10001
    assert 'ENTRYPOINT ["rotator"]' in text


@pytest.mark.parametrize("mode", ["cronjob", "deployment"])
def test_the_notes_revocation_recipe_works_in_each_mode(mode: str, tmp_path: Path) -> None:
    """The install notes' revocation command for each mode. CronJob mode has no pod to exec
    into: the recipe makes a Job from the CronJob as `kubectl create job --from` does (the
    job template's spec, the instantiate annotation) and sets one container's args with jq;
    that Job passes the Kubernetes schema, and its args, run with the rendered settings
    against a real redis-server, write the revocation. Deployment mode execs into the
    Deployment's pod with the same command."""
    import shlex

    from click.testing import CliRunner

    from rotator.cli import main

    from .redis_server import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    try:
        values = {"mode": mode, "revocation": {"url": server.url, "prefix": "auth:"}}
        notes = render(values)["rotator/templates/NOTES.txt"]
        docs = by_kind(manifests(values))
        if mode == "cronjob":
            assert "exec deploy/" not in notes
            assert "create job auth-rotator-revoke-$(date +%s) --from=cronjob/auth-rotator --dry-run=client -o json" in notes
            args = json.loads(re.search(r"containers\[0\]\.args = (\[.*?\])'", notes).group(1))  # type: ignore[union-attr]
            cronjob = docs["CronJob"]
            job = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {
                    "name": "auth-rotator-revoke-1",
                    "namespace": "identity",
                    "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
                    "labels": cronjob["spec"]["jobTemplate"]["metadata"].get("labels", {}),
                },
                "spec": json.loads(json.dumps(cronjob["spec"]["jobTemplate"]["spec"])),
            }
            job["spec"]["template"]["spec"]["containers"][0]["args"] = args
            kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
            container = job["spec"]["template"]["spec"]["containers"][0]
        else:
            line = next(l for l in notes.splitlines() if "exec deploy/auth-rotator --" in l)
            args = shlex.split(line.split(" -- ", 1)[1])[1:]  # after the `rotator` entrypoint
            container = pod_spec(docs["Deployment"])["containers"][0]
        assert args[:2] == ["revoke-subject", "alice"]
        # The pod's settings: the ConfigMap mounted at /etc/rotator, the container's env.
        toml = tmp_path / "rotator.toml"
        toml.write_text(docs["ConfigMap"]["data"]["rotator.toml"])
        args = [str(toml) if a == "/etc/rotator/rotator.toml" else a for a in args]
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        result = CliRunner().invoke(main, args, env={**env, "ROTATOR_KEYSTORE_PASSPHRASE_FILE": None})
        assert result.exit_code == 0, result.output
        import redis

        client = redis.Redis(port=server.port)
        assert any(b"alice" in k for k in client.scan_iter("auth:*")), list(client.scan_iter("*"))
    finally:
        server.stop()


def test_authz_mode_runs_the_sidecar_with_its_settings_probes_and_no_keystore_secret(tmp_path: Path) -> None:
    """mode authz: a Deployment running `rotator authz` (readiness /healthz, liveness /livez,
    rolling with none unavailable) and a Service with the HTTP and gRPC ports; the pod mounts
    no keystore passphrase; the rendered [authz] table is what rotator's own loader reads."""
    from rotator.authz import load_authz

    docs = by_kind(manifests(SCENARIOS["authz"]))
    deployment, service = docs["Deployment"], docs["Service"]
    container = pod_spec(deployment)["containers"][0]
    assert container["args"] == ["authz", "--config", "/etc/rotator/rotator.toml"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 9191, "grpc": 9192}
    assert "passphrase" not in json.dumps(pod_spec(deployment)) and "CronJob" not in docs
    assert any(e["name"] == "ROTATOR_REVOCATION_PASSWORD_FILE" for e in container["env"])
    path = tmp_path / "rotator.toml"
    path.write_text(docs["ConfigMap"]["data"]["rotator.toml"])
    settings = load_authz(env={}, config_file=str(path))
    assert settings.listen == ("0.0.0.0", 9191) and settings.grpc_listen == ("0.0.0.0", 9192) and settings.workers == 1
    assert [(i.issuer, i.audience, i.jwks_url, i.algorithms) for i in settings.issuers] == [
        ("https://auth.example.com", ("orders-api",), "https://auth.example.com/.well-known/jwks.json", ("ES256", "RS256")),
        ("https://login.partner.example", ("orders-api", "billing"), None, ("ES256",)),
    ]
    assert dict(settings.headers) == {"sub": "X-Auth-Subject", "scope": "X-Auth-Scope"}
    assert settings.rules[0].claims == (("tenant", "acme"), ("tier", "gold")) and settings.rules[0].methods == ("POST",)
    assert settings.revocation_url == "redis://redis.auth.svc:6379/0" and settings.revocation_prefix == "auth:"
    notes = render(SCENARIOS["authz"])["rotator/templates/NOTES.txt"]
    assert "http://auth-rotator:9191/auth/nginx" in notes and "auth-rotator:9192" in notes
