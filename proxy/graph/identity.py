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
import re
from collections.abc import Iterable, Mapping
from typing import Protocol

from proxy.call import Call
from proxy.graph.model import Identity
from proxy.lru import Memo

_CALENDAR = frozenset(
    b"monday tuesday wednesday thursday friday saturday sunday mon tue tues wed thu thur thurs fri sat "
    b"sun january february march april may june july august september october november december jan "
    b"feb mar apr jun jul aug sep sept oct nov dec am pm utc gmt".split()
)
_WEEKDAYS = frozenset(b"monday tuesday wednesday thursday friday saturday sunday".split())
_WS = b" \t\n\r\x0b\x0c"


def _tables() -> tuple[bytes, bytes, bytes]:
    """fold: lower case, whitespace to space; probe: whitespace to space, a digit, '@' or '/'
    to '1', anything else to 'a' (a token with a '1' is a per-call variable); punct: the
    ASCII punctuation fold deletes."""
    fold, probe = bytearray(range(256)), bytearray(b"a" * 256)
    for b in range(0x41, 0x5B):
        fold[b] = b + 32
    for b in _WS:
        fold[b] = probe[b] = 0x20
    for b in b"0123456789@/":
        probe[b] = 0x31
    punct = bytes(b for b in range(0x21, 0x7F) if not chr(b).isalnum() and b not in b"@/")
    return bytes(fold), bytes(probe), punct


_FOLD, _PROBE, _PUNCT = _tables()
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
_QUOTE = "[\"'\u201c\u2018`]?"
_STATED = re.compile(
    r"(?:\byou(?:'re|\u2019re| are)\b[^.\n]{0,40}?\b(?:named|called)|\byour name is)\s+"
    + _QUOTE
    + r"([A-Za-z][\w-]{0,40}(?: [A-Z][\w-]{0,20})?)",
    re.I,
)
_STATED_SCAN_CHARS = 400


def normalize_prompt(text: str) -> str:
    """The stable words of a prompt: lower case, punctuation and per-call variables removed.
    A variable is a whitespace-separated token holding a digit, '@' or '/' (dates, times,
    uuids, ids, numbers, emails, urls, paths), a calendar word next to one ("Monday, March
    3"), or a weekday name anywhere."""
    return b" ".join(_stable(text).split()).decode("utf-8", "replace")


def _stable(text: str) -> bytes:
    """What the fingerprint hashes: bytes-level C work only, ~50 us for 10 kB of prompt.
    Whitespace runs are kept as they are (a template repeats its own layout)."""
    folded = _cut(text, calendar=True).translate(_FOLD, _PUNCT)
    return _drop_weekdays(folded) if b"day" in folded else folded


def _cut(text: str, *, calendar: bool) -> bytes:
    """The prompt's bytes without its variable tokens (and, with `calendar`, the calendar
    words beside them).  Without `calendar` it is the identity cache's key: a date written
    with words then makes a new key once a day, and that key is normalised once."""
    raw = text.encode("utf-8", "surrogatepass")
    probe = raw.translate(_PROBE)
    return _cut_variables(raw, probe, calendar) if b"1" in probe else raw


def _drop_weekdays(folded: bytes) -> bytes:
    kept, pos, i = [], 0, folded.find(b"day")
    while i >= 0:
        start = folded.rfind(b" ", 0, i) + 1
        end = folded.find(b" ", i)
        end = len(folded) if end < 0 else end
        if folded[start:end] in _WEEKDAYS:
            kept.append(folded[pos:start])
            pos = end
        i = folded.find(b"day", end)
    kept.append(folded[pos:])
    return b"".join(kept)


