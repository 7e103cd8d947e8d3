"""The checked-in dashboards' queries, each with what its panel expects (from the builder)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.dashboards.build import all_dashboards
from proxy.dashboards.model import Sql

DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "dashboards"


@dataclass(frozen=True)
class Query:
    """One target of one panel of a checked-in dashboard file."""

    dashboard: str  # uid
    panel: str  # title
    panel_type: str
    ref_id: str
    target: dict[str, Any]
    variables: tuple[dict[str, Any], ...]
    columns: tuple[str, ...] = ()  # SQL only: what the panel reads

    @property
    def id(self) -> str:
        return f"{self.dashboard}/{self.panel}/{self.ref_id}"


def load_files() -> dict[str, dict[str, Any]]:
    """uid → dashboard JSON, as checked in."""
    out = {}
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        out[data["uid"]] = data
    return out


def _expected_columns() -> dict[tuple[str, int, str], tuple[str, ...]]:
    out = {}
    for dash in all_dashboards():
        for panel_id, panel in dash.panels():
            for i, target in enumerate(panel.targets):
                if isinstance(target, Sql):
                    out[(dash.uid, panel_id, target.ref_id or chr(ord("A") + i))] = target.columns
    return out


def queries(kind: str) -> list[Query]:
    """Every target with `rawSql` (kind "sql") or `expr` (kind "prometheus") in the files."""
    expected = _expected_columns()
    out = []
    for uid, dash in load_files().items():
        variables = tuple(dash["templating"]["list"])
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                key = "rawSql" if kind == "sql" else "expr"
                if key in target:
                    columns = expected.get((uid, panel["id"], target["refId"]), ())
                    out.append(Query(uid, panel["title"], panel["type"], target["refId"], target, variables,
                                     columns))
    return out


def variable_queries(kind: str) -> list[tuple[str, dict[str, Any], tuple[dict[str, Any], ...]]]:
    """(dashboard uid, variable, all variables) for every query variable on `kind`'s datasource."""
    ds_type = "grafana-postgresql-datasource" if kind == "sql" else "prometheus"
    out = []
    for uid, dash in load_files().items():
        variables = tuple(dash["templating"]["list"])
        for var in variables:
            if var["type"] == "query" and var["datasource"]["type"] == ds_type:
                out.append((uid, var, variables))
    return out
