"""Detection in one finished call: escalation tools, output patterns, escalate verdicts."""

from __future__ import annotations

from types import SimpleNamespace

from proxy.call import Message, ToolCall
from proxy.escalation.detect import Detector, answered_tool_calls, human_input
from tests.escalation.factory import rule
from tests.guards.factory import finish, make_call


def test_tool_call_by_glob_with_its_reason() -> None:
    call = finish(make_call(), tool_calls=[ToolCall("c1", "escalate_to_human", '{"question": "Refund 4k?"}'),
                                           ToolCall("c2", "search", "{}")])
    [d] = Detector().detect(call, "support", (rule(),))
    assert (d.source, d.tool_call_id, d.details["tool"]) == ("tool", "c1", "escalate_to_human")
    assert d.reason == "support called escalate_to_human: Refund 4k?"


def test_output_pattern() -> None:
    call = finish(make_call(), text="I cannot decide this. NEEDS HUMAN REVIEW before shipping.")
    [d] = Detector().detect(call, "a", (rule("{tools: [], patterns: ['(?i)needs human review']}"),))
    assert d.source == "pattern" and "NEEDS HUMAN REVIEW" in d.details["excerpt"]


def test_escalate_verdicts_of_the_listed_rules_only() -> None:
    call = finish(make_call())
    call.guard_events = [{"rule": "loops", "kind": "loop", "action": "escalate", "reason": "stuck"},
                         {"rule": "budget", "kind": "budget", "action": "escalate", "reason": "spent"},
                         {"rule": "other", "kind": "loop", "action": "flag", "reason": "meh"}]
    [d] = Detector().detect(call, "a", (rule("{from_rules: ['loop*']}"),))
    assert (d.source, d.reason, d.details["from_rule"]) == ("verdict", "stuck", "loops")


def test_match_globs_use_the_graphs_agent_name() -> None:
    call = finish(make_call(agent=None), tool_calls=[ToolCall("c1", "escalate_to_human", "{}")])
    r = rule("{match: {agent: 'support-*'}}")
    assert Detector().detect(call, "support-eu", (r,)) and not Detector().detect(call, "billing", (r,))


def test_answers_and_human_input() -> None:
    call = make_call(messages=[Message("user", "go"), Message("tool", "approved", tool_call_id="c1")])
    assert answered_tool_calls(call) == ["c1"]
    link = SimpleNamespace(edges=[SimpleNamespace(kind="human")])
    assert human_input(link) and not human_input(None)
