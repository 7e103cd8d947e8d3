"""Token counting: reference counts, model routing, framing, images, the incremental cache."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.load

from proxy.call import Call, Message, ToolCall
from proxy.encodings import ENCODING_FILES, default_encodings_dir, is_installed
from proxy.providers.registry import Registry
from proxy.tokens import (
    ANTHROPIC_FACTOR,
    ANTHROPIC_IMAGE_TOKENS,
    OPENAI_IMAGE_TOKENS,
    OPENAI_LOW_DETAIL_IMAGE_TOKENS,
    EncodingsUnavailable,
    TokenCounter,
    load_counter,
    load_encoding,
    route,
)

TIKTOKEN_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}
SAMPLES = [
    "hello world",
    "tiktoken is great!",
    "antidisestablishmentarianism",
    "def f(x):\n    return {'a': [1, 2, 3]}\n\n\n",
    "Grüße aus Zürich — 東京で会いましょう 🙂",
    "<|endoftext|> is plain text here",
    "   leading spaces and trailing   \r\n",
]


@pytest.fixture(scope="module")
def enc_dir() -> Path:
    dest = default_encodings_dir()
    if not all(is_installed(dest, f) for f in ENCODING_FILES):
        msg = f"encodings are not installed in {dest} (run `python -m proxy.encodings`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{msg}; CI requires them")
        pytest.skip(msg)
    return dest


@pytest.fixture(scope="module")
def counter(enc_dir: Path) -> TokenCounter:
    return TokenCounter(enc_dir)


@pytest.fixture(scope="module")
def encs(enc_dir: Path) -> dict[str, tiktoken.Encoding]:
    return {name: load_encoding(enc_dir, name) for name in ("cl100k_base", "o200k_base")}


def make_call(messages: list[Message] | None = None, **overrides: Any) -> Call:
    fields: dict[str, Any] = {
        "id": "c1",
        "started_at": 0.0,
        "provider": "openai",
        "operation": "chat",
        "upstream": "openai",
        "method": "POST",
        "path": "/v1/chat/completions",
        "model_requested": "gpt-4o",
        "messages": messages if messages is not None else [Message("user", "hello world")],
    }
    fields.update(overrides)
    return Call(**fields)


def fresh(text: str) -> str:
    """An equal but distinct str object, as a newly parsed request body would hold."""
    return text.encode().decode()


def n(enc: tiktoken.Encoding, text: str) -> int:
    return len(enc.encode_ordinary(text))


# ---------------------------------------------------------------- reference counts


@pytest.mark.parametrize(
    ("name", "text", "ids"),
    [
        ("cl100k_base", "hello world", [15339, 1917]),
        ("o200k_base", "hello world", [24912, 2375]),
        ("cl100k_base", "tiktoken is great!", [83, 1609, 5963, 374, 2294, 0]),
        ("o200k_base", "tiktoken is great!", [83, 8251, 2488, 382, 2212, 0]),
    ],
)
def test_encodings_from_files_give_the_well_known_tokens(
    encs: dict[str, tiktoken.Encoding], name: str, text: str, ids: list[int]
) -> None:
    assert encs[name].encode_ordinary(text) == ids


@pytest.fixture
def tiktoken_cache(enc_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """tiktoken's own cache layout (sha1 of the URL), filled from our files; network disabled."""
    for name, url in TIKTOKEN_URLS.items():
        shutil.copy(enc_dir / f"{name}.tiktoken", tmp_path / hashlib.sha1(url.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))

    def offline(path: str) -> bytes:
        raise AssertionError(f"tiktoken tried to fetch {path}")

    monkeypatch.setattr(tiktoken.load, "read_file", offline)
    yield


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_encodings_match_tiktokens_own_definition(
    encs: dict[str, tiktoken.Encoding], tiktoken_cache: None, name: str
) -> None:
    from tiktoken_ext import openai_public

    ref = tiktoken.Encoding(**getattr(openai_public, name)())
    ours = encs[name]

    assert (ours._pat_str, ours._special_tokens, ours.n_vocab) == (
        ref._pat_str,
        ref._special_tokens,
        ref.n_vocab,
    )
    assert [ours.encode_ordinary(t) for t in SAMPLES] == [ref.encode_ordinary(t) for t in SAMPLES]


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4"])
def test_count_text_is_the_encodings_count(
    counter: TokenCounter, encs: dict[str, tiktoken.Encoding], model: str
) -> None:
    enc = encs[route(model).encoding]
    assert [counter.count_text(model, t) for t in SAMPLES] == [n(enc, t) for t in SAMPLES]
    assert counter.count_text(model, "hello world") == 2


def test_count_text_for_claude_scales_the_o200k_count(
    counter: TokenCounter, encs: dict[str, tiktoken.Encoding]
) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert counter.count_text("claude-sonnet-4-5", text) == math.ceil(
        n(encs["o200k_base"], text) * ANTHROPIC_FACTOR
    )


