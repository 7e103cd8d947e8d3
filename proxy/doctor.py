"""`interlock doctor`: what a start would use, and what is missing, before serving.

    encodings   the tiktoken files a start would load (shipped, or INTERLOCK_ENCODINGS_DIR), verified
    database    INTERLOCK_DATABASE_URL: reachable? migrated to the latest revision?
    rules       INTERLOCK_RULES_DIR resolved to an absolute path: how many rules, or the errors
    upstreams   each upstream origin: does a TCP connection open (a warning only: the proxy
                starts without them, and an offline machine may point at a local server later)

Each check is one `Check` line; the exit status is 1 when any check failed, else 0.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from proxy.encodings import default_encodings_dir, problems
from proxy.redact import mask_url
from proxy.settings import Settings

Status = Literal["ok", "warn", "FAIL"]
CONNECT_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Check:
    status: Status
    topic: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<5} {self.topic:<10} {self.detail}"


def encodings_check(settings: Settings) -> Check:
    shipped = settings.encodings_dir is None
    directory = default_encodings_dir() if shipped else settings.encodings_dir
    assert directory is not None
    wrong = problems(directory)
    if wrong:
        fix = "reinstall Interlock" if shipped else "unset INTERLOCK_ENCODINGS_DIR or fill it with " \
            f"`interlock encodings install --dest {directory}`"
        return Check("FAIL", "encodings", "; ".join(wrong) + f"; token counts would be approximate ({fix})")
    where = "shipped with Interlock" if shipped else "INTERLOCK_ENCODINGS_DIR"
    return Check("ok", "encodings", f"o200k_base and cl100k_base verified in {directory} ({where})")


def encodings_error(settings: Settings) -> str | None:
    """Why a start must not go ahead on approximate token counts (None: the files are fine)."""
    found = encodings_check(settings)
    if found.status == "ok":
        return None
    if settings.encodings_dir is not None:
        return f"setting encodings_dir (INTERLOCK_ENCODINGS_DIR) has value {str(settings.encodings_dir)!r}: {found.detail}"
    return f"tokenizer data: {found.detail}; `interlock doctor` shows what is missing"


async def database_check(settings: Settings) -> Check:
    import sqlalchemy as sa
    from alembic.script import ScriptDirectory

    from proxy.store.db import alembic_config, make_engine

    shown = mask_url(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            current = None
            if "alembic_version" in tables:
                current = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar()
    except Exception as exc:  # whatever the driver raises, the answer is "not reachable"
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        return Check("FAIL", "database", f"{shown}: cannot connect ({reason})")
    finally:
        await engine.dispose()
    try:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    except FileNotFoundError as exc:  # an install without the repository's migrations/ beside it
        return Check("warn", "database", f"{shown}: reachable, at revision {current or 'none'}; {exc}")
    if current != head:
        return Check("FAIL", "database", f"{shown}: reachable, at revision {current or 'none'}, latest is "
                                         f"{head}; run `interlock db upgrade`")
    return Check("ok", "database", f"{shown}: reachable, migrations at the latest revision ({head})")


def rules_check(settings: Settings) -> Check:
    from proxy.rules import RulesError, load_rules

    root = Path(settings.rules_dir).resolve()
    if not root.is_dir():
        return Check("warn", "rules", f"{root} does not exist: no rules would be loaded (set INTERLOCK_RULES_DIR "
                                      "or --rules-dir, or start from the directory holding rules/)")
    try:
        ruleset = load_rules(root)
    except RulesError as exc:
        return Check("FAIL", "rules", f"{root}: {len(exc.errors)} error(s): " + " | ".join(exc.errors))
    return Check("ok", "rules", f"{len(ruleset.rules)} rule(s) in {len(ruleset.files)} file(s) from {root}")


async def upstream_check(name: str, url: str) -> Check:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (getattr(exc, "strerror", None) or str(exc))
        return Check("warn", "upstream", f"{name} {url}: cannot connect ({why})")
    writer.close()
    return Check("ok", "upstream", f"{name} {url}: accepts connections")


async def run_checks(settings: Settings) -> list[Check]:
    upstreams = [upstream_check(n, spec.url) for n, spec in settings.all_upstreams().items()]
    found = [encodings_check(settings), await database_check(settings), rules_check(settings)]
    return found + list(await asyncio.gather(*upstreams))


def main(settings: Settings) -> int:
    checks = asyncio.run(run_checks(settings))
    for check in checks:
        print(check.line())
    failed = sum(c.status == "FAIL" for c in checks)
    print(f"{failed} problem(s) found" if failed else "all checks passed", file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0
