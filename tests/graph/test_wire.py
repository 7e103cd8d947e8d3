"""What travels to the graph owner: a Call without its raw bodies, a LinkResult, both as JSON."""

from __future__ import annotations

from proxy.call import Completion, Message, ToolCall, Usage
from proxy.graph.model import Edge, LinkResult
from proxy.graph.wire import call_dict, call_of, dumps, link_dict, link_of, loads
from tests.graph.factory import make_call


def test_a_call_comes_back_with_everything_lineage_reads_and_without_its_bodies() -> None:
    call = make_call("c1", user="hello", output="hi", run_id="r1", tools=["search"], previous_response_id="resp_1")
    call.messages.append(Message("assistant", "", [ToolCall("t1", "search", '{"q": "x"}')]))
    call.messages.append(Message("tool", "found", tool_call_id="t1", name="search"))
    call.completion = Completion("done", [ToolCall("t2", "final", "{}")], response_id="resp_2")
    call.usage = Usage(10, 5)
    call.request_bytes, call.response_bytes, call.request = b"raw", b"raw", {"model": "m"}

    back = call_of(loads(dumps(call_dict(call))))

    assert back.messages == call.messages and back.completion == call.completion and back.usage == call.usage
    assert (back.id, back.run_id, back.tools, back.previous_response_id) == ("c1", "r1", ["search"], "resp_1")
    assert back.request_bytes == b"" and back.response_bytes == b"" and back.request is None


def test_a_link_result_comes_back_equal() -> None:
    link = LinkResult("c2", "writer", "fp", "r1", "c2", [Edge("c1", "c2", "handoff", {"hits": 3, "via": "user"})],
                      ["retry"], False, True, ["r0"], {"c0": "planner"})

    assert link_of(loads(dumps(link_dict(link)))) == link