# ---------------------------------------------------------------- routing


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("ft:gpt-4o-mini:acme::abc123", "o200k_base"),
        ("llama3.1:8b", "o200k_base"),
        (None, "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("GPT-4-32k", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("gpt-35-turbo", "cl100k_base"),
        ("ft:gpt-3.5-turbo:acme::x", "cl100k_base"),
        ("openai/gpt-4", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
    ],
)
def test_openai_models_route_to_their_encoding(model: str | None, encoding: str) -> None:
    r = route(model)
    assert (r.encoding, r.estimated) == (encoding, False)


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("claude-opus-4-1", None),
        ("claude-3-5-haiku-latest", "openai"),
        ("anthropic.claude-3-haiku", None),
        ("x", "anthropic"),
    ],
)
def test_anthropic_models_use_the_documented_estimate(model: str, provider: str | None) -> None:
    spec = Registry().by_name.get(provider) if provider else None  # the provider's declared estimate
    r = route(model, spec.token_factor if spec else None)
    assert (r.encoding, r.factor, r.estimated) == ("o200k_base", ANTHROPIC_FACTOR, True)


# ---------------------------------------------------------------- what a call counts


def test_chat_call_counts_each_message_with_its_framing(
    counter: TokenCounter, encs: dict[str, tiktoken.Encoding]
) -> None:
    o200k = encs["o200k_base"]
    msgs = [Message("system", "You are terse."), Message("user", "hello world")]

    got = counter.count_call(make_call(msgs, system="You are terse."))

    assert got == 3 + (3 + n(o200k, "You are terse.")) + (3 + 2)


def test_anthropic_system_is_a_message_and_the_total_is_scaled(
    counter: TokenCounter, encs: dict[str, tiktoken.Encoding]
) -> None:
    call = make_call(
        [Message("user", "hello world")],
        provider="anthropic",
        model_requested="claude-sonnet-4-5",
        system="Be brief.",
    )

    expected = 3 + (3 + n(encs["o200k_base"], "Be brief.")) + (3 + 2)
    assert counter.count_call(call) == math.ceil(expected * ANTHROPIC_FACTOR)


def test_tool_calls_results_and_definitions_are_counted(
    counter: TokenCounter, encs: dict[str, tiktoken.Encoding]
) -> None:
    o200k = encs["o200k_base"]
    tools = [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}]
    msgs = [
        Message("user", "read it"),
        Message("assistant", "", [ToolCall("t1", "read_file", '{"path": "a.py"}')]),
        Message("tool", "print('hi')", [], "t1"),
    ]

    got = counter.count_call(make_call(msgs, request={"tools": tools}))

    tools_json = '[{"type":"function","function":{"name":"read_file","parameters":{"type":"object"}}}]'
    texts = ["read it", "read_file", '{"path": "a.py"}', "print('hi')", tools_json]
    assert got == 3 + 3 * 3 + sum(n(o200k, t) for t in texts)


