"""Scenario traffic that gives every dashboard panel something to show, through the real SDKs.

    research-<s>  planner (OpenAI) → worker (Anthropic, streamed) → planner (streamed) → reviewer,
                  each agent on its own /agents/<name>/v1 base URL; the reviewer's answer is cut
                  at max_tokens (context flag)
    budget-<s>    spender: a big call passes the run budget's 50 % warning, the next is denied
    loop-<s>      fetcher sends the same request three times: the third is denied as a retry loop
    context-<s>   writer asks for more output than gpt-4o's window: denied before sending
    errors-<s>    flaky gets an upstream 500
    escalate-<s>  support calls escalate_to_human (webhook to a local receiver, ack_within 1s) and
                  nobody acknowledges: an SLA breach
    escalate-ack-<s>  the same, acknowledged through the API straight away
    escalate-dead-<s> support calls escalate_to_finance, whose only route refuses connections:
                  a dead escalation and failed deliveries
    cascade-<s>   planner's outline is cut at max_tokens and handed whole to the writer: a
                  cascade root and a tainted call (itself a root too: the context rule flags
                  its truncated input)

`drive(px, upstream, suffix)` runs it once (different suffixes make different runs) and returns
the number of calls it makes; the proxy records them asynchronously.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionUserMessageParam

from proxy.graph.examples import pipeline_script
from tests.escalation.harness import post
from tests.escalation.receiver import Receiver, dead_url
from tests.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.proxyserver import ProxyServer

RULES = """\
rules:
  - {name: fits, kind: context, action: deny}
  - {name: retries, kind: loop, detect: retry, window: 10m, max_repeats: 2, action: deny}
  - {name: run-budget, kind: budget, scope: run, limit_tokens: 3000, warn_at: 0.5, action: deny}
  - {name: human-review, kind: escalation, tools: ["escalate_to_human"], ack_within: 1s, notify: [oncall]}
  - {name: finance-signoff, kind: escalation, tools: ["escalate_to_finance"], ack_within: 1h, notify: [finance]}
routes:
  oncall: {webhook: "%(hook)s", backoff: 20ms, retries: 1, timeout: 2s}
  finance: {webhook: "%(dead)s", backoff: 20ms, retries: 1, timeout: 2s}
