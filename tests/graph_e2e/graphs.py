"""Reading the graph Interlock recovered, through its public API, once recording has settled.

    Api(px).settle(calls=N, runs=R)  poll /api/runs + /api/runs/{id}/graph until the runs hold N
                                     nodes in R runs and two reads in a row agree (the recorder,
                                     the linker and run merges are asynchronous), then return
                                     {run id: Graph JSON}
    edge_triples(graph)              {(source agent, target agent, kind)} of a graph's agent_edges

The proxy's own fixture lives in conftest.py: a fresh proxy per test is cheap (no tokenizer
files, so no BPE parsing at start-up) and keeps scenarios from sharing an index or agent names.
"""

from __future__ import annotations

import importlib
import os
import time
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.proxyserver import ProxyServer

Graph = dict[str, Any]


def loopback_http(timeout: float, **kwargs: Any) -> httpx.Client:
    """An httpx client for plain HTTP on 127.0.0.1: no CA bundle to load (~50 ms per client)."""
    return httpx.Client(verify=False, timeout=timeout, **kwargs)


def sdk_http(timeout: float) -> Any:
    """The same for the `openai` / `anthropic` SDKs, which are built on `httpx2` (None: the
    SDK's own default client, for SDK versions built on another package)."""
    try:
        import httpx2
    except ImportError:
        return None
    return httpx2.Client(verify=False, timeout=timeout)


class Api:
    """GETs on the proxy's admin API over one kept-alive connection (px.api opens a new
    client, loading the CA bundle, per request: ~50 ms each, too slow to poll with)."""

    def __init__(self, px: ProxyServer) -> None:
        self.client = loopback_http(10.0, base_url=px.url)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def get(self, path: str, **params: Any) -> Any:
        r = self.client.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def calls(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("/api/calls", limit=1000)["items"]
        return items

    def wait_calls(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        items = self.calls()
        while len(items) < n and time.monotonic() < deadline:
            time.sleep(0.02)
            items = self.calls()
        assert len(items) >= n, f"expected {n} recorded calls, found {len(items)}"
        return items

    def snapshot(self) -> dict[str, Graph]:
        runs = self.get("/api/runs", limit=1000)["items"]
        return {r["id"]: self.get(f"/api/runs/{r['id']}/graph") for r in runs}

    def settle(self, *, calls: int, runs: int | None = None, timeout: float = 10.0) -> dict[str, Graph]:
        """The run graphs once all `calls` are linked into `runs` runs (when given) and stable."""
        self.wait_calls(calls, timeout=timeout)
        deadline = time.monotonic() + timeout
        previous: dict[str, Graph] | None = None
        graphs: dict[str, Graph] = {}
        while time.monotonic() < deadline:
            graphs = self.snapshot()
            complete = node_count(graphs) == calls and (runs is None or len(graphs) == runs)
            if complete and _shape(graphs) == _shape(previous):
                return graphs
            previous = graphs if complete else None
            time.sleep(0.03)
        return graphs  # the caller's exact assertions show what is missing


def node_count(graphs: dict[str, Graph]) -> int:
    return sum(len(g["nodes"]) for g in graphs.values())


def _shape(graphs: dict[str, Graph] | None) -> object:
    if graphs is None:
        return None
    return sorted(
        (run, sorted((n["id"], n["agent"]) for n in g["nodes"]),
         sorted((e["source"], e["target"], e["kind"]) for e in g["edges"]))
        for run, g in graphs.items()
    )


def edge_triples(graph: Graph) -> set[tuple[str, str, str]]:
    return {(e["source"], e["target"], e["kind"]) for e in graph["agent_edges"]}


def agent_names(graph: Graph) -> set[str]:
    return {a["name"] for a in graph["agents"]}


def framework(name: str) -> ModuleType:
    """Import a framework from PyPI: skipped when absent locally, a failure in CI (CI=true)."""
    if os.environ.get("CI", "").lower() == "true":
        return importlib.import_module(name)
    return pytest.importorskip(name)
