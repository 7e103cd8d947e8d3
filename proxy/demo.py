"""`interlock demo`: a newcomer's first five minutes, with no keys and no network.

    fake model (in-process, loopback) ◀── Interlock proxy (in-process, loopback) ◀── scripted agents
                                                 │
                                                 └── SQLite file ──▶ graphs printed here

The agents are scripted multi-agent systems (proxy.graph.examples) sent as the exact wire
requests their SDKs would send; nothing tells Interlock who is who or what belongs together.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console

from proxy.app import create_app
from proxy.graph.cli import load_graph, plural, render_graph
from proxy.graph.examples import agent_as_tool_script, fan_out_script, pipeline_script
from proxy.graph.script import Exchange, merge, render
from proxy.serving import ThreadedServer
from proxy.settings import load_settings


class _FakeModel:
    """Answers each request with the next scripted response body (the demo sends in order)."""

    def __init__(self) -> None:
        self.replies: collections.deque[dict[str, Any]] = collections.deque()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        body = orjson.dumps(self.replies.popleft() if self.replies else {"error": {"message": "no script"}})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def _systems() -> list[tuple[str, list[Exchange]]]:
    return [
        ("research team: an orchestrator fans out to three specialists, who report back",
         render(fan_out_script())),
        ("two writing pipelines at once (planner → writer → editor), interleaved",
         merge(render(pipeline_script("urban beekeeping", "x-")), render(pipeline_script("home batteries", "y-"), offset=0.5))),
        ("a concierge on Anthropic uses another agent as a tool", render(agent_as_tool_script())),
    ]


def _drive(proxy_url: str, model: _FakeModel, exchanges: list[Exchange]) -> None:
    with httpx.Client(base_url=proxy_url, timeout=30) as client:
        for ex in exchanges:
            model.replies.append(ex.response)
            body = dict(ex.request)
            body.pop("stream", None)
            auth = {"x-api-key": "sk-ant-demo", "anthropic-version": "2023-06-01"} if ex.api == "messages" \
                else {"authorization": "Bearer sk-demo"}
            client.post(ex.path, json=body, headers={**ex.headers, **auth}).raise_for_status()


def run_demo(db: Path, keep_serving: bool, console: Console, *, kept: bool = True) -> int:
    model = _FakeModel()
    with ThreadedServer(model) as upstream:
        settings = load_settings(database_url=f"sqlite+aiosqlite:///{db}", upstream_openai=upstream.url,
                                 upstream_anthropic=upstream.url, rules_dir=Path(__file__).parents[1] / "rules",
                                 spool_dir=db.parent / ".demo-spool", run_idle_s=3600)
        app = create_app(settings)
        with ThreadedServer(app) as px:
            console.print(f"[bold]Interlock demo[/]: fake model at {upstream.url}, proxy at {px.url}, database {db}\n")
            for title, exchanges in _systems():
                console.print(f"• {title}: {plural(len(exchanges), 'call')}")
                _drive(px.url, model, exchanges)
            graphs = _wait_for_graphs(px.url, sum(len(e) for _, e in _systems()), settings.database_url)
            for graph in graphs:
                console.print()
                console.print(render_graph(graph))
            _next_steps(console, px.url, db if kept else None, graphs)
            if keep_serving:
                console.print(f"\nServing on {px.url} until Ctrl-C; the console is at {px.url}/ui")
                _wait_forever()
    return 0


def _wait_for_graphs(url: str, calls: int, database_url: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        seen = httpx.get(url + "/api/calls", params={"limit": 1000}).json()["items"]
        if len(seen) >= calls:
            break
        time.sleep(0.1)
    time.sleep(0.3)  # run totals are written right after the calls
    runs = httpx.get(url + "/api/runs", params={"limit": 100}).json()["items"]
    return [httpx.get(f"{url}/api/runs/{r['id']}/graph").json() for r in reversed(runs)]


def _next_steps(console: Console, url: str, db: Path | None, graphs: list[dict[str, Any]]) -> None:
    first = graphs[0]["run"]["id"][:12] if graphs else "RUN_ID"
    keep = (f"  interlock runs --database-url {db}\n  interlock graph {first} --database-url {db}\n" if db is not None
            else "  interlock demo --db demo.db      (keeps the database; this one is deleted on exit)\n")
    console.print(f"""
[bold]{plural(len(graphs), 'run')} recovered from traffic alone[/] (no headers, no SDK changes).
Where to look next:
{keep}  open {url}/ui                  (with --serve: the web console, runs, graphs, calls)
  curl {url}/api/runs/{first}/graph      (with --serve; JSON: run, agents, nodes, edges, agent_edges)
  ./run.sh, then point your own agents at http://127.0.0.1:8080/v1 (OpenAI) or http://127.0.0.1:8080 (Anthropic)""")


def _wait_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def cmd_demo(args: argparse.Namespace) -> int:
    if args.db:
        db = Path(args.db)
        db.parent.mkdir(parents=True, exist_ok=True)
        return run_demo(db.resolve(), args.serve, Console())
    with tempfile.TemporaryDirectory(prefix="interlock-demo-") as tmp:  # nothing left in /tmp
        return run_demo(Path(tmp) / "demo.db", args.serve, Console(), kept=False)


def add_commands(sub: Any) -> None:
    demo = sub.add_parser("demo", help="see Interlock recover agent graphs (no keys, no network)",
                          description="Start a fake model and a proxy in-process, drive scripted multi-agent "
                                      "systems through it, and print the graphs Interlock recovers.")
    demo.add_argument("--db", help="SQLite file to keep (default: a temporary directory)")
    demo.add_argument("--serve", action="store_true", help="keep the proxy running afterwards")
    demo.set_defaults(func=cmd_demo)


__all__ = ["add_commands", "load_graph"]
