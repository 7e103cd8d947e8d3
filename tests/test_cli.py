"""The `interlock` command's own output."""

from __future__ import annotations

import pytest

from proxy.cli import serving_line
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
