"""`interlock dashboards build | push`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("dashboards")


def add_commands(sub: Any) -> None:
    """Register `dashboards` on the `interlock` command's subparsers."""
    dash = sub.add_parser("dashboards", help="Grafana dashboards",
                          description="Build the Grafana dashboard JSON, or push it into a Grafana server.")
    dsub = dash.add_subparsers(dest="dashboards_command", required=True)
    build = dsub.add_parser("build", help="write dashboards/*.json from the builder",
                            description="Write the dashboard JSON files (checked in under dashboards/).")
    build.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory (default: ./dashboards)")
    build.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is stale")
    build.set_defaults(func=cmd_build)
    push = dsub.add_parser("push", help="create or update datasources, folder and dashboards in Grafana",
                           description="Create or update the datasources, a folder and the dashboards in a "
                                       "Grafana 10.3+ server through its HTTP API. Idempotent.")
    push.add_argument("--grafana-url", required=True, help="e.g. http://localhost:3000")
    push.add_argument("--token", default=os.environ.get("GRAFANA_TOKEN"),
                      help="service-account token (default: $GRAFANA_TOKEN)")
    push.add_argument("--folder", default="Interlock", help="folder title (default: Interlock)")
    push.add_argument("--db-url", help="PostgreSQL URL as Grafana's server reaches it: "
                                       "postgresql://user:password@host:5432/db (omit to leave the datasource as is)")
    push.add_argument("--prometheus-url", help="Prometheus URL as Grafana's server reaches it "
                                               "(omit to leave the datasource as is)")
    push.set_defaults(func=cmd_push)


def cmd_build(args: argparse.Namespace) -> int:
    from proxy.dashboards.build import stale, write

    if args.check:
        old = stale(args.out)
        for name in old:
            print(f"{args.out / name} is stale: run `interlock dashboards build`", file=sys.stderr)
        if not old:
            print(f"{args.out}/*.json are up to date")
        return 1 if old else 0
    for path in write(args.out):
        print(path)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from proxy.dashboards.push import PushError, PushOptions, push

    if not args.token:
        print("interlock dashboards push: --token (or GRAFANA_TOKEN) is required", file=sys.stderr)
        return 2
    options = PushOptions(args.grafana_url, args.token, args.folder, args.db_url, args.prometheus_url)
    try:
        push(options)
    except PushError as exc:
        print(f"interlock dashboards push: {exc}", file=sys.stderr)
        return 1
    return 0
