"""One worker process: its verifiers and revocation replica, then its position's
SO_REUSEPORT socket, served by uvicorn (httptools, uvloop) and, when configured, the gRPC
service.

A worker gets its socket from the supervisor only once it is ready: it holds a key set of
every issuer and, with revocation, its replica has made its first full load and is
confirmed current. The kernel spreads connections over the sockets bound, so no request
ever reaches a worker that could only answer 503; until every worker of the first
generation is ready, the supervisor does not report the service ready.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any, Callable

from .._backoff import backoff
from ..verifier import Issuers, Verifier, discover
from ._decide import Authorizer
from ._metrics import SharedMetrics
from ._settings import AuthzSettings, IssuerSettings

__all__ = ["build", "wait_ready", "serve", "listening_socket"]

log = logging.getLogger("rotator.authz")
_DRAIN = 0.5  # seconds between a stopping worker's last accept and closing its idle connections


def _verifier(issuer: IssuerSettings, settings: AuthzSettings, revocations: Any) -> Verifier:
    options: dict[str, Any] = dict(
        audience=issuer.audience, algorithms=issuer.algorithms, leeway=issuer.leeway, max_lifetime=issuer.max_lifetime,
        result_cache_size=settings.result_cache_size, allow_http=issuer.allow_http, **dict(issuer.cache),
    )
    if revocations is not None:
        options.update(revocations=revocations, revocation_max_staleness=settings.revocation_max_staleness)
    if issuer.jwks_url is None:
        return discover(issuer.issuer, **options)
    return Verifier(issuer.jwks_url, issuer=issuer.issuer, **options)


def build(settings: AuthzSettings) -> tuple[Authorizer, Callable[[], list[str]], Callable[[], None]]:
    """The worker's authorizer, its health check and its closer. Opens the revocation store
    (its replica starts in ``wait_ready``); raises what a discovery or the store raises."""
    store = None
    if settings.revocation_url is not None:
        from ..revocation import RevocationStore, snapshot_target

        store = RevocationStore.from_url(
            settings.revocation_url, prefix=settings.revocation_prefix, password_file=settings.revocation_password_file,
            snapshot=snapshot_target(settings.revocation_snapshot, settings.s3_endpoint_url), check=False,
        )
    verifiers = {i.issuer: _verifier(i, settings, store) for i in settings.issuers}
    verifier = next(iter(verifiers.values())) if len(verifiers) == 1 else Issuers(verifiers)

    def health() -> list[str]:
        # The verifier reports a key set it failed to get; a worker is not ready either
        # while its first fetch is still under way.
        problems = verifier.health()
        for iss, v in verifiers.items():
            stats = v.stats()
            if stats.keys == 0 and stats.last_error is None:
                problems.append(f"{iss}: no key set yet")
        return problems

    def close() -> None:
        if store is not None:
            store.close()

    return Authorizer(settings, verifier), health, close


def wait_ready(health: Callable[[], list[str]], verifier: Any) -> None:
    """Block until the worker is ready (see the module docstring), retrying with backoff and
    logging each reason it is not yet."""
    attempt = 0
    while True:
        try:
            verifier.refresh()
            problems = health()
        except Exception as e:  # a Redis down at start, a discovery that failed: retry
            problems = [f"{type(e).__name__}: {e}"]
        if not problems:
            return
        attempt += 1
        delay = backoff(attempt, 0.5, 10.0)
        log.warning("worker %d not ready (retrying in %.1fs): %s", os.getpid(), delay, "; ".join(problems))
        time.sleep(delay)


def listening_socket(address: tuple[str, int]) -> socket.socket:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(1024)
    return sock


def serve(settings: AuthzSettings, metrics: SharedMetrics, slot: int, channel: socket.socket) -> None:
    """The worker's life: build, wait until ready, say so on ``channel`` and get the socket
    of its position back (or word to stop: a reload superseded it), serve until SIGTERM."""
    import uvicorn
    import uvloop

    from ._http import CheckApp

    metrics.use_slot(slot)
    authorizer, health, close = build(settings)
    try:
        wait_ready(health, authorizer.verifier)
        channel.send(b"R")
        _, fds, _, _ = socket.recv_fds(channel, 16, 1)
        if not fds:
            return
        sock = socket.socket(fileno=fds[0])
        app = CheckApp(authorizer, metrics, health)
        config = uvicorn.Config(
            app, http="httptools", loop="none", lifespan="off", access_log=False, log_level="warning",
            timeout_graceful_shutdown=10, server_header=False, date_header=False, proxy_headers=False,
        )

        class Draining(uvicorn.Server):
            async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
                # Stop accepting first, then give connections accepted a moment ago the time
                # to deliver their request before idle ones are closed: a reload or a stop
                # never cuts a check that had already reached this worker.
                for listener in self.servers:
                    listener.close()
                await asyncio.sleep(_DRAIN)
                await super().shutdown(sockets)

        server = Draining(config)

        async def main() -> None:
            grpc_server = None
            if settings.grpc_listen is not None:
                import grpc

                from ._grpc import AuthorizationService, add_to_server

                grpc_server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
                add_to_server(grpc_server, AuthorizationService(authorizer, metrics))
                host, port = settings.grpc_listen
                grpc_server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
                await grpc_server.start()
            try:
                await server.serve(sockets=[sock])
            finally:
                if grpc_server is not None:
                    await grpc_server.stop(grace=5)

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    finally:
        close()
