"""The orchestration graph, recovered from traffic alone.  Pure code: no I/O but the index.

request path                         recorder queue (background, ended_at order)
────────────                         ───────────────────────────────────────────
RunResolver.resolve_run(call)        Linker.observe(call) ─▶ LinkResult
  hint / thread prefix → run id        agent (identity.py), thread (threads.py),
  (budgets, loop ceilings)             sources (fingerprint.py, lineage.py), run, edges
            │                                        │
            └──────────── LineageIndex (index.py) ───┘   in-memory now, shared later
                                                     │
API: build_graph(run, calls, edges) (view.py) ◀── rows persisted from LinkResults
"""

from proxy.graph.identity import AgentDirectory, Identifier, fingerprint, normalize_prompt, role_name
from proxy.graph.index import LineageIndex, MemoryLineageIndex
from proxy.graph.lineage import LineageConfig
from proxy.graph.linker import Linker, human_node
from proxy.graph.model import Edge, LinkResult
from proxy.graph.runs import RunResolver
from proxy.graph.view import build_graph

__all__ = [
    "AgentDirectory",
    "Edge",
    "Identifier",
    "LineageConfig",
    "LineageIndex",
    "LinkResult",
    "Linker",
    "MemoryLineageIndex",
    "RunResolver",
    "build_graph",
    "fingerprint",
    "human_node",
    "normalize_prompt",
    "role_name",
]
