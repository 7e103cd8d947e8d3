"""The shipped dashboards, rendered to the JSON files checked in under `dashboards/`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from proxy.dashboards import escalations, guards, orchestration, overview
from proxy.dashboards.model import Dashboard

# Order is the order of the files' listing in docs and of `push`.
DASHBOARDS: tuple[Callable[[], Dashboard], ...] = (
    overview.dashboard,
    orchestration.dashboard,
    guards.dashboard,
    escalations.dashboard,
)


def all_dashboards() -> list[Dashboard]:
    return [make() for make in DASHBOARDS]


def file_name(dashboard: Dashboard) -> str:
    return f"{dashboard.uid}.json"


def render(dashboard: Dashboard) -> str:
    """The exact text of a dashboard's file (stable: a rebuild without changes is a no-op)."""
    return json.dumps(dashboard.to_json(), indent=2, ensure_ascii=False) + "\n"


def write(out: Path) -> list[Path]:
    """Write every dashboard into `out`; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for dashboard in all_dashboards():
        path = out / file_name(dashboard)
        path.write_text(render(dashboard), encoding="utf-8")
        paths.append(path)
    return paths


def stale(out: Path) -> list[str]:
    """Files in `out` that are missing or differ from what the builder produces."""
    return [file_name(d) for d in all_dashboards()
            if not (out / file_name(d)).is_file() or (out / file_name(d)).read_text(encoding="utf-8") != render(d)]
