from __future__ import annotations

import json

from proxy.guards.counters import CounterStore
from proxy.guards.revisit import normal_url, resources
from proxy.guards.terms import Lexicon
from tests.guards.factory import assistant, tool_call, tool_result, user
from tests.guards.loopkit import chain_of, flagged, turn

REVISIT = "{name: revisit, kind: loop, detect: revisit, max_revisits: 1, action: flag}"


def visit(url: str, id: str) -> list:
    return [tool_call("visit_url", json.dumps({"url": url}), id=id)]


async def test_the_same_url_fetched_again_is_flagged(store: CounterStore) -> None:
    chain = chain_of(store, REVISIT)
    first = await turn(chain, [user("a")], tool_calls=visit("https://example.org/page/1", "t1"))
    again = await turn(chain, [user("b")], tool_calls=visit("https://example.org/page/1", "t2"))
    assert not flagged(first) and flagged(again)


async def test_url_surface_variants_are_the_same_resource(store: CounterStore) -> None:
    chain = chain_of(store, REVISIT)
    await turn(chain, [user("a")], tool_calls=visit("https://www.Example.org/page/1/?utm_source=x#top", "t1"))
    again = await turn(chain, [user("b")], tool_calls=visit("https://example.org/page/1", "t2"))
    assert flagged(again)


async def test_different_pages_are_not_revisits(store: CounterStore) -> None:
    chain = chain_of(store, REVISIT)
    calls = [
        await turn(chain, [user(f"{i}")], tool_calls=visit(f"https://example.org/page/{i}", f"t{i}"))
        for i in range(5)
    ]
    assert not any(flagged(c) for c in calls)


async def test_revisit_event_names_the_resource_and_the_calls(store: CounterStore) -> None:
    chain = chain_of(store, REVISIT)
    first = await turn(chain, [user("a")], tool_calls=visit("https://example.org/a", "t1"))
    again = await turn(chain, [user("b")], tool_calls=visit("https://example.org/a", "t2"))
    (event,) = flagged(again)
    assert event["data"]["resource"] == "url:https://example.org/a"
    assert event["data"]["calls"] == [first.id, again.id]


async def test_a_tool_result_saying_previously_visited_is_a_revisit(store: CounterStore) -> None:
    chain = chain_of(store, REVISIT)
    messages = [
        user("read the report"),
        assistant("", *visit("https://example.org/report", "t1")),
        tool_result("t1", "You previously visited this page 14 seconds ago.\nAddress: https://example.org/report"),
    ]
    call = await turn(chain, messages, "The report says nothing new.")
    (event,) = flagged(call)
    assert event["data"]["resource"] == "url:https://example.org/report"
    assert event["data"]["evidence"] == "reported as visited before"


async def test_acting_tools_request_no_resource() -> None:
    lex = Lexicon()
    assert resources(tool_call("write_file", '{"path": "/tmp/a.txt", "content": "x"}', id="t"), lex) == []
    assert resources(tool_call("page_down", "{}", id="t"), lex) == []


def test_a_reworded_query_is_the_same_resource() -> None:
    lex = Lexicon()
    a = resources(tool_call("web_search", '{"query": "population Tokyo census"}', id="t"), lex)
    b = resources(tool_call("web_search", '{"query": "Tokyo census population"}', id="t"), lex)
    assert a == b and a[0].startswith("query:")


def test_file_paths_are_normalised() -> None:
    lex = Lexicon()
    a = resources(tool_call("open_local_file", '{"path": "/data/./x/../x/report.pdf"}', id="t"), lex)
    assert a == ["file:/data/x/report.pdf"]


def test_normal_url_drops_tracking_and_fragment() -> None:
    assert normal_url("HTTPS://WWW.Site.com/a/?utm_medium=m&b=2&a=1#frag") == "https://site.com/a?a=1&b=2"


async def test_revisits_graduate_to_refusing_the_next_request(store: CounterStore) -> None:
    chain = chain_of(store, "{name: r, kind: loop, detect: revisit, max_revisits: 1, deny_after: 1, action: flag}")
    actions = []
    for i in range(4):
        call = await turn(chain, [user(f"{i}")], tool_calls=visit("https://example.org/a", f"t{i}"))
        actions.append([(e["hook"], e["action"]) for e in flagged(call)])
    assert actions[:3] == [[], [("response", "flag")], [("response", "flag")]]
    assert actions[3][0] == ("request", "deny")


async def test_an_escalate_rule_listed_first_still_fires_when_another_refuses(store: CounterStore) -> None:
    from proxy.guards import build_chain
    from proxy.rules import RuleSet
    from tests.guards.factory import deps, rule_from_yaml

    rules = (
        rule_from_yaml("{name: human, kind: loop, detect: revisit, max_revisits: 2, action: escalate}"),
        rule_from_yaml("{name: stop, kind: loop, detect: revisit, max_revisits: 1, deny_after: 1, action: flag}"),
    )
    chain = build_chain(RuleSet(rules), deps(store))
    for i in range(2):
        await turn(chain, [user(f"{i}")], tool_calls=visit("https://example.org/a", f"t{i}"))
    third = await turn(chain, [user("2")], tool_calls=visit("https://example.org/a", "t2"))
    fourth = await turn(chain, [user("3")], tool_calls=visit("https://example.org/a", "t3"))
    assert [(e["rule"], e["action"]) for e in flagged(third)] == [("human", "escalate"), ("stop", "flag")]
    assert ("stop", "deny") in [(e["rule"], e["action"]) for e in flagged(fourth)]
