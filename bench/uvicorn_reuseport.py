"""One uvicorn server process on its own SO_REUSEPORT socket, as production runs it
(httptools parser, uvloop event loop, no access log); bench/service_bench.py starts one per
worker on the same port, and the kernel spreads connections over them.

    python bench/uvicorn_reuseport.py PORT [APP]     (APP defaults to bench.service_apps:app)
"""

from __future__ import annotations

import socket
import sys

import uvicorn


def main() -> None:
    port = int(sys.argv[1])
    app = sys.argv[2] if len(sys.argv) > 2 else "bench.service_apps:app"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(app, http="httptools", loop="uvloop", log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
