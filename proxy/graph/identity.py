"""Who is calling: agent fingerprints, readable names, renames and merges.

    system prompt / instructions ──normalize_prompt──┐   (dates, times, ids, numbers, emails,
    tool names (sorted, deduplicated) ───────────────┴─▶ fingerprint (16 hex)   urls stripped)
                                                               │
    stated role ("You are the researcher") ──role_name──▶ AgentDirectory.name_for ─▶ "researcher"
                                                         (or agent-<hash>; a second fingerprint
                                                          claiming "researcher" becomes
                                                          "researcher-<4 hex of its fingerprint>")

An explicit name (`X-Interlock-Agent`, `/agents/{name}/`) wins over all of this.  Names are
claimed through a `NameClaims` seam so replicas sharing an index agree on who owns a name;
seeded from the agents table at start, they are stable across restarts.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Mapping
from typing import Protocol

from proxy.call import Call
from proxy.graph.model import Identity

_CALENDAR = frozenset(
    b"monday tuesday wednesday thursday friday saturday sunday mon tue tues wed thu thur thurs fri sat "
    b"sun january february march april june july august september october november december jan feb mar "
    b"apr jun jul aug sep sept oct nov dec am pm utc gmt".split()
)


def _tables() -> tuple[bytes, bytes, bytes]:
    """fold: lower case; probe: a token becomes all 'a' unless it holds a digit, '@' or '/'
    (then it is a per-call variable and fails isalpha()); both delete the same punctuation,
    so their whitespace-split tokens stay aligned."""
    fold, probe = bytearray(range(256)), bytearray(b"a" * 256)
    for b in range(0x41, 0x5B):
        fold[b] = b + 32
    for b in b" \t\n\r\x0b\x0c":
        probe[b] = b
    for b in b"0123456789@/":
        probe[b] = 0x31
    punct = bytes(b for b in range(0x21, 0x7F) if not chr(b).isalnum() and b not in b"@/")
    return bytes(fold), bytes(probe), punct


_FOLD, _PROBE, _PUNCT = _tables()
_DIGITS = b"0123456789"
# fmt: off
_FILLER = frozenset((
    "helpful", "expert", "experienced", "friendly", "senior", "skilled", "professional", "world-class",
    "smart", "highly", "capable", "diligent", "careful", "meticulous", "knowledgeable", "dedicated",
    "useful", "competent", "brilliant", "creative", "thoughtful", "powerful", "advanced", "very",
    "extremely", "top", "elite", "great", "good", "excellent", "seasoned", "veteran", "talented",
    "efficient", "reliable", "concise", "honest", "harmless", "and",
))
_STOP = frozenset((
    "who", "that", "which", "with", "for", "in", "of", "on", "at", "to", "by", "from", "your", "you",
    "whose", "responsible", "tasked", "named", "called", "as", "is", "are", "or", "this", "the", "a",
    "an", "here", "part", "member",
))
# fmt: on
_ROLE_PATTERNS = (
    re.compile(r"^[ \t#*]*(?:role|agent|agent name|name|persona)[ \t*]*[:=][ \t]*([^\n]{1,60})", re.I | re.M),
    re.compile(r"\byour (?:role|name) is\s+(?:(?:the|a|an)\s+)?([^\n.,;:!?()]{1,60})", re.I),
    re.compile(r"\byou are\s+(?:now\s+)?(?:acting as\s+)?(?:(?:the|a|an)\s+)?([^\n.,;:!?()]{1,60})", re.I),
    re.compile(r"\bact as\s+(?:(?:the|a|an)\s+)?([^\n.,;:!?()]{1,60})", re.I),
)
_ROLE_SCAN_CHARS = 2000


def normalize_prompt(text: str) -> str:
    """The stable words of a prompt: lower case, without per-call variables.  A variable is a
    whitespace-separated token holding a digit, '@' or '/' (dates, times, uuids, ids, numbers,
    emails, urls, paths) or a weekday or month name."""
    return b" ".join(_stable_tokens(text)).decode("utf-8", "replace")


def _stable_tokens(text: str) -> list[bytes]:
    raw = text.encode("utf-8", "surrogatepass")
    words = raw.translate(_FOLD, _PUNCT).split()
    constant = list(itertools.compress(words, map(bytes.isalpha, raw.translate(_PROBE, _PUNCT).split())))
    if _CALENDAR.isdisjoint(constant):
        return constant
    return list(itertools.filterfalse(_CALENDAR.__contains__, constant))


def fingerprint(system: str | None, tools: Iterable[str]) -> str:
    """16 hex chars identifying an agent by its normalised prompt and its tool set."""
    basis = b" ".join(_stable_tokens(system or "")) + b"\x00" + ",".join(sorted(set(tools))).encode()
    return hashlib.blake2b(basis, digest_size=8).hexdigest()


def role_name(system: str | None) -> str | None:
    """A slug from the role a prompt states ("You are the researcher" → "researcher")."""
    head = (system or "")[:_ROLE_SCAN_CHARS]
    for pattern in _ROLE_PATTERNS:
        for match in pattern.finditer(head):
            slug = _slug(match.group(1))
            if slug:
                return slug
    return None


def _slug(phrase: str) -> str | None:
    words: list[str] = []
    for raw in re.findall(r"[a-z][a-z0-9-]*", phrase.lower()):
        if not words and raw in _FILLER:
            continue
        if raw in _STOP or (words and raw.endswith("ing")):
            break
        words.append(raw)
        if len(words) == 3:
            break
    slug = "-".join(words).strip("-")
    return slug if len(slug) >= 2 else None


class NameClaims(Protocol):
    """Who owns a display name.  A shared backend makes this atomic (SET NX)."""

    def claim_name(self, name: str, owner: str) -> str:
        """Claim `name` for `owner` unless taken; return the owner the name now belongs to."""
        ...


class LocalClaims:
    """In-process NameClaims."""

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}

    def claim_name(self, name: str, owner: str) -> str:
        return self._owners.setdefault(name, owner)


class AgentDirectory:
    """Display names of agents: assigned once per fingerprint, renamed and merged on request.

    `names` seeds known fingerprints (or `name:<explicit>` keys) from the agents table;
    `aliases` maps a name to the name it now shows as (config renames and merges).
    Mutating methods are called by the admin API or config reload; `name_for` and
    `resolve` by the linker (background) and the request path (cheap, no I/O).
    """

    def __init__(
        self,
        *,
        names: Mapping[str, str] | None = None,
        aliases: Mapping[str, str] | None = None,
        claims: NameClaims | None = None,
    ) -> None:
        self._claims: NameClaims = claims or LocalClaims()
        self._names: dict[str, str] = {}
        self._aliases: dict[str, str] = dict(aliases or {})
        for key, name in (names or {}).items():
            self._claims.claim_name(name, key)
            self._names[key] = name

    def name_for(self, key: str, role: str | None) -> tuple[str, bool]:
        """(display name, newly named) for an agent key (fingerprint or `name:<explicit>`)."""
        known = self._names.get(key)
        if known is not None:
            return self.resolve(known), False
        name = self._claim(key, role)
        self._names[key] = name
        return self.resolve(name), True

    def explicit(self, name: str) -> tuple[str, bool]:
        """(display name, first seen) for a name the client gave: it is used as given."""
        key = "name:" + name
        new = key not in self._names
        if new:
            self._claims.claim_name(name, key)
            self._names[key] = name
        return self.resolve(name), new

    def _claim(self, key: str, role: str | None) -> str:
        tag = key.removeprefix("name:")
        base = role or f"agent-{tag[:8]}"
        for candidate in (base, f"{base}-{_short(tag, 4)}", f"{base}-{_short(tag, 12)}"):
            if self._claims.claim_name(candidate, key) == key:
                return candidate
        return f"{base}-{_short(tag, 16)}"

    def resolve(self, name: str) -> str:
        """Follow renames and merges (cycle-safe)."""
        seen = {name}
        while (nxt := self._aliases.get(name)) is not None and nxt not in seen:
            seen.add(nxt)
            name = nxt
        return name

    def rename(self, old: str, new: str) -> None:
        """Show agent `old` as `new` from now on (stored rows keep `old` until rewritten)."""
        if self.resolve(new) == old:
            self._aliases.pop(new, None)
        self._aliases[old] = new

    def merge(self, a: str, b: str) -> None:
        """Agent `a` is the same agent as `b`: its calls show as `b` from now on."""
        target = self.resolve(b)
        if self.resolve(a) != target:
            self._aliases[self.resolve(a)] = target

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def known(self) -> dict[str, str]:
        """Agent key → display name, for persisting to the agents table."""
        return {key: self.resolve(name) for key, name in self._names.items()}


def _short(tag: str, n: int) -> str:
    if all(c in "0123456789abcdef" for c in tag):
        return tag[:n]
    return hashlib.blake2b(tag.encode(), digest_size=8).hexdigest()[:n]


class Identifier:
    """Call → Identity, cheap enough for the request path.

    Prompts are cached by their text without digits (and tools), so a static prompt or one
    whose only variables are dates, times and counters costs a translate and a dict lookup;
    other variables (uuids, emails) cost one normalisation (~0.1 ms for 4k characters).
    Roles are cached by fingerprint.  Both caches are cleared when they reach `max_cached`."""

    def __init__(self, directory: AgentDirectory | None = None, *, max_cached: int = 4096) -> None:
        self.directory = directory or AgentDirectory()
        self._prints: dict[tuple[int, int, tuple[str, ...]], str] = {}
        self._roles: dict[str, str | None] = {}
        self._max = max_cached

    def identify(self, call: Call) -> Identity:
        fp = self._fingerprint(call.system or "", tuple(call.tools))
        if call.agent:
            name, new = self.directory.explicit(call.agent)
            return Identity("name:" + call.agent, name, fp, new)
        name, new = self.directory.name_for(fp, self._role(fp, call.system))
        return Identity(fp, name, fp, new)

    def _fingerprint(self, system: str, tools: tuple[str, ...]) -> str:
        key = (hash(system.encode("utf-8", "surrogatepass").translate(None, _DIGITS)), len(system), tools)
        fp = self._prints.get(key)
        if fp is None:
            if len(self._prints) >= self._max:
                self._prints.clear()
            fp = self._prints[key] = fingerprint(system, tools)
        return fp

    def _role(self, fp: str, system: str | None) -> str | None:
        if fp in self._roles:
            return self._roles[fp]
        if len(self._roles) >= self._max:
            self._roles.clear()
        role = self._roles[fp] = role_name(system)
        return role
