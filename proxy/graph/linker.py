"""The linker: calls in, agents, threads, runs and edges out.  Pure code over a LineageIndex.

    observe(call)                     (background, in completion order: ended_at ascending)
      1 identity      Identifier: explicit name, else prompt+tools fingerprint → name
      2 thread        previous_response_id, else the longest prefix hash that is an earlier
                      call's head (input + response) → predecessor; atoms after it are new
      3 sources       tool-call ids in the new atoms → the calls that emitted them
                      new segments' shingles → earlier outputs (lineage.py)
      4 run           explicit hint > request-time run > predecessor's run > strongest
                      source's run (open ones only) > a new run named after this call;
                      strong lineage from another open inferred run merges it in (the
                      older run keeps its id; LinkResult.merged_runs names the others)
      5 edges         predecessor: continuation (tool when answering its tool calls)
                      other agent: handoff, or return when this agent handed work to it earlier
                      same agent, other thread: continuation (via content)
                      unclaimed new user text in a continuing thread: human
      6 remember      head, response id, tool-call ids, output fingerprints, run, thread

Human edges come from a pseudo node `human:<12 hex of the text>`; the API can draw it as a
person.  A thread whose run is closed (idle > run_idle_s) goes on in a new run, flagged
`resumed`, with its continuation edge into the old run.  Other edges never cross runs:
weak lineage from another run is dropped as a look-alike, strong lineage merges the runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType

from proxy.call import Call
from proxy.graph import threads
from proxy.graph.fingerprint import Shingler, SourcePrint
from proxy.graph.identity import AgentDirectory, Identifier, is_selector, slug_name, stated_name
from proxy.graph.index import LineageIndex
from proxy.graph.lineage import (
    Lazy,
    Lineage,
    LineageConfig,
    Segment,
    attribute,
    drop_relayed,
    score,
    seen_keys,
    shared_across_runs,
)
from proxy.graph.model import HUMAN_PREFIX, CallRecord, Edge, Identity, LinkResult, Ref, RunState
from proxy.lru import drop_oldest

LINKABLE = frozenset({"chat", "responses", "messages"})
_BIG_SEGMENT = 16_384  # characters: segments this large are cached (shingling them costs ms)
_BIG_CACHED = 8
_VIA = MappingProxyType({"u": "user", "t": "tool_result", "a": "assistant", "s": "system"})


@dataclass(slots=True)
class _Source:
    """Another thread's call that fed this one, and why we think so."""

    ref: Ref
    basis: str  # content | tool_call | previous_response_id
    lineage: Lineage | None = None
    tool_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Selection:
    """A selector's pick, and the conversation it read."""

    ref: Ref
    said: frozenset[int]  # what the selector read (_heard)

    def read(self, heard: frozenset[int]) -> bool:
        """The selector read (nearly) all of what this request hears: the selected speaker is
        handed the conversation the selector chose it from."""
        return bool(heard) and len(heard - self.said) <= 0.1 * len(heard)


@dataclass(slots=True)
class _Roster:
    """The speakers of one shared prompt: each named one, and whom each was seen beside."""

    members: dict[str, None] = field(default_factory=dict)
    beside: dict[str, set[str]] = field(default_factory=dict)


@dataclass(slots=True)
class _Ctx:
    call: Call
    ident: Identity
    atoms: list[threads.Atom]
    prefix: list[bytes] = field(default_factory=list)
    pred: Ref | None = None
    pred_via: str = "prefix"
    start: int = 0
    thread_id: str = ""
    retry: bool = False
    answered: list[str] = field(default_factory=list)  # predecessor's tool calls answered here
    sources: dict[str, _Source] = field(default_factory=dict)
    claimed: set[int] = field(default_factory=set)  # atom indexes explained by a source
    segments: list[Segment] = field(default_factory=list)
    run_id: str = ""
    run: RunState | None = None
    new_run: bool = False
    roots: dict[str, str] = field(default_factory=dict)  # parent call → its (root) run
    merged: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    cap: int | None = None  # characters read from each message (the request path's bound)


