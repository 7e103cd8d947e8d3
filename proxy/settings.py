"""Settings: the only place environment variables and `interlock.yaml` are read.

Precedence: explicit keyword arguments > `INTERLOCK_*` environment > `interlock.yaml`
(path from `INTERLOCK_CONFIG`, default `./interlock.yaml` when present) > defaults.
A bad value fails at start with a message naming the setting and the value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from proxy.redact import mask_url

ContentPolicy = Literal["full", "redacted", "none"]


class UpstreamSpec(BaseModel):
    """A named upstream: an origin (scheme, host, port, optional path prefix)."""

    url: str
    provider: str = "openai"  # a provider name (proxy/providers/: openai, anthropic, gemini, azure...)
    models: list[str] = Field(default_factory=list)  # globs routed here by model name

    @field_validator("url")
    @classmethod
    def _origin(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {v!r}")
        return v.rstrip("/")


class WorkerSlot(BaseModel):
    """Set by `interlock serve --workers N` for each worker process it starts (env
    INTERLOCK_WORKER, JSON); never set by hand.  `index` is stable across restarts: a restarted
    worker takes its predecessor's slot, spool and WAL.  `listen_fd`/`metrics_fd`/`control_fd` are
    inherited sockets/pipes; `peers` the loopback ports of every worker's private /metrics."""

    index: int = Field(ge=0)
    count: int = Field(ge=1)
    listen_fd: int
    metrics_fd: int
    control_fd: int
    peers: list[int]
    secret: str


class SettingsError(ValueError):
    """A setting has a value Interlock cannot use; the message names both."""


_UPSTREAM = "upstream_"


def _provider_upstream(key: str, fields: Any) -> str | None:
    """`upstream_gemini` -> `gemini` for a key that is not a setting of its own (upstream_client)."""
    key = key.lower()
    if key.startswith(_UPSTREAM) and key not in fields and len(key) > len(_UPSTREAM):
        return key[len(_UPSTREAM) :]
    return None