def _cut_variables(raw: bytes, probe: bytes, calendar: bool) -> bytes:
    """What is left of each gap is one space, however many tokens the variable took."""
    kept, pos, i = [], 0, probe.find(b"1")
    while i >= 0:
        start = probe.rfind(b" ", 0, i) + 1
        end = probe.find(b" ", i)
        end = len(probe) if end < 0 else end
        if calendar:
            start, end = _calendar_before(raw, probe, start), _calendar_after(raw, probe, end)
        kept.append(raw[pos:start].strip(_WS))
        pos = max(pos, end)
        i = probe.find(b"1", pos)
    kept.append(raw[pos:].strip(_WS))
    return b" ".join(k for k in kept if k)


def _calendar_before(raw: bytes, probe: bytes, start: int) -> int:
    for _ in range(2):
        prev = probe.rfind(b" ", 0, max(start - 1, 0)) + 1
        if start == 0 or not _is_calendar(raw[prev : start - 1]):
            break
        start = prev
    return start


def _calendar_after(raw: bytes, probe: bytes, end: int) -> int:
    for _ in range(2):
        nxt = probe.find(b" ", end + 1)
        nxt = len(probe) if nxt < 0 else nxt
        if end >= len(probe) or not _is_calendar(raw[end + 1 : nxt]):
            break
        end = nxt
    return end


def _is_calendar(token: bytes) -> bool:
    return token.translate(_FOLD, _PUNCT) in _CALENDAR


def fingerprint(system: str | None, tools: Iterable[str]) -> str:
    """16 hex chars identifying an agent by its normalised prompt and its tool set.  A speaker
    selector's prompt is reduced to its skeleton first (see `selector_skeleton`)."""
    return _digest(_stable(selector_skeleton(system or "")), tools)


_SELECTOR = re.compile(
    r"select the next (?:role|speaker|agent)|(?:choose|pick|select) (?:the )?next speaker|who should speak next", re.I
)
_ROSTER_LINE = re.compile(r"^[ \t]*[A-Za-z][\w.-]{0,39}:[ \t].*$", re.M)
_NAME_LIST = re.compile(r"\[(?:\s*['\"][^'\"\n]{1,60}['\"]\s*,?)+\s*\]")
_SELECTOR_WORDS = ("next role", "next speaker", "next agent", "speak next")
SELECTOR_NAME = "speaker-selector"


def is_selector(system: str) -> bool:
    """A group chat's speaker selector (AutoGen SelectorGroupChat, AG2 GroupChatManager and
    their kin): its prompt asks which participant speaks next."""
    if not system:
        return False
    low = system.lower()  # literals first: the regex over a 10 kB prompt costs ~0.5 ms, these ~10 us
    if not any(phrase in low for phrase in _SELECTOR_WORDS):
        return False
    return _SELECTOR.search(low) is not None


def selector_skeleton(system: str) -> str:
    """The part of a selector's prompt that stays put: its opening up to the roster, and the
    lines that ask for the next speaker, without the candidate lists.  The roster, the
    transcript and the lists change on every turn (the last speaker is left out, the
    conversation grows)."""
    if not is_selector(system):
        return system
    lines = system.splitlines()
    end = next((i for i, line in enumerate(lines) if _ROSTER_LINE.match(line)), len(lines))
    kept = lines[:end] + [line for line in lines[end:] if _SELECTOR.search(line)]
    return _NAME_LIST.sub("", "\n".join(kept))


def _digest(stable: bytes, tools: Iterable[str]) -> str:
    basis = stable + b"\x00" + ",".join(sorted(set(tools))).encode()
    return hashlib.blake2b(basis, digest_size=8).hexdigest()


def role_name(system: str | None) -> str | None:
    """A slug from the role a prompt states ("You are the researcher" → "researcher")."""
    if system and is_selector(system):
        return SELECTOR_NAME  # its roster states every participant's role, none of them its own
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


def stated_name(call: Call) -> str | None:
    """The speaker's own name when the request states it: the `name` of its own (assistant)
    turns, or a first user message that addresses it by name ("You're a helpful agent named
    'search_agent'").  Agents that share a prompt are told apart by it."""
    first_user: str | None = None
    for m in call.messages:
        if m.role == "assistant" and m.name:
            return slug_name(m.name)
        if first_user is None and m.role == "user":
            first_user = m.text[:_STATED_SCAN_CHARS]
    match = _STATED.search(first_user) if first_user else None
    return slug_name(match.group(1)) if match else None


