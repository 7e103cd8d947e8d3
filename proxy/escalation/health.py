"""GET /api/escalations/health: can a human actually be reached?

Per route: when it last delivered and failed, whether it is stale (no successful delivery,
drills included, within its `exercise_within`), configuration problems (a secret's variable
unset), and the rules that use it.  A route nobody uses and a route that has never delivered
are both worth knowing before the night an agent needs a human.  Runs in API handlers (one
store query).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.escalation.model import iso
from proxy.escalation.notify import problems
from proxy.escalation.store import EscalationStore
from proxy.rulemodels import RouteSpec, parse_duration
from proxy.rules import RuleSet

_REFS = ("notify", "breach_notify", "fallback")


def users(ruleset: RuleSet, route: str) -> list[str]:
    return [r.name for r in ruleset.rules if any(route in (getattr(r, a, None) or ()) for a in _REFS)]


def route_report(name: str, spec: RouteSpec, stats: Mapping[str, Any], used_by: list[str],
                 environ: Mapping[str, str], now: float) -> dict[str, Any]:
    ok, failed = stats.get("last_delivered_at"), stats.get("last_failed_at")
    period = parse_duration(spec.exercise_within) if spec.exercise_within else None
    stale = period is not None and (ok is None or now - ok > period)
    found = problems(spec, environ)
    if failed is not None and (ok is None or failed > ok):
        found.append("the last delivery failed")
    if not used_by:
        found.append("no rule refers to this route")
    return {
        "name": name,
        "type": "webhook" if spec.webhook else "log",
        "format": spec.format,
        "used_by": used_by,
        "last_delivered_at": iso(ok),
        "last_failed_at": iso(failed),
        "delivered": int(stats.get("delivered", 0)),
        "failed": int(stats.get("failed", 0)),
        "exercise_within": spec.exercise_within,
        "stale": stale,
        "problems": found,
    }


async def route_health(ruleset: RuleSet, store: EscalationStore, *, environ: Mapping[str, str], now: float,
                       summary: Mapping[str, Any] | None = None) -> dict[str, Any]:
    stats = await store.route_stats()
    routes = [route_report(name, spec, stats.get(name, {}), users(ruleset, name), environ, now)
              for name, spec in sorted(ruleset.routes.items())]
    stale = [r["name"] for r in routes if r["stale"]]
    broken = [r["name"] for r in routes if r["problems"] and r["used_by"]]
    return {
        "status": "ok" if not stale and not broken else "degraded",
        "checked_at": iso(now),
        "routes": routes,
        "stale_routes": stale,
        "broken_routes": broken,
        "escalations": dict(summary or {}),
    }
