"""Rules files: models, loading with precise errors, hot reload.

    rules/*.yaml ──load_rules──▶ RuleSet ──build_chain──▶ GuardChain
          ▲                        │ (all files valid, or RulesError listing every problem)
          └── RulesManager polls mtimes every rules_reload_s; a broken edit keeps the last good
              chain active, logs the error, counts `reload_failures` and shows it in `.errors`.

An error names the place: `rules/budget.yaml: rule 'per-run': limit_tokens: must be > 0 (got 0)`.
Only the top level of the rules directory is read (rules/examples/ is documentation).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from proxy.catalog import ModelSpec
from proxy.failures import FailureLog
from proxy.guards import GuardStats, build_chain, make_deps
from proxy.pricing import Price

log = logging.getLogger("interlock.rules")

KINDS = ("budget", "loop", "context", "escalation", "cascade")
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


Rule = Annotated[
    BudgetRule | LoopRule | ContextRule | EscalationRule | CascadeRule,
    Field(discriminator="kind"),
]
_RULE = TypeAdapter(Rule)


def parse_rule(data: Any) -> Any:
    """One rule from its mapping (raises pydantic's ValidationError)."""
    return _RULE.validate_python(data)


class PriceModel(_Strict):
    input: float = Field(ge=0, description="USD per 1M input tokens")
    output: float = Field(ge=0, description="USD per 1M output tokens")
    cached_input: float | None = Field(default=None, ge=0)
    reasoning: float | None = Field(default=None, ge=0)

    def price(self) -> Price:
        return Price(self.input, self.output, self.cached_input, self.reasoning)


class _FileHeader(_Strict):
    version: int | None = None
    routes: dict[str, RouteSpec] = Field(default_factory=dict)
    pricing: dict[str, PriceModel] = Field(default_factory=dict)


class RulesFile(_FileHeader):
    """One rules/*.yaml file (the JSON schema in rules/schema.json is generated from this)."""

    model_config = ConfigDict(title="Interlock rules file", extra="forbid")
    rules: list[Rule] = Field(default_factory=list)


# ---------------------------------------------------------------------------- errors


class RulesError(ValueError):
    """Rules that cannot take effect.  `errors` lists one line per problem."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


_BOUNDS = MappingProxyType(
    {
        "greater_than": ("gt", ">"),
        "greater_than_equal": ("ge", ">="),
        "less_than": ("lt", "<"),
        "less_than_equal": ("le", "<="),
    }
)
_PLAIN = MappingProxyType(
    {
        "missing": "is required",
        "extra_forbidden": "unknown field",
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
        "int_from_float": "must be an integer",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "string_type": "must be a string",
        "list_type": "must be a list",
        "dict_type": "must be a mapping",
        "model_type": "must be a mapping",
        "union_tag_not_found": "is required (one of " + ", ".join(KINDS) + ")",
    }
)


def _message(err: Mapping[str, Any]) -> str:
    etype, ctx = err["type"], err.get("ctx") or {}
    if etype in _BOUNDS:
        key, op = _BOUNDS[etype]
        return f"must be {op} {ctx[key]}"
    if etype == "string_pattern_mismatch":
        if ctx.get("pattern") == WINDOW_PATTERN:
            return "must be run or a duration such as 1m, 1h, 1d"
        return "must be a duration such as 30s, 10m, 1h, 1d"
    if etype == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if etype == "union_tag_invalid":
        return "must be one of " + ", ".join(KINDS)
    if etype == "value_error":
        return str(ctx.get("error", err["msg"]))
    msg = str(err["msg"])
    return _PLAIN.get(etype, msg[:1].lower() + msg[1:])


def _field(err: Mapping[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    if err["type"].startswith("union_tag"):
        return "kind"
    if loc and loc[0] in KINDS:
        loc = loc[1:]
    return ".".join(loc)


def describe_error(err: Mapping[str, Any]) -> str:
    """One pydantic error as `field: message (got value)`."""
    message = _message(err)
    if err["type"] == "value_error" and ":" in message:
        return message  # the validator named its own field
    got = err.get("input")
    if err["type"] not in ("missing", "extra_forbidden") and isinstance(got, str | int | float | bool):
        message += f" (got {got!r})"
    name = _field(err)
    return f"{name}: {message}" if name else message


# ---------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class RuleSet:
    """A validated set of rules from every file of a rules directory, in file then list order."""

    rules: tuple[Any, ...] = ()
    routes: Mapping[str, RouteSpec] = field(default_factory=dict)
    pricing: Mapping[str, Price] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> list[dict[str, Any]]:
        """The rules as JSON-ready dicts, each with its `file` (for /api/rules)."""
        return [{**r.model_dump(mode="json"), "file": self.sources.get(r.name)} for r in self.rules]


@dataclass
class _FileResult:
    rules: list[Any] = field(default_factory=list)
    header: _FileHeader | None = None
    errors: list[str] = field(default_factory=list)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise RulesError([f"{path}: {where}{exc.problem or exc}"]) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RulesError([f"{path}: cannot read: {exc}"]) from None


def _rule_label(item: Any, index: int) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"rule '{name}'" if isinstance(name, str) and name else f"rule #{index + 1}"


def _load_rule(path: Path, item: Any, index: int, out: _FileResult) -> None:
    label = _rule_label(item, index)
    if not isinstance(item, dict):
        out.errors.append(f"{path}: {label}: must be a mapping")
        return
    try:
        out.rules.append(_RULE.validate_python(item))
    except ValidationError as exc:
        out.errors.extend(f"{path}: {label}: {describe_error(e)}" for e in exc.errors())


def _load_file(path: Path) -> _FileResult:
    out = _FileResult()
    data = _read_yaml(path)
    if data is None:
        return out
    if not isinstance(data, dict):
        out.errors.append(f"{path}: must be a mapping with a 'rules:' list")
        return out
    items = data.get("rules") or []
    if not isinstance(items, list):
        out.errors.append(f"{path}: rules: must be a list")
        items = []
    try:
        out.header = _FileHeader.model_validate({k: v for k, v in data.items() if k != "rules"})
    except ValidationError as exc:
        out.errors.extend(f"{path}: {describe_error(e)}" for e in exc.errors())
    for i, item in enumerate(items):
        _load_rule(path, item, i, out)
    return out


def rule_files(rules_dir: Path) -> list[Path]:
    return sorted(p for p in rules_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


@dataclass
class _Collected:
    """Rules of several files being merged, and every error found on the way."""

    errors: list[str] = field(default_factory=list)
    rules: list[Any] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    routes: dict[str, RouteSpec] = field(default_factory=dict)
    route_files: dict[str, str] = field(default_factory=dict)
    pricing: dict[str, Price] = field(default_factory=dict)

    def add(self, path: Path, result: _FileResult) -> None:
        self.errors.extend(result.errors)
        for rule in result.rules:
            if rule.name in self.sources:
                self.errors.append(
                    f"{path}: rule '{rule.name}': name: already used in {self.sources[rule.name]}"
                )
                continue
            self.sources[rule.name] = str(path)
            self.rules.append(rule)
        if result.header is not None:
            self._add_routes(path, result.header.routes)
            self.pricing.update({k: v.price() for k, v in result.header.pricing.items()})

    def _add_routes(self, path: Path, routes: Mapping[str, RouteSpec]) -> None:
        for name, spec in routes.items():
            if name in self.route_files:
                self.errors.append(f"{path}: routes: '{name}' already defined in {self.route_files[name]}")
                continue
            self.routes[name], self.route_files[name] = spec, str(path)

    def check_route_names(self) -> None:
        """Every route a rule names must be defined in some file's `routes:`."""
        known = ", ".join(sorted(self.routes)) or "none defined"
        for rule in self.rules:
            for attr in ("notify", "breach_notify", "fallback"):
                for name in getattr(rule, attr, None) or ():
                    if name not in self.routes:
                        self.errors.append(
                            f"{self.sources[rule.name]}: rule '{rule.name}': {attr}: unknown route "
                            f"{name!r} (routes: {known})"
                        )


def load_rules(rules_dir: str | Path) -> RuleSet:
    """Read and validate every rules file of a directory; all valid, or RulesError."""
    root = Path(rules_dir)
    if not root.is_dir():
        raise RulesError([f"{root}: not a directory"])
    files = rule_files(root)
    found = _Collected()
    for path in files:
        try:
            found.add(path, _load_file(path))
        except RulesError as exc:
            found.errors.extend(exc.errors)
    found.check_route_names()
    if found.errors:
        raise RulesError(found.errors)
    return RuleSet(tuple(found.rules), found.routes, found.pricing, tuple(map(str, files)), found.sources)


# ---------------------------------------------------------------------------- schema


def build_schema() -> dict[str, Any]:
    """JSON schema of a rules file, for editors (checked in as rules/schema.json)."""
    schema = RulesFile.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=True) + "\n"


