"""The checked-in dashboard files: equal to the builder's output, valid, laid out, self-consistent."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from proxy.dashboards import add_commands
from proxy.dashboards.build import all_dashboards, file_name, render, stale
from proxy.dashboards.model import INTERLOCK_DB, PROMETHEUS
from tests.dashboards.panels import DASHBOARDS_DIR, load_files

SCHEMA = json.loads((Path(__file__).parent / "dashboard.schema.json").read_text())
FILES = load_files()


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="interlock")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_checked_in_files_equal_the_builders_output() -> None:
    assert stale(DASHBOARDS_DIR) == [], "run `interlock dashboards build` and commit dashboards/*.json"
    assert sorted(p.name for p in DASHBOARDS_DIR.glob("*.json")) == sorted(file_name(d) for d in all_dashboards())


def test_build_writes_the_files_and_check_notices_a_stale_one(tmp_path: Path) -> None:
    assert _cli("dashboards", "build", "--out", str(tmp_path)) == 0
    assert _cli("dashboards", "build", "--out", str(tmp_path), "--check") == 0
    first = all_dashboards()[0]
    (tmp_path / file_name(first)).write_text(render(first).replace("Traffic", "Trafic"))
    assert _cli("dashboards", "build", "--out", str(tmp_path), "--check") == 1


def test_schema_itself_is_valid() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("uid", sorted(FILES))
def test_dashboard_matches_the_schema(uid: str) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(FILES[uid])


def test_schema_rejects_a_panel_with_a_hard_coded_datasource_uid() -> None:
    bad = json.loads(json.dumps(FILES["interlock-overview"]))
    bad["panels"][1]["targets"][0]["datasource"]["uid"] = "P1809F7CD0C75ACF3"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(bad)


def _boxes(dash: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    return [(p["gridPos"]["x"], p["gridPos"]["y"], p["gridPos"]["w"], p["gridPos"]["h"]) for p in dash["panels"]]


@pytest.mark.parametrize("uid", sorted(FILES))
def test_panels_fit_the_grid_without_overlapping(uid: str) -> None:
    boxes = _boxes(FILES[uid])
    assert all(x + w <= 24 for x, _, w, _ in boxes)
    for i, (x1, y1, w1, h1) in enumerate(boxes):
        for x2, y2, w2, h2 in boxes[i + 1:]:
            assert x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1, (uid, boxes)


@pytest.mark.parametrize("uid", sorted(FILES))
def test_ids_are_unique_and_every_datasource_is_a_declared_variable(uid: str) -> None:
    dash = FILES[uid]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    declared = {v["name"] for v in dash["templating"]["list"] if v["type"] == "datasource"}
    used = {t["datasource"]["uid"][2:-1] for p in dash["panels"] for t in p.get("targets", [])}
    used |= {v["datasource"]["uid"][2:-1] for v in dash["templating"]["list"] if "datasource" in v}
    assert used <= declared and used, (used, declared)


def test_datasource_variables_default_to_the_provisioned_uids() -> None:
    defaults = {v["name"]: v["current"]["value"] for d in FILES.values() for v in d["templating"]["list"]
                if v["type"] == "datasource"}
    assert defaults == {PROMETHEUS.variable: PROMETHEUS.uid, INTERLOCK_DB.variable: INTERLOCK_DB.uid}


def test_uids_are_unique_and_every_dashboard_links_to_the_others() -> None:
    assert len(FILES) == 4
    for dash in FILES.values():
        assert "interlock" in dash["tags"]
        assert dash["links"][0]["tags"] == ["interlock"]
