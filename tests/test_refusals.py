"""Refusals the SDKs do not retry: the real OpenAI and Anthropic SDKs, default retry settings,
count the HTTP requests they send for one denied call."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.fake_upstream import FakeUpstream, Reply
from tests.proxyserver import ProxyServer

RULES = """
rules:
  - {name: run-budget, kind: budget, scope: run, limit_tokens: 300, action: deny}
  - {name: key-minute, kind: budget, scope: api_key, window: 1m, limit_tokens: 250, action: deny}
"""


class Sent:
    """An httpx client that counts the requests an SDK sends through it."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.responses: list[httpx.Response] = []
        self.client = httpx.Client(event_hooks={"request": [self.requests.append],
                                                "response": [self.responses.append]})


@pytest.fixture
def px(tmp_path: Path, upstream: FakeUpstream) -> Iterator[ProxyServer]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "test.yaml").write_text(RULES)
    with ProxyServer(tmp_path, upstream.url, rules_dir=rules) as server:
        yield server


def _openai(px: ProxyServer, sent: Sent, run: str, key: str = "sk-one") -> openai.OpenAI:
    return openai.OpenAI(base_url=px.url + "/v1", api_key=key, http_client=sent.client,
                         default_headers={"X-Interlock-Run": run})  # max_retries left at its default


def _ask(client: openai.OpenAI, text: str) -> None:
    client.chat.completions.create(model="gpt-4o", max_tokens=100, messages=[{"role": "user", "content": text}])


def test_openai_sdk_sends_a_run_budget_refusal_once(px: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(text="a", input_tokens=100, output_tokens=100))
    sent = Sent()
    client = _openai(px, sent, run="run-1")
    _ask(client, "one")

    with pytest.raises(openai.RateLimitError):
        _ask(client, "two")

    assert len(sent.requests) == 2, "the SDK retried a refusal that retrying cannot fix"
    assert sent.responses[-1].headers["x-should-retry"] == "false"
    assert "retry-after" not in sent.responses[-1].headers
    assert len(px.wait_calls(2)) == 2 and len(px.wait_calls(1, status="denied")) == 1


def test_anthropic_sdk_sends_a_run_budget_refusal_once(px: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(text="a", input_tokens=100, output_tokens=100))
    client = anthropic.Anthropic(base_url=px.url, api_key="sk-ant-one",  # max_retries left at its default
                                 default_headers={"X-Interlock-Run": "run-a"})
    ask = {"model": "claude-sonnet-4-5", "max_tokens": 100}
    client.messages.create(**ask, messages=[{"role": "user", "content": "one"}])

    with pytest.raises(anthropic.RateLimitError) as err:
        client.messages.create(**ask, messages=[{"role": "user", "content": "two"}])

    assert err.value.response.headers["x-should-retry"] == "false"
    # the SDK has sent all its tries before raising: each would be a recorded denial
    px.wait_calls(2)
    time.sleep(0.5)  # recording is asynchronous
    assert len(px.wait_calls(1, status="denied")) == 1


def test_a_rolling_window_refusal_says_when_to_come_back(px: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(text="a", input_tokens=100, output_tokens=100))
    sent = Sent()
    _ask(_openai(px, sent, run="run-w1", key="sk-two"), "one")

    with pytest.raises(openai.RateLimitError) as err:
        _ask(_openai(px, sent, run="run-w2", key="sk-two"), "two")

    assert len(sent.requests) == 2
    assert sent.responses[-1].headers["retry-after"] == "1"  # one bucket of the 1m window
    assert "key-minute" in err.value.message and "tokens left, too few for this request" in err.value.message
