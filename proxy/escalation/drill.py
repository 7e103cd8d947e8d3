"""`interlock drill RULE`: prove that an escalation would reach a human, before one has to.

    load rules ─▶ the rule's `notify` routes ─▶ a synthetic escalation (stored, `drill: true`)
      ─▶ delivered to every route now, with the route's retries (recorded like real deliveries,
         so /api/escalations/health counts the route as exercised)
      ─▶ wait for its acknowledgement (POST /api/escalations/{id}/ack on the running proxy, which
         shares the database) up to the rule's ack_within, or --wait
      ─▶ the drill escalation is resolved; the report is printed

Exit status (for cron and CI): 0 delivered everywhere (and acknowledged in time when waiting),
1 a route could not be delivered to, 2 delivered but not acknowledged in time, 3 the drill
could not run (unknown rule, no routes, invalid rules, database unavailable).
The receiving end sees a normal `escalation.opened` payload with `"drill": true`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.call import new_id
from proxy.escalation import alerts
from proxy.escalation.model import Delivery, Escalation
from proxy.escalation.notify import Notifier
from proxy.escalation.store import EscalationStore
from proxy.redact import mask_url
from proxy.rulemodels import EscalationRule
from proxy.rules import RuleSet

OK, NOT_DELIVERED, NOT_ACKED, CANNOT_RUN = 0, 1, 2, 3


@dataclass
class DrillReport:
    rule: str
    escalation_id: str | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    waited_s: float | None = None  # None: did not wait for an acknowledgement
    acked_after_s: float | None = None
    acked_by: str | None = None
    problem: str | None = None

    @property
    def exit_code(self) -> int:
        if self.problem is not None:
            return CANNOT_RUN
        if any(d.outcome != "delivered" for d in self.deliveries):
            return NOT_DELIVERED
        if self.waited_s is not None and self.acked_after_s is None:
            return NOT_ACKED
        return OK

    def lines(self) -> list[str]:
        if self.problem is not None:
            return [f"drill {self.rule}: cannot run: {self.problem}"]
        out = [f"drill {self.rule}: escalation {self.escalation_id}"]
        for d in self.deliveries:
            tries = len(d.attempts)
            detail = f"HTTP {d.http_status}" if d.outcome == "delivered" and d.http_status else d.error
            out.append(f"  route {d.route}: {d.outcome.upper()} after {tries} attempt(s) ({detail or 'ok'})")
        if self.waited_s is not None:
            if self.acked_after_s is not None:
                out.append(f"  acknowledged by {self.acked_by} after {self.acked_after_s:.1f}s")
            else:
                out.append(f"  NOT acknowledged within {self.waited_s:g}s")
        out.append(f"  result: {('ok', 'not delivered', 'not acknowledged', 'cannot run')[self.exit_code]}")
        return out


def _rule(ruleset: RuleSet, name: str) -> EscalationRule:
    rule = next((r for r in ruleset.rules if r.name == name), None)
    if rule is None:
        raise LookupError(f"no rule named {name!r}")
    if not isinstance(rule, EscalationRule):
        raise LookupError(f"rule {name!r} is kind {rule.kind}, not escalation")
    if not rule.notify:
        raise LookupError(f"rule {name!r} has no notify routes")
    return rule


async def run_drill(ruleset: RuleSet, name: str, store: EscalationStore, *, wait_s: float | None,
                    environ: Mapping[str, str] | None = None, transport: Any = None, poll_s: float = 0.2,
                    clock: Callable[[], float] = time.time) -> DrillReport:
    """Run one drill.  `wait_s`: how long to wait for the acknowledgement (None: do not wait)."""
    report = DrillReport(name)
    try:
        rule = _rule(ruleset, name)
    except LookupError as exc:
        report.problem = str(exc)
        return report
    esc = Escalation(new_id(), rule.name, "drill", clock(), f"Drill of rule '{rule.name}': please acknowledge.",
                     details={"drill": True}, drill=True, updated_at=clock())
    await store.insert(esc)
    report.escalation_id = esc.id
    try:
        report.deliveries = await _deliver(esc, rule, ruleset, store, environ, transport)
        if wait_s is not None and report.exit_code == OK:
            await _await_ack(report, store, esc, wait_s, poll_s, clock)
    finally:
        await store.update(esc.id, {"status": "resolved", "resolved_at": clock(), "resolved_by": "drill",
                                    "updated_at": clock()}, {"status": ("open", "acknowledged")})
    return report


async def _deliver(esc: Escalation, rule: EscalationRule, ruleset: RuleSet, store: EscalationStore,
                   environ: Mapping[str, str] | None, transport: Any) -> list[Delivery]:
    async def ignore(_: Delivery) -> None:
        return None

    notifier = Notifier(ignore, transport=transport, environ=environ)
    alert = alerts.opened(esc, rule)
    try:
        jobs = [notifier.deliver(alert, route, ruleset.routes[route]) for route in rule.notify]
        deliveries = list(await asyncio.gather(*jobs))
    finally:
        await notifier.aclose(0.1)
    for d in deliveries:
        await store.add_delivery(d.row())
    return deliveries


async def _await_ack(report: DrillReport, store: EscalationStore, esc: Escalation, wait_s: float,
                     poll_s: float, clock: Callable[[], float]) -> None:
    report.waited_s = wait_s
    deadline = esc.created_at + wait_s
    while clock() < deadline:
        current = await store.get(esc.id)
        if current is not None and current.acked_at is not None:
            report.acked_after_s = current.acked_at - esc.created_at
            report.acked_by = current.acked_by
            return
        await asyncio.sleep(poll_s)


# ---------------------------------------------------------------------------- command line


def add_commands(sub: Any) -> None:
    """Adds `drill` to the `interlock` command (proxy/cli.py)."""
    p = sub.add_parser("drill", help="send a synthetic escalation down a rule's routes",
                       description="Send a synthetic escalation down an escalation rule's notify routes and "
                                   "report whether it was delivered and acknowledged within the SLA. Exit 0 ok, "
                                   "1 not delivered, 2 not acknowledged in time, 3 cannot run.")
    p.add_argument("rule", help="name of a kind: escalation rule")
    p.add_argument("--rules-dir", dest="rules_dir", help="overrides INTERLOCK_RULES_DIR")
    p.add_argument("--database-url", dest="database_url", help="overrides INTERLOCK_DATABASE_URL")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                   help="wait this long for the acknowledgement (default: the rule's ack_within)")
    p.add_argument("--no-wait", action="store_true", help="only check delivery")
    p.set_defaults(func=cmd_drill)


def cmd_drill(args: argparse.Namespace) -> int:
    from proxy.rules import RulesError, load_rules
    from proxy.settings import load_settings

    overrides = {k: v for k in ("rules_dir", "database_url") if (v := getattr(args, k, None)) is not None}
    settings = load_settings(**overrides)
    try:
        ruleset = load_rules(settings.rules_dir)
    except RulesError as exc:
        print("\n".join([*exc.errors, f"drill {args.rule}: cannot run: invalid rules"]))
        return CANNOT_RUN
    report = asyncio.run(_drill(settings.database_url, ruleset, args))
    print("\n".join(report.lines()))
    return report.exit_code


async def _drill(database_url: str, ruleset: RuleSet, args: argparse.Namespace) -> DrillReport:
    from proxy.escalation.store import SqlEscalationStore
    from proxy.store.db import database_failure, make_engine

    rule = next((r for r in ruleset.rules if r.name == args.rule), None)
    wait = None if args.no_wait else args.wait if args.wait is not None else getattr(rule, "ack_within_s", None)
    engine = make_engine(database_url)
    try:
        return await run_drill(ruleset, args.rule, SqlEscalationStore(engine), wait_s=wait, environ=os.environ)
    except Exception as exc:  # database unavailable or not migrated: the drill could not run
        why = database_failure(exc) or f"{type(exc).__name__}: {exc}"
        return DrillReport(args.rule, problem=f"{why} (database {mask_url(database_url)})")
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="interlock")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["drill", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
