"""Revisit (`detect: revisit`): the same resource requested again within the scope.

    on_response(call) ──tool calls that fetch──▶ resources ──▶ distinct calls per resource
    on_request(call)  ──new tool results / messages saying "You previously visited this
                        page"──▶ a revisit of the page they name (or of "a page")

A resource is what a fetching tool call (its name reads get, fetch, read, open, visit,
search, browse, load, download, navigate, view, scrape...) asks for, normalised: a URL
(scheme and host lower-cased, `www.`, fragment, trailing slash and utm_* parameters dropped,
query sorted), a file path (normalised), a search query (its content words, sorted: the same
query reworded by word order or form is the same query), else the tool's canonical arguments.
Each resource counts the distinct calls that requested it within `window`; the
(max_revisits+1)-th gets the rule's action.  A message saying a page was previously visited
counts once per distinct message (it implies one earlier visit).  A deny reached by a tool
call (already delivered) flags it and refuses the scope's next request.  Tools that act (write,
click, run) request no resource.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from proxy.call import Call, ToolCall
from proxy.guards.base import ALLOW, GuardDeps, Verdict
from proxy.guards.detector import LoopDetector
from proxy.guards.facts import canonical_args, digest, incoming_messages
from proxy.guards.terms import Lexicon
from proxy.rulemodels import LoopRule

FETCH = re.compile(
    r"get|fetch|read|open|visit|search|browse|load|download|look_?up|query|find|navigate|view|"
    r"scrape|crawl|retrieve|go_?to|cat\b|web|url|page|file",
    re.IGNORECASE,
)
_ACT = re.compile(r"write|save|edit|create|delete|remove|click|type|run|exec|send|post|put|update|"
                  r"scroll|page_?(up|down)|press|submit|move|append", re.IGNORECASE)
VISITED = re.compile(
    r"(?:previously|already)\s+(?:visited|opened|seen|read|fetched|searched)"
    r"|visited\s+this\s+(?:page|url|site|file)\s+(?:before|already|\d)",
    re.IGNORECASE,
)
_URL = re.compile(r"https?://[^\s\"'<>)\]]+", re.IGNORECASE)
_PATH = re.compile(r"(?:^|\s)((?:~|\.{1,2})?/[\w.\-/]+|[\w.\-]+/[\w.\-/]*\.\w{1,8})")
_PATH_KEYS = frozenset({"path", "file", "file_path", "filepath", "filename", "fname", "dir", "directory"})
_QUERY_KEYS = frozenset({"query", "q", "search", "search_query", "term", "terms", "keywords", "question"})
_SCAN = 4_000  # a message says "previously visited" near its head


def normal_url(url: str) -> str:
    parts = urlsplit(url.strip().rstrip(".,;"))
    host = parts.netloc.lower().removeprefix("www.")
    query = urlencode(sorted((k, v) for k, v in parse_qsl(parts.query) if not k.startswith("utm_")))
    return urlunsplit((parts.scheme.lower(), host, parts.path.rstrip("/") or "/", query, ""))


def normal_path(path: str) -> str:
    return posixpath.normpath(path.strip().replace("\\", "/"))


def normal_query(text: str, lexicon: Lexicon) -> str:
    return ",".join(map(str, sorted(lexicon.terms(text)))) or text.strip().lower()


def _strings(value: Any, key: str = "", depth: int = 0) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(key.lower(), value)]
    if depth > 3:
        return []
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in _strings(v, str(k), depth + 1)]
    if isinstance(value, list):
        return [pair for v in value for pair in _strings(v, key, depth + 1)]
    return []


def resources(tc: ToolCall, lexicon: Lexicon) -> list[str]:
    """What a fetching tool call requests, normalised (none for a tool that acts)."""
    if not FETCH.search(tc.name) or _ACT.search(tc.name):
        return []
    try:
        args = orjson.loads(tc.arguments) if tc.arguments.strip() else {}
    except orjson.JSONDecodeError:
        args = tc.arguments
    found = []
    for key, value in _strings(args):
        if _URL.match(value.strip()):
            found.append("url:" + normal_url(value))
        elif key in _PATH_KEYS:
            found.append("file:" + normal_path(value))
        elif key in _QUERY_KEYS:
            found.append(f"query:{tc.name}:" + normal_query(value, lexicon))
    if not found and args:
        found.append(f"tool:{tc.name}({canonical_args(tc.arguments)})")
    return found


def says_visited(text: str) -> bool:
    """The message says its page was visited before (substring checks first: cheap)."""
    head = text[:_SCAN]
    return ("isited" in head or "lready" in head or "reviously" in head) and VISITED.search(head) is not None


def named_resource(text: str) -> str:
    """The page a "previously visited" message is about: its first URL or path, else "page"."""
    head = text[:_SCAN]
    url = _URL.search(head)
    if url is not None:
        return "url:" + normal_url(url.group(0))
    path = _PATH.search(head)
    return "file:" + normal_path(path.group(1)) if path is not None else "page"


class Revisit(LoopDetector):
    """The same URL, file, query or fetch requested again (or reported as visited before)."""

    def __init__(self, rule: LoopRule, deps: GuardDeps) -> None:
        super().__init__(rule, deps)
        self.max_repeats = rule.max_revisits if rule.max_revisits is not None else rule.max_repeats
        self.keep = self.max_repeats + (rule.deny_after or 0) + 2

    async def on_response(self, call: Call) -> Verdict:
        if call.outcome != "ok" or not call.completion.tool_calls:
            return ALLOW
        lexicon = self.facts(call).lexicon
        worst: tuple[int, str, list[str]] | None = None
        for tc in call.completion.tool_calls:
            for resource in resources(tc, lexicon):
                calls = await self.store.remember(
                    self.key(call, digest(resource)), call.id, keep=self.keep, ttl_s=self.window
                )
                if worst is None or len(calls) > worst[0]:
                    worst = (len(calls), resource, calls)
        if worst is None or worst[0] <= self.max_repeats:
            return ALLOW
        n, resource, calls = worst
        return await self.deny_next(call, self._verdict(call, n, resource, calls[::-1], "requested again by a tool call"))

    async def on_request(self, call: Call) -> Verdict:
        refused = await self.refused(call)
        if refused.denied:
            return refused
        said = [m.text for m in incoming_messages(call.messages) if says_visited(m.text)]
        worst: tuple[int, str, list[str]] | None = None
        for text in said:
            resource = named_resource(text)
            items = await self.store.remember(
                self.key(call, digest(resource)), "said:" + digest(text), keep=self.keep, ttl_s=self.window
            )
            n = max(len(items), 2)
            if worst is None or n > worst[0]:
                worst = (n, resource, items)
        if worst is None or worst[0] <= self.max_repeats:
            return ALLOW
        n, resource, items = worst
        return self._verdict(call, n, resource, items[::-1] + [call.id], "reported as visited before")

    def _verdict(self, call: Call, n: int, resource: str, calls: list[str], evidence: str) -> Verdict:
        shown = resource if len(resource) <= 160 else resource[:157] + "..."
        what = (
            f"{self.describe(call)[:1].upper()}{self.describe(call)[1:]} has requested {shown} "
            f"{n} times ({evidence})"
        )
        advice = (
            "Stop revisiting it: use what it returned before, try a different resource, or report back "
            "with what is known."
        )
        data = {
            "resource": shown,
            "calls": [c for c in calls if not c.startswith("said:")],
            "evidence": evidence,
        }
        return self.graded(n, what, advice, data)
