"""``rotator authz``: a verification sidecar that proxies ask, per request, whether a request
may pass (nginx ``auth_request``, Traefik ``forwardAuth``, Envoy ``ext_authz`` over HTTP or
gRPC), from the same ``Verifier``, result cache and revocation replica as Python services.

``_settings`` reads the ``[authz]`` table; ``_decide`` is the one decision every protocol
uses; ``_http`` and ``_grpc`` speak the protocols; ``_metrics`` counts every worker's
decisions in shared memory; ``_worker`` runs one worker and ``_supervisor`` forks and keeps
them.
"""

from __future__ import annotations

from ._decide import Authorizer, Decision
from ._settings import AuthzSettings, IssuerSettings, Rule, load_authz
from ._supervisor import Supervisor

__all__ = ["Authorizer", "Decision", "AuthzSettings", "IssuerSettings", "Rule", "load_authz", "Supervisor"]
