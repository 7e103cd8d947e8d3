"""`interlock demo` end to end: scripted systems through a live proxy, graphs recovered."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from proxy.demo import run_demo


def test_demo_recovers_every_scripted_run(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_demo(tmp_path / "demo.db", False, Console(file=out, width=200)) == 0
    text = out.getvalue()
    assert "4 runs recovered from traffic alone" in text
    assert text.count("handoff") >= 7
    assert "return from research-assistant" in text
    assert "TRUNCATED" not in text
