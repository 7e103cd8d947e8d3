"""Re-delegation (`detect: redelegation`): the same sub-goal sent again, restated, to the same
worker while its results add nothing: hub-and-spoke ping-pong.

    orchestrator ──"find a credible source for X"──▶ worker ──"could not find X"──▶ orchestrator
                 ──"look for another reliable source on X"──▶ worker  (delegate → return → delegate)

An instruction is what an agent was just asked: its newest user message(s), minus the lines
its conversation already carried verbatim (a framework's prompt template resent every turn).  Per run (the
conversation when there is none) one stored list holds the instructions every agent got,
newest first, each tagged with its sub-goal: the sub-goal of the earlier instruction to the
same agent it restates, else its own; results are tagged with the sub-goal they answer.
X restates a sub-goal G when the rarity-weighted share of X's words found in G's earlier
instructions and results (of this agent) reaches `restated`, or half of it when this agent's
last result failed G and X names a word only G used (after a failure the next instruction is
most often G again).  Rarity is counted over the run's sub-goals, not its messages: a word
every sub-goal uses (the task's subject) weighs little, a frequent English word ("find",
"source") a third, a word the run never used half (restatements bring such words: a synonym,
another kind of source); a word of one sub-goal (its entity) weighs a lot, however often that
sub-goal was restated.  Words are terms.py's: URLs, numbers, ids and dates dropped, word forms
folded.

Returns are not delegations.  An instruction carries the output of the agent it came from
(most of its words in that output, or that output's in it); when that agent got an
instruction from this one before, the instruction is a return (a worker's report reaching
the orchestrator that delegated to it) and is neither stored nor judged.

    progress     a result (a text answer without tool calls) whose novelty against the run's
                 instructions and results reaches `novelty` and that reports no failure
                 ("could not find", "no luck", "does not state"...)
    occurrence n = 1 + earlier instructions of the sub-goal to this agent since its last
                 progress (within `window`)
    n == max_repeats + 1   decided by the agent's next result: acted on unless it is progress
                           (a retried sub-goal that then succeeds is not a loop)
    n >  max_repeats + 1   acted on when the instruction arrives (on_request)

A resent request (the retry rule's business) and instructions of fewer than `min_words`
content words are ignored.
"""

from __future__ import annotations

import math
import re
from typing import Any

from proxy.call import Call
from proxy.guards.base import ALLOW, GuardDeps, Verdict
from proxy.guards.detector import LoopDetector
from proxy.guards.terms import COMMON_WEIGHT, Terms, encode_terms
from proxy.rulemodels import LoopRule

KEEP = 48  # instructions and results of a run looked back on
FAILED = re.compile(  # a report that the sub-goal was not reached
    r"\b(?:could ?n[o']t|ca ?n[o']t|unable to|not able to|failed to|no luck|no (?:information|mention|"
    r"results?|data|record|figures?|answer)|(?:was|were|is|are) not (?:on|in|found|available|listed|"
    r"mentioned)|(?:does|did|do) ?n[o']t (?:state|mention|contain|list|include|say|show|give|find|"
    r"have|provide|cover)|nothing (?:about|on|relevant)|not (?:find|found|confirm))",
    re.IGNORECASE,
)


_FAILED_HINTS = ("not", "n't", "unable", "fail", "no ", "nothing")


def reports_failure(text: str) -> bool:
    """The text says the sub-goal was not reached (cheap substring checks first: the regex
    costs ~70 µs on a 600-character answer, the checks ~1)."""
    head = text[:2000].lower()
    return any(h in head for h in _FAILED_HINTS) and FAILED.search(head) is not None


def _fields(item: str) -> list[str]:
    """A stored item's fields: instructions `i, call, agent, sub-goal, n, request digest, sender,
    terms`; results `r, call, agent, novelty, progress (1|0), request digest, sub-goal, terms`."""
    return item.split("\x1f")