def write_schema(path: str | Path) -> None:
    Path(path).write_text(schema_text(), encoding="utf-8")


# ---------------------------------------------------------------------------- check


def check_main(rules_dir: str | Path, *, out: Any = None) -> int:
    """`interlock rules check DIR`: print every error (or a summary) and return the exit code:
    0 valid, 1 invalid rules, 2 no such directory."""
    stream = out if out is not None else sys.stdout
    root = Path(rules_dir)
    if not root.is_dir():
        print(f"{root}: not a directory", file=stream)
        return 2
    try:
        ruleset = load_rules(root)
    except RulesError as exc:
        for line in exc.errors:
            print(line, file=stream)
        print(f"{len(exc.errors)} error(s); these rules would not take effect", file=stream)
        return 1
    kinds = ", ".join(f"{sum(r.kind == k for r in ruleset.rules)} {k}" for k in KINDS)
    print(f"{root}: {len(ruleset.rules)} rule(s) in {len(ruleset.files)} file(s) OK ({kinds})", file=stream)
    return 0


# ---------------------------------------------------------------------------- manager


def _snapshot(rules_dir: Path) -> tuple[tuple[str, int, int], ...]:
    try:
        return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in rule_files(rules_dir))
    except OSError:
        return ()


class RulesManager:
    """Owns the active rule set and its guard chain; reloads on file change.

    `.chain` is swapped atomically (one attribute store): take it once per call and use that
    object from `on_request` to `on_response`.  State that must survive a reload (counters,
    handoff fingerprints, guard error counts) lives outside the chain.
    """

    def __init__(
        self,
        rules_dir: str | Path,
        *,
        counters: Any,
        clock: Callable[[], float] = time.time,
        default_max_tokens: int = 4096,
        reload_s: float = 1.0,
        pricing: Mapping[str, Price] | None = None,
        handoffs: Any = None,
    ) -> None:
        self.rules_dir = Path(rules_dir)
        self.reload_s = reload_s
        self._clock = clock
        self._deps = make_deps(
            counters, default_max_tokens=default_max_tokens, pricing=pricing, handoffs=handoffs
        )
        self.stats = GuardStats()
        self.chain = build_chain(RuleSet(), self._deps, stats=self.stats)
        self.rules = RuleSet()
        self.errors: list[str] = []
        self.loaded_at: float | None = None
        self.reload_failures = 0
        self._seen: tuple[tuple[str, int, int], ...] | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Any, *, counters: Any, **kwargs: Any) -> RulesManager:
        return cls(
            settings.rules_dir,
            counters=counters,
            default_max_tokens=settings.default_max_tokens,
            reload_s=settings.rules_reload_s,
            **kwargs,
        )

    def reload(self) -> bool:
        """Load the directory now.  On success swap rules and chain; on failure keep the last
        good ones, set `.errors`, log, count `reload_failures`.  Returns success."""
        self._seen = _snapshot(self.rules_dir)
        if not self.rules_dir.is_dir() and self.loaded_at is not None:
            return self._failed([f"{self.rules_dir}: directory disappeared; keeping the last loaded rules"])
        try:
            ruleset = load_rules(self.rules_dir) if self.rules_dir.is_dir() else RuleSet()
            chain = build_chain(ruleset, self._deps, stats=self.stats)
        except RulesError as exc:
            return self._failed(exc.errors)
        except Exception as exc:  # a guard constructor failing is a bug; never take the proxy down
            log.exception("building the guard chain failed")
            return self._failed([f"{self.rules_dir}: cannot build guards: {exc}"])
        self.rules, self.chain = ruleset, chain
        self.errors = []
        self.loaded_at = self._clock()
        if self.rules_dir.is_dir():
            log.info("rules loaded from %s: %d rule(s), %d guard(s)", self.rules_dir.resolve(),
                     len(ruleset.rules), len(chain))
        else:
            log.warning("no rules loaded: %s does not exist (set INTERLOCK_RULES_DIR or --rules-dir; "
                        "it is read again when it appears)", self.rules_dir.resolve())
        return True

    def _failed(self, errors: list[str]) -> bool:
        self.errors = errors
        self.reload_failures += 1
        log.error(
            "rules in %s not applied, keeping the last good set:\n%s", self.rules_dir, "\n".join(errors)
        )
        return False

    def changed(self) -> bool:
        return _snapshot(self.rules_dir) != self._seen

    def status(self) -> dict[str, Any]:
        """What /api/rules shows."""
        return {
            "rules": self.rules.describe(),
            "errors": list(self.errors),
            "loaded_at": self.loaded_at,
            "files": list(self.rules.files),
            "reload_failures": self.reload_failures,
            "guard_errors_total": self.stats.errors_total,
        }

    async def start(self) -> None:
        """Load now, then poll the directory every `reload_s` in a background task."""
        await asyncio.to_thread(self.reload)
        self._task = asyncio.create_task(self._poll(), name="interlock-rules-reload")

    async def _poll(self) -> None:
        failures = FailureLog(log, "rules reload check")
        while True:
            await asyncio.sleep(self.reload_s)
            try:
                if await asyncio.to_thread(self.changed):
                    await asyncio.to_thread(self.reload)
            except Exception as exc:
                failures.failed(exc)
            else:
                failures.succeeded()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
