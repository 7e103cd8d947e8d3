"""The guard interface: hooks that return a `Verdict`, never raise to deny.

    relay ──on_request(call)──────▶ Guard ──▶ Verdict(allow | flag | escalate | deny)
          ──on_chunk(call, chunk)─▶          (hot path, sync, per parsed stream event)
          ──on_response(call)─────▶          (once, after the call ended with any outcome)
          ──release(call)─────────▶          (a later guard denied: undo on_request's holds)

`RuleGuard` is a guard built from one rule of a rules file; `GuardChain` (chain.py) runs
many of them and is itself a `Guard`.  A `Batch` runs one hook for several consecutive rule
guards of a kind at once (one store round trip, shared arithmetic), with the same answers.
Hot-path rules: `ALLOW` is one shared object (return it, do not build `Verdict()`), and a
reason sentence is built only for a verdict that is not allow.
"""

from __future__ import annotations

import fnmatch
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from proxy.call import Call, Chunk
from proxy.rulemodels import RuleBase

if TYPE_CHECKING:
    from proxy.catalog import Catalog
    from proxy.guards.counters import CounterStore
    from proxy.guards.facts import FactsCache
    from proxy.guards.handoffs import HandoffSource
    from proxy.pricing import PriceTable

Action = Literal["allow", "flag", "deny", "escalate"]

SEVERITY: MappingProxyType[str, int] = MappingProxyType({"allow": 0, "flag": 1, "escalate": 2, "deny": 3})
GENERATIVE = frozenset({"chat", "responses", "messages"})  # Call.operation values that run a model


@dataclass(frozen=True, slots=True)
class Verdict:
    """A guard's answer.  The same record becomes the refusal, the guard event and the metric.

    `reason` is a complete sentence with the numbers and the advice to the agent; `data` holds
    the numbers behind it (spent, limit, window...); `status` and `code` are what a deny answers
    with (429 budgets and loops, 400 context); they mean nothing for other actions.
    """

    action: Action = "allow"
    rule: str | None = None
    kind: str | None = None
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    status: int = 429
    code: str = ""
    # Seconds after which the same request may pass (a rolling window frees room); None when
    # waiting cannot help.  A deny always tells SDKs not to retry on their own (their few quick
    # retries would only be refused again); this is the hint for a caller that schedules one.
    retry_after: float | None = None

    @property
    def denied(self) -> bool:
        return self.action == "deny"

    def refusal_headers(self) -> list[tuple[bytes, bytes]]:
        """Headers of the refusal: `x-should-retry: false` (OpenAI's and Anthropic's SDKs obey
        it before their status-based retries), and `retry-after` when waiting frees room."""
        headers = [(b"x-should-retry", b"false")]
        if self.retry_after is not None:
            headers.append((b"retry-after", str(max(1, math.ceil(self.retry_after))).encode()))
        return headers

    def event(self, hook: str, at: float) -> dict[str, Any]:
        """The guard-event dict appended to `call.guard_events`."""
        return {
            "rule": self.rule,
            "kind": self.kind,
            "action": self.action,
            "reason": self.reason,
            "data": dict(self.data),
            "at": at,
            "hook": hook,
            "code": self.code,
            "status": self.status,
        }


ALLOW = Verdict()


def worst(a: Verdict, b: Verdict) -> Verdict:
    """The more severe of two verdicts (the earlier one on a tie)."""
    return b if SEVERITY[b.action] > SEVERITY[a.action] else a


class Guard:
    """Base of every guard.  Override only the hooks you need; the defaults allow.

    A guard instance lives as long as one rule set (it is replaced on hot reload), while a
    call may outlive it: the relay keeps the chain it started a call with until that call's
    `on_response`.  State shared across calls or replicas belongs in the `CounterStore`.
    """

    async def on_request(self, call: Call) -> Verdict:
        """Runs on the hot path after the request was parsed and counted, before forwarding.

        May await the counter store (one Redis round trip) and nothing slower.  May reserve
        budget; a reservation is settled by `on_response` or undone by `release`.  Must not
        raise to deny: return a deny verdict.  An exception is caught by the chain, logged and
        treated as allow (deny when the rule is fail-closed).
        """
        return ALLOW

    def on_chunk(self, call: Call, chunk: Chunk) -> Verdict:
        """Runs synchronously for every parsed stream event, on the hot path: no I/O, no await.

        `chunk.output_tokens_so_far` is filled by the relay.  A deny here cuts the stream: the
        relay closes upstream and ends the client's stream with the provider's error event.
        """
        return ALLOW

    async def on_response(self, call: Call) -> Verdict:
        """Runs once after the call ended with any outcome (ok, upstream_error, cancelled,
        denied...), off the client's critical path but still inside the request task.

        Settles reservations to the provider's usage (or what was consumed), records outputs.
        Must be idempotent and safe when `on_request` never ran or denied.  May await the
        counter store.  A deny returned here stops nothing; it is recorded as an event.

        The answer is read within bounds (INTERLOCK_RESPONSE_PARSE_MAX_BYTES,
        INTERLOCK_STREAM_TEXT_MAX_CHARS); `call.flags` says where it was not read whole:
        `response_unparsed` (a body over the cap: no completion, usage only when found in its
        last bytes), `completion_capped` (text and tool arguments are a prefix),
        `sse_event_oversized` (an event over the cap was passed on unread).
        """
        return ALLOW

    async def release(self, call: Call) -> None:
        """Called when a later guard denied the request in `on_request`: the call will not be
        forwarded, so undo whatever this guard's `on_request` reserved.  Idempotent."""
        return None

    def runs(self, hook: str) -> bool:
        """Whether the chain must call `hook` ("on_request", "on_chunk", "on_response") for
        this guard; asked once per rule set and kind of call, never per call.  By default:
        when the class overrides the hook.  A guard whose rule turns a hook into a no-op
        answers False for it, and the chain skips it."""
        return overrides(self, hook)


