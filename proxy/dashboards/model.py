"""A small typed builder for Grafana dashboard JSON (schemaVersion 39, Grafana 10.3 and newer).

    Dashboard ── variables (Datasource / Query / ...)          ── templating.list
       └─ Row ── Panel ── targets: Prom | Sql                  ── panels[] (row panels + gridPos)

Datasources are never named by UID in a panel: every target points at `${DS_PROMETHEUS}` or
`${DS_INTERLOCK_DB}`, datasource variables whose default is the UID that provisioning and
`interlock dashboards push` give Interlock's datasources.  Layout is computed: panels flow left
to right in 24 columns and wrap, each row starts below the tallest panel of the previous line.

`Sql.columns` is the contract between a query and its panel (what a table shows, the fields a
Node Graph frame needs); it is not emitted, the tests hold every query to it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

Json = dict[str, Any]
SCHEMA_VERSION = 39
GRID_COLUMNS = 24


@dataclass(frozen=True)
class Datasource:
    """A datasource as dashboards see it: a plugin type and the variable holding its UID."""

    type: str
    variable: str
    label: str
    uid: str
    name: str

    @property
    def ref(self) -> Json:
        return {"type": self.type, "uid": "${" + self.variable + "}"}


PROMETHEUS = Datasource("prometheus", "DS_PROMETHEUS", "Prometheus", "interlock-prometheus", "Interlock Prometheus")
INTERLOCK_DB = Datasource(
    "grafana-postgresql-datasource", "DS_INTERLOCK_DB", "Interlock database", "interlock-db", "Interlock database"
)
MIXED = MappingProxyType({"type": "datasource", "uid": "-- Mixed --"})


@dataclass(frozen=True)
class Prom:
    """A PromQL target.  `instant` for tables and single values over `$__range`."""

    expr: str
    legend: str = ""
    instant: bool = False
    datasource: Datasource = PROMETHEUS

    def to_json(self, ref_id: str) -> Json:
        return {
            "refId": ref_id,
            "datasource": self.datasource.ref,
            "editorMode": "code",
            "expr": self.expr,
            "legendFormat": self.legend or "__auto",
            "range": not self.instant,
            "instant": self.instant,
        }


@dataclass(frozen=True)
class Sql:
    """A raw SQL target on the Interlock database.  `columns` are the names the panel reads."""

    sql: str
    columns: tuple[str, ...]
    format: Literal["table", "time_series"] = "table"
    ref_id: str | None = None
    datasource: Datasource = INTERLOCK_DB

    def to_json(self, ref_id: str) -> Json:
        return {
            "refId": self.ref_id or ref_id,
            "datasource": self.datasource.ref,
            "editorMode": "code",
            "format": self.format,
            "rawQuery": True,
            "rawSql": " ".join(self.sql.split()),
        }


Target = Prom | Sql


@dataclass(frozen=True)
class Panel:
    """One visualisation.  `defaults`/`options` are merged into Grafana's own structures."""

    type: str
    title: str
    targets: tuple[Target, ...] = ()
    description: str = ""
    width: int = 12
    height: int = 8
    unit: str | None = None
    defaults: Json = field(default_factory=dict)
    overrides: tuple[Json, ...] = ()
    options: Json = field(default_factory=dict)
    transformations: tuple[Json, ...] = ()

    def datasource(self) -> Json | None:
        kinds = {t.datasource.variable: t.datasource for t in self.targets}
        if not kinds:
            return None
        return next(iter(kinds.values())).ref if len(kinds) == 1 else dict(MIXED)

    def to_json(self, panel_id: int, x: int, y: int) -> Json:
        defaults: Json = {**({"unit": self.unit} if self.unit else {}), **self.defaults}
        out: Json = {"id": panel_id, "type": self.type, "title": self.title, "description": self.description,
                     "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y}}
        ds = self.datasource()
        if ds is not None:
            out["datasource"] = ds
        out["targets"] = [t.to_json(chr(ord("A") + i)) for i, t in enumerate(self.targets)]
        out["fieldConfig"] = {"defaults": defaults, "overrides": list(self.overrides)}
        out["options"] = self.options
        if self.transformations:
            out["transformations"] = list(self.transformations)
        return out


@dataclass(frozen=True)
class Row:
    """A titled group of panels (a Grafana row panel followed by its panels)."""

    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class DatasourceVariable:
    """Lets a user point the dashboard at another datasource of the same type."""

    datasource: Datasource

    def to_json(self) -> Json:
        ds = self.datasource
        return {"type": "datasource", "name": ds.variable, "label": ds.label, "query": ds.type,
                "current": {"selected": False, "text": ds.name, "value": ds.uid},
                "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": "",
                "skipUrlSync": False}


@dataclass(frozen=True)
class QueryVariable:
    """A variable filled by a query.  With `include_all`, "All" inserts `all_value` verbatim
    (Grafana never quotes a custom all value), while a chosen value is quoted by SQL datasources
    and regex-escaped by Prometheus: queries test `'__all' IN ($run) OR run_id IN ($run)`
    (SQL) or `label=~"$agent"` (PromQL, all value `.*`)."""

    name: str
    label: str
    query: str
    datasource: Datasource
    all_value: str
    multi: bool = False
    sort: int = 0  # 0 keeps the query's own order, 1 sorts alphabetically

    def to_json(self) -> Json:
        current: Json = {"selected": True, "text": ["All"] if self.multi else "All",
                         "value": ["$__all"] if self.multi else "$__all"}
        return {"type": "query", "name": self.name, "label": self.label, "datasource": self.datasource.ref,
                "query": self.query, "definition": self.query, "includeAll": True, "allValue": self.all_value,
                "multi": self.multi, "current": current, "options": [], "refresh": 2, "sort": self.sort, "hide": 0,
                "regex": "", "skipUrlSync": False}


Variable = DatasourceVariable | QueryVariable


@dataclass(frozen=True)
class Dashboard:
    """A whole dashboard; `to_json()` is what `interlock dashboards build` writes."""

    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    variables: tuple[Variable, ...]
    tags: tuple[str, ...] = ("interlock",)
    time_from: str = "now-6h"
    refresh: str = "30s"

    def panels(self) -> Iterator[tuple[int, Panel]]:
        """(panel id, panel) in layout order, row panels excluded; ids match `to_json()`."""
        next_id = 1
        for row in self.rows:
            next_id += 1
            for panel in row.panels:
                yield next_id, panel
                next_id += 1

    def to_json(self) -> Json:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": list(self.tags),
            "editable": True,
            "graphTooltip": 1,
            "timezone": "browser",
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "refresh": self.refresh,
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {},
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "weekStart": "",
            "links": [{"type": "dashboards", "title": "Interlock", "tags": ["interlock"], "asDropdown": True,
                       "includeVars": False, "keepTime": True, "icon": "external link", "targetBlank": False,
                       "tooltip": "", "url": ""}],
            "annotations": {"list": [_builtin_annotations()]},
            "templating": {"list": [v.to_json() for v in self.variables]},
            "panels": layout(self.rows),
        }