def test_images_add_a_fixed_estimate_per_part(counter: TokenCounter) -> None:
    parts = [
        {"type": "text", "text": "hello world"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
    ]
    call = make_call(
        [Message("user", "hello world")], request={"messages": [{"role": "user", "content": parts}]}
    )

    assert counter.count_call(call) == 3 + 3 + 2 + OPENAI_IMAGE_TOKENS + OPENAI_LOW_DETAIL_IMAGE_TOKENS


def test_anthropic_images_inside_tool_results_count_unscaled(counter: TokenCounter) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    content = [{"type": "tool_result", "tool_use_id": "t1", "content": [image]}, image]
    call = make_call(
        [Message("tool", "", [], "t1"), Message("user", "")],
        provider="anthropic",
        model_requested="claude-sonnet-4-5",
        request={"messages": [{"role": "user", "content": content}]},
    )

    assert counter.count_call(call) == math.ceil((3 + 3 + 3) * ANTHROPIC_FACTOR) + 2 * ANTHROPIC_IMAGE_TOKENS


def test_malformed_content_parts_do_not_raise(counter: TokenCounter) -> None:
    request = {
        "messages": [
            {"role": "user", "content": ["a string part", 7, {"type": ["unhashable"]}]},
            "not an object",
        ]
    }
    call = make_call([Message("user", "hello world")], request=request)

    assert counter.count_call(call) == 3 + 3 + 2


# ---------------------------------------------------------------- incremental


def conversation(turns: int, tag: str) -> list[Message]:
    msgs = [Message("system", f"{tag} system prompt " * 50)]
    for i in range(turns):
        msgs.append(Message("user", f"{tag} question {i} " * 40))
        msgs.append(
            Message("assistant", f"{tag} answer {i} " * 60, [ToolCall(f"t{i}", "search", f'{{"q": "{i}"}}')])
        )
        msgs.append(Message("tool", f"{tag} result {i} " * 80, [], f"t{i}"))
    return msgs


def resent(msgs: list[Message]) -> list[Message]:
    return [
        Message(
            m.role,
            fresh(m.text),
            [ToolCall(t.id, fresh(t.name), fresh(t.arguments)) for t in m.tool_calls],
            m.tool_call_id,
        )
        for m in msgs
    ]


def test_a_grown_conversation_encodes_only_the_new_message(counter: TokenCounter) -> None:
    history = conversation(30, "grown")
    first = counter.count_call(make_call(history))
    new = Message("user", "grown: and one more thing")
    before = counter.encodes

    second = counter.count_call(make_call([*resent(history), new]))

    assert counter.encodes - before == 1
    assert second == first + 3 + counter.count_text("gpt-4o", new.text)


def test_incremental_count_equals_a_cold_count(counter: TokenCounter, enc_dir: Path) -> None:
    history = conversation(5, "cold")
    counter.count_call(make_call(history[:-3]))

    warm = counter.count_call(make_call(resent(history)))

    assert warm == TokenCounter(enc_dir).count_call(make_call(history))


def test_a_grown_history_is_compared_not_rehashed() -> None:
    counter = TokenCounter.approximate()
    history = conversation(10, "memo")
    counter.count_call(make_call(history))
    lookups = counter.lookups

    counter.count_call(make_call([*resent(history), Message("user", "next")]))

    assert counter.continued == 1
    assert counter.lookups - lookups == 1  # only the new text went to the per-text cache


def test_an_edited_old_message_is_counted_as_edited(counter: TokenCounter, enc_dir: Path) -> None:
    history = conversation(5, "edit")
    counter.count_call(make_call(history))
    edited = resent(history)
    edited[4] = Message("user", "a shorter replacement for an old question")
    grown = [*edited, Message("user", "edit: next")]

    got = counter.count_call(make_call(grown))

    assert got == TokenCounter(enc_dir).count_call(make_call(grown))


def test_a_branch_of_a_conversation_is_counted_from_its_own_texts() -> None:
    counter = TokenCounter.approximate()
    history = conversation(3, "branch")
    counter.count_call(make_call([*history, Message("user", "first try, a long question " * 10)]))

    retry = make_call([*resent(history), Message("user", "retry")])

    assert counter.count_call(retry) == TokenCounter.approximate().count_call(retry)
    assert counter.continued == 0


def test_histories_kept_are_bounded_by_characters() -> None:
    counter = TokenCounter(approximate=True, history_chars=100)
    history = conversation(3, "big")  # thousands of characters: never kept
    counter.count_call(make_call(history))

    counter.count_call(make_call([*resent(history), Message("user", "next")]))

    assert counter.continued == 0


def test_equal_texts_in_one_call_are_encoded_once() -> None:
    counter = TokenCounter.approximate()
    counter.count_call(make_call([Message("user", "same text"), Message("assistant", "same text")]))
    assert counter.encodes == 1


def test_the_cache_is_bounded() -> None:
    counter = TokenCounter.approximate(cache_size=10)
    for i in range(100):
        counter.count_text("gpt-4o", f"text number {i}")
    assert counter.cached("o200k_base") <= 10


def test_texts_in_use_survive_cache_turnover() -> None:
    counter = TokenCounter.approximate(cache_size=10)
    system = Message("system", "the long system prompt every call resends")
    for i in range(50):
        counter.count_call(make_call([system, Message("user", f"turn {i}")]))
    assert counter.encodes == 1 + 50


def test_encoders_are_per_encoding_so_models_do_not_share_counts(counter: TokenCounter) -> None:
    text = "cross-encoding 東京 " * 10
    assert counter.count_text("gpt-4", text) != counter.count_text("gpt-4o", text)


# ---------------------------------------------------------------- missing files, approximation


def test_missing_files_say_how_to_install_them(tmp_path: Path) -> None:
    with pytest.raises(
        EncodingsUnavailable, match=r"cl100k_base\.tiktoken cannot be read.*interlock encodings install"
    ):
        TokenCounter(tmp_path)


def test_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cl100k_base.tiktoken").write_bytes(b"aGVsbG8= 0\n")
    with pytest.raises(EncodingsUnavailable, match="expected sha256 223921b7.*interlock encodings install"):
        TokenCounter(tmp_path)


def test_approximation_is_four_characters_per_token_and_says_so() -> None:
    counter = TokenCounter.approximate()
    assert (counter.exact, counter.method) == (False, "approx-4-chars-per-token")
    assert counter.count_text("gpt-4o", "x" * 10) == 3
    assert counter.count_call(make_call([Message("user", "12345678")])) == 3 + 3 + 2


def test_load_counter_falls_back_with_a_warning(tmp_path: Path) -> None:
    warnings: list[str] = []
    counter = load_counter(tmp_path, warnings.append)
    assert not counter.exact
    assert (
        len(warnings) == 1 and "interlock encodings install" in warnings[0] and "approximately" in warnings[0]
    )


def test_load_counter_is_exact_when_installed(enc_dir: Path) -> None:
    warnings: list[str] = []
    assert load_counter(enc_dir, warnings.append).exact
    assert warnings == []
