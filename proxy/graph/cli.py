"""`interlock runs` and `interlock graph RUN_ID`: the recovered orchestration in the terminal.

A run is drawn as a tree of calls: each call hangs under the call that fed it (handoff,
continuation, tool), the first incoming edge winning; returns and human input are shown as
annotations on the receiving call, so the tree reads top-down like the run happened.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

import proxy.store.queries as queries
from proxy.graph.view import build_graph
from proxy.settings import load_settings
from proxy.store.db import make_engine

_KIND_STYLE = {"handoff": "bold cyan", "continuation": "dim", "tool": "magenta", "return": "green",
               "human": "bold yellow"}
_PARENT_KINDS = ("handoff", "continuation", "tool")


def render_graph(graph: dict[str, Any]) -> Tree:
    run = graph["run"]
    agents = ", ".join(f"{a['name']} ({plural(a['calls'], 'call')}, {a['tokens']} tok)" for a in graph["agents"])
    root = Tree(f"[bold]run {run.get('id')}[/]  {run.get('status', '')}  agents: {agents}")
    nodes = {n["id"]: n for n in graph["nodes"]}
    parent: dict[str, tuple[str, dict[str, Any]]] = {}
    notes: dict[str, list[str]] = {}
    for e in graph["edges"]:
        if e["kind"] in _PARENT_KINDS and e["target"] not in parent and e["source"] in nodes:
            parent[e["target"]] = (e["source"], e)
        else:
            notes.setdefault(e["target"], []).append(_note(e, nodes))
    branches: dict[str, Tree] = {}
    for node in graph["nodes"]:
        link = parent.get(node["id"])
        under = branches.get(link[0], root) if link else root
        branches[node["id"]] = under.add(_label(node, link[1] if link else None, notes.get(node["id"], [])))
    return root


def _label(node: dict[str, Any], edge: dict[str, Any] | None, notes: list[str]) -> str:
    kind = ""
    if edge is not None:
        style = _KIND_STYLE.get(edge["kind"], "")
        kind = f"[{style}]{edge['kind']}[/]{_coverage(edge)} → "
    flags = f"  [red]{', '.join(node['flags'])}[/]" if node["flags"] else ""
    extra = "".join(f"\n   {n}" for n in notes)
    return f"{kind}[bold]{node['agent']}[/] {node.get('model') or ''} [{node.get('status')}] {node['id'][-8:]}{flags}{extra}"


def _note(edge: dict[str, Any], nodes: dict[str, Any]) -> str:
    style = _KIND_STYLE.get(edge["kind"], "")
    src = nodes.get(edge["source"], {}).get("agent", edge["source"])
    arrow = "↩" if edge["kind"] == "return" else "←"
    return f"{arrow} [{style}]{edge['kind']}[/] from {src}{_coverage(edge)}"


def _coverage(edge: dict[str, Any]) -> str:
    ev = edge.get("evidence") or {}
    parts = []
    if "coverage" in ev:
        parts.append(f"{float(ev['coverage']):.0%}")
    if ev.get("truncated"):
        parts.append("[bold red]TRUNCATED[/]")
    return f" ({', '.join(parts)})" if parts else ""


def _with_engine(args: argparse.Namespace, work: Callable[[Any], Awaitable[Any]]) -> Any:
    settings = load_settings(**({"database_url": args.database_url} if args.database_url else {}))

    async def go() -> Any:
        engine = make_engine(settings.database_url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def cmd_runs(args: argparse.Namespace) -> int:
    items, _ = _with_engine(args, lambda e: queries.list_runs(e, status=args.status, limit=args.limit))
    if not items:
        print("interlock: no runs recorded yet. Point an SDK at the proxy (OPENAI_BASE_URL="
              "http://127.0.0.1:8080/v1) and make a call, or try `interlock demo`.")
        return 0
    table = Table(title=f"last {plural(len(items), 'run')}; any unique id prefix works, "
                        f"e.g. interlock graph {items[0]['id'][:12]}",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)  # 80 columns show whole ids
    table.add_column("run", no_wrap=True, min_width=26)  # whole, so it can be copied
    for col in ("status", "started", "calls", "tokens", "cost $"):
        table.add_column(col, no_wrap=True, justify="right" if col in ("calls", "tokens", "cost $") else "left")
    table.add_column("agents", overflow="fold", min_width=8)
    table.add_column("flags", overflow="fold", min_width=8)
    for r in items:
        table.add_row(r["id"], r["status"], str(r["started_at"])[11:19], str(r["calls"]),
                      str(r["tokens"]), f"{r.get('cost_usd') or 0:.4f}", ", ".join(r.get("agents") or []),
                      ", ".join(r.get("flags") or []))
    Console().print(table)
    return 0


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


async def load_graph(engine: Any, run_id: str) -> dict[str, Any] | None:
    """The graph of the run `run_id` names (a full id or a unique prefix); None when none does.
    Raises queries.AmbiguousId for a prefix of several runs."""
    run_id = await queries.resolve_id(engine, "run", run_id) or run_id
    calls = await queries.run_calls(engine, run_id)
    if not calls:
        return None
    run = await queries.get_run(engine, run_id) or {"id": run_id}
    return build_graph(run, calls, await queries.run_edges(engine, run_id))


def cmd_graph(args: argparse.Namespace) -> int:
    try:
        graph = _with_engine(args, lambda e: load_graph(e, args.run_id))
    except queries.AmbiguousId as exc:
        print(f"interlock: {exc}", file=sys.stderr)
        return 2
    if graph is None:
        print(f"interlock: no run with id {args.run_id!r} or starting with it (see `interlock runs`)",
              file=sys.stderr)
        return 1
    Console().print(render_graph(graph))
    return 0


def add_commands(sub: Any) -> None:
    runs = sub.add_parser("runs", help="list recovered runs", description="List runs, most recent first.")
    runs.add_argument("--status", choices=("open", "closed"))
    runs.add_argument("--limit", type=int, default=30)
    runs.add_argument("--database-url", dest="database_url")
    runs.set_defaults(func=cmd_runs)
    graph = sub.add_parser("graph", help="draw one run's orchestration graph",
                           description="Draw a run as a tree of calls with handoffs, returns, tools and human input.")
    graph.add_argument("run_id", help="a run id or any unique prefix of one")
    graph.add_argument("--database-url", dest="database_url")
    graph.set_defaults(func=cmd_graph)
