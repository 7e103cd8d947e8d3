"""Agent identity: fingerprints ignore per-call variables, names come from stated roles."""

from __future__ import annotations

import pytest

from proxy.graph.identity import (
    AgentDirectory,
    Identifier,
    LocalClaims,
    fingerprint,
    normalize_prompt,
    role_name,
)
from tests.graph.factory import make_call

BASE = "You are the researcher. Find sources and cite them."


def test_normalize_strips_per_call_variables() -> None:
    noisy = (
        BASE + " Today is Monday, March 3, 2025 at 14:22:01 UTC (2025-03-03T14:22:01Z). "
        "Session 3f2a9c1e-bcce-4a1b-8c3d-444455556666, request req_8f3k2x, user bob@example.com, "
        "docs https://example.com/a?b=1, limit 12 calls."
    )
    assert normalize_prompt(noisy) == normalize_prompt(
        BASE + " Today is at . Session , request , user , docs , limit calls."
    )


@pytest.mark.parametrize(
    "variant",
    [
        "Current time: 2024-05-01 09:00:00. Session 0b7c2d1e-aaaa-bbbb-cccc-111122223333.",
        "Current time: 2026-12-31 23:59:59. Session ffeeddcc-1234-5678-9abc-def012345678.",
        "Current time: Friday, Jan 9, 2026 8:15 pm. Session 77777777-7777-7777-7777-777777777777.",
    ],
)
def test_fingerprint_is_stable_across_noise(variant: str) -> None:
    reference = fingerprint(BASE + " Current time: 2025-01-01 00:00:00. Session 1.", ["search"])
    assert fingerprint(BASE + " " + variant, ["search"]) == reference


def test_fingerprint_depends_on_tool_set_not_order() -> None:
    assert fingerprint(BASE, ["a", "b"]) == fingerprint(BASE, ["b", "a", "a"])
    assert fingerprint(BASE, ["a"]) != fingerprint(BASE, ["a", "b"])


def test_fingerprint_separates_different_prompts() -> None:
    assert fingerprint("You are the writer.", []) != fingerprint("You are the editor.", [])


@pytest.mark.parametrize(
    ("prompt", "name"),
    [
        ("You are the researcher.", "researcher"),
        ("You are a helpful research assistant.", "research-assistant"),
        ("Role: planner\nPlan things.", "planner"),
        ("# Role: Senior Critic\nBe harsh.", "critic"),
        ("You are a team supervisor managing two experts.", "team-supervisor"),
        ("Today is 2025-01-01. You are an expert Python developer who writes tests.", "python-developer"),
        ("Your name is Ada, and you review code.", "ada"),
        ("Act as a travel agent.", "travel-agent"),
        ("Answer briefly.", None),
        (None, None),
    ],
)
def test_role_name_from_stated_role(prompt: str | None, name: str | None) -> None:
    assert role_name(prompt) == name


def test_unnamed_agent_gets_hash_name() -> None:
    ident = Identifier().identify(make_call("c1", system="Answer briefly."))
    assert ident.name == f"agent-{ident.fingerprint[:8]}"


def test_colliding_roles_get_suffix_from_fingerprint() -> None:
    identifier = Identifier()
    a = identifier.identify(make_call("c1", system="You are the researcher. Use the web."))
    b = identifier.identify(make_call("c2", system="You are the researcher. Use the library."))
    assert a.name == "researcher"
    assert b.name == f"researcher-{b.fingerprint[:4]}"


def test_names_are_stable_across_restarts() -> None:
    first = Identifier()
    call = make_call("c1", system="You are the researcher. Use the library.")
    first.identify(make_call("c0", system="You are the researcher. Use the web."))
    name = first.identify(call).name
    restarted = Identifier(AgentDirectory(names=first.directory.known()))
    assert restarted.identify(call).name == name


def test_replicas_sharing_claims_agree_on_names() -> None:
    claims = LocalClaims()
    one, two = Identifier(AgentDirectory(claims=claims)), Identifier(AgentDirectory(claims=claims))
    web = make_call("c1", system="You are the researcher. Use the web.")
    library = make_call("c2", system="You are the researcher. Use the library.")
    assert one.identify(web).name == "researcher"
    assert two.identify(library).name.startswith("researcher-")
    assert two.identify(web).name == "researcher"


def test_explicit_name_wins() -> None:
    identifier = Identifier()
    ident = identifier.identify(make_call("c1", system="You are the researcher.", agent="scout"))
    assert (ident.name, ident.key) == ("scout", "name:scout")


def test_explicit_name_blocks_inferred_owner() -> None:
    identifier = Identifier()
    identifier.identify(make_call("c1", system="Anything.", agent="researcher"))
    inferred = identifier.identify(make_call("c2", system="You are the researcher."))
    assert inferred.name != "researcher"


def test_rename_changes_display_not_key() -> None:
    identifier = Identifier()
    before = identifier.identify(make_call("c1", system="You are the researcher."))
    identifier.directory.rename("researcher", "scout")
    after = identifier.identify(make_call("c2", system="You are the researcher."))
    assert (after.name, after.key) == ("scout", before.key)


def test_merge_shows_both_as_one() -> None:
    identifier = Identifier()
    identifier.identify(make_call("c1", system="You are the writer."))
    identifier.directory.merge("writer", "author")
    identifier.directory.merge("author", "scribe")
    assert identifier.identify(make_call("c2", system="You are the writer.")).name == "scribe"


def test_rename_back_does_not_loop() -> None:
    directory = AgentDirectory()
    directory.rename("a", "b")
    directory.rename("b", "a")
    assert directory.resolve("a") == "a"
