"""Credential masking for stored content, and the short hash that groups calls by API key.

Both run wherever a call is turned into a row (background, no I/O, never raise).  The pattern is
one regex compiled at import (immutable).  Running it over every position of a 200 kB body costs
~100 ms in `re`, so every branch starts with a literal trigger: `str.find` (memchr-fast) locates
the few candidate positions and the regex is only tried, anchored, there.
"""

from __future__ import annotations

import hashlib
import re

MASK = "[REDACTED]"

_SECRET = re.compile(
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


# Every branch of _SECRET starts with one of these (lowercased); keep the two lists in step.
_TRIGGERS = (
    "bearer", "basic", "passw", "pwd", "key", "token", "secret", "credential", "sk-", "akia",
    "asia", "eyj", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "aiza", "xox",
)  # fmt: skip


def _mask(m: re.Match[str]) -> str:
    return (m.group("scheme") or m.group("pw") or m.group("kv") or "") + MASK


def redact_text(text: str) -> str:
    """Mask bearer tokens, API keys (OpenAI, Anthropic, AWS, GitHub, Google, Slack), JWTs and
    values following words such as key/token/secret/password.  Keeps the surrounding text."""
    low = text.lower()
    if len(low) != len(text):  # some non-ASCII letters change length when lowered
        return _SECRET.sub(_mask, text)
    out: list[str] = []
    last = 0
    for start in _candidates(low):
        if start < last:
            continue
        m = _SECRET.match(text, start)
        if m is not None:
            out += (text[last:start], _mask(m))
            last = m.end()
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def _candidates(low: str) -> list[int]:
    found: set[int] = set()
    for trigger in _TRIGGERS:
        i = low.find(trigger)
        while i != -1:
            found.add(i)
            i = low.find(trigger, i + 1)
    return sorted(found)


def api_key_hash(value: str) -> str:
    """12 hex chars of sha256 over the credential (an `Authorization` value or `x-api-key`).

    `Bearer sk-x` and `sk-x` hash alike, so OpenAI- and Anthropic-style headers carrying the
    same key group together.  Short on purpose: enough to group, useless to recover the key.
    """
    token = value.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:12]