def layout(rows: Sequence[Row]) -> list[Json]:
    """Row panels and their panels with ids and gridPos, flowing in 24 columns."""
    out: list[Json] = []
    y = 0
    next_id = 1
    for row in rows:
        out.append({"id": next_id, "type": "row", "title": row.title, "collapsed": False,
                    "gridPos": {"h": 1, "w": GRID_COLUMNS, "x": 0, "y": y}, "panels": []})
        next_id += 1
        y += 1
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > GRID_COLUMNS:
                x, y, line_height = 0, y + line_height, 0
            out.append(panel.to_json(next_id, x, y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return out


def _builtin_annotations() -> Json:
    return {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}


# ---------------------------------------------------------------- panel constructors


def timeseries(title: str, *targets: Target, unit: str = "short", stack: bool = False, bars: bool = False,
               width: int = 12, height: int = 8, description: str = "", overrides: tuple[Json, ...] = ()) -> Panel:
    """A time series; `stack` stacks series (normal), `bars` draws bars (counts per interval)."""
    custom: Json = {"drawStyle": "bars" if bars else "line", "fillOpacity": 60 if bars else 10, "lineWidth": 1,
                    "showPoints": "never", "spanNulls": False,
                    "stacking": {"group": "A", "mode": "normal" if stack else "none"}}
    return Panel("timeseries", title, targets, description, width, height, unit,
                 defaults={"custom": custom}, overrides=overrides,
                 options={"legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                                     "calcs": ["sum"] if bars else ["mean", "max"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}})


def stat(title: str, *targets: Target, unit: str = "short", width: int = 4, height: int = 4,
         description: str = "", overrides: tuple[Json, ...] = (), steps: Json | None = None) -> Panel:
    """Big numbers: one per returned field (SQL) or series (PromQL)."""
    return Panel("stat", title, targets, description, width, height, unit,
                 defaults={"thresholds": steps or thresholds(), "color": {"mode": "thresholds"}},
                 overrides=overrides,
                 options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "value", "graphMode": "none", "justifyMode": "auto",
                          "orientation": "auto", "textMode": "auto", "wideLayout": True,
                          "showPercentChange": False})


def table(title: str, *targets: Target, width: int = 24, height: int = 9, description: str = "",
          overrides: tuple[Json, ...] = ()) -> Panel:
    """A table of rows as returned (SQL) or of instant PromQL samples."""
    options: Json = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}}
    return Panel("table", title, targets, description, width, height, None,
                 defaults={"custom": {"align": "auto", "filterable": True}}, overrides=overrides, options=options)


def bargauge(title: str, *targets: Target, unit: str = "short", width: int = 12, height: int = 8,
             description: str = "") -> Panel:
    """Horizontal bars, one per series: good for "by agent" totals over the time range."""
    return Panel("bargauge", title, targets, description, width, height, unit,
                 defaults={"thresholds": thresholds(), "color": {"mode": "palette-classic"}},
                 options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
                          "valueMode": "color", "namePlacement": "auto", "sizing": "auto", "minVizHeight": 16,
                          "minVizWidth": 8, "maxVizHeight": 300})


