"""Credential masking and key hashing."""

from __future__ import annotations

import json
import time

import pytest

from proxy.redact import MASK, api_key_hash, redact_text

SECRETS = {
    "openai key": "sk-abcdefghijklmnopqrstuvwxyz012345",
    "openai project key": "sk-proj-Abc123_def456-GHI789jkl012MNO",
    "anthropic key": "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    "aws access key": "AKIAIOSFODNN7EXAMPLE",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "github token": "ghp_" + "a1B2c3D4e5" * 4,
}


@pytest.mark.parametrize("secret", SECRETS.values(), ids=SECRETS.keys())
def test_api_key_shaped_strings_are_masked_in_prose(secret: str) -> None:
    out = redact_text(f"please use {secret} for this.")
    assert secret not in out
    assert out == f"please use {MASK} for this."


def test_bearer_token_is_masked_and_the_scheme_kept() -> None:
    assert redact_text("Authorization: Bearer abc.def-ghi_jkl") == f"Authorization: Bearer {MASK}"


@pytest.mark.parametrize(
    "text",
    [
        '{"api_key": "0123456789abcdef0123456789abcdef"}',
        "x-api-key: c2VjcmV0LXZhbHVlLXRoYXQtaXMtbG9uZw==",
        "client_secret=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA",
        '{"password": "hunter22"}',
        '"{\\"access_token\\": \\"abcdefabcdefabcdefabcdef12\\"}"',
    ],
)
def test_values_after_secret_words_are_masked(text: str) -> None:
    out = redact_text(text)
    assert MASK in out
    assert not any(
        word in out for word in ("0123456789abcdef", "c2VjcmV0", "Zm9vYmFy", "hunter22", "abcdefabcdef")
    )


@pytest.mark.parametrize(
    "text",
    [
        '{"model": "gpt-4o", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}]}',
        "The key point is that tokens cost money; ask-me-anything is fine.",
        '{"usage": {"input_tokens": 123456789012345678, "output_tokens": 5}}',
    ],
)
def test_ordinary_request_text_is_unchanged(text: str) -> None:
    assert redact_text(text) == text


def test_redaction_of_a_large_body_is_fast() -> None:
    body = json.dumps(
        {"max_tokens": 100, "messages": [{"role": "user", "content": "lorem ipsum dolor " * 12_000}]}
    )
    start = time.perf_counter()
    out = redact_text(body + " sk-abcdefghijklmnopqrstuvwxyz")
    elapsed = time.perf_counter() - start
    assert out.endswith(MASK)
    assert elapsed < 0.05, f"{len(body)} chars took {elapsed * 1000:.1f} ms"


def test_key_hash_is_short_stable_and_groups_header_styles() -> None:
    h = api_key_hash("Bearer sk-abc123")
    assert len(h) == 12 and int(h, 16) >= 0
    assert h == api_key_hash("sk-abc123") == api_key_hash("  bearer   sk-abc123 ")
    assert h != api_key_hash("sk-abc124")
    assert "abc123" not in h
