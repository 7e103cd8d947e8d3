"""`interlock drill RULE` against a working and a broken route: the exit status says which."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from proxy.escalation.drill import main
from tests.escalation.harness import escalations, rules_dir, server
from tests.escalation.receiver import Post, Receiver, dead_url
from tests.fake_upstream import FakeUpstream

RULES = """
routes:
  good: {{webhook: "{good}", backoff: 10ms}}
  bad: {{webhook: "{bad}", backoff: 10ms, retries: 1}}
rules:
  - {{name: works, kind: escalation, tools: [ask_human], ack_within: 5s, notify: [good]}}
  - {{name: broken, kind: escalation, tools: [ask_human], ack_within: 5s, notify: [bad]}}
  - {{name: budget, kind: budget, limit_tokens: 10}}
"""


def test_drill_exit_status_for_working_and_broken_routes(tmp_path: Path, upstream: FakeUpstream,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    proxy_url: list[str] = []

    def acknowledge(post: Post) -> None:  # the on-call human, answering the page
        body = post.json
        assert body["drill"] is True and body["type"] == "escalation.opened"
        httpx.post(proxy_url[0] + body["escalation"]["ack_path"], json={"by": "drill-bot"}, timeout=5)

    with Receiver(on_post=acknowledge) as rx:
        text = RULES.format(good=rx.url, bad=dead_url())
        with server(tmp_path, upstream.url, text) as px:
            proxy_url.append(px.url)
            common = ["--rules-dir", str(rules_dir(tmp_path, text)), "--database-url", px.settings.database_url]
            assert main(["works", *common]) == 0
            out = capsys.readouterr().out
            assert "route good: DELIVERED" in out and "acknowledged by drill-bot" in out
            assert main(["broken", *common, "--no-wait"]) == 1
            assert "route bad: FAILED after 2 attempt(s)" in capsys.readouterr().out
            assert main(["budget", *common]) == 3 and main(["nope", *common]) == 3
            drills = escalations(px)
            assert {e["rule"] for e in drills} == {"works", "broken"} and all(e["drill"] for e in drills)
            assert all(e["status"] == "resolved" for e in drills)
            health = {r["name"]: r for r in px.api("/api/escalations/health")["routes"]}
            assert not health["good"]["stale"] and health["bad"]["stale"]


def test_drill_without_an_acknowledgement_exits_2(tmp_path: Path) -> None:
    with Receiver() as rx:
        text = RULES.format(good=rx.url, bad=dead_url())
        db = f"sqlite:///{tmp_path}/drill.db"
        from proxy.store.db import upgrade

        upgrade(db)
        args = ["works", "--rules-dir", str(rules_dir(tmp_path, text)), "--database-url", db, "--wait", "0.3"]
        assert main(args) == 2
        assert len(rx.posts) == 1