class Linker:
    """Turns observed calls into LinkResults.  Not thread-safe: one consumer per replica.

    `observe` runs off the request path (recorder queue, in ended_at order), does no I/O
    beyond the index and costs about half a millisecond of CPU for a 4k-token call.  It is
    not expected to raise on any Call a provider produced; the recorder still isolates it."""

    def __init__(
        self,
        index: LineageIndex,
        *,
        run_idle_s: float = 900.0,
        clock: Callable[[], float] = time.time,
        directory: AgentDirectory | None = None,
        identifier: Identifier | None = None,
        config: LineageConfig | None = None,
        shingler: Shingler | None = None,
        chains: threads.ChainCache | None = None,
    ) -> None:
        self.index = index
        self.run_idle_s = run_idle_s
        self.clock = clock
        self.identifier = identifier or Identifier(directory or AgentDirectory(claims=index))
        self.config = config or LineageConfig()
        self.shingler = shingler or Shingler()
        self.chains = chains or threads.ChainCache()
        self._scanned_prompts: dict[str, None] = {}
        self._big_pieces: dict[tuple[str, int, str], tuple[str, Segment]] = {}
        self._renamed: dict[str, str] = {}  # call id → the agent a later call named it
        self._prints: dict[str, SourcePrint] = {}  # noted outputs not linked yet
        self._openings: dict[str, tuple[str, int]] = {}  # thread id → its first request's opening
        self._selections: dict[str, list[_Selection]] = {}  # speaker name → selector calls that picked it
        self._placed: dict[bytes, tuple[str | None, float]] = {}  # request chain head → (run, until)
        self._rosters: dict[str, _Roster] = {}  # shared prompt → the speakers named on it
        self._eliminated: dict[str, None] = {}  # calls named by elimination (_by_elimination)

    @property
    def directory(self) -> AgentDirectory:
        return self.identifier.directory

    # ------------------------------------------------------------------ entry points

    def observe(self, call: Call) -> LinkResult:
        ident = self.identifier.identify(call)
        if call.operation not in LINKABLE:
            run = call.run_hint or call.run_id
            return LinkResult(call.id, ident.name, ident.fingerprint, run, call.id, new_agent=ident.new)
        ctx = _Ctx(call, ident, threads.atoms(call.messages))
        self._find_thread(ctx)
        self._segment(ctx)
        self._find_tool_sources(ctx)
        self._find_content_sources(ctx)
        self._find_selection(ctx)
        self._refine_identity(ctx)
        self._by_elimination(ctx)
        self._assign_run(ctx)
        self._name_sources(ctx)
        edges = self._edges(ctx)
        self._remember(ctx, edges)
        return LinkResult(
            call.id,
            ctx.ident.name,
            ctx.ident.key,
            ctx.run_id,
            ctx.thread_id,
            edges,
            ctx.flags,
            ctx.new_run,
            ctx.ident.new,
            ctx.merged,
            ctx.renamed,
        )

    def place(self, call: Call) -> str | None:
        """Request path, before forwarding: the open run of the conversation a request continues
        (or retries), else the run a new conversation joins by its content (a worker's first
        call), None when nothing places it.  Reads the index only; the linker later takes the
        answer (Call.run_id) as its lead.  A continuation costs one hash chain; a new
        conversation also one shingling of (the ends of) its last messages and one lookup."""
        if call.operation not in LINKABLE:
            return None
        ctx = _Ctx(call, self.identifier.identify(call), threads.atoms(call.messages))
        self._find_thread(ctx)
        lead = ctx.pred or next((s.ref for s in ctx.sources.values()), None)  # another agent's response id
        if lead is not None:
            return self._open_run(lead, call.started_at)
        key = ctx.prefix[-1] if ctx.prefix else None
        now = time.monotonic()
        known = self._placed.get(key) if key is not None else None
        if known is not None and known[1] > now:
            return known[0]  # the same request a moment ago (a resend): the same answer
        run = self._place(ctx)
        if key is not None:
            if len(self._placed) >= 4096:
                drop_oldest(self._placed)
            self._placed[key] = (run, now + _PLACED_S)
        return run

    def _place(self, ctx: _Ctx) -> str | None:
        call = ctx.call
        ctx.cap = _PLACE_CHARS
        self._segment(ctx, mark_prompt=False, cap=_PLACE_CHARS)
        self._find_tool_sources(ctx)
        self._find_content_sources(ctx)  # not selections: a name alone is too weak before forwarding
        for ref in self._parents(ctx):
            if self._places(ctx, ref) and (run := self._open_run(ref, call.started_at)) is not None:
                return run
        return None

    def _open_run(self, ref: Ref, at: float) -> str | None:
        """The run of `ref` (its root) if still open; a run noted a moment ago on the request
        path (note_response) and not linked yet counts as open."""
        state = self.index.get_run(ref.run_id)
        if state is None:
            return ref.run_id if at - ref.ended_at <= self.run_idle_s else None
        return state.run_id if self._open(state, at) else None

    def note_output(self, call: Call) -> None:
        """Request path, right after a response: post the output's fingerprints under the
        call's request-time run, so the next agent's first call can be placed before this
        call reaches the linker (behind the recorder queue).  The linker replaces the record."""
        if call.operation not in LINKABLE or call.outcome not in (None, "ok"):
            return
        printed = self.shingler.source(call.completion)
        if len(self._prints) >= 4096:  # noted, never linked (shed at shutdown): forget the oldest
            drop_oldest(self._prints)
        self._prints[call.id] = printed
        if printed.fps:
            ident, run = self.identifier.identify(call), call.run_id or call.id  # unplaced: a run of its own
            record = CallRecord(
                call.id, ident.key, call.id, run, call.started_at, _end(call), call.finish_reason,
                printed.chars, printed.fps, printed.part_ends, printed.tails, printed.handed,
            )  # fmt: skip
            self.index.add_call(record)

    def _printed(self, call: Call) -> SourcePrint:
        """The output's fingerprints: the ones note_output computed, else computed now."""
        printed = self._prints.pop(call.id, None)
        return printed if printed is not None else self.shingler.source(call.completion)

    def close_idle(self, now: float | None = None) -> list[str]:
        """Close runs idle for run_idle_s; returns their ids (their shape has settled)."""
        t = self.clock() if now is None else now
        return self.index.close_idle_runs(t - self.run_idle_s)

    # ------------------------------------------------------------------ 2 thread

    def _find_thread(self, ctx: _Ctx) -> None:
        call = ctx.call
        if call.previous_response_id and self._from_response(ctx, call.previous_response_id):
            return
        ctx.prefix = self.chains.chain(threads.seed(ctx.ident.seed), ctx.atoms)
        if not ctx.prefix:
            ctx.thread_id = call.id
            return
        keys = [threads.head_key(d) for d in ctx.prefix] + [threads.input_key(ctx.prefix[-1])]
        refs = self.index.get_refs(keys)
        for i in range(len(ctx.prefix) - 1, -1, -1):
            if refs[i] is not None:
                ctx.pred, ctx.start = refs[i], i + 1
                break
        failed = refs[-1]
        if failed is not None and ctx.start < len(ctx.atoms) and not failed.ok:
            ctx.pred, ctx.start, ctx.pred_via, ctx.retry = failed, len(ctx.atoms), "retry", True
        ctx.thread_id = ctx.pred.thread_id if ctx.pred else call.id

    def _from_response(self, ctx: _Ctx, response_id: str) -> bool:
        ref = self.index.get_refs([threads.response_key(response_id)])[0]
        if ref is None:
            return False
        ctx.prefix = self.chains.chain(bytes.fromhex(ref.chain), ctx.atoms)
        if _same_caller(ref.agent, ctx.ident):
            ctx.pred, ctx.pred_via, ctx.thread_id = ref, "previous_response_id", ref.thread_id
        else:
            ctx.thread_id = ctx.call.id
            ctx.sources[ref.call_id] = _Source(ref, "previous_response_id")
        return True

    # ------------------------------------------------------------------ 3 sources

    def _segment(self, ctx: _Ctx, *, mark_prompt: bool = True, cap: int | None = None) -> None:
        """`cap`: the request path reads at most this many characters of each of the last few
        messages, from their two ends (where a wrapper puts the passage it hands on); the linker
        reads all of them."""
        first = ctx.start if cap is None else max(ctx.start, len(ctx.atoms) - _PLACE_MESSAGES)
        for i in range(first, len(ctx.atoms)):
            atom = ctx.atoms[i]
            if atom.role != "c" and atom.text:
                text = atom.text if cap is None or len(atom.text) <= cap else _ends(atom.text, cap)
                ctx.segments.append(self._piece(i, _VIA[atom.role], text, cap is None))
        system = ctx.call.system
        if ctx.pred is not None or not system:
            return
        if cap is not None and len(system) > cap:
            system = _ends(system, cap)
        if is_selector(system):  # it carries the conversation so far, new on every turn
            ctx.segments.append(self._piece(-1, "instructions", system))
            return
        fp = ctx.ident.fingerprint
        unseen = fp not in self._scanned_prompts if not mark_prompt else self._first_sight(fp)
        if unseen:  # a prompt is scanned for handoffs once (the request path only peeks)
            ctx.segments.append(self._piece(-1, "instructions", system))

    def _piece(self, index: int, via: str, text: str, seen: bool = True) -> Segment:
        """`seen`: keep what a run remembers of a user message (the linker; not the request path)."""
        if len(text) < _BIG_SEGMENT:
            return self._shingled(index, via, text, seen)
        # The same large document sent again (RAG context, retries, fan-out, a benchmark) is
        # shingled once.  Keyed without hashing it (~0.1 ms per 500 kB): a hit must be equal.
        key = (via, len(text), text[:64])
        cached = self._big_pieces.get(key)
        if cached is not None and cached[0] == text:
            return dataclasses.replace(cached[1], index=index)
        seg = self._shingled(index, via, text)
        seg = dataclasses.replace(seg, seen_set=frozenset(seg.seen))  # shared by the runs it goes to
        if key not in self._big_pieces and len(self._big_pieces) >= _BIG_CACHED:
            drop_oldest(self._big_pieces)
        self._big_pieces[key] = (text, seg)
        return seg

    def _shingled(self, index: int, via: str, text: str, seen: bool = True) -> Segment:
        exact, hashes = self.shingler.target(text)
        return Segment(index, via, hashes, seen_keys(exact, hashes) if seen and via == "user" else ())

    def _first_sight(self, fingerprint: str) -> bool:
        seen = self._scanned_prompts
        if fingerprint in seen:
            return False
        if len(seen) >= 65_536:
            seen.clear()
        seen[fingerprint] = None
        return True

    def _find_selection(self, ctx: _Ctx) -> None:
        """A speaker selector answered this agent's name a moment ago: it picked this call's
        speaker (the selector → speaker step of a group chat).  Each selection is used once.
        Among concurrent group chats a name alone is ambiguous: the selection must come from
        the run the call's other evidence points to, else be the one whose transcript the call
        was handed (Selection.read).  A speaker whose request does not name it yet (its first
        turn, on a prompt it shares) takes the one pending selection that read its conversation,
        and is named as selected."""
        names = {slug_name(ctx.ident.name), stated_name(ctx.call)}
        names.discard(None)
        at = ctx.call.started_at + self.config.slack_s
        pending = [
            (name, sel) for name in names if name for sel in self._selections.get(name, ())
            if sel.ref.agent != ctx.ident.key and 0.0 <= at - sel.ref.ended_at <= _SELECTION_S
        ]  # fmt: skip
        heard: frozenset[int] | None = None
        if not pending and self._selections and not ctx.ident.hinted and not ctx.ident.key.startswith("name:"):
            heard = _heard(ctx.segments)
            pending = self._covering(ctx, at, heard)  # each one has read what this call hears
            if len(pending) == 1:
                ctx.ident = self.identifier.stated(ctx.ident.fingerprint, pending[0][0])
        if not pending:
            return
        runs = self._evidence_runs(ctx)
        if runs:  # the latest selection in this call's run (an older one went to a turn we could not name)
            pending = [(n, s) for n, s in pending if self._root(s.ref.run_id) in runs][-1:]
        elif heard is None:  # nothing else ties it to a chat: the one whose transcript it was handed
            heard = _heard(ctx.segments)
            pending = [(n, s) for n, s in pending if s.read(heard)]
        if len(pending) != 1:
            return
        name, sel = pending[0]
        ctx.sources.setdefault(sel.ref.call_id, _Source(sel.ref, "selection"))
        self._selections[name].remove(sel)

    def _covering(self, ctx: _Ctx, at: float, heard: frozenset[int]) -> list[tuple[str, _Selection]]:
        """Pending selections that read what this call hears (expired ones are dropped on the way)."""
        out = []
        for name, queue in list(self._selections.items()):
            queue[:] = [sel for sel in queue if at - sel.ref.ended_at <= _SELECTION_S]
            if not queue:
                del self._selections[name]
                continue
            out += [(name, sel) for sel in queue if sel.ref.agent != ctx.ident.key and sel.read(heard)]
        return out

    def _evidence_runs(self, ctx: _Ctx) -> set[str]:
        refs = [ctx.pred] if ctx.pred is not None else []
        refs += [s.ref for s in ctx.sources.values() if s.lineage is None or s.lineage.places(self.config)]
        return {self._root(ref.run_id) for ref in refs}

    def _root(self, run_id: str) -> str:
        state = self.index.get_run(run_id)
        return state.run_id if state is not None else run_id

    def _find_tool_sources(self, ctx: _Ctx) -> None:
        new = [
            (i, a)
            for i, a in enumerate(ctx.atoms[ctx.start :], ctx.start)
            if a.tool_id and a.role in ("c", "t")
        ]
        if not new:
            return
        called = {a.tool_id: a.text for a in ctx.atoms if a.role == "c" and a.tool_id}  # a result's call, when sent
        refs = self.index.get_refs([threads.tool_key(a.tool_id or "", called.get(a.tool_id or "", "")) for _, a in new])
        for (i, atom), ref in zip(new, refs, strict=True):
            if ref is None or ref.call_id == ctx.call.id:
                continue
            ctx.claimed.add(i)
            if ctx.pred is not None and ref.call_id == ctx.pred.call_id:
                ctx.answered.append(atom.tool_id or "")
                continue
            src = ctx.sources.setdefault(ref.call_id, _Source(ref, "tool_call"))
            src.tool_ids.append(atom.tool_id or "")

    def _find_content_sources(self, ctx: _Ctx) -> None:
        if not ctx.segments:
            return
        segs = ctx.segments  # one segment (the usual case, and a big one): its shingles, not a copy
        present = segs[0].hashes if len(segs) == 1 else set().union(*(seg.hashes for seg in segs))
        hits = self.index.lookup(present)
        if not hits:
            return
        ids = {cid for v in hits.values() for cid in v}
        fetched = self.index.get_calls(ids)
        shared = shared_across_runs(hits, fetched)
        records = {cid: r for cid, r in fetched.items() if self._eligible(ctx, r)}
        found = []
        words = Lazy(lambda: self._target_words(ctx))

        def segment_words(indices: set[int]) -> set[int]:
            return self._target_words(ctx, indices)

        for cid, owned in attribute(hits, records).items():
            lin = score(records[cid], owned, present, ctx.segments, self.config, words, shared, segment_words)
            if lin is not None:
                found.append(lin)
        if any(lin.fallback for lin in found):  # a retold short part is evidence only where nothing else is
            strong = [lin for lin in found if not lin.fallback]
            found = strong if strong or ctx.pred is not None or ctx.sources else found
        fed = self.index.thread_sources({lin.record.thread_id for lin in found}) if len(found) > 1 else {}
        for lin in drop_relayed(found, fed):
            self._add_content_source(ctx, lin)

    def _target_words(self, ctx: _Ctx, indices: set[int] | None = None) -> set[int]:
        texts = [
            ctx.atoms[seg.index].text if seg.index >= 0 else ctx.call.system or "" for seg in ctx.segments
            if indices is None or seg.index in indices
        ]
        if ctx.cap is not None:  # the request path read only the ends of long messages
            texts = [t if len(t) <= ctx.cap else _ends(t, ctx.cap) for t in texts]
        return {w for text in texts for w in self.shingler.words(text)}

    def _eligible(self, ctx: _Ctx, rec: CallRecord) -> bool:
        return (
            rec.call_id != ctx.call.id
            and rec.thread_id != ctx.thread_id
            and rec.ended_at <= ctx.call.started_at + self.config.slack_s
        )

    def _add_content_source(self, ctx: _Ctx, lin: Lineage) -> None:
        rec = lin.record
        src = ctx.sources.get(rec.call_id)
        if src is None:
            ref = Ref(rec.call_id, rec.thread_id, rec.run_id, rec.agent, rec.ended_at, "")
            src = ctx.sources[rec.call_id] = _Source(ref, "content")
        src.lineage = lin
        ctx.claimed |= lin.segments

    # ------------------------------------------------------------------ 3b who, among agents sharing a prompt

    def _refine_identity(self, ctx: _Ctx) -> None:
        """Agents that share a prompt and tools share a fingerprint; the traffic still tells
        them apart.  A call continues its own conversation (the caller of its predecessor, or
        of an output it holds as its own `assistant` turn); a new conversation fed another
        sharer's output as user or tool input is another agent: the one that sharer hands
        work to.  A name the request states (Identity.hinted) or a client-given name wins."""
        ident = ctx.ident
        if ident.hinted or ident.key.startswith("name:"):
            return
        own = ctx.pred.agent if ctx.pred is not None else self._own_turns(ctx)
        if own is not None:
            if own != ident.key and _base(own) == ident.fingerprint:
                ctx.ident = self.identifier.rekeyed(ident, own, ctx.call.system)
            return
        fed = [
            src for src in ctx.sources.values()
            if _base(src.ref.agent) == ident.fingerprint
            and (src.lineage is None or (src.lineage.via != "assistant" and src.lineage.places(self.config)))
        ]  # fmt: skip
        if fed:
            top = max(fed, key=lambda s: (s.lineage.hits if s.lineage else 1_000_000, s.ref.ended_at))
            if self._next_task(ctx, top.ref):
                if top.ref.agent != ident.key:
                    ctx.ident = self.identifier.rekeyed(ident, top.ref.agent, ctx.call.system)
                return
            key = f"{ident.fingerprint}<{hashlib.blake2b(top.ref.agent.encode(), digest_size=4).hexdigest()}"
            ctx.ident = self.identifier.rekeyed(ident, key, ctx.call.system)

    def _name_sources(self, ctx: _Ctx) -> None:
        """A group chat names each speaker's turn (`name`): the call whose output a named turn
        holds was made by that speaker.  A speaker's first turn could not know it (nothing in
        its own request named it), so it is renamed now (LinkResult.renamed)."""
        for src in ctx.sources.values():
            lin, agent = src.lineage, src.ref.agent
            stated = "/" in agent and src.ref.call_id not in self._eliminated
            if lin is None or stated or agent.startswith("name:") or src.ref.call_id in ctx.renamed:
                continue
            if ctx.roots.get(src.ref.call_id) != ctx.run_id or not lin.places(self.config):
                continue  # a look-alike from another run, or too little of it to say who spoke
            msgs = [ctx.call.messages[ctx.atoms[i].index] for i in lin.segments if i >= 0]
            names = {m.name for m in msgs if m.role in ("user", "assistant")}  # a tool message's name is the tool
            names.discard(None)
            if len(names) == 1 and (slug := slug_name(names.pop() or "")):
                name = self.identifier.stated(_base(agent), slug).name
                ctx.renamed[src.ref.call_id] = self._renamed[src.ref.call_id] = name
                self._roster(_base(agent)).members[slug] = None
                if len(self._renamed) >= 65_536:
                    drop_oldest(self._renamed)

    def _by_elimination(self, ctx: _Ctx) -> None:
        """A broadcast chat's speaker on its first turn, on a prompt the members share: its request
        names every member who spoke before it (`name`) but not itself, and when its last turn ends
        the chat nothing quotes it to name it.  Of the speakers known on this prompt, those that
        took part in transcripts beside every member named here, minus those: when one is left, it
        is this speaker.  Nothing is decided while two or more remain (a bigger chat whose last
        members have not spoken yet, or two systems' chats on one default prompt), nor for a call
        holding a turn of its own (it is no first turn), nor for an agent whose prompt is its own
        (its roster never names it: only speakers renamed on the shared prompt count), nor before
        two known speakers have spoken (a roster still being learnt)."""
        call, ident = ctx.call, ctx.ident
        names: dict[str, None] = {}
        first_turn = True
        for m in call.messages:
            if m.role == "assistant":
                first_turn = False
            elif m.role == "user" and m.name and (slug := slug_name(m.name)):
                names[slug] = None
        if not names:
            return
        roster = self._roster(ident.fingerprint)
        unnamed = first_turn and not (ident.hinted or ident.key.startswith("name:") or "/" in ident.key)
        if unnamed and len(names) >= 2 and all(name in roster.members for name in names):
            left: set[str] | None = None
            for name in names:
                beside = roster.beside.get(name, set())
                left = set(beside) if left is None else left & beside
            left = (left or set()).difference(names)
            if len(left) == 1 and (name := left.pop()) in roster.members:
                ctx.ident = self.identifier.stated(ident.fingerprint, name)
                self._eliminated[call.id] = None  # a later turn quoting it under a name still decides
                if len(self._eliminated) >= 65_536:
                    drop_oldest(self._eliminated)
        for name in names:  # what this transcript shows of who talks beside whom
            beside = roster.beside.setdefault(name, set())
            if len(beside) < _ROSTER_MAX:
                beside.update(n for n in names if n != name)

    def _roster(self, fingerprint: str) -> _Roster:
        roster = self._rosters.get(fingerprint)
        if roster is None:
            if len(self._rosters) >= 4096:
                drop_oldest(self._rosters)
            roster = self._rosters[fingerprint] = _Roster()
        return roster

    def _agent_of(self, ref: Ref) -> str:
        """Who made a call, as agent pairs (handoff, then return) count it: its shown name."""
        return self._renamed.get(ref.call_id) or self.directory.name_for(ref.agent, None)[0]

    def _next_task(self, ctx: _Ctx, feeder: Ref) -> bool:
        """The feeder's own conversation opened with the same template and other content (CrewAI's
        "Current Task: …" for each task of one manager): the same agent on its next task, handed
        its earlier result as context, not another agent sharing its prompt.  The very same
        opening message (a group chat's task, broadcast to every member) proves nothing, and
        only an agent offered tools (one that acts, or delegates) is taken to work through tasks:
        prompt-sharing stages of a plain pipeline often wrap their input in one template."""
        theirs = self._openings.get(feeder.thread_id)
        if theirs is None or not ctx.call.tools:
            return False
        mine = _opening(ctx.call)
        return bool(mine[0]) and mine[0] == theirs[0] and mine[1] != theirs[1]

    @staticmethod
    def _own_turns(ctx: _Ctx) -> str | None:
        """The caller of an output this call holds as its own assistant turn (a history the
        framework re-serialised, so no prefix matched)."""
        mine = [
            src for src in ctx.sources.values()
            if src.lineage is not None and src.lineage.via == "assistant" and _base(src.ref.agent) == ctx.ident.fingerprint
        ]  # fmt: skip
        return max(mine, key=lambda s: s.ref.ended_at).ref.agent if mine else None

    # ------------------------------------------------------------------ 4 run

    def _assign_run(self, ctx: _Ctx) -> None:
        call = ctx.call
        explicit = call.run_hint  # X-Interlock-Run; a run the request path found is a lead (below)
        if explicit:
            ctx.run = self.index.get_run(explicit)
            ctx.run_id, ctx.new_run = (ctx.run.run_id if ctx.run else explicit), ctx.run is None
            self._live_runs(ctx, self._parents(ctx))  # resolves the sources' runs
            return
        parents = self._parents(ctx)
        live = self._live_runs(ctx, parents)
        placed = self.index.get_run(call.run_id) if call.run_id else None
        if placed is not None:  # the request path's run leads; lineage may still fold others in
            live = [(Ref(call.id, "", placed.run_id, "", 0.0, ""), placed)] + [
                item for item in live if item[1].run_id != placed.run_id
            ]
        elif call.run_id and not live:  # placed at request time in a run not linked yet
            ctx.run_id, ctx.new_run = call.run_id, True
            return
        if not live:
            ctx.run_id, ctx.new_run = call.id, True
            if parents:
                ctx.flags.append("resumed")
            return
        main, *others = live
        explained = self._explained(ctx, main[1].run_id)
        joined = [
            state for ref, state in others
            if not state.explicit and self._joins(ctx.sources.get(ref.call_id), explained)
        ]
        ctx.run = self._merge(ctx, main[1], joined) if joined else main[1]
        ctx.run_id = ctx.run.run_id

    def _parents(self, ctx: _Ctx) -> list[Ref]:
        """Predecessor first, then sources by strength: structural evidence beats content, and
        the caller's own earlier turn (a history resent as text) is its conversation going on."""
        me = ctx.ident.key

        def strength(src: _Source) -> tuple[bool, int, float]:
            lin = src.lineage
            own = lin is not None and lin.via == "assistant" and src.ref.agent == me
            return (own, lin.hits if lin else 1_000_000, src.ref.ended_at)

        ranked = sorted(ctx.sources.values(), key=strength, reverse=True)
        refs = [src.ref for src in ranked]
        return [ctx.pred, *refs] if ctx.pred else refs

    def _live_runs(self, ctx: _Ctx, parents: list[Ref]) -> list[tuple[Ref, RunState]]:
        """The open runs of the parents (merged runs answer as their root), first seen first.
        Every parent's run is noted (ctx.roots); only the predecessor and structural or
        placing content sources (Lineage.places) offer theirs."""
        live: dict[str, tuple[Ref, RunState]] = {}
        for ref in parents:
            state = self.index.get_run(ref.run_id)
            if state is None:
                continue
            ctx.roots[ref.call_id] = state.run_id
            if self._open(state, ctx.call.started_at) and state.run_id not in live and self._places(ctx, ref):
                live[state.run_id] = (ref, state)
        return list(live.values())

    def _places(self, ctx: _Ctx, ref: Ref) -> bool:
        src = ctx.sources.get(ref.call_id)
        if src is None or src.lineage is None or src.lineage.places(self.config):
            return True
        # the caller's own earlier turn, resent as text: its conversation goes on (a thread, not lineage)
        return src.lineage.via == "assistant" and ref.agent == ctx.ident.key

    def _explained(self, ctx: _Ctx, run_id: str) -> set[int]:
        """Input segments already explained by content from the main run's own calls."""
        out: set[int] = set()
        for cid, src in ctx.sources.items():
            if src.lineage is not None and ctx.roots.get(cid) == run_id:
                out |= src.lineage.segments
        return out

    def _joins(self, src: _Source | None, explained: set[int]) -> bool:
        """Evidence strong enough to fold another open run into this call's run.  Content that
        only echoes input the main run already explains (two runs of one templated system)
        is a look-alike, not lineage."""
        if src is None:
            return False
        lin, cfg = src.lineage, self.config
        if lin is None:
            return True
        if lin.segments and lin.segments <= explained:
            return False
        return lin.places(cfg) and lin.specific >= cfg.merge_hits and lin.hits >= cfg.merge_share * len(lin.record.fps)

    def _merge(self, ctx: _Ctx, main: RunState, joined: list[RunState]) -> RunState:
        """Union the runs; the explicit one, else the oldest, keeps its id."""
        states = [main, *joined]
        root = main if main.explicit else min(states, key=lambda st: (st.started_at, st.run_id))
        ctx.merged = [st.run_id for st in states if st.run_id != root.run_id]
        gone = set(ctx.merged)
        ctx.roots = {cid: root.run_id if run in gone else run for cid, run in ctx.roots.items()}
        return self.index.merge_runs(root.run_id, ctx.merged)

    def _open(self, state: RunState, at: float) -> bool:
        return not state.closed and at - state.last_seen <= self.run_idle_s

    # ------------------------------------------------------------------ 5 edges

    def _edges(self, ctx: _Ctx) -> list[Edge]:
        edges: list[Edge] = []
        if ctx.pred is not None:
            edges.append(self._thread_edge(ctx, ctx.pred))
        pairs = ctx.run.pairs if ctx.run else frozenset()
        for src in ctx.sources.values():
            edge = self._source_edge(ctx, src, pairs)
            if edge is not None:
                edges.append(edge)
        edges.extend(self._human_edges(ctx))
        if any(e.evidence.get("truncated") for e in edges):
            ctx.flags.append("truncated_input")
        if ctx.retry:
            ctx.flags.append("retry")
        return edges

    def _thread_edge(self, ctx: _Ctx, pred: Ref) -> Edge:
        if ctx.answered:
            return Edge(
                pred.call_id, ctx.call.id, "tool", {"via": "tool_result", "tool_call_ids": ctx.answered}
            )
        ev = {"via": ctx.pred_via, "new_messages": len(ctx.atoms) - ctx.start}
        return Edge(pred.call_id, ctx.call.id, "continuation", ev)

    def _source_edge(self, ctx: _Ctx, src: _Source, pairs: frozenset[tuple[str, str]]) -> Edge | None:
        if ctx.roots.get(src.ref.call_id) != ctx.run_id:
            return None  # a run is what edges join: weak lineage from another run is a look-alike
        ev: dict[str, object] = src.lineage.evidence() if src.lineage else {"via": src.basis}
        if src.tool_ids:
            ev["tool_call_ids"] = src.tool_ids
            ev["via"] = "tool_call" if src.lineage is None else ev["via"]
        me, other = ctx.ident.name, self._agent_of(src.ref)
        if src.ref.agent == ctx.ident.key or other == me:
            kind = "tool" if src.basis == "tool_call" and src.lineage is None else "continuation"
        else:
            kind = "return" if (me, other) in pairs else "handoff"
        return Edge(src.ref.call_id, ctx.call.id, kind, ev)

    def _human_edges(self, ctx: _Ctx) -> list[Edge]:
        if ctx.pred is None or ctx.new_run:
            return []
        candidates = [
            (seg.index, seg.seen) for seg in ctx.segments if seg.seen and seg.index not in ctx.claimed
        ]
        if not candidates:
            return []
        seen = self.index.run_seen(ctx.run_id, {h for _, keys in candidates for h in keys})
        edges = []
        for i, keys in candidates:
            if self._is_new_text(keys, seen) and not self._is_template(ctx, keys[0]):
                text = ctx.atoms[i].text
                edges.append(
                    Edge(human_node(text), ctx.call.id, "human", {"chars": len(text), "via": "user"})
                )
        if edges:
            ctx.flags.append("human_input")
        return edges

    @staticmethod
    def _is_new_text(keys: tuple[int, ...], seen: set[int]) -> bool:
        if keys[0] in seen:
            return False
        sample = keys[1:]
        return len(sample) < 3 or sum(map(seen.__contains__, sample)) < 0.5 * len(sample)

    def _is_template(self, ctx: _Ctx, exact: int) -> bool:
        """The same text came from this agent's caller in another run: framework boilerplate."""
        key = f"u:{ctx.ident.key}:{exact & 0xFFFFFFFFFFFFFFFF:x}"
        ref = self.index.get_refs([key])[0]
        mine = Ref(ctx.call.id, ctx.thread_id, ctx.run_id, ctx.ident.key, _end(ctx.call), "")
        self.index.put_refs({key: mine})
        return ref is not None and ref.run_id != ctx.run_id

    # ------------------------------------------------------------------ 6 remember

    def _remember(self, ctx: _Ctx, edges: list[Edge]) -> None:
        call, ended = ctx.call, _end(ctx.call)
        out = threads.output_atoms(call.completion)
        ok = bool(out) and call.outcome in (None, "ok")
        last = ctx.prefix[-1] if ctx.prefix else threads.seed(ctx.ident.seed)
        head = self.chains.chain(last, out)[-1] if out else last
        ref = Ref(call.id, ctx.thread_id, ctx.run_id, ctx.ident.key, ended, head.hex(), ok)
        refs = {threads.head_key(head) if ok else threads.input_key(last): ref}
        if call.completion.response_id:
            refs[threads.response_key(call.completion.response_id)] = ref
        for tc in call.completion.tool_calls:
            if tc.id:
                refs[threads.tool_key(tc.id)] = ref  # for a result sent without its call
                refs[threads.tool_key(tc.id, threads.tool_atom_text(tc.name, tc.arguments))] = ref
        self.index.put_refs(refs)
        self._remember_output(ctx, ended)
        if ctx.thread_id == call.id:
            self._openings[call.id] = _opening(call)
            if len(self._openings) >= 65_536:
                drop_oldest(self._openings)
        short = len(call.completion.text.split(None, 5)) <= 4
        if short and call.system and is_selector(call.system) and (picked := slug_name(call.completion.text[:80])):
            queue = self._selections.setdefault(picked, [])
            queue.append(_Selection(ref, _heard(ctx.segments, instructions=True)))
            del queue[:-64]
            if len(self._selections) >= 4096:
                drop_oldest(self._selections)
        self._remember_run(ctx, edges, ended)

    def _remember_output(self, ctx: _Ctx, ended: float) -> None:
        call = ctx.call
        printed = self._printed(call)
        if not printed.fps:
            return
        record = CallRecord(
            call.id, ctx.ident.key, ctx.thread_id, ctx.run_id, call.started_at, ended,
            call.finish_reason, printed.chars, printed.fps, printed.part_ends, printed.tails, printed.handed,
            self._echo(ctx, printed.fps),
        )  # fmt: skip
        self.index.add_call(record)

    @staticmethod
    def _echo(ctx: _Ctx, fps: tuple[int, ...]) -> frozenset[int]:
        """The output's fingerprints its own new input held where no earlier output said them
        first: text it restated (the task a person gave it), which proves nothing about who
        reads it next, since the task's author may have handed the same text to others.  A
        passage relayed from another agent's output is no echo (a manager quoting its analyst
        to a checker); an earlier output's own echo stays one (a manager restating its task
        again on its next turn)."""
        if not fps or not ctx.segments:
            return frozenset()
        relayed = {
            fp for src in ctx.sources.values() if src.lineage is not None
            for fp in src.lineage.record.fps if fp not in src.lineage.record.echo
        }  # fmt: skip
        held = [seg.hashes for seg in ctx.segments]
        return frozenset(fp for fp in fps if fp not in relayed and any(fp in hs for hs in held))

    def _remember_run(self, ctx: _Ctx, edges: list[Edge], ended: float) -> None:
        me = ctx.ident.name
        pairs = [(self._agent_of(src.ref), me) for src in ctx.sources.values() if self._is_handoff(src, edges)]
        explicit = bool(ctx.call.run_hint)
        self.index.touch_run(
            ctx.run_id, started_at=ctx.call.started_at, ended_at=ended, pairs=pairs, explicit=explicit
        )
        pred = ctx.pred.call_id if ctx.pred else None
        fed = [e.source for e in edges if e.kind != "human" and e.source != pred]
        if fed:
            self.index.add_thread_sources(ctx.thread_id, fed)
        seen = [seg for seg in ctx.segments if seg.seen]
        if len(seen) == 1:
            self.index.add_run_seen(ctx.run_id, seen[0].seen_set or seen[0].seen)
        elif seen:
            self.index.add_run_seen(ctx.run_id, [h for seg in seen for h in seg.seen])

    @staticmethod
    def _is_handoff(src: _Source, edges: list[Edge]) -> bool:
        return any(e.source == src.ref.call_id and e.kind == "handoff" for e in edges)


