"""Real-browser fixtures: Debian's Chromium driven by Playwright (no browser download), against a
proxy serving `interlock demo`'s database plus an escalation rule, and a fake upstream for live
traffic.  Without Chromium (or Playwright) the browser tests skip on a laptop and fail in CI.

Screenshots go to $INTERLOCK_TEST_ARTIFACTS/ui (default ./test-artifacts/ui)."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from proxy.demo import run_demo
from tests.fake_upstream import FakeUpstream
from tests.proxyserver import ProxyServer

ADMIN_TOKEN = "console-admin-token"
CONSOLE_RULES = """\
rules:
  - {name: human-review, kind: escalation, tools: ["escalate_to_human"], ack_within: 15m}
  - {name: retry-storm, kind: loop, detect: retry, scope: agent_run, window: 5m, max_repeats: 1, action: flag,
     match: {agent: flagged}}
  - {name: tiny-budget, kind: budget, scope: agent_run, limit_tokens: 40, action: deny, match: {agent: flagged}}
"""


def _require(what: str, found: bool) -> None:
    if found:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what}, and CI=true makes the browser tests mandatory (.ci/run installs chromium)")
    pytest.skip(f"{what}: apt-get install chromium (and pip install -e '.[test]') to run the browser tests")


def chromium_path() -> str:
    path = os.environ.get("INTERLOCK_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    _require(f"no Chromium at {path}", Path(path).is_file())
    return path


@pytest.fixture(scope="session")
def artifacts() -> Path:
    root = Path(os.environ.get("INTERLOCK_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))
    out = root / "ui"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require("Playwright is not installed", False)
        raise
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def upstream_for_console() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, upstream_for_console: FakeUpstream) -> Iterator[ProxyServer]:
    """The demo's runs in SQLite, served by a proxy that also knows an escalation rule and, for
    agent `flagged` only, a loop rule and a tiny budget."""
    tmp = tmp_path_factory.mktemp("console")
    db = tmp / "demo.db"
    assert run_demo(db, False, Console(file=io.StringIO(), width=200)) == 0
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "console.yaml").write_text(CONSOLE_RULES)
    with ProxyServer(tmp, upstream_for_console.url, database_url=f"sqlite+aiosqlite:///{db}", rules_dir=rules) as px:
        yield px


@pytest.fixture(scope="module")
def locked_console(tmp_path_factory: pytest.TempPathFactory, console: ProxyServer,
                   upstream_for_console: FakeUpstream) -> Iterator[ProxyServer]:
    """A second proxy on the same database, with INTERLOCK_ADMIN_TOKEN set."""
    tmp = tmp_path_factory.mktemp("locked-console")
    with ProxyServer(tmp, upstream_for_console.url, database_url=console.settings.database_url,
                     admin_token=ADMIN_TOKEN) as px:
        yield px


@pytest.fixture
def page(browser: Any, console: ProxyServer) -> Iterator[Any]:
    # bypass_csp: the console's CSP forbids eval, which Playwright's wait_for_function uses.
    context = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=console.url, bypass_csp=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
