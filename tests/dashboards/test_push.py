"""`interlock dashboards push` against a recorded-contract Grafana (tests/dashboards/fake_grafana.py)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from proxy.dashboards import add_commands
from proxy.dashboards.build import all_dashboards
from proxy.dashboards.push import PushError, postgres_datasource
from tests.dashboards.fake_grafana import FakeGrafana, GrafanaState

TOKEN = "glsa_test_token"
PROM_URL = "http://prometheus:9090"
DB_URL = "postgresql://grafana_reader:s3cret%21@postgres:5432/interlock"
UIDS = [d.uid for d in all_dashboards()]

PROM_PAYLOAD = {"uid": "interlock-prometheus", "name": "Interlock Prometheus", "type": "prometheus",
                "access": "proxy", "url": PROM_URL, "isDefault": False,
                "jsonData": {"httpMethod": "POST", "timeInterval": "15s"}}
DB_PAYLOAD = {"uid": "interlock-db", "name": "Interlock database", "type": "grafana-postgresql-datasource",
              "access": "proxy", "url": "postgres:5432", "user": "grafana_reader", "database": "interlock",
              "isDefault": False,
              "jsonData": {"database": "interlock", "sslmode": "disable", "postgresVersion": 1500,
                           "timescaledb": False, "maxOpenConns": 10},
              "secureJsonData": {"password": "s3cret!"}}


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    with FakeGrafana() as g:
        yield g


def _push(url: str, *extra: str, token: str = TOKEN) -> int:
    parser = argparse.ArgumentParser(prog="interlock")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dashboards", "push", "--grafana-url", url, "--token", token, *extra])
    return int(args.func(args))


def _full(url: str) -> int:
    return _push(url, "--prometheus-url", PROM_URL, "--db-url", DB_URL)


def test_first_push_creates_datasources_folder_and_dashboards(grafana: FakeGrafana) -> None:
    assert _full(grafana.url) == 0
    assert grafana.calls() == [
        ("GET", "/api/health"),
        ("GET", "/api/datasources/uid/interlock-prometheus"),
        ("GET", "/api/datasources/name/Interlock Prometheus"),
        ("POST", "/api/datasources"),
        ("GET", "/api/datasources/uid/interlock-db"),
        ("GET", "/api/datasources/name/Interlock database"),
        ("POST", "/api/datasources"),
        ("GET", "/api/folders"),
        ("POST", "/api/folders"),
        *[("POST", "/api/dashboards/db")] * len(UIDS),
    ]
    log = grafana.state.log
    assert all(e.auth == f"Bearer {TOKEN}" for e in log[1:])
    assert [log[3].body, log[6].body] == [PROM_PAYLOAD, DB_PAYLOAD]
    assert log[8].body == {"title": "Interlock", "uid": "interlock"}
    saves = [e.body for e in log[9:]]
    assert [s["dashboard"]["uid"] for s in saves] == UIDS
    assert all(s["overwrite"] is True and s["folderUid"] == "interlock" and s["dashboard"]["id"] is None
               for s in saves)
    assert saves[0]["dashboard"]["panels"] == all_dashboards()[0].to_json()["panels"]


def test_second_push_updates_in_place_and_creates_nothing(grafana: FakeGrafana) -> None:
    assert _full(grafana.url) == 0
    state = grafana.state
    before = (dict(state.datasources), dict(state.folders), set(state.dashboards))
    state.log.clear()
    assert _full(grafana.url) == 0
    assert grafana.calls()[:6] == [
        ("GET", "/api/health"),
        ("GET", "/api/datasources/uid/interlock-prometheus"),
        ("PUT", "/api/datasources/uid/interlock-prometheus"),
        ("GET", "/api/datasources/uid/interlock-db"),
        ("PUT", "/api/datasources/uid/interlock-db"),
        ("GET", "/api/folders"),
    ]
    assert ("POST", "/api/folders") not in grafana.calls() and ("POST", "/api/datasources") not in grafana.calls()
    assert (state.datasources, state.folders, set(state.dashboards)) == before
    assert {d["version"] for d in state.dashboards.values()} == {2}


def test_datasource_made_by_hand_is_updated_and_dashboards_point_at_it() -> None:
    state = GrafanaState()
    state.datasources["hand1"] = {"id": 7, "uid": "hand1", "name": "Interlock Prometheus", "type": "prometheus",
                                  "access": "proxy", "url": "http://old:9090"}
    with FakeGrafana(state) as g:
        assert _push(g.url, "--prometheus-url", PROM_URL) == 0
        assert ("PUT", "/api/datasources/uid/hand1") in g.calls()
    assert state.datasources["hand1"]["url"] == PROM_URL and len(state.datasources) == 1
    overview = state.dashboards["interlock-overview"]["dashboard"]
    [ds_var] = [v for v in overview["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    assert ds_var["current"]["value"] == "hand1"


def test_existing_folder_with_the_title_is_reused() -> None:
    state = GrafanaState()
    state.folders["abc"] = {"id": 3, "uid": "abc", "title": "Agents", "version": 1}
    with FakeGrafana(state) as g:
        assert _push(g.url, "--folder", "Agents") == 0
        assert ("POST", "/api/folders") not in g.calls()
    assert {d["folderUid"] for d in state.dashboards.values()} == {"abc"}


def test_wrong_token_is_a_clear_401_error_and_changes_nothing(grafana: FakeGrafana,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert _push(grafana.url, "--prometheus-url", PROM_URL, token="wrong") == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "--token" in err and grafana.url in err
    assert grafana.calls() == [("GET", "/api/health"), ("GET", "/api/datasources/uid/interlock-prometheus")]


def test_token_without_permission_is_a_clear_403_error(capsys: pytest.CaptureFixture[str]) -> None:
    state = GrafanaState(forbidden={"POST /api/datasources"})
    with FakeGrafana(state) as g:
        assert _push(g.url, "--prometheus-url", PROM_URL) == 1
    err = capsys.readouterr().err
    assert "HTTP 403" in err and "create datasource 'Interlock Prometheus'" in err and "Admin role" in err


def test_old_grafana_is_refused_before_anything_changes(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeGrafana(GrafanaState(version="9.5.2")) as g:
        assert _push(g.url, "--prometheus-url", PROM_URL) == 1
        assert g.calls() == [("GET", "/api/health")]
    err = capsys.readouterr().err
    assert "Grafana 9.5.2" in err and "10.3.0 or newer" in err


def test_grafana_under_a_sub_path(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeGrafana(GrafanaState(prefix="/grafana")) as g:
        assert _push(g.url + "/") == 0
        assert g.calls()[0] == ("GET", "/grafana/api/health")


def test_unreachable_grafana_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeGrafana() as g:
        url = g.url
    assert _push(url) == 1
    err = capsys.readouterr().err
    assert "unreachable" in err and url in err


def test_grafana_credentials_in_its_url_are_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeGrafana() as g:
        url = g.url.replace("http://", "http://admin:hunter2@")
    assert _push(url) == 1
    err = capsys.readouterr().err
    assert "unreachable" in err and "admin:***@" in err and "hunter2" not in err


def test_missing_token_is_a_usage_error(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    assert _push("http://127.0.0.1:9", token="") == 2
    assert "--token" in capsys.readouterr().err


def test_db_url_must_be_postgresql() -> None:
    with pytest.raises(PushError, match="need PostgreSQL"):
        postgres_datasource("sqlite+aiosqlite:///./interlock.db")
    with pytest.raises(PushError, match=r"\*\*\*") as err:
        postgres_datasource("postgresql://u:hunter2@/")
    assert "hunter2" not in str(err.value)


def test_async_driver_url_and_sslmode_are_understood() -> None:
    ds = postgres_datasource("postgresql+asyncpg://reader@db.internal:6543/records?sslmode=require")
    assert (ds["url"], ds["user"], ds["jsonData"]["database"], ds["jsonData"]["sslmode"]) == (
        "db.internal:6543", "reader", "records", "require")
    assert "secureJsonData" not in ds
