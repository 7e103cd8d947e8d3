"""Credential masking and key hashing."""

from __future__ import annotations

import json
import random
import re
import string
import sys
import time

import pytest

from proxy.redact import MASK, api_key_hash, mask_url, redact_text

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


# ---------------------------------------------------------------- differential: the previous implementation


class Reference:
    """`redact_text` before anchored candidates (one `str.find` pass per trigger, the whole
    alternation tried at each), verbatim: the oracle the current one must agree with."""

    SECRET = re.compile(
        r"""
          (?P<scheme>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]{8,}
        | (?P<pw>(?i:passw(?:or)?d|pwd)\\?["']?\s*[:=]\s*\\?["']?)[^\s"'\\,;}]{4,}
        | (?P<kv>(?i:key|token|secret|credential)s?\\?["']?\s*[:=]\s*\\?["']?)
            (?![0-9.]+(?![A-Za-z0-9+/_=~-]))[A-Za-z0-9+/_.=~-]{16,}   # not a plain number (token counts)
        | \bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}
        | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b
        | \beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}
        | \bgh[pousr]_[A-Za-z0-9]{30,}
        | \bgithub_pat_[A-Za-z0-9_]{30,}
        | \bAIza[0-9A-Za-z_-]{35}
        | \bxox[abprs]-[A-Za-z0-9-]{10,}
        """,
        re.VERBOSE,
    )
    TRIGGERS = (
        "bearer", "basic", "passw", "pwd", "key", "token", "secret", "credential", "sk-", "akia",
        "asia", "eyj", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "aiza", "xox",
    )  # fmt: skip

    @classmethod
    def mask(cls, m: re.Match[str]) -> str:
        return (m.group("scheme") or m.group("pw") or m.group("kv") or "") + MASK

    @classmethod
    def redact_text(cls, text: str) -> str:
        low = text.lower()
        if len(low) != len(text):
            return cls.SECRET.sub(cls.mask, text)
        out: list[str] = []
        last = 0
        for start in cls.candidates(low):
            if start < last:
                continue
            m = cls.SECRET.match(text, start)
            if m is not None:
                out += (text[last:start], cls.mask(m))
                last = m.end()
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)

    @classmethod
    def candidates(cls, low: str) -> list[int]:
        found: set[int] = set()
        for trigger in cls.TRIGGERS:
            i = low.find(trigger)
            while i != -1:
                found.add(i)
                i = low.find(trigger, i + 1)
        return sorted(found)


LEADS = (
    "Bearer", "Basic", "bearer", "BEARER", "basic", "password", "Password", "PASSWD", "passwd", "pwd", "PWD",
    "passw", "pass", "key", "Key", "KEY", "keys", "kEyS", "token", "Token", "TOKENS", "tokens", "secret",
    "Secret", "SECRETS", "credential", "Credentials", "CREDENTIAL", "api_key", "x-api-key", "access_token",
    "client_secret", "sk-", "sk-ant-", "sk-proj-", "SK-", "sk_", "AKIA", "ASIA", "akia", "Asia", "AIza",
    "aiza", "AIZA", "eyJ", "eyj", "EYJ", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "ghx_", "GHP_", "gh_",
    "github_pat_", "GITHUB_PAT_", "github_", "xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-", "xoxz-", "xox",
    "XOXB-", "max_tokens", "input_tokens", "monkey", "tokenizer", "secretary", "keyword",
    "\u212aey", "\u017fecret", "K\u0130Y", "tok\u00e9n", *SECRETS.values(), "ASIAABCDEFGHIJKLMNOP",
)  # fmt: skip
GLUE = (
    ":", "=", ": ", " = ", "\\\": \\\"", '": "', "': '", "\\'", '"', "'", "\\", " ", "  ", "\t", "\n",
    "\u00a0", "\u2003", "s", "S", ",", ";", "}", "{", "-", "_", ".", "/", "+", "~", "", "", "", "",
)  # fmt: skip
VALUE_CHARS = "abcXYZ0189+/_.=~-"


