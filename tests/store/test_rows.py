"""Calls become JSON-ready rows under the content policy, without credentials."""

from __future__ import annotations

import orjson
import pytest

from proxy.redact import MASK
from proxy.store.rows import Record, call_record, call_to_row, guard_event_rows
from tests.store.factories import make_call

KEY = "sk-proj-Abc123def456GHI789jkl012MNO"
BODY = f'{{"messages":[{{"role":"user","content":"my key is {KEY}, Authorization: Bearer tok_abcdefgh123"}}]}}'.encode()


def test_full_policy_keeps_content_byte_for_byte() -> None:
    row = call_to_row(make_call(request_bytes=BODY), policy="full", max_bytes=10_000)
    assert row["request_content"] == BODY.decode()
    assert row["content_truncated"] is False


def test_redacted_policy_masks_keys_and_bearer_tokens() -> None:
    row = call_to_row(
        make_call(request_bytes=BODY, response_bytes=f"echo {KEY}".encode()),
        policy="redacted",
        max_bytes=10_000,
    )
    assert KEY not in row["request_content"] and KEY not in row["response_content"]
    assert "tok_abcdefgh123" not in row["request_content"]
    assert row["request_content"].count(MASK) == 2
    assert '"role":"user"' in row["request_content"]


def test_none_policy_stores_no_content() -> None:
    row = call_to_row(make_call(request_bytes=BODY), policy="none", max_bytes=10_000)
    assert row["request_content"] is None and row["response_content"] is None
    assert row["content_truncated"] is False


def test_content_over_the_cap_is_cut_and_marked() -> None:
    body = ("é" * 1000).encode()  # two bytes per character: the cap falls mid-character
    row = call_to_row(make_call(request_bytes=body), policy="full", max_bytes=101)
    assert row["request_content"] == "é" * 50
    assert row["content_truncated"] is True


def test_a_key_straddling_the_cap_is_still_masked() -> None:
    body = b"x" * 89 + b" " + KEY.encode()
    row = call_to_row(make_call(request_bytes=body), policy="redacted", max_bytes=100)
    assert KEY[:10] not in row["request_content"]
    assert len(row["request_content"].encode()) <= 100
    assert row["content_truncated"] is True


def test_error_text_is_redacted_even_under_full_policy() -> None:
    row = call_to_row(
        make_call(error=f"401 Incorrect API key provided: {KEY}"), policy="full", max_bytes=10_000
    )
    assert KEY not in row["error"] and MASK in row["error"]


def test_binary_bodies_are_stored_without_nul_characters() -> None:
    row = call_to_row(make_call(request_bytes=b"\x00\xff\xfeabc"), policy="full", max_bytes=100)
    assert "\x00" not in row["request_content"]
    assert row["request_content"].endswith("abc")


def test_row_has_timings_usage_and_identity() -> None:
    call = make_call(started_at=1000.0, first_byte_at=1000.25, ended_at=1001.5, agent="planner", run_id="r1")
    row = call_to_row(call, policy="none", max_bytes=0)
    assert (row["started_at"], row["ttfb_ms"], row["latency_ms"]) == (1000.0, 250.0, 1500.0)
    assert (row["input_tokens"], row["output_tokens"], row["input_tokens_counted"]) == (10, 2, 9)
    assert (row["agent"], row["run_id"], row["api_key_hash"]) == ("planner", "r1", "0123456789ab")


def test_guard_events_get_deterministic_ids_and_become_flags() -> None:
    events = [
        {
            "rule": "run-budget",
            "kind": "budget",
            "action": "flag",
            "reason": "80% spent",
            "data": {"spent": 8},
            "at": 5.0,
        },
        {"rule": "loops", "kind": "loop", "action": "deny", "reason": "repeat", "data": {"n": 3}},
    ]
    call = make_call(guard_events=events, agent="a", run_id="r")
    rows = guard_event_rows(call)
    assert [r["id"] for r in rows] == [f"{call.id}:0", f"{call.id}:1"]
    assert rows[0] | {"id": None} == {
        "id": None, "call_id": call.id, "at": 5.0, "rule": "run-budget", "kind": "budget",
        "action": "flag", "reason": "80% spent", "data": {"spent": 8}, "agent": "a", "run_id": "r",
    }  # fmt: skip
    assert rows[1]["at"] == call.ended_at
    assert call_to_row(call, policy="none", max_bytes=0)["flags"] == ["run-budget", "loops"]


def test_record_round_trips_through_json() -> None:
    record = call_record(
        make_call(guard_events=[{"rule": "r", "action": "flag"}]), policy="redacted", max_bytes=1000
    )
    assert Record.from_json(orjson.loads(orjson.dumps(record.to_json()))) == record
    assert set(record.to_json()) == {"calls", "guard_events"}


def test_record_from_unknown_tables_is_refused() -> None:
    with pytest.raises(ValueError, match="escalations"):
        Record.from_json({"escalations": []})
