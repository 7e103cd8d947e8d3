"""Credential masking for stored content, and the short hash that groups calls by API key.

Both run wherever a call is turned into a row (background, no I/O, never raise).  The patterns
are compiled at import (immutable).  Running the whole alternation at every position of a 200 kB
body costs ~100 ms in `re`, and one `str.find` pass per trigger word (20 of them) ~3 ms on 256 kB,
so candidates come from anchor characters that are rare in prose:

    branch   lead (case-insensitive: ci)       anchor  searched in
    scheme   Bearer Basic                      B       the text
    pw       ci passw(or)d pwd ... [:=]        : =     the text reversed (\\s* comes before [:=])
    kv       ci key token secret credential    : =     the text reversed
             s? ... [:=]
    sk       sk-                               -       the text reversed
    aws      AKIA ASIA                         A       the text
    jwt      eyJ                               J       the text reversed
    gh       gh[pousr]_                        _       the text reversed
    github   github_pat_                       _       the text reversed
    google   AIza                              A       the text
    slack    xox[abprs]-                       -       the text reversed

An anchor absent from the text costs one memchr; a present one, one pass of a finder: the
anchor as the pattern's literal first character (a tight C loop), the rest of the lead in a
lookahead (checked in C, and zero-width so overlapping leads are all found).

Same result as the former scan (every position where the lowered text holds a trigger word,
the whole alternation tried there, left to right): a branch can only match where its lead is,
which its finder finds, and a finder only finds positions where the lowered text holds that
branch's trigger (`ci` letters are the characters that lower to them: the letter, its capital,
and the Kelvin sign for k).  Only the branch found there is tried: no other can start there.
Text holding U+0130 (it lowers to two characters) goes through the whole alternation, as before.
"""

from __future__ import annotations

import hashlib
import re

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

MASK = "[REDACTED]"

# The branches of the secret pattern, in alternation order.  `scheme`, `pw` and `kv` keep
# their named group (the words before the value) unmasked.
_BRANCHES = {
    "scheme": r"(?P<scheme>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]{8,}",
    "pw": r"""(?P<pw>(?i:passw(?:or)?d|pwd)\\?["']?\s*[:=]\s*\\?["']?)[^\s"'\\,;}]{4,}""",
    "kv": (
        r"""(?P<kv>(?i:key|token|secret|credential)s?\\?["']?\s*[:=]\s*\\?["']?)"""
        r"(?![0-9.]+(?![A-Za-z0-9+/_=~-]))[A-Za-z0-9+/_.=~-]{16,}"  # not a plain number (token counts)
    ),
    "sk": r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}",
    "aws": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "jwt": r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    "gh": r"\bgh[pousr]_[A-Za-z0-9]{30,}",
    "github": r"\bgithub_pat_[A-Za-z0-9_]{30,}",
    "google": r"\bAIza[0-9A-Za-z_-]{35}",
    "slack": r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
}
_SECRET = re.compile("|".join(_BRANCHES.values()))
_BRANCH = {name: re.compile(source) for name, source in _BRANCHES.items()}
_EXPANDS = "\u0130"  # the only character whose lower() is two characters (tests check all of them)


def _ci_reversed(*words: str) -> str:
    """Alternation of the words reversed, each letter as the class of what lowers to it."""
    kelvin = {"k": "\u212a"}  # the only non-ASCII character that lowers to an ASCII letter
    return "|".join("".join(f"[{c}{c.upper()}{kelvin.get(c, '')}]" for c in reversed(w)) for w in words)


# Finders: the named group that matched names the branch.  In the reversed text a lead starts
# at len(text) - end(group); in the text, at start().
_LEAD = (
    r"""(?=\s*["']?\\?(?:s?(?P<kv>"""
    + _ci_reversed("key", "token", "secret", "credential")
    + ")|(?P<pw>"
    + _ci_reversed("password", "passwd", "pwd")
    + ")))"
)
_REVERSED = (
    (":", re.compile(":" + _LEAD)),
    ("=", re.compile("=" + _LEAD)),
    ("-", re.compile(r"-(?=(?P<sk>ks)|[abprs](?P<slack>xox))")),
    ("_", re.compile(r"_(?=[pousr](?P<gh>hg)|(?P<github>tap_buhtig))")),
    ("J", re.compile(r"J(?=(?P<jwt>ye))")),
)
_FORWARD = (
    ("B", re.compile(r"B(?=(?P<scheme>earer|asic))")),
    ("A", re.compile(r"A(?=(?P<aws>KIA|SIA)|(?P<google>Iza))")),
)


def _mask(m: re.Match[str]) -> str:
    groups = m.groupdict()
    return (groups.get("scheme") or groups.get("pw") or groups.get("kv") or "") + MASK


def redact_text(text: str) -> str:
    """Mask bearer tokens, API keys (OpenAI, Anthropic, AWS, GitHub, Google, Slack), JWTs and
    values following words such as key/token/secret/password.  Keeps the surrounding text."""
    if _EXPANDS in text:
        return _SECRET.sub(_mask, text)
    out: list[str] = []
    last = 0
    for start, branch in _candidates(text):
        if start < last:
            continue
        m = _BRANCH[branch].match(text, start)
        if m is not None:
            out += (text[last:start], _mask(m))
            last = m.end()
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def _candidates(text: str) -> list[tuple[int, str]]:
    """(lead position, branch) in position order: every place a branch can match."""
    found: list[tuple[int, str]] = []
    for anchor, finder in _FORWARD:
        if anchor in text:
            found += [(m.start(), m.lastgroup or "") for m in finder.finditer(text, text.find(anchor))]
    if any(anchor in text for anchor, _ in _REVERSED):
        found += _reversed_candidates(text)
    found.sort()
    return found


def _reversed_candidates(text: str) -> list[tuple[int, str]]:
    rev, n = text[::-1], len(text)
    found: list[tuple[int, str]] = []
    for anchor, finder in _REVERSED:
        if anchor in rev:
            for m in finder.finditer(rev, rev.find(anchor)):
                group = m.lastgroup or ""
                found.append((n - m.end(group), group))
    return found


def api_key_hash(value: str) -> str:
    """12 hex chars of sha256 over the credential (an `Authorization` value or `x-api-key`).

    `Bearer sk-x` and `sk-x` hash alike, so OpenAI- and Anthropic-style headers carrying the
    same key group together.  Short on purpose: enough to group, useless to recover the key.
    """
    token = value.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:12]


_URL_SECRET_PARAM = re.compile(r"(?i)([?&](?:password|passwd|pwd|secret|token|key|api[_-]?key|access[_-]?key)=)[^&#]*")
_URL_USERINFO = re.compile(r"(//[^/@:]*:)[^/@]*@")


def mask_url(url: str) -> str:
    """A URL fit for a log line or a message (database, Redis, ...): the password and any
    secret-looking query value shown as `***`."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not `scheme://user:pass@host/...`: mask what looks like it
        shown = _URL_USERINFO.sub(r"\1***@", url)
    return _URL_SECRET_PARAM.sub(r"\1***", shown)