def overrides(guard: Guard, hook: str) -> bool:
    """True when the guard's class replaces the base hook (lets the chain skip no-op hooks)."""
    return getattr(type(guard), hook) is not getattr(Guard, hook)


class Matcher:
    """A rule's `match:` globs, compiled once.  A missing field of the call matches as ""."""

    __slots__ = ("_tests",)

    def __init__(self, globs: dict[str, list[str]]) -> None:
        self._tests = tuple(
            (attr, re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in pats)))
            for attr, pats in globs.items()
            if pats
        )

    def __call__(self, call: Call) -> bool:
        return all(rx.match(getattr(call, attr) or "") is not None for attr, rx in self._tests)


G = TypeVar("G", bound=Guard)
# What a batch calls for one guard whose hook raised: logs, counts, returns its verdict.
Failed = Callable[[G, Exception], "Verdict"]


class Batch(ABC, Generic[G]):
    """Runs one hook for a run of consecutive guards of one kind in a single pass, so that,
    say, twenty budget rules cost one counter-store round trip per hook instead of twenty.

    A guard opts in through its `batch` attribute.  The chain hands every run of consecutive
    guards (of one call's matching guards) sharing a batch object to that batch instead of
    calling their hooks one by one.  Each method must answer exactly what the guards' own
    hooks would have, called in rule order: a guard's own hook may simply call its batch with
    itself alone.  The same timing rules apply as for the hooks (see `Guard`)."""

    @abstractmethod
    async def on_request(self, guards: Sequence[G], call: Call, failed: Failed[G]) -> list[Verdict]:
        """Each guard's `on_request` in order, stopping after the first deny: one verdict per
        guard that ran, so the list covers every guard or ends with the deny (the guards after
        it must then hold nothing).  A guard that fails alone gets `failed(guard, exc)` as its
        verdict (as if its own hook had raised); raising counts as every guard failing."""

    @abstractmethod
    def on_chunk(self, guards: Sequence[G], call: Call, chunk: Chunk) -> Sequence[Verdict]:
        """The non-allow verdicts of each guard's `on_chunk` in order, ending at the first deny
        (usually none: return an empty tuple).  Synchronous, hot path: no I/O."""

    @abstractmethod
    async def on_response(self, guards: Sequence[G], call: Call, failed: Failed[G]) -> list[Verdict]:
        """Each guard's `on_response`: one verdict per guard, in order (`failed` as above)."""


R = TypeVar("R", bound="RuleBase")


class RuleGuard(Guard, Generic[R]):
    """A guard built from one rule: knows its name, kind, action and `match:` globs.
    `operations` lists the call operations it applies to (model generations by default;
    listing models or counting tokens is never budgeted, looped or checked for fit)."""

    operations: ClassVar[frozenset[str]] = GENERATIVE
    uses_handoffs = False  # True: every call's output must be recorded in the HandoffSource
    batch: Batch[Any] | None = None  # runs the hooks of consecutive guards sharing it at once

    def __init__(self, rule: R) -> None:
        self.rule = rule
        self.name = rule.name
        self.kind = rule.kind
        self.fail_closed = rule.fail_closed
        store_error = rule.on_store_error
        self.on_store_error: Literal["allow", "deny"] = (
            store_error if store_error is not None else "deny" if rule.fail_closed else "allow"
        )
        self.matches = Matcher(rule.match.globs())

    def verdict(
        self,
        action: Action,
        reason: str,
        data: dict[str, Any],
        *,
        code: str,
        status: int = 429,
        retry_after: float | None = None,
    ) -> Verdict:
        return Verdict(action, self.name, self.kind, reason, data, status, code, retry_after)


@dataclass(slots=True)
class GuardDeps:
    """What guards may use besides their rule: built once per rule set by the RulesManager."""

    counters: CounterStore
    prices: PriceTable
    catalog: Catalog
    handoffs: HandoffSource
    facts: FactsCache
    default_max_tokens: int = 4096
    # Batch objects by kind, so the guards of one kind built on these deps share one (and
    # guards on other deps, e.g. another counter store, never land in the same batch).
    batches: dict[str, Batch[Any]] = field(default_factory=dict)