def _value(rng: random.Random) -> str:
    kind = rng.randrange(6)
    n = rng.choice((3, 4, 7, 8, 9, 10, 15, 16, 16, 16, 17, 29, 30, 31, 34, 35, 36, 40))
    if kind == 0:
        return "".join(rng.choice(string.digits) for _ in range(n))
    if kind == 1:
        return "".join(rng.choice(string.digits + ".") for _ in range(n))
    if kind == 2:
        return "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(n))
    if kind == 3:
        return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))
    if kind == 4:
        parts = ("".join(rng.choice(string.ascii_letters + "_-") for _ in range(n // 2 + 1)) for _ in range(3))
        return ".".join(parts)
    return "".join(rng.choice(VALUE_CHARS) for _ in range(n))


NOISE = ("the ", "a", "x", "9", "_", "\u00e9", "\u2192", "\U0001f600", "\u212a", "A", "B", "J", "k", "w")


def _noise(rng: random.Random) -> str:
    return "\u0130" if rng.random() < 0.03 else rng.choice(NOISE)  # İ lowers to 2 characters: fallback


def _adversarial(rng: random.Random) -> str:
    pieces: list[str] = []
    for _ in range(rng.randrange(1, 25)):
        roll = rng.random()
        if roll < 0.3:
            pieces += (rng.choice(LEADS), *rng.choices(GLUE, k=rng.randrange(3)), _value(rng))
        elif roll < 0.45:
            pieces.append(rng.choice(LEADS))
        elif roll < 0.65:
            pieces.append(rng.choice(GLUE))
        elif roll < 0.9:
            pieces.append(_value(rng))
        else:
            pieces.append(_noise(rng))
    return "".join(pieces)


def _prose(rng: random.Random, words: int) -> str:
    vocab = ("the", "of", "token", "key", "secret", "credential", "password", "asia", "basic", "bearer", "said")
    return " ".join(rng.choice(vocab) for _ in range(words))


@pytest.mark.parametrize("seed", range(8))
def test_redaction_equals_the_reference_on_adversarial_strings(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(4000):
        text = _adversarial(rng)
        assert redact_text(text) == Reference.redact_text(text), repr(text)


@pytest.mark.parametrize("seed", range(4))
def test_redaction_equals_the_reference_inside_json_and_prose(seed: int) -> None:
    rng = random.Random(100 + seed)
    for _ in range(300):
        inner = " ".join(_adversarial(rng) if rng.random() < 0.3 else _prose(rng, 5) for _ in range(20))
        for text in (inner, json.dumps({"messages": [{"role": "user", "content": inner}]}), json.dumps(inner)):
            assert redact_text(text) == Reference.redact_text(text), repr(text)


@pytest.mark.parametrize(
    "text",
    [
        "AKIAKIAIOSFODNN7EXAMPLE",  # the second AKIA overlaps the first, only it matches
        "ghp_ghp_" + "a" * 30,
        "github_pat_github_pat_" + "A" * 30,
        "tokentoken: " + "a" * 20,
        "key=key=" + "b" * 20,
        "xoxb-xoxb-" + "c" * 10,
        "sk-sk-" + "d" * 16,
        "eyJeyJ" + "e" * 8 + "." + "f" * 8 + "." + "g" * 8,
        "BasicBearer " + "h" * 8,
        "Bearer Bearer " + "i" * 8,
        "password " * 3 + "= hunter22",
        "tokens" + " " * 3000 + ": " + "j" * 20,
        "\u212aey: " + "k" * 20,  # Kelvin sign lowers to 'k'
        "\u017fecret: " + "l" * 20,  # long s does not lower to 's': never a candidate
        "K\u0130Y: " + "m" * 20,  # dotted capital I lowers to two characters: the fallback path
        '"{\\"access_token\\": \\"abcdefabcdefabcdefabcdef12\\"}"',
        "max_tokens: 1234567890123456789, token: 12345678901234567.89",
        "secret: " + "1" * 20 + "x",
    ],
)
def test_redaction_equals_the_reference_on_edge_cases(text: str) -> None:
    assert redact_text(text) == Reference.redact_text(text)


def test_redaction_equals_the_reference_on_a_large_loadgen_like_body() -> None:
    rng = random.Random(5)
    text = json.dumps({"messages": [{"role": "user", "content": _prose(rng, 40_000)}]})
    spiked = text[:1000] + " api_key=" + "Z" * 20 + text[1000:] + " Bearer abcdefghij"
    for t in (text, spiked):
        assert redact_text(t) == Reference.redact_text(t)


def test_the_unicode_facts_the_finders_rely_on_hold() -> None:
    """U+0130 is the only character that lowers to two; the Kelvin sign the only non-ASCII one
    that lowers to an ASCII letter; (?i) adds nothing to the letters finders spell out beyond
    'passw' (o, r, d).  A Python with newer Unicode data that breaks one fails here."""
    everything = [chr(i) for i in range(sys.maxunicode + 1)]
    assert [c for c in everything if len(c.lower()) != 1] == ["\u0130"]
    assert [c for c in everything if not c.isascii() and c.lower().isascii()] == ["\u212a"]
    for letter in "ord":
        assert [c for c in everything if re.fullmatch("(?i)" + letter, c)] == [letter.upper(), letter]


@pytest.mark.parametrize("url, shown", [
    ("postgresql+asyncpg://app:pw@db:5432/interlock", "postgresql+asyncpg://app:***@db:5432/interlock"),
    ("postgresql://app@db/interlock?password=pw&sslmode=require",
     "postgresql://app@db/interlock?password=***&sslmode=require"),
    ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
    ("rediss://default:pw@cache/1", "rediss://default:***@cache/1"),
    ("sqlite+aiosqlite:///./interlock.db", "sqlite+aiosqlite:///./interlock.db"),
    ("redis://cache:6379", "redis://cache:6379"),
    ("https://user:pw@hooks.example/x?token=pw", "https://user:***@hooks.example/x?token=***"),
])
def test_mask_url_hides_passwords_and_secret_query_values(url: str, shown: str) -> None:
    assert mask_url(url) == shown