def slug_name(raw: str) -> str | None:
    slug = "-".join(re.findall(r"[a-z0-9]+", raw.lower()))[:40]
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
            owner = self._claims.claim_name(candidate, key)
            if owner == key or _states_own_role(key, owner):
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


def _states_own_role(key: str, owner: str) -> bool:
    """`fp/analyst` may show as `analyst` when that name belongs to its own prompt's key `fp`:
    the request stated the role its prompt states (a group chat naming its speakers)."""
    return "/" in key and owner == key.split("/", 1)[0]


def _short(tag: str, n: int) -> str:
    if all(c in "0123456789abcdef" for c in tag):
        return tag[:n]
    return hashlib.blake2b(tag.encode(), digest_size=8).hexdigest()[:n]


class Identifier:
    """Call → Identity, cheap enough for the request path.

    Prompts are cached by their text without variable tokens (and tools): once its agent is
    known a prompt whose variables are tokens with digits, '@' or '/' (dates, ids, emails)
    costs two translates, a few finds and a dict lookup (~30 us for 10 kB).
    Identities are also kept per call id, so the linker reuses what the request path found.
    Roles are cached by fingerprint.  Each cache is cleared when it reaches `max_cached`."""

    def __init__(self, directory: AgentDirectory | None = None, *, max_cached: int = 4096) -> None:
        self.directory = directory or AgentDirectory()
        self._prints: Memo[tuple[int, int, tuple[str, ...]], str] = Memo(max_cached)
        self._roles: Memo[str, str | None] = Memo(max_cached)
        self._calls: Memo[str, Identity] = Memo(max_cached)

    def identify(self, call: Call) -> Identity:
        ident = self._calls.get(call.id)
        if ident is None:
            ident = self._identify(call)
            self._calls.keep(call.id, ident)
        return ident

    def _identify(self, call: Call) -> Identity:
        fp = self._fingerprint(call.system or "", tuple(call.tools))
        if call.agent and call.agent_source != "inferred":  # inferred = our own earlier guess
            name, new = self.directory.explicit(call.agent)
            return Identity("name:" + call.agent, name, fp, new)
        stated = stated_name(call)
        role = self._role(fp, call.system)
        if stated:
            return self.stated(fp, stated, role)
        name, new = self.directory.name_for(fp, role)
        return Identity(fp, name, fp, new)

    def stated(self, fp: str, stated: str, role: str | None = None) -> Identity:
        """The agent of prompt `fp` whose requests call it `stated`: the prompt's own agent when
        that is the role the prompt states, else one of the agents sharing the prompt."""
        role = role if role is not None else self._roles.get(fp)
        key = fp if stated == role else f"{fp}/{stated}"
        name, new = self.directory.name_for(key, stated)
        return Identity(key, name, fp, new, hinted=True)

    def rekeyed(self, ident: Identity, key: str, system: str | None) -> Identity:
        """The same caller under another key (the linker learnt which of the agents sharing
        a prompt it is): named like its prompt's role, told apart by a suffix."""
        name, new = self.directory.name_for(key, self._role(ident.fingerprint, system))
        return Identity(key, name, ident.fingerprint, new)

    def _fingerprint(self, system: str, tools: tuple[str, ...]) -> str:
        constant = _cut(selector_skeleton(system), calendar=False)
        key = (hash(constant), len(constant), tools)
        fp = self._prints.get(key)
        if fp is None:
            fp = self._prints.keep(key, fingerprint(system, tools))
        return fp

    def _role(self, fp: str, system: str | None) -> str | None:
        if fp not in self._roles:
            self._roles.keep(fp, role_name(system))
        return self._roles[fp]

