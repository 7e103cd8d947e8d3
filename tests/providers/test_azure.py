"""Azure OpenAI through Interlock with the real `openai.AzureOpenAI` client (deployments paths,
`api-key`, `api-version`) and the `/openai/v1` surface, against a fake upstream speaking Azure's
variant of the OpenAI wire format (a prompt-filter chunk with `"choices": []` opens each stream)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest

from proxy.redact import api_key_hash
from tests.fake_upstream import Ctx, FakeUpstream, Json, OpenAIChat, Reply, openai_error
from tests.proxyserver import ProxyServer

RULES = """
rules:
  - {name: run-budget, kind: budget, scope: run, limit_tokens: 300, action: deny}
"""
VERSION = "2024-10-21"


class AzureWire:
    """Azure OpenAI chat: OpenAI's bodies, plus the prompt-filter chunk Azure streams first."""

    stream_type = b"text/event-stream"

    def claims(self, path: str) -> bool:
        return path.startswith("/openai/")

    def streams(self, path: str, req: Json) -> bool:
        return bool(req.get("stream"))

    def body(self, path: str, ctx: Ctx) -> Json:
        return OpenAIChat.body(ctx)

    def events(self, path: str, ctx: Ctx) -> list[bytes]:
        so = ctx.req.get("stream_options")
        filters: Json = {"choices": [], "created": 0, "id": "", "model": "", "object": "",
                         "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}
        if isinstance(so, dict) and so.get("include_usage"):
            filters["usage"] = None
        return [b"data: " + orjson.dumps(filters) + b"\n\n", *OpenAIChat.events(ctx), OpenAIChat.end()]

    def error(self, status: int, message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        return orjson.dumps(openai_error(status, message)), []


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(wire=AzureWire()) as up:
        yield up


@pytest.fixture
def px(tmp_path: Path, upstream: FakeUpstream) -> Iterator[ProxyServer]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "test.yaml").write_text(RULES)
    with ProxyServer(tmp_path, "http://127.0.0.1:9", upstream_azure=upstream.url, rules_dir=rules) as server:
        yield server


def _azure(px: ProxyServer, run: str, key: str = "az-key-one") -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=px.url, api_key=key, api_version=VERSION, max_retries=0,
                              default_headers={"X-Interlock-Run": run, "X-Interlock-Agent": "analyst"})


def _ask(client: openai.OpenAI, text: str, **kw: object) -> object:
    return client.chat.completions.create(model="prod-gpt4o", max_tokens=100,
                                          messages=[{"role": "user", "content": text}], **kw)  # type: ignore[call-overload]


def test_deployment_call_is_recorded_with_the_deployment_as_model(px: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(text="Fine.", model="gpt-4o-2024-08-06", input_tokens=25, output_tokens=3))

    answer = _ask(_azure(px, "az-run"), "How are you?")

    assert answer.choices[0].message.content == "Fine."  # type: ignore[attr-defined]
    assert upstream.last.path == "/openai/deployments/prod-gpt4o/chat/completions"
    assert upstream.last.query == f"api-version={VERSION}"  # kept when forwarding
    assert upstream.last.header("api-key") == "az-key-one"
    (call,) = px.wait_calls(1)
    assert (call["provider"], call["operation"], call["upstream"]) == ("azure.ai.openai", "chat", "azure")
    assert (call["model_requested"], call["model_served"]) == ("prod-gpt4o", "gpt-4o-2024-08-06")
    assert (call["input_tokens"], call["output_tokens"], call["agent"]) == (25, 3, "analyst")
    assert call["input_tokens_counted"] > 0 and "input_tokens_estimated" not in call["flags"]  # tiktoken
    assert px.api(f"/api/calls/{call['id']}")["api_key_hash"] == api_key_hash("az-key-one")


def test_stream_usage_is_parsed_and_the_client_sees_no_usage_it_did_not_ask_for(
        px: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["Cal", "m."], input_tokens=12, output_tokens=2))

    chunks = list(_ask(_azure(px, "az-stream"), "Weather?", stream=True))  # type: ignore[call-overload]

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Calm."
    assert all(c.usage is None for c in chunks)
    assert any(getattr(c, "prompt_filter_results", None) for c in chunks), "Azure's filter chunk was dropped"
    assert upstream.last.json["stream_options"] == {"include_usage": True}
    (call,) = px.wait_calls(1)
    assert (call["stream"], call["input_tokens"], call["output_tokens"]) == (True, 12, 2)


def test_budget_refusal_is_an_openai_error_the_azure_client_raises(px: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(text="a", input_tokens=150, output_tokens=100))
    client = _azure(px, "az-budget")
    _ask(client, "one")

    with pytest.raises(openai.RateLimitError) as err:
        _ask(client, "two")

    body = err.value.body
    assert isinstance(body, dict) and body["code"] == "interlock_budget_exceeded"
    assert err.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.requests) == 1


def test_the_v1_surface_names_the_model_in_the_body(px: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(text="v1", input_tokens=9, output_tokens=1))
    client = openai.OpenAI(base_url=px.url + "/openai/v1", api_key="az-key-two", max_retries=0)

    assert _ask(client, "hi").choices[0].message.content == "v1"  # type: ignore[attr-defined]

    assert upstream.last.path == "/openai/v1/chat/completions"
    (call,) = px.wait_calls(1)
    assert (call["provider"], call["model_requested"], call["input_tokens"]) == ("azure.ai.openai", "prod-gpt4o", 9)
    assert px.api(f"/api/calls/{call['id']}")["api_key_hash"] == api_key_hash("az-key-two")


def test_without_an_upstream_setting_azure_calls_are_refused_naming_it(tmp_path: Path) -> None:
    with ProxyServer(tmp_path, "http://127.0.0.1:9") as px, pytest.raises(openai.APIStatusError) as err:
        _ask(_azure(px, "az-none"), "hi")
    assert err.value.status_code == 502 and "INTERLOCK_UPSTREAM_AZURE" in err.value.message


def test_a_retry_loop_is_refused_in_openai_shape(upstream: FakeUpstream, tmp_path: Path) -> None:
    rules = tmp_path / "loop-rules"
    rules.mkdir()
    (rules / "loop.yaml").write_text(
        "rules:\n  - {name: retries, kind: loop, detect: retry, window: 10m, max_repeats: 2, action: deny}\n")
    with ProxyServer(tmp_path, "http://127.0.0.1:9", upstream_azure=upstream.url, rules_dir=rules) as px:
        client = _azure(px, "az-loop")
        for _ in range(2):
            _ask(client, "Are we there yet?")
        with pytest.raises(openai.RateLimitError) as err:
            _ask(client, "Are we there yet?")
    assert "retries" in err.value.message and len(upstream.requests) == 2