class _UpstreamEnvSource(PydanticBaseSettingsSource):
    """`INTERLOCK_UPSTREAM_<NAME>` for any provider: the provider registry decides which names exist."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found = {name: v for k, v in os.environ.items()
                 if k.upper().startswith("INTERLOCK_") and (name := _provider_upstream(k[10:], self.settings_cls.model_fields))}
        return {"provider_upstreams": found} if found else {}


class _YamlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is not None and path.is_file():
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise SettingsError(f"{path}: must be a mapping of setting: value")
            self._data = loaded

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        fields = self.settings_cls.model_fields
        out = {k: v for k, v in self._data.items() if k in fields}
        extra = {name: v for k, v in self._data.items() if (name := _provider_upstream(str(k), fields))}
        if extra:
            out["provider_upstreams"] = {**extra, **(out.get("provider_upstreams") or {})}
        return out


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTERLOCK_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # Worker processes sharing the port (proxy/supervisor.py); "auto" = the CPUs this process may use.
    workers: int = Field(1, ge=1, le=256)
    worker: WorkerSlot | None = None  # set by the supervisor in each worker it starts
    # One memory budget per process, in MiB: every cache and queue bound not set explicitly is
    # sized from it (proxy/memory.py, README "Memory").  Unset: the historical defaults (~560).
    memory_mb: int | None = Field(None, ge=192)
    database_url: str = "sqlite+aiosqlite:///./interlock.db"
    rules_dir: Path = Path("./rules")
    upstream_openai: str = "https://api.openai.com"
    upstream_anthropic: str = "https://api.anthropic.com"
    upstreams: dict[str, UpstreamSpec] = Field(default_factory=dict)
    # upstream_<name> / INTERLOCK_UPSTREAM_<NAME> for the other providers (gemini, azure, bedrock...)
    provider_upstreams: dict[str, str] = Field(default_factory=dict)
    admin_token: str | None = None
    # Who may read /metrics without the admin token: everyone, loopback clients (a local
    # Prometheus), or nobody (then it is guarded like /api).
    metrics_public: Literal["loopback", "true", "false"] = "loopback"
    # Distinct values exported per client-chosen metric label (agent, model); later ones read `other`.
    metric_label_limit: int = Field(500, ge=1)
    redis_url: str | None = None
    # Bounds connecting to Redis and each command; past it the rule's on_store_error answers.
    redis_timeout_s: float = Field(0.5, gt=0)
    # Shared graph (with redis_url): one owner links every replica's calls (proxy/graphowner.py).
    graph_shared: bool = True  # false: each process links its own traffic, as without Redis
    graph_prefix: str = "interlock:graph"  # Redis key prefix of the log, lease and replies
    graph_place_timeout_ms: float = Field(50.0, gt=0, le=5000)  # request path: wait for the owner
    graph_link_timeout_s: float = Field(10.0, gt=0)  # a call waits this long for its link, then stored unlinked
    graph_lease_ms: int = Field(5000, ge=300)  # owner's lease; another process takes over after it lapses
    graph_log_max: int = Field(100_000, ge=1000)  # calls kept in the log (a new owner replays them)
    otlp_endpoint: str | None = None

    content_policy: ContentPolicy = "redacted"
    content_max_bytes: int = Field(256 * 1024, ge=0)
    # What is kept of an upstream answer (the client always gets every byte, as it arrives): a
    # non-streamed body is parsed (usage, completion: what guards read) only up to this size,
    # above it only the usage in its last bytes is read and the call is flagged
    # `response_unparsed`; one SSE event is assembled only up to this size (`sse_event_oversized`).
    response_parse_max_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024)
    # Completion text and tool-call arguments kept from one stream (`completion_capped` past it).
    stream_text_max_chars: int = Field(1024 * 1024, ge=1024)
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    # What one client may send and how slowly (proxy/server.py Limits): 431, 414, 408, 408.
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    max_url_bytes: int = Field(8 * 1024, ge=256)
    header_timeout_s: float = Field(15.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(600.0, gt=0)
    upstream_max_connections: int = Field(512, ge=1)
    upstream_client: Literal["raw", "aiohttp"] = "raw"  # HTTP client for upstream calls (proxy/forward.py)

    writer_queue_size: int = Field(10_000, ge=1)
    # Memory bounds of the two in-memory queues behind the request path (bodies dominate: a
    # 100k-token request is ~0.5 MB).  Past them, calls are stored unlinked / spooled to disk.
    writer_queue_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    pipeline_queue_max_bytes: int = Field(128 * 1024 * 1024, ge=1024)
    writer_batch_size: int = Field(256, ge=1)
    writer_flush_interval_s: float = Field(0.25, gt=0)
    writer_timeout_s: float = Field(10.0, gt=0)
    spool_dir: Path = Path("./.spool")
    # Write-ahead log (proxy/store/wal.py): every answered call is fsynced here within about
    # wal_fsync_interval_ms (group commit, a background thread), replayed at the next start.
    wal: bool = True
    wal_dir: Path | None = None  # default: <spool_dir>/wal
    wal_fsync_interval_ms: float = Field(10.0, ge=0, le=100)
    encodings_dir: Path | None = None
    # Retention (proxy/store/retention.py): calls older than retention_days are deleted with
    # their guard events and edges, runs idle that long too; their request/response content is
    # cleared after content_retention_days (≤ retention_days).  Unset: kept forever.  A
    # background sweep every retention_interval_s, in transactions of retention_batch_size calls.
    retention_days: float | None = Field(None, gt=0)
    content_retention_days: float | None = Field(None, gt=0)
    retention_batch_size: int = Field(2000, ge=1, le=50_000)
    retention_interval_s: float = Field(3600.0, gt=0)

    default_max_tokens: int = Field(4096, ge=1)
    run_idle_s: float = Field(300.0, gt=0)
    agent_aliases: dict[str, str] = Field(default_factory=dict)  # rename/merge agents: {old: new}
    rules_reload_s: float = Field(1.0, gt=0)
    escalation_sync_s: float = Field(5.0, gt=0)  # replicas re-read open escalations this often
    log_level: str = "info"

    @field_validator("upstream_openai", "upstream_anthropic")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {v!r}")
        return v.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _upstream_kwargs(cls, data: Any) -> Any:
        """`upstream_gemini=...` given as a keyword: wins over the environment and the file."""
        if not isinstance(data, dict):
            return data
        extra = {name: data[k] for k in list(data) if (name := _provider_upstream(str(k), cls.model_fields))}
        if not extra:
            return data
        return {**data, "provider_upstreams": {**(data.get("provider_upstreams") or {}), **extra}}

    @field_validator("provider_upstreams")
    @classmethod
    def _urls(cls, v: dict[str, str]) -> dict[str, str]:
        bad = {k: u for k, u in v.items() if not str(u).startswith(("http://", "https://"))}
        if bad:
            name, url = next(iter(bad.items()))
            raise ValueError(f"setting upstream_{name} (INTERLOCK_UPSTREAM_{name.upper()}) must start with "
                             f"http:// or https://, got {mask_url(str(url))!r}")
        return {k.lower(): str(u).rstrip("/") for k, u in v.items()}

    @field_validator("workers", mode="before")
    @classmethod
    def _auto_workers(cls, v: Any) -> Any:
        return cpu_count() if isinstance(v, str) and v.strip().lower() == "auto" else v

    @field_validator("metrics_public", mode="before")
    @classmethod
    def _yes_no(cls, v: Any) -> Any:
        return str(v).lower() if isinstance(v, bool) else v

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        return database_url(v)

    @model_validator(mode="after")
    def _content_kept_shorter(self) -> Settings:
        days, content = self.retention_days, self.content_retention_days
        if days is not None and content is not None and content > days:
            raise ValueError(
                f"content_retention_days ({content:g}) must not exceed retention_days ({days:g}): "
                "content is kept for fewer days than the records it belongs to")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = Path(os.environ.get("INTERLOCK_CONFIG", "interlock.yaml"))
        return (init_settings, env_settings, _UpstreamEnvSource(settings_cls), _YamlSource(settings_cls, path))

    @property
    def wal_path(self) -> Path:
        """Where the write-ahead log lives (`wal_dir`, else `<spool_dir>/wal`)."""
        return self.wal_dir if self.wal_dir is not None else self.spool_dir / "wal"

    def all_upstreams(self, defaults: dict[str, str] | None = None) -> dict[str, UpstreamSpec]:
        """Named upstreams, always including one per provider: `defaults` ({provider: default
        origin}, from the provider registry) overridden by upstream_<name> settings."""
        urls = {"openai": self.upstream_openai, "anthropic": self.upstream_anthropic} if defaults is None else {
            **defaults, "openai": self.upstream_openai, "anthropic": self.upstream_anthropic}
        urls.update(self.provider_upstreams)
        base = {name: UpstreamSpec(url=url, provider=name) for name, url in urls.items()}
        base.update(self.upstreams)
        return base


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask; a container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def database_url(value: str) -> str:
    """A database URL with an async driver; a plain file path means SQLite (`interlock.db`,
    `/tmp/demo.db`).  A scheme SQLAlchemy has no dialect for is refused here, at start."""
    if "://" not in value:
        if not value.strip():
            raise ValueError("empty; give a URL such as sqlite+aiosqlite:///./interlock.db or a file path")
        return "sqlite+aiosqlite:///" + value
    scheme, rest = value.split("://", 1)
    url = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
           "postgres": "postgresql+asyncpg"}.get(scheme, scheme) + "://" + rest
    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError):
        raise ValueError(f"unknown database scheme {scheme!r}; use sqlite:///FILE, "
                         "postgresql://user@host/db or a file path") from None
    return url


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, turning pydantic's report into one line per bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            if not err["loc"] or err["loc"][0] == "provider_upstreams":  # the message names them (values masked)
                lines.append(err["msg"].removeprefix("Value error, "))
                continue
            name = ".".join(str(p) for p in err["loc"]) or "?"
            env = "INTERLOCK_" + str(err["loc"][0]).upper() if err["loc"] else ""
            value, shown = err.get("input"), _shown(name, err.get("input"))
            msg = err["msg"].removeprefix("Value error, ")
            msg = msg.replace(value, str(shown)) if isinstance(value, str) and value else msg
            lines.append(f"setting {name} ({env}) has value {shown!r}: {msg}")
        raise SettingsError("; ".join(lines)) from None


def _shown(name: str, value: Any) -> Any:
    """A bad value as an error message may show it: secrets masked."""
    if isinstance(value, str) and ("token" in name or "secret" in name or "password" in name):
        return "***"
    return mask_url(value) if isinstance(value, str) else value  # URLs: database, Redis, upstreams
