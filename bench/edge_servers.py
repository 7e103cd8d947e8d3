#!/usr/bin/env python3
"""The whole proxy app (create_app: recording, graph, rules from INTERLOCK_RULES_DIR) served by one
of three HTTP servers, for `bench/run.py --proxy NAME='...'` to compare them in one run:

    interlock   what `interlock serve` runs: proxy/server.py (asyncio Protocol + httptools, uvloop)
    uvicorn     plain uvicorn, http=httptools, loop=uvloop, lifespan on, access log off
    edge        uvicorn + the limits the proxy needs (431/414/408, h2c, disconnect hook): proxy/edge.py
                on branch `server-uvicorn` (the measured alternative, not merged); to measure it
                here: git show server-uvicorn:proxy/edge.py > proxy/edge.py  (then delete it again)
    granian     granian's ASGI interface, embedded (one process, one Rust runtime thread), uvloop;
                not a dependency: .venv/bin/pip install 'granian>=2.5,<3' first

    .venv/bin/python bench/edge_servers.py uvicorn --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvloop

from proxy.app import create_app
from proxy.cli import tune_gc
from proxy.settings import load_settings


def serve_interlock(app: object, host: str, port: int) -> None:
    from proxy.server import run

    uvloop.run(run(app, host=host, port=port))


def serve_uvicorn(app: object, host: str, port: int) -> None:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
                            access_log=False, log_level="warning", server_header=False, date_header=False)
    uvicorn.Server(config).run()  # uvicorn: a test extra (the fake upstream's server)


def serve_granian(app: object, host: str, port: int) -> None:
    from granian.constants import Interfaces
    from granian.server.embed import Server

    server = Server(app, address=host, port=port, interface=Interfaces.ASGI, websockets=False, log_enabled=False)
    uvloop.run(server.serve())


def serve_edge(app: object, host: str, port: int) -> None:
    from proxy.edge import listen, serve  # type: ignore[import-not-found]  # see the docstring

    serve(app, listen(host, port))


SERVERS = {"interlock": serve_interlock, "uvicorn": serve_uvicorn, "granian": serve_granian, "edge": serve_edge}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("server", choices=sorted(SERVERS))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    app = create_app(load_settings())
    tune_gc()
    SERVERS[args.server](app, args.host, args.port)
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
