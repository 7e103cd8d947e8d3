"""Hub-and-spoke runs under the shipped rules (rules/default.yaml): what a user sees."""

from __future__ import annotations

from pathlib import Path

from proxy.guards import GuardChain, build_chain
from proxy.guards.counters import CounterStore
from proxy.rules import load_rules
from tests.guards.factory import deps
from tests.guards.loopkit import Hub, chain_of, flagged

RULES = Path(__file__).resolve().parents[2] / "rules"
REDELEGATION = (
    "{name: redelegation, kind: loop, detect: redelegation, max_repeats: 1, restated: 0.35, min_words: 3,"
    " novelty: 0.5, action: flag}"
)


def shipped(store: CounterStore) -> GuardChain:
    return build_chain(load_rules(RULES), deps(store))


def loop_rules(*calls) -> list[str]:  # type: ignore[no-untyped-def]
    return [e["rule"] for c in calls for e in flagged(c)]


async def findings(hub: Hub) -> None:
    """Two sub-goals answered: the run's vocabulary before the loop."""
    await hub.delegate(
        "web_surfer",
        "Find the founding year of the Torvik copper mine.",
        "According to https://example.org/torvik the Torvik copper mine opened in 1871; granite quarries and "
        "a narrow-gauge railway followed.",
    )
    await hub.delegate(
        "file_surfer",
        "Which company operates the Zendra glacier railway today?",
        "The annual report in /data/zendra.pdf names Alpenbahn Holding as operator since 2004, with two "
        "cog locomotives.",
    )


async def test_restated_redelegation_is_flagged_by_the_second_reissue(store: CounterStore) -> None:
    hub = Hub(shipped(store))
    await findings(hub)
    await hub.delegate(
        "web_surfer",
        "Find the population of Quabelnix Harbor in the latest census.",
        "I checked https://example.org/a but it does not state the population of Quabelnix Harbor; "
        "the page is about ferry timetables.",
    )
    # Synonyms only: the restatements share little but the harbour's name.
    lead1, again1 = await hub.delegate(
        "web_surfer",
        "Track down how many residents Quabelnix Harbor has, citing a trustworthy reference.",
        "No luck: the source I opened covers lighthouse tours, not how many people live in Quabelnix Harbor.",
    )
    lead2, again2 = await hub.delegate(
        "web_surfer",
        "We still lack the Quabelnix headcount; try an alternative dataset.",
        "Could not confirm the headcount of Quabelnix Harbor. The dataset only talks about tariffs.",
    )
    assert loop_rules(lead1, lead2) == []
    assert "redelegation" in loop_rules(again1)  # the first re-issue's empty result at the latest
    (event, *_) = [e for e in flagged(again2) if e["rule"] == "redelegation"]
    assert event["data"]["occurrence"] == 3 and event["data"]["worker"] == "web_surfer"


async def test_hub_run_with_varied_sub_goals_is_not_flagged(store: CounterStore) -> None:
    hub = Hub(shipped(store))
    calls = []
    await findings(hub)
    calls += await hub.delegate(
        "data_analyst",
        "Get the annual rainfall of the Ostvo delta wetlands.",
        "The Ostvo delta wetlands receive about 1,400 mm a year per the 2019 hydrology survey; monsoon "
        "floods peak in August.",
    )
    # The same entity, another attribute: failed once, retried, found.
    calls += await hub.delegate(
        "data_analyst",
        "Now find the total area of the Ostvo delta wetlands.",
        "The total area of the Ostvo delta wetlands was not on https://example.org/c; that page discusses rainfall.",
    )
    calls += await hub.delegate(
        "data_analyst",
        "Find the total area of the Ostvo delta wetlands in another source.",
        "A conservation atlas gives 2,300 square kilometres for the Ostvo delta wetlands, mostly mangrove "
        "estuary and reed beds.",
    )
    # A retry after a failure, which then succeeds.
    calls += await hub.delegate(
        "web_surfer",
        "List the vineyards on the Belmont volcanic plateau.",
        "I checked https://example.org/b but it does not list the vineyards of the Belmont plateau.",
    )
    calls += await hub.delegate(
        "web_surfer",
        "Try the regional wine registry for the Belmont plateau vineyards.",
        "The registry lists Domaine Ferrand, Casa Lumbre and Weingut Ostara on the Belmont plateau, "
        "planted on basalt terraces since 1962.",
    )
    calls.append(await hub.finish("Final answer: Torvik opened in 1871; Alpenbahn operates Zendra; Ostvo "
                                  "gets 1,400 mm over 2,300 km2; Belmont has three vineyards."))
    assert loop_rules(*calls) == []


async def test_reports_returning_to_the_orchestrator_are_not_redelegations(store: CounterStore) -> None:
    hub = Hub(chain_of(store, REDELEGATION))
    calls = []
    for worker in ("web_surfer", "file_surfer", "data_analyst"):  # one sub-goal, a new worker each time
        calls += await hub.delegate(
            worker,
            "Find the population of Quabelnix Harbor.",
            f"{worker} checked https://example.org/{worker} but it does not state the population of Quabelnix Harbor.",
        )
    assert loop_rules(*calls) == []
