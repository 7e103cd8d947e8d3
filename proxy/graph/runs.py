"""Request-path run lookup, so run-scoped budgets and loop ceilings can act before forwarding.

    X-Interlock-Run ─────────────────────────────────────▶ that run
    previous_response_id ──index r:<id>──▶ Ref ─────────▶ its run, if still open (else a new run)
    messages ──hash chain (threads.py)──▶ longest h:<prefix> ──▶ its run, if still open
    a new conversation ──Placing.place (the linker's content lineage, read-only)──▶ that run
    otherwise ───────────────────────────────────────────▶ None: a run's first call (the linker
                                                            names the run after it)

So a worker's first call counts against its run's budget before it is forwarded.
`note_response` posts each answered output at once (Placing.note_output, under the run the
linker will give it), so the next agent's first call finds it before the linker, behind the
recorder queue, has seen it.  A run's very first call stays unplaced on purpose: identical
first requests (a retry, or 200 runs of one template on one task) cannot be told apart there.
Threads cost one blake2b per message (a remembered one for a long message seen before:
threads.ChainCache) and one index read; a new conversation one shingling of its input.  The
linker honours `call.run_id` set here, so budgets and the graph agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from proxy.call import Call
from proxy.graph import threads
from proxy.graph.identity import Identifier
from proxy.graph.index import LineageIndex
from proxy.graph.model import Ref


class Placing(Protocol):
    """Content placement of a new conversation (the Linker): read-only, microseconds."""

    def place(self, call: Call) -> str | None: ...

    def note_output(self, call: Call) -> None: ...


class RunResolver:
    """Cheap, synchronous, never raises.  Share the Identifier with the Linker so both name
    agents alike (and the ChainCache too, when both run on one event loop)."""

    def __init__(
        self,
        index: LineageIndex,
        identifier: Identifier,
        *,
        run_idle_s: float = 900.0,
        clock: Callable[[], float] = time.time,
        chains: threads.ChainCache | None = None,
        placer: Placing | None = None,
    ) -> None:
        self.placer = placer
        self.index = index
        self.identifier = identifier
        self.run_idle_s = run_idle_s
        self.clock = clock
        self.chains = chains or threads.ChainCache()

    async def resolve(self, call: Call) -> None:
        """Request path: name an unnamed agent (its display name, `inferred`) and find its run."""
        if call.agent is None:
            call.agent, call.agent_source = self.resolve_agent(call), "inferred"
        if call.run_id is None:
            call.run_id = self.resolve_run(call)

    def resolve_agent(self, call: Call) -> str:
        """The agent's display name (explicit name, else from its prompt): for per-agent rules."""
        return self.identifier.identify(call).name

    def resolve_run(self, call: Call) -> str | None:
        """Run id for a request about to be forwarded, or None when only lineage can tell."""
        if call.run_hint:
            return call.run_hint
        if self.placer is not None:  # it finds the conversation itself: one hash chain per request
            return self.placer.place(call)
        ref = self._continued(call)
        return ref.run_id if ref is not None and self._open(ref) else None

    def note_response(self, call: Call) -> None:
        """Optional, right after a response completed: lets the next turn of this thread
        resolve even before the linker (behind the recorder queue) has seen this call."""
        if self.placer is not None:
            self.placer.note_output(call)
        if not call.run_id or call.outcome not in (None, "ok"):
            return
        out = threads.output_atoms(call.completion)
        if not out:
            return
        ident = self.identifier.identify(call)
        head = self.chains.chain(threads.seed(ident.seed), threads.atoms(call.messages) + out)[-1]
        ended = call.ended_at or self.clock()
        ref = Ref(call.id, call.id, call.run_id, ident.key, ended, head.hex())
        existing = self.index.get_refs([threads.head_key(head)])[0]
        if existing is None:
            self.index.put_refs({threads.head_key(head): ref})

    def _continued(self, call: Call) -> Ref | None:
        if call.previous_response_id:
            return self.index.get_refs([threads.response_key(call.previous_response_id)])[0]
        items = threads.atoms(call.messages)
        if not items:
            return None
        prefix = self.chains.chain(threads.seed(self.identifier.identify(call).seed), items)
        refs = self.index.get_refs([threads.head_key(d) for d in reversed(prefix)])
        return next((r for r in refs if r is not None), None)

    def _open(self, ref: Ref) -> bool:
        """Same rule as the linker: not closed, and active within run_idle_s."""
        state = self.index.get_run(ref.run_id)
        last = ref.ended_at if state is None else state.last_seen
        closed = state is not None and state.closed
        return not closed and self.clock() - last <= self.run_idle_s
