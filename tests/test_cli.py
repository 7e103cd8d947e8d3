"""The `interlock` command's own output."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from proxy.cli import main, serving_line
from proxy.settings import SettingsError, load_settings


def test_start_up_line_masks_the_database_password() -> None:
    settings = load_settings(database_url="postgresql://app:hunter2@db:5432/interlock")
    line = serving_line(settings)
    assert "hunter2" not in line and "app:***@db:5432/interlock" in line


def test_a_bad_url_setting_is_reported_without_its_password() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(upstream_openai="ftp://app:hunter2@models.example")
    assert "upstream_openai" in str(err.value) and "app:***@models.example" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_serve_on_a_port_in_use_says_so_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--host", "127.0.0.1", "--port", str(port),
                     "--database-url", f"sqlite+aiosqlite:///{tmp_path}/i.db"])
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