# A word no earlier instruction or result of the run used: it cannot tell one sub-goal from
# another, and restatements bring such words (a synonym, another kind of source), so it
# weighs this share of a word only one sub-goal used.
UNSEEN = 0.5
# The next instruction to a worker whose last result failed is most often the same sub-goal
# again: naming a word only that sub-goal used, it restates it at this share of `restated`.
AFTER_FAILURE = 0.5
SOURCES = 8  # the latest outputs of other agents an instruction may have come from
CARRIED = 0.6  # share of the smaller side's words the two share: the instruction carries that output


def sender(terms: Terms, who: str, rows: list[list[str]], docs: list[Terms]) -> str:
    """The agent whose recent output this instruction carries (its words mostly in the output,
    or the output's mostly in it), "" when none does: a delegation from outside."""
    best, score, seen = "", 0.0, 0
    for row, doc in zip(rows, docs, strict=True):
        if row[0] != "r" or row[2] == who:
            continue
        share = len(terms & doc) / (min(len(terms), len(doc)) or 1)
        if share > score:
            best, score = row[2], share
        seen += 1
        if seen == SOURCES:
            break
    return best if score >= CARRIED else ""


def _pending(who: str, rows: list[list[str]]) -> str:
    """The sub-goal `who`'s latest result failed to reach ("" when that result was progress,
    or was not a result)."""
    last = next((r for r in rows if r[2] == who), None)
    return last[6] if last is not None and last[0] == "r" and last[4] == "0" else ""


def is_return(who: str, source: str, rows: list[list[str]]) -> bool:
    """`who` delegated to `source` earlier: what comes back from it is a return (its result),
    not a new delegation (delegate → return → delegate: only the delegations count)."""
    return bool(source) and any(r[0] == "i" and r[2] == source and r[6] == who for r in rows)


