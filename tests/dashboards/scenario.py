"""Scenario traffic that gives every dashboard panel something to show, through the real SDKs.

    research-<s>  planner (OpenAI) → worker (Anthropic, streamed) → planner (streamed) → reviewer,
                  each agent on its own /agents/<name>/v1 base URL; the reviewer's answer is cut
                  at max_tokens (context flag)
    budget-<s>    spender: a big call passes the run budget's 50 % warning, the next is denied
    loop-<s>      fetcher sends the same request three times: the third is denied as a retry loop
    context-<s>   writer asks for more output than gpt-4o's window: denied before sending
    errors-<s>    flaky gets an upstream 500

`drive(px, upstream, suffix)` runs it once (different suffixes make different runs) and returns
the number of calls it makes; the proxy records them asynchronously.
"""

from __future__ import annotations

from pathlib import Path

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionUserMessageParam

from tests.fake_upstream import FakeUpstream, Reply
from tests.proxyserver import ProxyServer

RULES = """\
rules:
  - {name: fits, kind: context, action: deny}
  - {name: retries, kind: loop, detect: retry, window: 10m, max_repeats: 2, action: deny}
  - {name: run-budget, kind: budget, scope: run, limit_tokens: 3000, warn_at: 0.5, action: deny}
"""
CALLS_PER_DRIVE = 11
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


def write_rules(tmp: Path) -> Path:
    rules = tmp / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    (rules / "dashboards.yaml").write_text(RULES)
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


def drive(px: ProxyServer, up: FakeUpstream, suffix: str) -> int:
    """Run every scenario once; returns how many calls were made (denied ones included)."""
    _research(px, up, f"research-{suffix}")
    _budget(px, up, f"budget-{suffix}")
    _loop(px, f"loop-{suffix}")
    _context(px, f"context-{suffix}")
    _errors(px, up, f"errors-{suffix}")
    return CALLS_PER_DRIVE
