"""Re-delegation (`detect: redelegation`): the same sub-goal sent again, restated, to the same
worker while its results add nothing new: hub-and-spoke ping-pong.

    orchestrator ──"find a credible source for X"──▶ worker ──"could not find X"──▶ orchestrator
                 ──"look for another reliable source on X"──▶ worker  (delegate → return → delegate)

Per scope (default: the worker within its run) one stored list holds what the worker was
asked (instructions: its newest user messages) and what it answered (results: text outputs
without tool calls), newest first.  An instruction restates an earlier one when their
rarity-weighted word overlap (terms.py: URLs, numbers, ids and dates dropped, word forms
folded; words the worker's other instructions share, such as the task's subject, weigh
little) reaches `restated`.  Earlier instructions count only back to the last result with
novelty >= `novelty`: progress ends a loop.

    occurrence n = 1 + earlier restated instructions since the last progress
    n == max_repeats + 1   decided by the worker's next result: flagged when it adds little
                           (a retried sub-goal that then succeeds is not a loop)
    n >  max_repeats + 1   acted on when the instruction arrives (on_request)

Short instructions and results (fewer than `min_words` content words) are ignored; so is a
resent request (the retry rule's business).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy.call import Call
from proxy.guards.base import ALLOW, GuardDeps, Verdict
from proxy.guards.detector import LoopDetector
from proxy.guards.terms import Corpus, Terms, encode_terms

if TYPE_CHECKING:
    from proxy.rules import LoopRule

KEEP = 24  # instructions and results per worker looked back on


class Redelegation(LoopDetector):
    """The same sub-goal restated to the same worker, its results adding nothing."""

    def __init__(self, rule: LoopRule, deps: GuardDeps) -> None:
        super().__init__(rule, deps)
        self.corpora = deps.facts.corpora
        self.restated = rule.restated
        self.progress = rule.novelty
        self.min_words = rule.min_words

    async def on_request(self, call: Call) -> Verdict:
        facts = self.facts(call)
        terms = facts.instruction_terms
        if len(terms) < self.min_words:
            return ALLOW
        key, request = self.key(call), facts.request_digest
        items = await self.store.recent(key)
        if any(item.startswith("i\x1f") and item.split("\x1f", 3)[2] == request for item in items[:4]):
            return ALLOW  # a resent request
        docs, corpus = self.corpora.get(key, items)
        matches, returns = self._restated(terms, items, docs, corpus)
        n = 1 + len(matches)
        earlier = ",".join(f"{ident}:{sim:.3f}" for ident, sim in matches)
        item = f"i\x1f{call.id}\x1f{request}\x1f{n}\x1f{earlier}\x1f{encode_terms(terms)}"
        await self.store.push(key, item, keep=KEEP, ttl_s=self.window)
        if n <= self.max_repeats + 1:
            return ALLOW
        return self._verdict(call, n, matches, returns, None)

    def _restated(
        self, terms: Terms, items: list[str], docs: list[Terms], corpus: Corpus
    ) -> tuple[list[tuple[str, float]], list[str]]:
        """Earlier instructions this one restates (newest first) since the last progress, and
        the results in between (the returns of delegate → return → delegate)."""
        matches: list[tuple[str, float]] = []
        returns: list[str] = []
        for item, doc in zip(items, docs, strict=True):
            kind, ident, value = item.split("\x1f", 3)[:3]
            if kind == "r":
                if float(value) >= self.progress:
                    break
                returns.append(ident)
                continue
            similarity = corpus.dice(terms, doc, skip=doc)
            if similarity >= self.restated:
                matches.append((ident, similarity))
        return matches, returns

    async def on_response(self, call: Call) -> Verdict:
        if call.outcome != "ok" or call.completion.tool_calls:
            return ALLOW  # a tool call is a step, not a result
        terms = self.facts(call).output_terms
        if len(terms) < self.min_words:
            return ALLOW
        key = self.key(call)
        items = await self.store.recent(key)
        docs, corpus = self.corpora.get(key, items)
        novelty = corpus.novelty(terms) if docs else 1.0
        await self.store.push(key, f"r\x1f{call.id}\x1f{novelty:.3f}\x1f{encode_terms(terms)}", keep=KEEP,
                              ttl_s=self.window)
        if not items or not items[0].startswith("i\x1f") or novelty >= self.progress:
            return ALLOW  # only the first result after an instruction decides
        _, ident, _, count, earlier, _ = items[0].split("\x1f")
        n = int(count)
        if n != self.max_repeats + 1:
            return ALLOW  # below: tolerated; above: acted on at the request
        matches = [(part.split(":")[0], float(part.split(":")[1])) for part in earlier.split(",") if part]
        return self._verdict(call, n, matches, [], (ident, novelty))

    def _verdict(
        self,
        call: Call,
        n: int,
        matches: list[tuple[str, float]],
        returns: list[str],
        result: tuple[str, float] | None,
    ) -> Verdict:
        shown = ", ".join(f"{sim:.0%}" for _, sim in matches)
        what = (
            f"Agent '{call.agent or '?'}' has been given the same sub-goal {n} times, restated "
            f"(word overlap {shown} with earlier instructions), while its results added little new: "
            "a delegate → return → delegate loop"
        )
        advice = (
            "Stop re-delegating the same goal: change the approach or the worker, or report back with "
            "what is known and what is missing."
        )
        data: dict[str, Any] = {
            "worker": call.agent,
            "calls": [ident for ident, _ in reversed(matches)] + [result[0] if result else call.id],
            "similarity": [round(sim, 3) for _, sim in reversed(matches)],
            "restated": self.restated,
            "returns": list(reversed(returns)),
        }
        if result is not None:
            data.update({"result_call": call.id, "result_novelty": round(result[1], 3)})
        return self.graded(n, what, advice, data)