def _heard(segments: list[Segment], *, instructions: bool = False) -> frozenset[int]:
    """A sample (1 in 4) of the shingles of a request's new input: the conversation it was
    handed.  A selector's instructions count (some carry the transcript there); a speaker's
    own prompt does not."""
    return frozenset(
        h for seg in segments if instructions or seg.via != "instructions" for h in seg.hashes if not h & 3
    )


def _opening(call: Call) -> tuple[str, int]:
    """(first two words, hash of the whole text) of a request's first user message."""
    text = next((m.text for m in call.messages if m.role == "user"), "")
    return " ".join(text[:200].lower().split()[:2]), hash(text)


def _ends(text: str, cap: int) -> str:
    half = cap // 2
    return text[:half] + "\n\n" + text[-half:]


_PLACE_CHARS = 8192  # characters of each message the request path shingles (bounded cost) ...
_PLACE_MESSAGES = 8  # ... of its last messages
_PLACED_S = 2.0  # an identical request within this long gets the same placement
_ROSTER_MAX = 64  # names kept beside one speaker of a shared prompt
_SELECTION_S = 120.0  # a selection is taken up by the chosen speaker's next call within this


def _base(agent_key: str) -> str:
    """The fingerprint part of an inferred agent key (`fp`, `fp/<stated name>`, `fp<<feeder>`)."""
    return agent_key[:16]


def _same_caller(agent_key: str, ident: Identity) -> bool:
    if agent_key == ident.key:
        return True
    return not ident.hinted and not ident.key.startswith("name:") and _base(agent_key) == ident.fingerprint


def _end(call: Call) -> float:
    return call.ended_at if call.ended_at is not None else call.started_at


def human_node(text: str) -> str:
    """The pseudo node of a human message: `human:` + 12 hex of its whitespace-normalised text."""
    basis = " ".join(text.split()).encode("utf-8", "surrogatepass")
    return HUMAN_PREFIX + hashlib.blake2b(basis, digest_size=6).hexdigest()