class Redelegation(LoopDetector):
    """The same sub-goal restated to the same worker, its results adding nothing."""

    def __init__(self, rule: LoopRule, deps: GuardDeps) -> None:
        super().__init__(rule, deps)
        self.corpora = deps.facts.corpora
        self.restated = rule.restated
        self.progress = rule.novelty
        self.min_words = rule.min_words
        self._list_prefix = f"loop:{self.name}:redelegation:"
        self.common = deps.facts.known.lexicon.common

    def list_key(self, call: Call) -> str:
        return self._list_prefix + self.run_scope(call)

    def who(self, call: Call) -> str:
        """The agent side of the scope (the worker), `-` for scopes wider than an agent."""
        return (call.agent or "-").replace("\x1f", " ") if self.rule.scope in ("agent_run", "agent", "thread") else "-"

    async def on_request(self, call: Call) -> Verdict:
        refused = await self.refused(call)
        if refused.denied:
            return refused
        facts = self.facts(call)
        terms = facts.instruction_terms
        if len(terms) < self.min_words:
            return ALLOW
        key, request, who = self.list_key(call), facts.request_digest, self.who(call)
        items = await self.store.recent(key)
        rows = [_fields(item) for item in items]
        if any(r[0] == "i" and r[2] == who and r[5] == request for r in rows[:8]):
            return ALLOW  # a resent request
        docs, _ = self.corpora.get(key, items)
        source = sender(terms, who, rows, docs)
        if is_return(who, source, rows):
            return ALLOW  # a worker's result coming back to the agent that delegated to it
        goal, similarity, earlier = self._goal(terms, who, rows, docs)
        n = 1 + len(earlier)
        item = "\x1f".join(("i", call.id, who, goal or call.id, str(n), request, source, encode_terms(terms)))
        await self.store.push(key, item, keep=KEEP, ttl_s=self.window)
        if n <= self.max_repeats + 1:
            return ALLOW
        return self._verdict(call, n, earlier + [call.id], similarity, None)

    def _goal(
        self, terms: Terms, who: str, rows: list[list[str]], docs: list[Terms]
    ) -> tuple[str | None, float, list[str]]:
        """The sub-goal `terms` restates (None: a new one), how much, and its earlier
        instructions to this agent (oldest first)."""
        groups: dict[str, set[int]] = {}
        mine: dict[str, set[int]] = {}
        for row, doc in zip(rows, docs, strict=True):
            goal = row[3] if row[0] == "i" else row[6]
            if not goal:
                continue  # a result with no instruction before it
            groups.setdefault(goal, set()).update(doc)
            if row[2] == who:
                mine.setdefault(goal, set()).update(doc)
        if not mine:
            return None, 0.0, []
        df: dict[int, int] = {}
        for union in groups.values():
            for t in union:
                df[t] = df.get(t, 0) + 1
        # Frequencies over the other sub-goals: the one compared with must not dilute its own words.
        n1, common = len(groups) + 1, self.common
        scale = {t: COMMON_WEIGHT if t in common else 1.0 for t in terms}
        for t in terms:
            if t not in df:
                scale[t] *= UNSEEN
        pending = _pending(who, rows)
        best, score = None, 0.0
        for goal, union in mine.items():
            weights = {t: math.log(n1 / (df.get(t, 0) - (t in union) + 1)) * scale[t] for t in terms}
            total = sum(weights.values()) or 1.0
            shared = terms & union
            share = sum(weights[t] for t in shared) / total
            need = self.restated
            if goal == pending and any(df[t] == 1 and t not in common for t in shared):
                need *= AFTER_FAILURE  # delegate → failed return → delegate, naming the sub-goal's own words
            if share >= need and share > score:
                best, score = goal, share
        if best is None:
            return None, 0.0, []
        earlier = []
        for row in rows:
            if row[2] != who:
                continue
            if row[0] == "r" and row[4] == "1":
                break  # progress since: what came before is not this loop
            if row[0] == "i" and row[3] == best:
                earlier.append(row[1])
        return best, score, earlier[::-1]

    async def on_response(self, call: Call) -> Verdict:
        if call.outcome != "ok" or call.completion.tool_calls:
            return ALLOW  # a tool call is a step, not a result
        facts = self.facts(call)
        terms = facts.output_terms
        if len(terms) < self.min_words:
            return ALLOW
        key, who, request = self.list_key(call), self.who(call), facts.request_digest
        items = await self.store.recent(key)
        last = next((row for row in map(_fields, items) if row[2] == who), None)
        if last is not None and last[0] == "r" and last[5] == request:
            return ALLOW  # the answer to a resent request: not a new result
        docs, corpus = self.corpora.get(key, items)
        novelty = corpus.novelty(terms, self.common) if docs else 1.0
        failed = reports_failure(call.completion.text)
        progress = novelty >= self.progress and not failed
        goal = last[3] if last is not None and last[0] == "i" else ""
        item = "\x1f".join(
            ("r", call.id, who, f"{novelty:.3f}", str(int(progress)), request, goal, encode_terms(terms))
        )
        await self.store.push(key, item, keep=KEEP, ttl_s=self.window)
        if progress or last is None or last[0] != "i" or int(last[4]) != self.max_repeats + 1:
            return ALLOW  # only the first result after a first restatement decides here
        earlier = [r[1] for r in map(_fields, items) if r[0] == "i" and r[2] == who and r[3] == last[3]]
        return await self.deny_next(call, self._verdict(call, int(last[4]), earlier[::-1], None, (novelty, failed)))

    def _verdict(
        self, call: Call, n: int, calls: list[str], similarity: float | None, result: tuple[float, bool] | None
    ) -> Verdict:
        what = (
            f"Agent '{call.agent or '?'}' has been given the same sub-goal {n} times, restated"
            + (f" (latest instruction {similarity:.0%} covered by earlier ones)" if similarity is not None else "")
            + ", while its results added nothing new: a delegate → return → delegate loop"
        )
        advice = (
            "Stop re-delegating the same goal: change the approach or the worker, or report back with "
            "what is known and what is missing."
        )
        data: dict[str, Any] = {"worker": call.agent, "calls": calls, "restated": self.restated}
        if similarity is not None:
            data["similarity"] = round(similarity, 3)
        if result is not None:
            data.update({"result_call": call.id, "result_novelty": round(result[0], 3), "result_failed": result[1]})
        return self.graded(n, what, advice, data)
