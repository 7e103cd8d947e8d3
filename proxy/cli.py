"""The `interlock` command."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from proxy.redact import mask_url
from proxy.settings import Settings, SettingsError, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in ("host", "port", "database_url", "rules_dir", "workers"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return load_settings(**overrides)


# Python's default (700 allocations) runs a young-generation collection every ~2 requests and
# promotes in-flight request objects into the old generations, whose full collections then walk
# every cached token count and lineage entry: measured 12 % of the proxy's CPU at 2,400 req/s.
# Objects of one request die by reference counting; cycles are rare and still collected.
GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Serve-time garbage-collector settings: start-up objects (modules, catalogs, encodings)
    frozen out of every collection, and a young generation sized for a request burst."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def serving_line(settings: Settings) -> str:
    """The start-up line (the database URL's password masked)."""
    return f"interlock: serving on http://{settings.host}:{settings.port}  (database {mask_url(settings.database_url)})"


def banner(settings: Settings) -> str:
    """What a newcomer needs once the proxy listens: where calls go, where they are stored,
    which rules apply, and what to try next."""
    from proxy.doctor import rules_check

    base = f"http://{settings.host}:{settings.port}"
    upstreams = ", ".join(f"{name} → {spec.url}" for name, spec in settings.all_upstreams().items())
    rules = rules_check(settings)
    return "\n".join([
        serving_line(settings),
        f"  upstreams  {upstreams}",
        f"  database   {mask_url(settings.database_url)}",
        f"  rules      {rules.detail}",
        f"  next       export OPENAI_BASE_URL={base}/v1 ANTHROPIC_BASE_URL={base}; run your agents, then "
        "`interlock runs`",
    ])


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.workers > 1:
        return _supervise(settings)
    import uvloop

    from proxy.app import create_app
    from proxy.doctor import encodings_error
    from proxy.server import run
    from proxy.serving import limits_from

    refused = encodings_error(settings)
    if refused is not None:
        raise SettingsError(refused)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    tune_gc()
    if settings.worker is not None:  # started by a supervisor: the socket is inherited
        from proxy import worker

        if settings.worker.index == 0:  # the banner once, from a process that has its imports anyway
            print(banner(settings), file=sys.stderr)
        uvloop.run(worker.serve(app, settings.worker, graceful_timeout_s=10, limits=limits_from(settings)))
        return 0
    print(banner(settings), file=sys.stderr)
    try:
        uvloop.run(run(app, host=settings.host, port=settings.port, graceful_timeout_s=10,
                       limits=limits_from(settings)))
    except OSError as exc:
        print(f"interlock: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def _supervise(settings: Settings) -> int:
    """`--workers N` > 1: the supervisor (proxy/supervisor.py); it imports no app code."""
    from proxy.supervisor import Supervisor

    if settings.redis_url is None:
        raise SettingsError(
            f"setting workers (INTERLOCK_WORKERS) has value {settings.workers}: more than one worker needs "
            "INTERLOCK_REDIS_URL, where the workers share budgets and hot state")
    return Supervisor(settings).run(serving_line(settings))


def cmd_doctor(args: argparse.Namespace) -> int:
    from proxy.doctor import main as doctor

    return doctor(_settings(args))


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from proxy.store.db import upgrade

    settings = _settings(args)
    upgrade(settings.database_url)
    print(f"database at {mask_url(settings.database_url)} is at the latest revision")
    return 0


def cmd_calls(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    import proxy.store.queries as queries
    from proxy.store.db import make_engine

    settings = _settings(args)

    async def fetch() -> list[dict[str, Any]]:
        engine = make_engine(settings.database_url)
        try:
            items, _ = await queries.list_calls(engine, agent=args.agent, model=args.model, status=args.status,
                                                limit=args.limit)
            return items
        finally:
            await engine.dispose()

    items = asyncio.run(fetch())
    if not items:
        filters = any(getattr(args, k) for k in ("agent", "model", "status"))
        print("interlock: no calls match these filters." if filters else
              "interlock: no calls recorded yet. Point an SDK at the proxy (OPENAI_BASE_URL="
              "http://127.0.0.1:8080/v1) and make a call, or try `interlock demo`.")
        return 0
    table = Table(title=f"last {len(items)} call{'' if len(items) == 1 else 's'}")
    for col in ("time", "agent", "model", "op", "status", "in", "out", "ms", "outcome"):
        table.add_column(col, justify="right" if col in ("in", "out", "ms", "status") else "left")
    for c in items:
        table.add_row(
            _short_time(c.get("started_at")), str(c.get("agent") or "?"),
            str(c.get("model_served") or c.get("model_requested") or "-"), str(c.get("operation") or ""),
            str(c.get("status") or "-"), _num(c.get("input_tokens") or c.get("input_tokens_counted")),
            _num(c.get("output_tokens")), _num(c.get("latency_ms")), str(c.get("outcome") or ""),
        )
    Console().print(table)
    return 0


def cmd_encodings(args: argparse.Namespace) -> int:
    from pathlib import Path

    from proxy import encodings

    argv = ["--dest", str(Path(args.dest))] if args.dest else []
    return encodings.main(argv)


def cmd_rules_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from proxy.rules import check_main

    return check_main(Path(args.dir))


def cmd_rules_schema(args: argparse.Namespace) -> int:
    from pathlib import Path

    from proxy.rules import schema_main

    return schema_main(Path(args.write) if args.write else None, check=args.check)


def _short_time(v: Any) -> str:
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v).strftime("%H:%M:%S")
        except ValueError:
            return v
    return "-"


def _num(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if isinstance(v, float) else str(v)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", dest="database_url", help="overrides INTERLOCK_DATABASE_URL")


def build_parser(extras: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interlock", description="Guard-and-observability proxy for multi-agent LLM systems.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy", description="Run the proxy (default 127.0.0.1:8080, SQLite ./interlock.db).")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--rules-dir", dest="rules_dir")
    serve.add_argument("--workers", help="worker processes sharing the port: a number, or `auto` (one per CPU); "
                       "default 1, or INTERLOCK_WORKERS; more than one needs INTERLOCK_REDIS_URL")
    _common(serve)
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database commands", description="Database commands.")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("upgrade", help="apply migrations", description="Apply all Alembic migrations.")
    _common(up)
    up.set_defaults(func=cmd_db_upgrade)

    calls = sub.add_parser("calls", help="list recorded calls", description="List recorded calls as a table.")
    calls.add_argument("--agent")
    calls.add_argument("--model")
    calls.add_argument("--status")
    calls.add_argument("--limit", type=int, default=30)
    _common(calls)
    calls.set_defaults(func=cmd_calls)

    doctor = sub.add_parser("doctor", help="check what a start would use and what is missing",
                            description="Check the tokenizer data, the database, the rules directory and the "
                            "upstreams; exit 1 when something is missing.")
    doctor.add_argument("--rules-dir", dest="rules_dir")
    _common(doctor)
    doctor.set_defaults(func=cmd_doctor)

    enc = sub.add_parser("encodings", help="tokenizer data", description="Tokenizer data commands.")
    encsub = enc.add_subparsers(dest="enc_command", required=True)
    inst = encsub.add_parser("install", help="check the shipped tiktoken encodings, or fill another directory",
                             description="The encodings ship with Interlock: without --dest, verify them; with --dest, "
                             "fetch o200k_base and cl100k_base from the litellm wheel into DEST (for "
                             "INTERLOCK_ENCODINGS_DIR), verifying checksums.")
    inst.add_argument("--dest")
    inst.set_defaults(func=cmd_encodings)

    rules = sub.add_parser("rules", help="guard rules", description="Guard rule commands.")
    rsub = rules.add_subparsers(dest="rules_command", required=True)
    check = rsub.add_parser("check", help="validate a rules directory", description="Validate rules/*.yaml; exit 1 on error.")
    check.add_argument("dir", nargs="?", default="rules")
    check.set_defaults(func=cmd_rules_check)
    schema = rsub.add_parser("schema", help="print or write rules/schema.json",
                             description="The JSON schema of a rules file, generated from the registry of "
                             "rule kinds: printed, written to --write PATH, or compared with it (--check).")
    schema.add_argument("--write", metavar="PATH", help="write it here (e.g. rules/schema.json)")
    schema.add_argument("--check", action="store_true", help="exit 1 when PATH differs from the models")
    schema.set_defaults(func=cmd_rules_schema)

    if extras:
        for extra in _extra_commands():
            extra(sub)
    return parser


# Commands defined above; any other word (or none: `--help`) needs the extra modules' commands.
# `interlock serve` skips importing them: the demo, dashboards and graph CLI cost start-up time,
# and the `--workers` supervisor would hold them in memory for nothing.
_BUILTIN = frozenset({"serve", "db", "calls", "doctor", "encodings", "rules"})


def _command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _extra_commands() -> list[Callable[[Any], None]]:
    found: list[Callable[[Any], None]] = []
    for module in ("proxy.graph.cli", "proxy.demo", "proxy.dashboards", "proxy.escalation.drill"):
        try:
            mod = __import__(module, fromlist=["add_commands"])
        except ImportError:
            continue
        found.append(mod.add_commands)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(extras=_command(words) not in _BUILTIN)
    args = parser.parse_args(words)
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:
        print(f"interlock: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        line = database_failure(args, exc)
        if line is None:
            raise
        print(f"interlock: {line}", file=sys.stderr)
        return 2


def database_failure(args: argparse.Namespace, exc: BaseException) -> str | None:
    """One line naming the database setting, its value and why it is unusable, when `exc` is a
    failure to reach or read the database (else None: a bug, shown with its traceback)."""
    from proxy.store.db import database_failure as reason_of

    reason = reason_of(exc)
    if reason is None:
        return None
    url = _settings(args).database_url if "database_url" in vars(args) else "?"
    return f"setting database_url (INTERLOCK_DATABASE_URL) has value {mask_url(url)!r}: {reason}"



if __name__ == "__main__":
    raise SystemExit(main())
