#!/usr/bin/env python3
"""The whole proxy app (create_app: recording, graph, rules from INTERLOCK_RULES_DIR) served by one
of three HTTP servers, for `bench/run.py --proxy NAME='...'` to compare them in one run:

    interlock   proxy/server.py (asyncio Protocol + httptools on uvloop), retired: from git history
    uvicorn     uvicorn, http=httptools, loop=uvloop, lifespan on, access log off
    granian     granian's ASGI interface, embedded (one process, one Rust runtime thread), uvloop

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
    from proxy.server import run  # type: ignore[import-not-found]  # exists only before the switch

    uvloop.run(run(app, host=host, port=port))


def serve_uvicorn(app: object, host: str, port: int) -> None:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
                            access_log=False, log_level="warning", server_header=False, date_header=False)
    uvicorn.Server(config).run()


def serve_granian(app: object, host: str, port: int) -> None:
    from granian.constants import Interfaces
    from granian.server.embed import Server

    server = Server(app, address=host, port=port, interface=Interfaces.ASGI, websockets=False, log_enabled=False)
    uvloop.run(server.serve())


SERVERS = {"interlock": serve_interlock, "uvicorn": serve_uvicorn, "granian": serve_granian}


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
