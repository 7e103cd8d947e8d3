"""What the fake model says: varied, run-specific prose with the boilerplate real models add.

Every run draws from its own seeded RNG, so two runs with the same task still produce different
findings, drafts and summaries (as a real model sampling at temperature > 0 would), while
recording twice with the same seed gives the same fixture.
"""

from __future__ import annotations

import random

OPENERS = (
    "Here is what I found.",
    "Sure! Here's a summary of the key points.",
    "Based on the information available, here is my analysis.",
    "I looked into this carefully; the main findings are below.",
    "Great question. Let me break it down.",
    "After reviewing the material, these are the results.",
)
CLOSERS = (
    "Let me know if you would like more detail on any of these points.",
    "I hope this helps!",
    "These figures should be double-checked against the primary sources before publication.",
    "Overall, the evidence points in a consistent direction.",
    "",
)
SUBJECTS = (
    "the pilot program", "regional demand", "the main competitor", "customer retention", "the supply chain",
    "the new pricing model", "energy costs", "the survey respondents", "the engineering team", "market share",
    "the second quarter", "the benchmark results", "operating margins", "the rollout schedule", "user adoption",
)
VERBS = (
    "grew by", "fell by", "stabilised at", "improved by", "accounted for", "reached", "dropped to",
    "was estimated at", "increased to", "shrank by",
)
UNITS = ("percent", "points", "million euros", "thousand units", "days", "hours per week", "basis points")
CONNECTORS = (
    "In contrast,", "Notably,", "At the same time,", "According to the latest report,", "As a result,",
    "Meanwhile,", "On the other hand,", "Importantly,", "",
)
QUALIFIERS = (
    "mostly driven by {t}", "largely because of {t}", "despite concerns about {t}", "in line with {t}",
    "which matters for {t}", "well above the forecast for {t}", "according to two independent sources on {t}",
)


class Voice:
    """Sentences about a task's topic, drawn from one run's RNG."""

    def __init__(self, rng: random.Random, topic: str) -> None:
        self.rng = rng
        self.topic = topic

    def fact(self) -> str:
        r = self.rng
        figure = f"{r.randint(2, 97)}.{r.randint(0, 9)}" if r.random() < 0.5 else str(r.randint(3, 950))
        lead = r.choice(CONNECTORS)
        subject = r.choice(SUBJECTS)
        sentence = f"{subject} {r.choice(VERBS)} {figure} {r.choice(UNITS)} in {r.randint(2019, 2026)}, "
        sentence += r.choice(QUALIFIERS).format(t=self.topic) + "."
        return f"{lead} {sentence}" if lead else sentence[0].upper() + sentence[1:]

    def paragraph(self, sentences: int) -> str:
        return " ".join(self.fact() for _ in range(sentences))

    def answer(self, sentences: int = 4, *, opener: bool = True, closer: bool = True) -> str:
        parts = [self.rng.choice(OPENERS)] if opener else []
        parts.append(self.paragraph(sentences))
        end = self.rng.choice(CLOSERS) if closer else ""
        return "\n\n".join(p for p in [*parts, end] if p)

    def bullets(self, n: int, prefix: str = "- ") -> str:
        return "\n".join(prefix + self.fact() for _ in range(n))

    def query(self) -> str:
        words = self.topic.split()
        self.rng.shuffle(words)
        return " ".join(words[:5]) + " " + self.rng.choice(("2025 data", "statistics", "latest report", "analysis"))