"""
CALLS_PER_DRIVE = 16
KEY = "sk-proj-DASHBOARDSabcdefghijklmnopqrstuvwxyz0123"
ANTH_KEY = "sk-ant-api03-DASHBOARDSabcdefghijklmnopqrstuvwxyz0123"

PLAN = ("Plan for the tea trade report: first trace the caravan routes from Yunnan through Tibet, "
        "then the maritime routes from Canton to London, and finally compare tariffs, ship tonnage "
        "and the role of the East India Company in the eighteenth century.")
WORK = ("Findings on tea routes: the Tea Horse Road carried compressed bricks on mule trains over "
        "high passes for centuries, while clipper ships raced from Fuzhou to the Thames estuary in "
        "under one hundred days, and duties collected in London funded a large share of the budget.")
REPORT = ("Final report: overland caravans moved modest volumes at great cost, maritime clippers "
          "moved the bulk of the trade quickly, and taxation in Britain shaped the demand that made "
          "both routes profitable for traders on either end of the long journey.")


_RECEIVER: Receiver | None = None


def receiver() -> Receiver:
    """The webhook receiver of the `oncall` route: one per test process, started on first use."""
    global _RECEIVER
    if _RECEIVER is None:
        _RECEIVER = Receiver().__enter__()
    return _RECEIVER


def write_rules(tmp: Path) -> Path:
    rules = tmp / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    (rules / "dashboards.yaml").write_text(RULES % {"hook": receiver().url, "dead": dead_url()})
    return rules


def _oai(px: ProxyServer, agent: str, run: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{px.url}/agents/{agent}/v1", api_key=KEY, max_retries=0, timeout=20,
                         default_headers={"X-Interlock-Run": run})


def _anth(px: ProxyServer, agent: str, run: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{px.url}/agents/{agent}", api_key=ANTH_KEY, max_retries=0, timeout=20,
                               default_headers={"X-Interlock-Run": run})


def _research(px: ProxyServer, up: FakeUpstream, run: str) -> None:
    ask: ChatCompletionUserMessageParam = {"role": "user",
                                           "content": "Plan a short report on the history of the tea trade routes."}
    up.script(Reply(text=PLAN, input_tokens=40, output_tokens=60))
    _oai(px, "planner", run).chat.completions.create(model="gpt-4o", max_tokens=300, messages=[ask])
    up.script(Reply(text=WORK, input_tokens=90, output_tokens=70))
    with _anth(px, "worker", run).messages.stream(
            model="claude-sonnet-4-5", max_tokens=300,
            messages=[{"role": "user", "content": f"Do this research task. {PLAN}"}]) as stream:
        stream.get_final_message()
    up.script(Reply(text=REPORT, input_tokens=160, output_tokens=55))
    list(_oai(px, "planner", run).chat.completions.create(
        model="gpt-4o", max_tokens=300, stream=True,
        messages=[ask, {"role": "assistant", "content": PLAN}, {"role": "user", "content": f"Worker result: {WORK}"}]))
    up.script(Reply(text="Review: the report is accurate but", finish_reason="length", input_tokens=70,
                    output_tokens=8))
    _oai(px, "reviewer", run).chat.completions.create(
        model="gpt-4o-mini", max_tokens=8, messages=[{"role": "user", "content": f"Review this. {REPORT}"}])


def _budget(px: ProxyServer, up: FakeUpstream, run: str) -> None:
    client = _oai(px, "spender", run)
    up.script(Reply(text="A long essay.", input_tokens=1200, output_tokens=400))
    client.chat.completions.create(model="gpt-4o", max_tokens=500, messages=[{"role": "user", "content": "essay"}])
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", max_tokens=2000,
                                       messages=[{"role": "user", "content": "another essay"}])


def _loop(px: ProxyServer, run: str) -> None:
    client = _oai(px, "fetcher", run)
    msgs: list[ChatCompletionMessageParam] = [{"role": "system", "content": "You fetch pages."},
                                              {"role": "user", "content": "fetch the tariff page"}]
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=50, messages=msgs)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=50, messages=msgs)


def _context(px: ProxyServer, run: str) -> None:
    with pytest.raises(openai.BadRequestError):
        _oai(px, "writer", run).chat.completions.create(
            model="gpt-4o", max_tokens=500_000, messages=[{"role": "user", "content": "write a book"}])


def _errors(px: ProxyServer, up: FakeUpstream, run: str) -> None:
    up.script(Reply(status=500, error="upstream exploded"))
    with pytest.raises(openai.InternalServerError):
        _oai(px, "flaky", run).chat.completions.create(model="gpt-4o-mini", max_tokens=50,
                                                       messages=[{"role": "user", "content": "hi"}])


ESCALATE_TOOLS: Any = [
    {"type": "function", "function": {"name": name, "description": "ask a person",
                                      "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}}}}
    for name in ("escalate_to_human", "escalate_to_finance")]


def _wait(px: ProxyServer, run: str, ready: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for esc in px.api("/api/escalations", run_id=run)["items"]:
            if ready(esc):
                return dict(esc)
        time.sleep(0.05)
    raise AssertionError(f"{run}: no escalation {what}")


def _escalate(px: ProxyServer, up: FakeUpstream, run: str, tool: str) -> None:
    up.script(Reply(tool_calls=[ToolCall(tool, {"reason": "refund of 4,000 EUR is over my limit"},
                                         id=f"call_{run}")]))
    _oai(px, "support", run).chat.completions.create(
        model="gpt-4o", max_tokens=200, tools=ESCALATE_TOOLS, messages=[{"role": "user", "content": "Refund order 991 please."}])


def _escalations(px: ProxyServer, up: FakeUpstream, suffix: str) -> None:
    breached, acked, dead = f"escalate-{suffix}", f"escalate-ack-{suffix}", f"escalate-dead-{suffix}"
    _escalate(px, up, breached, "escalate_to_human")
    _escalate(px, up, acked, "escalate_to_human")
    esc = _wait(px, acked, lambda e: True, "opened")
    post(px, f"/api/escalations/{esc['id']}/ack", {"by": "alice"})
    _escalate(px, up, dead, "escalate_to_finance")
    _wait(px, breached, lambda e: e["breached"], "breached")
    _wait(px, acked, lambda e: e["status"] == "acknowledged", "acknowledged")
    _wait(px, dead, lambda e: e["notify_state"] == "dead", "dead")


def _cascade(px: ProxyServer, up: FakeUpstream, suffix: str) -> None:
    topic = "urban beekeeping" if suffix == "a" else f"container shipping rates {suffix}"
    script = pipeline_script(topic)
    system = {name: spec.system for name, spec in script.agents.items()}
    run = f"cascade-{suffix}"

    def say(agent: str, text: str) -> str:
        r = _oai(px, agent, run).chat.completions.create(
            model="gpt-4o", max_tokens=300, messages=[{"role": "system", "content": system[agent]}, {"role": "user", "content": text}])
        return r.choices[0].message.content or ""

    up.script(Reply(text=script.steps[0].text, finish_reason="length"), Reply(text=script.steps[1].text))
    outline = say("planner", f"Write a short article about {topic}.")
    say("writer", "Please write the article from this outline:\n\n" + outline)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if any(c["tainted_by"] for c in px.api("/api/calls", run_id=run)["items"]):
            return
        time.sleep(0.05)
    calls = [(c["agent"], c["flags"], c["depth"], c["tainted_by"]) for c in px.api("/api/calls", run_id=run)["items"]]
    raise AssertionError(f"{run}: the writer's call was never tainted: {calls}")


def drive(px: ProxyServer, up: FakeUpstream, suffix: str) -> int:
    """Run every scenario once; returns how many calls were made (denied ones included)."""
    _research(px, up, f"research-{suffix}")
    _budget(px, up, f"budget-{suffix}")
    _loop(px, f"loop-{suffix}")
    _context(px, f"context-{suffix}")
    _errors(px, up, f"errors-{suffix}")
    _escalations(px, up, suffix)
    _cascade(px, up, suffix)
    return CALLS_PER_DRIVE