def node_graph(title: str, nodes: Sql, edges: Sql, *, width: int = 24, height: int = 14,
               description: str = "", arcs: tuple[tuple[str, str], ...] = (),
               units: tuple[str, str] = ("short", "short")) -> Panel:
    """Grafana's Node Graph: frames with refId `nodes` and `edges` (id/title/mainstat...,
    id/source/target/mainstat...).  `arcs` are (field, colour) pairs whose values sum to 1;
    `units` are those of the nodes' main and secondary stats."""
    return Panel("nodeGraph", title, (nodes, edges), description, width, height, None,
                 options={"nodes": {"mainStatUnit": units[0], "secondaryStatUnit": units[1],
                                    "arcs": [{"field": f, "color": c} for f, c in arcs]},
                          "edges": {"mainStatUnit": "short", "secondaryStatUnit": "short"}})


def text(title: str, content: str, *, width: int = 24, height: int = 5) -> Panel:
    """A markdown note (no query)."""
    return Panel("text", title, (), "", width, height, None,
                 options={"mode": "markdown", "content": content,
                          "code": {"language": "plaintext", "showLineNumbers": False, "showMiniMap": False}})


def thresholds(*steps: tuple[float, str]) -> Json:
    """Absolute thresholds: green below the first step, then each (value, colour)."""
    return {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                          *({"color": c, "value": v} for v, c in steps)]}


def unit_override(field_name: str, unit: str) -> Json:
    """A field override setting one column's unit."""
    return {"matcher": {"id": "byName", "options": field_name}, "properties": [{"id": "unit", "value": unit}]}


def gauge_cell(field_name: str, steps: Json) -> Json:
    """Show one table column as a gauge cell with the given thresholds."""
    return {"matcher": {"id": "byName", "options": field_name},
            "properties": [{"id": "custom.cellOptions", "value": {"type": "gauge", "mode": "gradient"}},
                           {"id": "thresholds", "value": steps}, {"id": "max", "value": 100},
                           {"id": "min", "value": 0}, {"id": "unit", "value": "percent"}]}


def link_override(field_name: str, title: str, url: str) -> Json:
    """Make a table column's cells links (Grafana data-link syntax in `url`)."""
    return {"matcher": {"id": "byName", "options": field_name},
            "properties": [{"id": "links", "value": [{"title": title, "url": url}]}]}
