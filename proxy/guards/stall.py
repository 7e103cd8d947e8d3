"""Stall (`detect: stall`): outputs that add little the run has not already seen.

    on_response(call) ──output words──▶ novelty against the run's last outputs ──▶ streak
                                        (rarity-weighted share of words never seen)   per scope

An output's novelty is the rarity-weighted share of its content words (terms.py: URLs,
numbers, ids and timestamps dropped, so a status line whose figures change is not news) that
none of the run's last outputs held, nor what the agent was just told (its newest user
messages: in a group chat, the others' turns).  Three bands:

    stale   below `novelty`, or below news while restating most (RESTATES) of the scope's
            previous output in a few new words (a status line with another closing phrase)
    news    at least NEWS x `novelty`: ends every streak of the run, whoever said it
    between neither extends a streak nor ends it

Stale outputs in a row within the rule's scope (an agent in its run, or the whole run), with
no news in the run since, form a streak; the streak's (max_repeats+1)-th output gets the
rule's action (a deny, reached once the output is delivered, flags it and refuses the scope's
next request).  An output answering news (some came since the scope's previous output) is
stale only when it nearly repeats that output (REPEATS): an orchestrator's next instruction
after a worker's findings reuses the run's words without stalling.  Short outputs
("TERMINATE", "Approved.") carry too few words to judge and neither count nor break a
streak; the answer to a resent request is the retry rule's business and is skipped.  Without
a run, both the memory and the streak are the conversation's own.
"""

from __future__ import annotations

from proxy.call import Call
from proxy.guards.base import ALLOW, GuardDeps, Verdict
from proxy.guards.detector import LoopDetector
from proxy.guards.terms import Terms, encode_terms
from proxy.rulemodels import LoopRule


class _All:
    """Every call: the run's memory holds no output with news."""

    def __contains__(self, item: object) -> bool:
        return True


ALL = _All()
# An output is stale below `novelty` and news at NEWS times it.  One in between restates in
# new words (a status line with another closing phrase): it neither extends a streak nor ends one.
NEWS = 1.6
RESTATES = 0.6  # share of an output's words found in the scope's previous output: a restatement
REPEATS = 0.9  # ... a repeat
MEMORY = 64  # outputs of a run that later outputs are compared with
RECENT = 4  # the newest of them: seen, but not counted in how frequent a word is


class Stall(LoopDetector):
    """Consecutive low-novelty outputs of an agent (or a run)."""

    def __init__(self, rule: LoopRule, deps: GuardDeps) -> None:
        super().__init__(rule, deps)
        self.corpora = deps.facts.corpora
        self.threshold = rule.novelty
        self.news = min(1.0, NEWS * rule.novelty)
        self.keep = 2 * self.keep  # outputs between stale and news sit in the streak's list
        self.min_words = rule.min_words
        self._seen_prefix = f"loop:{self.name}:stall-seen:"
        self.common = deps.facts.known.lexicon.common

    def runs(self, hook: str) -> bool:
        return self.can_deny if hook == "on_request" else super().runs(hook)

    async def on_request(self, call: Call) -> Verdict:
        return await self.refused(call)

    async def on_response(self, call: Call) -> Verdict:
        if call.outcome != "ok":
            return ALLOW
        facts = self.facts(call)
        terms = facts.output_terms
        if len(terms) < self.min_words:
            return ALLOW
        seen_key = self._seen_prefix + self.run_scope(call)
        items = await self.store.recent(seen_key)
        request = facts.request_digest
        rows = [item.split("\x1f", 3) for item in items]
        if any(row[1] == request for row in rows[:8]):
            return ALLOW  # a resend's answer: not a new output
        docs, corpus = self.corpora.get(seen_key, items)
        told = facts.instruction_terms
        novelty = corpus.novelty(terms, self.common, docs[:RECENT], told) if docs or told else 1.0
        await self.store.push(
            seen_key, f"{call.id}\x1f{request}\x1f{novelty:.3f}\x1f{encode_terms(terms)}", keep=MEMORY,
            ttl_s=self.window,
        )
        mine = await self.store.recent(self.key(call))
        stale = self._stale(novelty, terms, mine[0].partition("\x1f")[0] if mine else "", rows, docs)
        item = f"{call.id}\x1f{novelty:.3f}\x1f{int(stale)}"
        previous = await self.store.push(self.key(call), item, keep=self.keep, ttl_s=self.window)
        if not stale:
            return ALLOW
        newer = self._since_news(rows)
        streak = [(call.id, novelty)]
        for raw in previous:
            ident, value, *counted = raw.split("\x1f")
            novel = float(value)
            if novel >= self.news or ident not in newer:
                break
            if counted == ["1"] or (not counted and novel < self.threshold):
                streak.append((ident, novel))
        return await self.deny_next(call, self._verdict(call, streak))

    def _stale(self, novelty: float, terms: Terms, last: str, rows: list[list[str]], docs: list[Terms]) -> bool:
        """Stale: below `novelty`, or below news while restating most of the scope's previous
        output (`last`) in a few new words (a status line with another closing phrase).  An
        output answering news (another output since `last` brought some) is stale only when it
        nearly repeats `last`: an orchestrator's next instruction after a worker's findings
        reuses the run's words (the same subject, another attribute) without stalling."""
        if novelty >= self.news:
            return False
        answering, shared = False, 0.0
        for row, doc in zip(rows, docs, strict=True):
            if row[0] == last:
                shared = len(terms & doc) / len(terms)
                break
            if len(row) == 4 and float(row[2]) >= self.news:
                answering = True
        if answering:
            return shared >= REPEATS
        return novelty < self.threshold or shared >= RESTATES

    def _since_news(self, rows: list[list[str]]) -> set[str] | _All:
        """The run's outputs since its latest one with news (any agent's): a streak does not
        reach past it.  An agent that restated a sub-goal once, then got its answer from
        another agent, is not stalling."""
        newer: set[str] = set()
        for row in rows:
            if len(row) < 4:
                continue  # an item stored before novelty was
            if float(row[2]) >= self.news:
                return newer
            newer.add(row[0])
        return ALL

    def _verdict(self, call: Call, streak: list[tuple[str, float]]) -> Verdict:
        n = len(streak)
        if self.level(n) is None:
            return ALLOW
        streak.reverse()
        shown = ", ".join(f"{v:.0%}" for _, v in streak)
        what = (
            f"The last {n} outputs of {self.describe(call)} added little that the run had not already "
            f"seen (novelty {shown}: below {self.threshold:.0%}, or restating its previous output): a stall"
        )
        advice = (
            "Stop restating what is known: change approach, or report back to your caller with what you "
            "have and where you are stuck."
        )
        data = {
            "calls": [ident for ident, _ in streak],
            "novelty": [round(v, 3) for _, v in streak],
            "threshold": self.threshold,
            "scope": self.rule.scope,
        }
        return self.graded(n, what, advice, data)
