"""The `interlock` command's own output."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.cli import main, serving_line
from proxy.settings import SettingsError, load_settings
from proxy.store.db import make_engine
from proxy.store.models import TABLES


def test_start_up_line_masks_the_database_password() -> None:
    settings = load_settings(database_url="postgresql://app:hunter2@db:5432/interlock")
    line = serving_line(settings)
    assert "hunter2" not in line and "app:***@db:5432/interlock" in line


def test_a_bad_url_setting_is_reported_without_its_password() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(upstream_openai="ftp://app:hunter2@models.example")
    assert "upstream_openai" in str(err.value) and "app:***@models.example" in str(err.value)
    assert "hunter2" not in str(err.value)


# ---------------------------------------------------------------- bad input: one line, exit 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    (line,) = err.splitlines()
    return line


@pytest.mark.parametrize("command", [["calls"], ["runs"], ["graph", "01a2"], ["db", "upgrade"], ["serve"], ["doctor"]])
def test_an_unknown_database_scheme_is_one_line_naming_the_setting(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    line = _one_line_error([*command, "--database-url", "foo://bar"], capsys)
    assert "database_url (INTERLOCK_DATABASE_URL) has value 'foo://bar'" in line
    assert "unknown database scheme 'foo'" in line


@pytest.mark.parametrize("command", [["calls"], ["runs"], ["graph", "01a2"], ["db", "upgrade"]])
def test_a_database_file_in_a_missing_directory_is_one_line(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = "sqlite+aiosqlite:////nonexistent/dir/x.db"
    line = _one_line_error([*command, "--database-url", url], capsys)
    assert f"database_url (INTERLOCK_DATABASE_URL) has value '{url}'" in line and "unable to open" in line


@pytest.mark.parametrize("command", [["calls"], ["runs"], ["db", "upgrade"]])
def test_an_unreachable_postgresql_is_one_line(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql://app:hunter2@127.0.0.1:{_free_port()}/interlock"
    line = _one_line_error([*command, "--database-url", url], capsys)
    assert "database_url (INTERLOCK_DATABASE_URL)" in line and "app:***@127.0.0.1" in line
    assert "cannot use the database" in line and "hunter2" not in line


def test_a_database_without_tables_says_to_migrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line_error(["calls", "--database-url", str(tmp_path / "empty.db")], capsys)
    assert "run `interlock db upgrade` first" in line


def test_a_bad_setting_from_the_environment_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INTERLOCK_PORT", "eighty")
    line = _one_line_error(["serve"], capsys)
    assert line.startswith("interlock: setting port (INTERLOCK_PORT) has value 'eighty'")


def test_a_plain_path_is_a_sqlite_database() -> None:
    assert load_settings(database_url="demo.db").database_url == "sqlite+aiosqlite:///demo.db"
    assert load_settings(database_url="/tmp/x.db").database_url == "sqlite+aiosqlite:////tmp/x.db"


# ---------------------------------------------------------------- empty tables, prefixes, success lines


@pytest.fixture
def migrated(tmp_path: Path) -> str:
    db = str(tmp_path / "interlock.db")
    assert main(["db", "upgrade", "--database-url", db]) == 0
    return db


def test_empty_tables_say_what_to_do_next(migrated: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["calls", "--database-url", migrated]) == 0
    assert main(["runs", "--database-url", migrated]) == 0
    out = capsys.readouterr().out
    assert "no calls recorded yet" in out and "no runs recorded yet" in out and "interlock demo" in out


def _store_runs(db: str, *run_ids: str) -> None:
    async def go() -> None:
        engine = make_engine(load_settings(database_url=db).database_url)
        calls = TABLES["calls"]
        async with engine.begin() as conn:
            for i, run_id in enumerate(run_ids):
                await conn.execute(calls.insert().values(
                    id=f"{run_id[:20]}c{i:05d}", run_id=run_id, started_at=datetime.now(UTC), provider="openai",
                    operation="chat", path="/v1/chat/completions", agent="planner", outcome="ok", status=200,
                    upstream="openai", method="POST", stream=False, content_truncated=False, flags=[]))
                now = datetime.now(UTC)
                await conn.execute(TABLES["runs"].insert().values(
                    id=run_id, started_at=now, last_at=now, status="open", calls=1, agents=["planner"], tokens=10,
                    flags=[]))
        await engine.dispose()

    asyncio.run(go())


def test_graph_takes_any_unique_prefix_of_a_run_id(migrated: str, capsys: pytest.CaptureFixture[str]) -> None:
    _store_runs(migrated, "01a252cd31d0bc5ccf4ecc07ed", "01a252cd31d9aaaaaaaaaaaaaa")
    capsys.readouterr()

    assert main(["graph", "01a252cd31d0", "--database-url", migrated]) == 0
    assert "run 01a252cd31d0bc5ccf4ecc07ed" in capsys.readouterr().out
    line = _one_line_error(["graph", "01a252cd31d", "--database-url", migrated], capsys)
    assert "matches several runs" in line and "01a252cd31d9aaaaaaaaaaaaaa" in line
    assert main(["graph", "ffff", "--database-url", migrated]) == 1
    assert "no run with id 'ffff' or starting with it" in capsys.readouterr().err


def test_runs_prints_whole_ids_at_80_columns(
    migrated: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _store_runs(migrated, "01a252cd31d0bc5ccf4ecc07ed")
    monkeypatch.setenv("COLUMNS", "80")
    capsys.readouterr()
    assert main(["runs", "--database-url", migrated]) == 0
    assert "01a252cd31d0bc5ccf4ecc07ed" in capsys.readouterr().out


def test_dashboards_check_says_when_all_files_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboards", "build", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_doctor_reports_each_check(migrated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor", "--database-url", migrated, "--rules-dir", str(tmp_path / "nowhere")])
    out = capsys.readouterr().out
    assert code == 0
    assert "ok    encodings  o200k_base and cl100k_base verified" in out and "(shipped with Interlock)" in out
    assert "ok    database" in out and "migrations at the latest revision" in out
    assert f"warn  rules      {tmp_path / 'nowhere'} does not exist" in out
    assert "upstream   openai https://api.openai.com" in out


def test_doctor_fails_on_an_unmigrated_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--database-url", str(tmp_path / "new.db")]) == 1
    assert "run `interlock db upgrade`" in capsys.readouterr().out


def test_serve_on_a_port_in_use_says_so_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--host", "127.0.0.1", "--port", str(port),
                     "--database-url", f"sqlite+aiosqlite:///{tmp_path}/i.db"])
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
