"""The console in a real browser (Debian's Chromium via Playwright; fixtures in conftest.py):
the demo's runs listed, a run's graph drawn exactly as /api returns it, a call opened from the
graph, an escalation acknowledged, a new run appearing without reload, keyboard-only use.
No timing is asserted; times worth knowing are written to the artifacts directory."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.proxyserver import ProxyServer
from tests.ui.conftest import ADMIN_TOKEN

READY = "window.interlock && window.interlock.cy"


def biggest_run(console: ProxyServer) -> dict[str, Any]:
    runs = console.api("/api/runs", limit=100)["items"]
    return max(runs, key=lambda r: (r["calls"], r["id"]))


def open_run(page: Any, run_id: str) -> None:
    page.goto(f"/ui#/runs/{run_id}")
    page.wait_for_function(READY)


def cy(page: Any, expression: str) -> Any:
    return page.evaluate(f"(() => {{ const cy = window.interlock.cy; return {expression}; }})()")


def note(artifacts: Path, line: str) -> None:
    with (artifacts / "timings.txt").open("a") as f:
        f.write(line + "\n")
    print(line)


def call(console: ProxyServer, run: str, text: str = "hello", agent: str = "live-agent") -> None:
    client = openai.OpenAI(base_url=console.url + "/v1", api_key="sk-test", max_retries=0,
                           default_headers={"X-Interlock-Run": run, "X-Interlock-Agent": agent})
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}])


def test_the_runs_list_shows_the_demo_runs(page: Any, console: ProxyServer, artifacts: Path) -> None:
    runs = console.api("/api/runs", limit=100)["items"]

    page.goto("/ui")
    page.wait_for_selector("#runs-table tbody tr[data-run-id]")

    shown = page.eval_on_selector_all("#runs-table tbody tr[data-run-id]", "rows => rows.map(r => r.dataset.runId)")
    assert set(shown) >= {r["id"] for r in runs} and len(runs) >= 4
    page.screenshot(path=artifacts / "runs.png", full_page=True)


def test_a_run_view_draws_exactly_the_graph_the_api_returns(page: Any, console: ProxyServer, artifacts: Path) -> None:
    run = biggest_run(console)
    graph = console.api(f"/api/runs/{run['id']}/graph")

    open_run(page, run["id"])
    agents = cy(page, "cy.nodes().filter(n => !n.data('pseudo')).map(n => n.data('name'))")
    agent_edges = cy(page, "cy.edges().map(e => [e.source().data('name'), e.target().data('name'), e.data('kind'), e.data('count')])")
    page.screenshot(path=artifacts / "run.png", full_page=True)
    page.get_by_label("Every call").check()
    page.wait_for_function("window.interlock.mode === 'calls'")
    nodes = cy(page, "cy.nodes().filter(n => !n.data('pseudo')).map(n => n.id())")
    edges = cy(page, "cy.edges().map(e => [e.data('source'), e.data('target'), e.data('kind')])")
    listed = page.eval_on_selector_all("#graph-table table.edges tbody tr", "rows => rows.map(r => [r.dataset.source, r.dataset.target, r.dataset.kind])")

    assert sorted(agents) == sorted(a["name"] for a in graph["agents"])
    assert sorted(map(tuple, agent_edges)) == sorted((e["source"], e["target"], e["kind"], e["count"]) for e in graph["agent_edges"])
    assert sorted(nodes) == sorted(n["id"] for n in graph["nodes"])
    expected = Counter((e["source"], e["target"], e["kind"]) for e in graph["edges"])
    assert Counter(map(tuple, edges)) == expected == Counter(map(tuple, listed))
    assert page.locator("svg.timeline a.bar").count() == len(graph["nodes"])


def test_clicking_a_call_in_the_graph_opens_its_inspector(page: Any, console: ProxyServer, artifacts: Path) -> None:
    run = biggest_run(console)
    open_run(page, run["id"])
    page.get_by_label("Every call").check()
    page.wait_for_function("window.interlock.mode === 'calls'")
    target = cy(page, "cy.nodes().filter(n => !n.data('pseudo')).map(n => n.id())")[0]
    at = cy(page, f"cy.getElementById({target!r}).renderedPosition()")
    box = page.locator("#graph").bounding_box()

    page.mouse.click(box["x"] + at["x"], box["y"] + at["y"])
    page.wait_for_selector("#request-content")

    stored = console.api(f"/api/calls/{target}")
    assert page.evaluate("location.hash") == f"#/calls/{target}"
    assert stored["model_requested"] in page.inner_text("#request-content")
    assert stored["id"] in page.inner_text("h1")
    page.screenshot(path=artifacts / "call.png", full_page=True)


def test_loops_and_budget_refusals_are_marked_on_the_calls(page: Any, console: ProxyServer, artifacts: Path) -> None:
    run = f"flagged-{uuid.uuid4().hex[:8]}"
    for _ in range(4):
        try:
            call(console, run, "the same question again", agent="flagged")
        except openai.RateLimitError:
            pass  # the budget's refusal
    events = []
    for _ in range(200):
        events = console.api("/api/guard-events", run_id=run)["items"]
        if {e["kind"] for e in events} >= {"loop", "budget"} and console.api(f"/api/runs/{run}").get("calls") == 4:
            break
        time.sleep(0.05)
    flagged = {e["call_id"]: e["kind"] for e in events}

    open_run(page, run)

    for call_id, kind in flagged.items():
        bar = page.locator(f'svg.timeline a.bar[data-call="{call_id}"]')
        assert f"mark-{kind}" in (bar.get_attribute("class") or "")
    assert page.locator("table.calls .flag-loop").count() >= 1
    page.screenshot(path=artifacts / "run-flagged.png", full_page=True)
    page.goto("/ui#/runs")
    page.wait_for_selector(f'#runs-table tr[data-run-id="{run}"]')
    page.select_option("#f-flag", "tiny-budget")
    page.wait_for_function("document.querySelectorAll('#runs-table tbody tr[data-run-id]').length === 1")
    assert page.get_attribute("#runs-table tbody tr[data-run-id]", "data-run-id") == run
    assert page.evaluate("location.hash") == "#/runs?flag=tiny-budget"


def test_a_cascade_root_and_its_tainted_calls_are_highlighted(page: Any, console: ProxyServer) -> None:
    """The API's cascade facts are rewritten on the way (the linker's own cascade tests live in
    tests/test_cascade.py): this checks only how the page shows them."""
    run = biggest_run(console)
    root, tainted = console.api(f"/api/runs/{run['id']}")["call_ids"][:2]

    def cascade(route: Any) -> None:
        body = route.fetch().json()
        if "root_causes" in body:
            body["root_causes"] = [{"call_id": root, "agent": "a", "faults": ["length"],
                                    "downstream": {"calls": 1, "agents": ["b"], "tokens": 9, "max_depth": 1}}]
            body["blast_radius"] = {"calls": 1, "call_ids": [tainted], "agents": ["b"], "tokens": 9, "max_depth": 1}
        for node in body.get("nodes", []):
            node["flags"] = ["cascade_root", "fault:length"] if node["id"] == root else node["flags"]
        for item in body.get("items", []):
            item["tainted_by"] = [root] if item.get("id") == tainted else item.get("tainted_by")
        route.fulfill(json=body)

    page.route("**/api/runs/**", cascade)
    page.route("**/api/calls?**", cascade)
    open_run(page, run["id"])

    assert "1 tainted call(s) of b" in page.inner_text("section.cascade")
    assert "root" in (page.locator(f'svg.timeline a.bar[data-call="{root}"]').get_attribute("class") or "")
    assert "tainted" in (page.locator(f'svg.timeline a.bar[data-call="{tainted}"]').get_attribute("class") or "")
    page.get_by_label("Every call").check()
    page.wait_for_function("window.interlock.mode === 'calls'")
    assert cy(page, f"cy.getElementById({root!r}).hasClass('root') && cy.getElementById({tainted!r}).hasClass('tainted')")


def test_acknowledging_an_escalation_from_the_page(page: Any, console: ProxyServer, artifacts: Path) -> None:
    run = biggest_run(console)
    esc = httpx.post(console.url + "/api/escalations",
                     json={"reason": "the researcher asked for a human", "run_id": run["id"]}).json()
    row = f'#open-escalations tr[data-escalation="{esc["id"]}"]'

    page.goto("/ui#/guards")
    page.wait_for_selector(row)
    page.screenshot(path=artifacts / "guards.png", full_page=True)
    page.click(f"{row} button")
    page.wait_for_selector(row, state="detached")

    after = console.api(f"/api/escalations/{esc['id']}")
    assert after["status"] == "acknowledged" and after["acked_by"] == "console"
    assert page.locator(f'#recent-escalations tr[data-escalation="{esc["id"]}"]').count() == 1


def test_a_new_run_appears_in_the_list_without_reload(page: Any, console: ProxyServer, artifacts: Path) -> None:
    run = f"live-{uuid.uuid4().hex[:8]}"
    page.goto("/ui")
    page.wait_for_selector("#runs-table tbody tr[data-run-id]")
    page.evaluate("window.__sameDocument = true")

    started = time.monotonic()
    call(console, run)
    page.wait_for_selector(f'#runs-table tr[data-run-id="{run}"]', timeout=15_000)

    note(artifacts, f"new run visible in the list {time.monotonic() - started:.2f} s after its call")
    assert page.evaluate("window.__sameDocument") is True


def test_keyboard_alone_reaches_a_run_and_focus_follows_the_view(page: Any, console: ProxyServer) -> None:
    page.goto("/ui")
    page.wait_for_selector("#runs-table tbody tr[data-run-id]")
    assert page.evaluate("document.activeElement.tagName") == "H1"  # a view starts at its heading
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("!!document.activeElement.closest('#runs-table tbody')"):
            break
    run_id = page.evaluate("document.activeElement.closest('tr').dataset.runId")

    page.keyboard.press("Enter")
    page.wait_for_function(READY)

    assert page.evaluate("location.hash") == f"#/runs/{run_id}"
    assert page.evaluate("document.activeElement.tagName") == "H1"


def test_a_run_of_500_calls_loads(page: Any, console: ProxyServer, artifacts: Path) -> None:
    """Measured and reported (artifacts/timings.txt), not asserted."""
    run = f"big-{uuid.uuid4().hex[:8]}"
    for i in range(500):
        call(console, run, f"step {i}")
    for _ in range(500):
        if console.api(f"/api/runs/{run}").get("calls") == 500:
            break
        time.sleep(0.05)

    page.goto(f"/ui#/runs/{run}")
    page.wait_for_function("window.interlock && document.querySelectorAll('svg.timeline a.bar').length === 500")
    ms = page.evaluate("performance.now()")

    note(artifacts, f"run view of 500 calls ready {ms:.0f} ms after navigation start (agents graph, timeline, calls table)")
    page.get_by_label("Every call").check()
    page.wait_for_function("window.interlock.mode === 'calls'")
    assert cy(page, "cy.nodes().length") >= 500
    page.screenshot(path=artifacts / "run-500.png")


def test_every_view_fits_a_phone_width_without_sideways_scrolling(page: Any, console: ProxyServer) -> None:
    run = biggest_run(console)
    call_id = console.api(f"/api/runs/{run['id']}")["call_ids"][0]
    page.set_viewport_size({"width": 390, "height": 844})
    views = {"/ui": "#runs-table tbody tr", f"/ui#/runs/{run['id']}": "svg.timeline",
             f"/ui#/calls/{call_id}": "#content-h", "/ui#/guards": "#events-h + *"}
    for url, ready in views.items():
        page.goto(url)
        page.wait_for_selector(ready)
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth"), url


def test_with_a_token_the_browser_login_opens_the_page_and_its_data(browser: Any, locked_console: ProxyServer) -> None:
    """The login prompt's answer (Basic, the token as password) reaches /ui and every /api fetch;
    without it the page is a 401 (tests/ui/test_console.py)."""
    signed_in = browser.new_context(base_url=locked_console.url, bypass_csp=True,
                                    http_credentials={"username": "me", "password": ADMIN_TOKEN})
    try:
        page = signed_in.new_page()
        page.goto("/ui")
        page.wait_for_selector("#runs-table tbody tr[data-run-id]")

        assert page.locator("#runs-table tbody tr[data-run-id]").count() >= 4
    finally:
        signed_in.close()
