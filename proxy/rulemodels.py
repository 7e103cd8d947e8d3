"""Rule models: what each kind of rule says, validated by pydantic (one model per kind).

This module is the bottom layer of the rules: it knows no guard and reads no file.

    rulemodels.py  (Match, RuleBase, BudgetRule, LoopRule, ... RouteSpec, PriceModel)
        ▲ imported by
    guards/*       a guard is built from its kind's model; guards/__init__.RULE_KINDS pairs
                   each model with its builder: the one registry of rule kinds
        ▲
    rules.py       loading rules/*.yaml (a union of the registry's models), errors, hot reload,
                   and the JSON schema (rules/schema.json) generated from the same registry
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.catalog import ModelSpec
from proxy.pricing import Price

DURATION_PATTERN = r"^\d+(\.\d+)?(ms|s|m|h|d)$"
WINDOW_PATTERN = r"^(run|\d+(\.\d+)?(ms|s|m|h|d))$"
_UNITS = MappingProxyType({"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0})

Duration = Annotated[str, Field(pattern=DURATION_PATTERN, examples=["30s", "10m", "1h", "1d"])]
Globs = str | list[str]
RuleAction = Literal["deny", "flag", "escalate"]


def parse_duration(text: str) -> float:
    """`90s`, `10m`, `1.5h`, `1d` → seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text.strip())
    if m is None:
        raise ValueError(f"not a duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def window_seconds(window: str) -> float | None:
    """`run` → None (no time window), else the duration in seconds."""
    return None if window == "run" else parse_duration(window)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Match(_Strict):
    """Which calls a rule applies to: globs (`*`, `?`, `[...]`), a list means any of them."""

    agent: Globs | None = None
    model: Globs | None = None
    provider: Globs | None = None
    api_key: Globs | None = Field(
        default=None, description="glob on the API key hash (as shown in /api/calls)"
    )

    def globs(self) -> dict[str, list[str]]:
        """Call attribute → globs."""
        pairs = (
            ("agent", self.agent),
            ("model_requested", self.model),
            ("provider", self.provider),
            ("api_key_hash", self.api_key),
        )
        return {attr: [v] if isinstance(v, str) else list(v) for attr, v in pairs if v is not None}


class RuleBase(_Strict):
    name: str = Field(min_length=1, max_length=120)
    kind: str
    description: str | None = None
    match: Match = Field(default_factory=lambda: Match())
    action: RuleAction = "flag"
    fail_closed: bool = Field(default=False, description="deny when the guard itself fails (default: allow)")
    on_store_error: Literal["allow", "deny"] | None = Field(
        default=None,
        description="when the shared store (Redis) is unreachable or times out: allow (forward "
        "unguarded by this rule) or deny (503 interlock_store_unavailable); default: deny for "
        "fail_closed rules, else allow",
    )
    enabled: bool = True
    notify: list[str] = Field(
        default_factory=list, description="route names (from `routes:`) alerted when this rule fires"
    )

    @classmethod
    def kind_name(cls) -> str:
        """The `kind:` value a rules file gives this model (its `kind` Literal)."""
        (name,) = get_args(cls.model_fields["kind"].annotation)
        return str(name)


class BudgetRule(RuleBase):
    kind: Literal["budget"]
    scope: Literal["run", "agent", "agent_run", "api_key", "model", "global"] = "run"
    limit_tokens: int | None = Field(default=None, gt=0)
    limit_usd: float | None = Field(default=None, gt=0)
    window: str = Field(
        default="run", pattern=WINDOW_PATTERN, description="run, or a rolling window: 1m, 1h, 1d"
    )
    default_max_tokens: int | None = Field(
        default=None, gt=0, description="output reserved when a request sets none"
    )
    cutoff: bool = Field(default=False, description="end a stream mid-flight once the budget is spent")
    warn_at: float | None = Field(default=None, gt=0, lt=1, description="flag once when this share is used")

    @model_validator(mode="after")
    def _one_limit(self) -> BudgetRule:
        if (self.limit_tokens is None) == (self.limit_usd is None):
            raise ValueError("limit_tokens or limit_usd: set exactly one of them")
        return self

    @property
    def window_s(self) -> float | None:
        return window_seconds(self.window)


class LoopRule(RuleBase):
    kind: Literal["loop"]
    detect: Literal[
        "retry", "tool_repeat", "no_progress", "ping_pong", "ceiling", "revisit", "redelegation", "stall"
    ]
    scope: Literal["thread", "agent", "agent_run", "run", "api_key", "global"] = "agent_run"
    window: Duration = "10m"
    max_repeats: int = Field(
        default=3, ge=1, description="occurrences tolerated; the next one triggers `action`"
    )
    deny_after: int | None = Field(default=None, ge=1, description="this many further occurrences → deny")
    similarity: float = Field(default=0.85, gt=0, le=1, description="near-duplicate threshold (0..1)")
    max_steps: int | None = Field(default=None, gt=0)
    max_depth: int | None = Field(default=None, gt=0)
    max_duration: Duration | None = None
    max_tokens_per_min: int | None = Field(default=None, gt=0)
    max_revisits: int | None = Field(
        default=None, ge=1, description="revisit: requests of one resource tolerated (default max_repeats)"
    )
    restated: float = Field(
        default=0.4,
        gt=0,
        le=1,
        description="redelegation: rarity-weighted word overlap (0..1) at which an instruction restates an earlier one",
    )
    novelty: float = Field(
        default=0.35,
        gt=0,
        le=1,
        description="stall: share of new content (0..1) below which an output adds nothing; "
        "redelegation: a result at or above it is progress",
    )
    min_words: int = Field(
        default=6, ge=1, description="stall, redelegation: texts with fewer content words are not judged"
    )

    @model_validator(mode="after")
    def _fields_of_detect(self) -> LoopRule:
        only = {
            "max_revisits": ("revisit",),
            "restated": ("redelegation",),
            "novelty": ("stall", "redelegation"),
            "min_words": ("stall", "redelegation"),
        }
        for name, detects in only.items():
            if name in self.model_fields_set and self.detect not in detects:
                raise ValueError(f"{name}: only valid with detect: {' or '.join(detects)}")
        return self

    @model_validator(mode="after")
    def _ceilings(self) -> LoopRule:
        ceilings = ("max_steps", "max_depth", "max_duration", "max_tokens_per_min")
        given = [c for c in ceilings if getattr(self, c) is not None]
        if self.detect == "ceiling" and not given:
            raise ValueError("detect: ceiling needs one of " + ", ".join(ceilings))
        if self.detect != "ceiling" and given:
            raise ValueError(f"{given[0]}: only valid with detect: ceiling")
        return self

    @property
    def window_s(self) -> float:
        return parse_duration(self.window)

    @property
    def max_duration_s(self) -> float | None:
        return None if self.max_duration is None else parse_duration(self.max_duration)


class ModelSpecModel(_Strict):
    context_window: int = Field(gt=0)
    max_output: int = Field(gt=0)

    def spec(self) -> ModelSpec:
        return ModelSpec(self.context_window, self.max_output)


class ContextRule(RuleBase):
    kind: Literal["context"]
    margin_tokens: int = Field(default=0, ge=0, description="headroom kept free for counting error")
    default_output: int | None = Field(
        default=None, gt=0, description="output assumed when max_tokens is unset"
    )
    check_fit: bool = True
    check_truncated_output: bool = True
    check_dropped_history: bool = True
    models: dict[str, ModelSpecModel] = Field(default_factory=dict, description="custom or newer models")


AckSource = Literal["tool_result", "human"]
ACK_SOURCES: tuple[AckSource, ...] = ("tool_result", "human")


class EscalationRule(RuleBase):
    """An agent asking for a human: detected in traffic, tracked with SLA clocks (proxy/escalation/)."""

    kind: Literal["escalation"]
    action: RuleAction = "escalate"
    tools: list[str] = Field(default_factory=list, description="tool-name globs that open an escalation")
    patterns: list[str] = Field(default_factory=list, description="regexes on the model's output text")
    from_rules: list[str] = Field(
        default_factory=lambda: ["*"], description="rule-name globs whose `escalate` verdicts open one"
    )
    ack_within: Duration | None = None
    resolve_within: Duration | None = None
    on_breach: Literal["alert", "hold"] = Field(
        default="alert", description="hold: refuse the run's further calls until acknowledged"
    )
    breach_notify: list[str] | None = Field(
        default=None, description="routes for SLA breaches (default: notify)"
    )
    fallback: list[str] = Field(default_factory=list, description="routes alerted when notify cannot deliver")
    auto_ack: list[AckSource] = Field(
        default_factory=lambda: list(ACK_SOURCES), description="traffic that acknowledges"
    )

    @field_validator("patterns")
    @classmethod
    def _regexes(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression ({exc})") from None
        return patterns

    @property
    def ack_within_s(self) -> float | None:
        return None if self.ack_within is None else parse_duration(self.ack_within)

    @property
    def resolve_within_s(self) -> float | None:
        return None if self.resolve_within is None else parse_duration(self.resolve_within)


FaultKind = Literal["guard", "upstream_error", "length", "content_filter", "truncated_handoff"]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "guard",
    "upstream_error",
    "length",
    "content_filter",
    "truncated_handoff",
)


class CascadeRule(RuleBase):
    """Quarantine: act on a call whose input descends from a faulty call (proxy/cascade.py)."""

    kind: Literal["cascade"]
    sources: list[FaultKind] = Field(
        default_factory=lambda: list(FAULT_KINDS), description="fault kinds acted on"
    )
    max_depth: int | None = Field(default=None, ge=1, description="act only this many hops from the fault")
    overlap: float = Field(
        default=0.5, gt=0, le=1, description="share of a tainted output the input must hold"
    )


class RouteSpec(_Strict):
    """A named alert destination under `routes:`; rules refer to it by name."""

    webhook: str | None = Field(default=None, description="http(s) URL receiving one POST per alert")
    secret: str | None = Field(default=None, description="HMAC-SHA256 key; ${ENV_VAR} is read when sending")
    format: Literal["json", "slack"] = "json"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = "5s"
    retries: int = Field(default=3, ge=0, le=10, description="further attempts after a failed one")
    backoff: Duration = Field(default="1s", description="first retry delay; doubles each retry")
    dedup: Duration = Field(default="5m", description="the same alert is sent once per window")
    exercise_within: Duration | None = Field(default="7d", description="unused this long: reported stale")

    @field_validator("webhook")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must be an http or https URL")
        return url


class PriceModel(_Strict):
    input: float = Field(ge=0, description="USD per 1M input tokens")
    output: float = Field(ge=0, description="USD per 1M output tokens")
    cached_input: float | None = Field(default=None, ge=0)
    reasoning: float | None = Field(default=None, ge=0)

    def price(self) -> Price:
        return Price(self.input, self.output, self.cached_input, self.reasoning)


class FileHeader(_Strict):
    version: int | None = None
    routes: dict[str, RouteSpec] = Field(default_factory=dict)
    pricing: dict[str, PriceModel] = Field(default_factory=dict)
