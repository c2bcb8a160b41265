"""The shipped Envoy and Traefik configurations for `rotator authz`, checked against their
contracts. Neither Envoy nor Traefik can be obtained here: the Envoy files are parsed into
Envoy's own Bootstrap message with the protos Envoy publishes (xds-protos), which rejects
any unknown field or type, and both are read for the properties the README promises (the
nginx file runs for real in tests/test_authz_nginx.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401 (registers the type)
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401 (registers the type)
from google.protobuf import json_format

from rotator.authz import AuthzSettings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "authz"
CLAIM_HEADERS = {"x-auth-subject", "x-auth-scope"}


def bootstrap(name: str) -> bootstrap_pb2.Bootstrap:
    return json_format.ParseDict(yaml.safe_load((EXAMPLES / name).read_text()), bootstrap_pb2.Bootstrap())


def filters(boot: bootstrap_pb2.Bootstrap) -> list[tuple[str, Any]]:
    hcm = hcm_pb2.HttpConnectionManager()
    assert boot.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.Unpack(hcm)
    out = []
    for f in hcm.http_filters:
        message: Any = {"envoy.filters.http.ext_authz": ext_authz_pb2.ExtAuthz(),
                        "envoy.filters.http.header_mutation": header_mutation_pb2.HeaderMutation()}.get(f.name)
        if message is not None:
            assert f.typed_config.Unpack(message)
        out.append((f.name, message))
    return out


def test_envoy_grpc_config_strips_client_copies_then_asks_rotator_and_fails_closed() -> None:
    """envoy.yaml is a valid Envoy Bootstrap: the claim headers removed, then ext_authz over gRPC
    (v3, HTTP/2 cluster, failure_mode_allow false, 503 on error), then the router."""
    boot = bootstrap("envoy.yaml")
    chain = filters(boot)
    assert [name for name, _ in chain] == [
        "envoy.filters.http.header_mutation", "envoy.filters.http.ext_authz", "envoy.filters.http.router"]
    removed = {m.remove for m in chain[0][1].mutations.request_mutations}
    assert removed == CLAIM_HEADERS
    authz = chain[1][1]
    assert not authz.failure_mode_allow and authz.status_on_error.code == 503
    assert authz.transport_api_version == 2  # V3
    assert authz.grpc_service.envoy_grpc.cluster_name == "rotator_authz"
    cluster = next(c for c in boot.static_resources.clusters if c.name == "rotator_authz")
    assert "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" in cluster.typed_extension_protocol_options


def test_envoy_http_config_matches_the_sidecars_endpoint() -> None:
    """envoy-http.yaml: the HTTP service under the sidecar's default envoy_prefix, passing the
    Authorization header, the claim headers to the upstream and the challenge to the client."""
    chain = filters(bootstrap("envoy-http.yaml"))
    authz = chain[1][1]
    service = authz.http_service
    default_prefix = AuthzSettings.__dataclass_fields__["envoy_prefix"].default
    assert service.path_prefix == default_prefix and service.server_uri.uri == "http://127.0.0.1:9191"
    assert [p.exact for p in service.authorization_request.allowed_headers.patterns] == ["authorization"]
    assert {p.exact for p in service.authorization_response.allowed_upstream_headers.patterns} == CLAIM_HEADERS
    assert {"www-authenticate", "retry-after"} <= {p.exact for p in service.authorization_response.allowed_client_headers.patterns}
    assert not authz.failure_mode_allow and {m.remove for m in chain[0][1].mutations.request_mutations} == CLAIM_HEADERS


def test_traefik_config_strips_client_copies_before_forward_auth() -> None:
    """traefik.yml, as Traefik's file provider reads it: the strip middleware runs before
    forwardAuth, which asks /auth/traefik without trusting client X-Forwarded-* headers and
    copies exactly the stripped headers from rotator's answer."""
    http = yaml.safe_load((EXAMPLES / "traefik.yml").read_text())["http"]
    router = http["routers"]["app"]
    assert router["middlewares"] == ["strip-auth-headers", "rotator-authz"]
    stripped = http["middlewares"]["strip-auth-headers"]["headers"]["customRequestHeaders"]
    assert all(value == "" for value in stripped.values())
    forward = http["middlewares"]["rotator-authz"]["forwardAuth"]
    assert forward["address"].endswith("/auth/traefik") and forward["trustForwardHeader"] is False
    assert {h.lower() for h in forward["authResponseHeaders"]} == {h.lower() for h in stripped} == CLAIM_HEADERS
