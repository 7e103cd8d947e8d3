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
    provider: Literal["openai", "anthropic"] = "openai"
    models: list[str] = Field(default_factory=list)  # globs routed here by model name

    @field_validator("url")
    @classmethod
    def _origin(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {v!r}")
        return v.rstrip("/")


class SettingsError(ValueError):
    """A setting has a value Interlock cannot use; the message names both."""


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
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTERLOCK_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    database_url: str = "sqlite+aiosqlite:///./interlock.db"
    rules_dir: Path = Path("./rules")
    upstream_openai: str = "https://api.openai.com"
    upstream_anthropic: str = "https://api.anthropic.com"
    upstreams: dict[str, UpstreamSpec] = Field(default_factory=dict)
    admin_token: str | None = None
    # Who may read /metrics without the admin token: everyone, loopback clients (a local
    # Prometheus), or nobody (then it is guarded like /api).
    metrics_public: Literal["loopback", "true", "false"] = "loopback"
    # Distinct values exported per client-chosen metric label (agent, model); later ones read `other`.
    metric_label_limit: int = Field(500, ge=1)
    redis_url: str | None = None
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
        return (init_settings, env_settings, _YamlSource(settings_cls, path))

    @property
    def wal_path(self) -> Path:
        """Where the write-ahead log lives (`wal_dir`, else `<spool_dir>/wal`)."""
        return self.wal_dir if self.wal_dir is not None else self.spool_dir / "wal"

    def all_upstreams(self) -> dict[str, UpstreamSpec]:
        """Named upstreams, always including `openai` and `anthropic`."""
        base = {
            "openai": UpstreamSpec(url=self.upstream_openai, provider="openai"),
            "anthropic": UpstreamSpec(url=self.upstream_anthropic, provider="anthropic"),
        }
        base.update(self.upstreams)
        return base


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
            if not err["loc"]:  # a rule between settings (model_validator): its message names them
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
