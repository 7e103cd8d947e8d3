"""Guard verdicts as agents see them: real SDKs through the live proxy, rules from YAML files."""

from __future__ import annotations

import re
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.fake_upstream import FakeUpstream, Reply
from tests.proxyserver import ProxyServer

RULES = """
rules:
  - {name: fits, kind: context, action: deny}
  - {name: run-budget, kind: budget, scope: run, limit_tokens: 300, action: deny}
  - {name: retries, kind: loop, detect: retry, window: 10m, max_repeats: 2, action: deny}
"""


def _proxy(tmp: Path, upstream: FakeUpstream, rules: str) -> ProxyServer:
    d = tmp / "rules"
    d.mkdir(exist_ok=True)
    (d / "test.yaml").write_text(rules)
    return ProxyServer(tmp, upstream.url, rules_dir=d, rules_reload_s=0.1)


def _client(px: ProxyServer, run: str | None = None) -> openai.OpenAI:
    headers = {"X-Interlock-Run": run} if run else {}
    return openai.OpenAI(base_url=px.url + "/v1", api_key="sk-test", max_retries=0, default_headers=headers)


def test_run_budget_refuses_with_a_native_429_the_sdk_raises(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.script(Reply(text="a", input_tokens=100, output_tokens=100))
    with _proxy(tmp_path, upstream, RULES) as px:
        client = _client(px, run="run-1")
        client.chat.completions.create(
            model="gpt-4o", max_tokens=100, messages=[{"role": "user", "content": "one"}]
        )
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(
                model="gpt-4o", max_tokens=100, messages=[{"role": "user", "content": "two"}]
            )
        body = err.value.body
        assert isinstance(body, dict) and body["code"] == "interlock_budget_exceeded"
        assert "run-budget" in err.value.message and "300" in err.value.message
        assert len(upstream.requests) == 1, "a refused request must not reach the upstream"
        other = _client(px, run="run-2")  # another run has its own budget
        other.chat.completions.create(
            model="gpt-4o", max_tokens=100, messages=[{"role": "user", "content": "three"}]
        )
        denied = px.wait_calls(1, status="denied")
        assert denied[0]["status"] == 429
        events = px.api("/api/guard-events", rule="run-budget")["items"]
        assert events and events[0]["action"] == "deny" and events[0]["data"]
        metrics = httpx.get(px.url + "/metrics").text
        left = re.search(
            r'interlock_budget_remaining\{[^}]*rule="run-budget"[^}]*scope_value="min"[^}]*\} ([0-9.]+)',
            metrics,
        )
        assert left is not None and 0 <= float(left.group(1)) < 300


def test_run_budget_counts_a_new_workers_first_call_without_headers(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """No X-Interlock-Run: the writer's first call is placed in the planner's run by its content
    before it is forwarded, so the run budget refuses it."""
    plan = (
        "Survey the installed base of residential heat pumps in Northern Europe and estimate the annual "
        "unit growth since 2019 using national statistics and industry association reports."
    )
    upstream.script(Reply(text=plan, input_tokens=150, output_tokens=150))
    rules = "rules:\n  - {name: run-budget, kind: budget, scope: run, limit_tokens: 250, action: deny}\n"
    with _proxy(tmp_path, upstream, rules) as px:
        client = _client(px)
        client.chat.completions.create(
            model="gpt-4o",
            max_tokens=100,
            messages=[
                {"role": "system", "content": "You are the planner."},
                {"role": "user", "content": "heat pumps"},
            ],
        )
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(
                model="gpt-4o",
                max_tokens=100,
                messages=[
                    {"role": "system", "content": "You are the writer."},
                    {"role": "user", "content": "Write up:\n" + plan},
                ],
            )
        assert "run-budget" in err.value.message
        assert len(upstream.requests) == 1, "the worker's call must be refused before it is forwarded"
        other = client.chat.completions.create(
            model="gpt-4o",
            max_tokens=10,
            messages=[
                {"role": "system", "content": "You are the writer."},
                {"role": "user", "content": "an unrelated task"},
            ],
        )
        assert other.choices[0].message.content  # a call with nothing behind it starts a run of its own


def test_context_overflow_is_a_400_before_anything_is_sent(tmp_path: Path, upstream: FakeUpstream) -> None:
    with _proxy(tmp_path, upstream, RULES) as px:
        with pytest.raises(openai.BadRequestError) as err:
            _client(px).chat.completions.create(
                model="gpt-4o", max_tokens=500_000, messages=[{"role": "user", "content": "hi"}]
            )
        assert err.value.code == "interlock_context_overflow"
        a = anthropic.Anthropic(base_url=px.url, api_key="sk-ant-test", max_retries=0, timeout=20)
        with pytest.raises(anthropic.BadRequestError) as aerr:
            a.messages.create(
                model="claude-sonnet-4-5", max_tokens=900_000, messages=[{"role": "user", "content": "hi"}]
            )
        assert aerr.value.body["error"]["type"] == "interlock_context_overflow"  # type: ignore[index]
        assert "fits" in aerr.value.message
        assert upstream.requests == []


def test_retry_storm_is_denied_after_the_configured_count(tmp_path: Path, upstream: FakeUpstream) -> None:
    with _proxy(tmp_path, upstream, RULES) as px:
        client = _client(px)
        msgs = [
            {"role": "system", "content": "You are the fetcher."},
            {"role": "user", "content": "fetch the page"},
        ]
        for _ in range(2):  # max_tokens: every call is in a run now, and run-budget reserves it
            client.chat.completions.create(model="gpt-4o", max_tokens=10, messages=msgs)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="gpt-4o", max_tokens=10, messages=msgs)  # type: ignore[arg-type]
        assert err.value.code == "interlock_loop_detected"
        assert "retries" in err.value.message


def test_stream_is_cut_mid_flight_when_the_budget_runs_out(tmp_path: Path, upstream: FakeUpstream) -> None:
    rules = "rules:\n  - {name: tight, kind: budget, scope: global, limit_tokens: 40, cutoff: true, action: deny, default_max_tokens: 10}\n"
    upstream.script(Reply(chunks=[f"word{i} " for i in range(200)], chunk_delay=0.002))
    with _proxy(tmp_path, upstream, rules) as px:
        received = []
        with pytest.raises(openai.APIError) as err:
            for chunk in _client(px).chat.completions.create(
                model="gpt-4o", stream=True, messages=[{"role": "user", "content": "talk"}]
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
        assert "tight" in str(err.value)
        assert 0 < len(received) < 200
        assert upstream.wait_cancel(5), "the upstream stream must be closed when the proxy cuts it"
        [row] = px.wait_calls(1)
        assert row["outcome"] == "denied"


def test_broken_rules_edit_keeps_the_last_good_set(tmp_path: Path, upstream: FakeUpstream) -> None:
    with _proxy(tmp_path, upstream, RULES) as px:
        before = px.api("/api/rules")
        assert {r["name"] for r in before["rules"]} == {"run-budget", "fits", "retries"}
        (tmp_path / "rules" / "test.yaml").write_text(RULES.replace("limit_tokens: 300", "limit_tokens: -5"))
        deadline = time.monotonic() + 5
        while not px.api("/api/rules")["errors"] and time.monotonic() < deadline:
            time.sleep(0.05)
        after = px.api("/api/rules")
        assert any("run-budget" in e and "limit_tokens" in e for e in after["errors"])
        assert {r["name"] for r in after["rules"]} == {"run-budget", "fits", "retries"}
        with pytest.raises(openai.BadRequestError):  # the old context rule still holds
            _client(px).chat.completions.create(
                model="gpt-4o", max_tokens=500_000, messages=[{"role": "user", "content": "hi"}]
            )
        metrics = httpx.get(px.url + "/metrics").text
        assert re.search(r'interlock_rules_state\{[^}]*state="reload_failures"[^}]*\} [1-9]', metrics)


def test_shipped_default_rules_load_and_flag_without_refusing(tmp_path: Path, upstream: FakeUpstream) -> None:
    repo_rules = Path(__file__).resolve().parents[1] / "rules"
    with ProxyServer(tmp_path, upstream.url, rules_dir=repo_rules) as px:
        status = px.api("/api/rules")
        assert status["errors"] == [] and len(status["rules"]) >= 3
        client = _client(px)
        msgs = [{"role": "user", "content": "same request again"}]
        for _ in range(6):
            client.chat.completions.create(model="gpt-4o", messages=msgs)  # type: ignore[arg-type]
        rows = px.wait_calls(6)
        assert all(r["outcome"] == "ok" for r in rows)
        assert px.api("/api/guard-events", action="flag")["items"], (
            "the default retry rule should flag a storm"
        )


@pytest.mark.parametrize("stream", [False, True])
def test_guards_settle_before_the_agent_has_the_whole_answer(
    tmp_path: Path, upstream: FakeUpstream, stream: bool
) -> None:
    """What a guard stores about a turn (loop state, spend) is stored before the SDK returns
    (non-streamed) or reaches `[DONE]` (streamed): the agent's next turn, sent to this replica
    or another, sees it.  The chain's on_response is slowed to make a late settle visible."""
    import asyncio

    loop_only = "rules:\n  - {name: retries, kind: loop, detect: retry, max_repeats: 5, action: deny}\n"
    with _proxy(tmp_path, upstream, loop_only) as px:
        chain = px.runtime.rules.chain
        settled: list[str] = []
        original = chain.on_response

        async def slow(call: object) -> object:
            await asyncio.sleep(0.3)
            settled.append(str(getattr(call, "id", "")))
            return await original(call)

        chain.on_response = slow
        client = _client(px, run="run-settle")
        messages = [{"role": "user", "content": "hello"}]
        if stream:
            chunks = list(client.chat.completions.create(model="gpt-4o", messages=messages, stream=True))  # type: ignore[arg-type]
            assert chunks, "the stream delivered its chunks"
        else:
            client.chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
        assert len(settled) == 1, "the answer ended before the guards settled"
