"""Routes are defined once and referred to by name; escalation and cascade fields validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.rulemodels import CascadeRule, EscalationRule
from proxy.rules import RulesError, load_rules


def _errors(tmp: Path, **files: str) -> list[str]:
    for name, text in files.items():
        (tmp / f"{name}.yaml").write_text(text)
    with pytest.raises(RulesError) as info:
        load_rules(tmp)
    return info.value.errors


def test_an_unknown_route_names_the_rule_field_and_the_known_routes(tmp_path: Path) -> None:
    text = ("routes:\n  oncall: {webhook: 'https://x'}\nrules:\n"
            "  - {name: h, kind: escalation, tools: [ask], notify: [oncal], fallback: [oncall]}\n")
    assert _errors(tmp_path, a=text) == [f"{tmp_path}/a.yaml: rule 'h': notify: unknown route 'oncal' (routes: oncall)"]


def test_a_route_is_defined_once(tmp_path: Path) -> None:
    route = "routes:\n  oncall: {webhook: 'https://x'}\n"
    assert _errors(tmp_path, a=route, b=route) == [f"{tmp_path}/b.yaml: routes: 'oncall' already defined in "
                                                   f"{tmp_path}/a.yaml"]


def test_route_and_escalation_fields_are_checked(tmp_path: Path) -> None:
    text = ("routes:\n  r: {webhook: 'ftp://x', retries: 20}\nrules:\n"
            "  - {name: h, kind: escalation, patterns: ['(unclosed'], on_breach: page}\n")
    errors = _errors(tmp_path, a=text)
    assert f"{tmp_path}/a.yaml: routes.r.webhook: must be an http or https URL (got 'ftp://x')" in errors
    assert f"{tmp_path}/a.yaml: routes.r.retries: must be <= 10 (got 20)" in errors
    assert any("rule 'h': patterns: '(unclosed' is not a regular expression" in e for e in errors)
    assert any("rule 'h': on_breach: must be one of 'alert' or 'hold'" in e for e in errors)


def test_defaults(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules:\n  - {name: h, kind: escalation, tools: [ask]}\n"
                                     "  - {name: q, kind: cascade}\n")
    h, q = load_rules(tmp_path).rules
    assert isinstance(h, EscalationRule) and h.on_breach == "alert" and h.auto_ack == ["tool_result", "human"]
    assert h.from_rules == ["*"] and h.ack_within_s is None
    assert isinstance(q, CascadeRule) and q.action == "flag" and len(q.sources) == 5 and q.overlap == 0.5
