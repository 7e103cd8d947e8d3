"""Settings: validated once, errors name the setting and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.settings import SettingsError, load_settings


def test_the_wal_lives_in_the_spool_directory_unless_told_otherwise(tmp_path: Path) -> None:
    assert load_settings(spool_dir=tmp_path).wal_path == tmp_path / "wal"
    assert load_settings(spool_dir=tmp_path, wal_dir=tmp_path / "w").wal_path == tmp_path / "w"


def test_a_wal_fsync_interval_out_of_range_is_refused_with_its_name() -> None:
    with pytest.raises(SettingsError, match=r"wal_fsync_interval_ms \(INTERLOCK_WAL_FSYNC_INTERVAL_MS\) has value 500"):
        load_settings(wal_fsync_interval_ms=500)


def test_the_wal_can_be_turned_off_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERLOCK_WAL", "false")
    assert load_settings().wal is False


@pytest.mark.parametrize(("name", "value"), [("response_parse_max_bytes", 1000), ("stream_text_max_chars", 10)])
def test_response_caps_below_their_floor_are_refused_by_name(name: str, value: int) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(**{name: value})
    assert f"INTERLOCK_{name.upper()}" in str(err.value) and str(value) in str(err.value)


def test_response_caps_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERLOCK_RESPONSE_PARSE_MAX_BYTES", "1048576")
    monkeypatch.setenv("INTERLOCK_STREAM_TEXT_MAX_CHARS", "4096")
    settings = load_settings()
    assert (settings.response_parse_max_bytes, settings.stream_text_max_chars) == (1048576, 4096)


def test_retention_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERLOCK_RETENTION_DAYS", "30")
    monkeypatch.setenv("INTERLOCK_CONTENT_RETENTION_DAYS", "7.5")
    s = load_settings()
    assert (s.retention_days, s.content_retention_days) == (30.0, 7.5)


def test_content_kept_longer_than_its_records_is_refused_naming_both() -> None:
    with pytest.raises(SettingsError, match=r"content_retention_days \(14\) must not exceed retention_days \(7\)"):
        load_settings(retention_days=7, content_retention_days=14)


@pytest.mark.parametrize("name, value", [("retention_days", 0), ("content_retention_days", -1),
                                         ("retention_batch_size", 0)])  # fmt: skip
def test_retention_values_out_of_range_are_refused_by_name(name: str, value: float) -> None:
    with pytest.raises(SettingsError, match=rf"{name} \(INTERLOCK_{name.upper()}\) has value {value}"):
        load_settings(**{name: value})


def test_any_providers_upstream_is_read_from_env_file_and_keywords_in_that_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "interlock.yaml"
    config.write_text("upstream_gemini: http://from-file:1\nupstream_azure: http://file-azure:2/\n")
    monkeypatch.setenv("INTERLOCK_CONFIG", str(config))
    monkeypatch.setenv("INTERLOCK_UPSTREAM_GEMINI", "http://from-env:3")

    assert load_settings().provider_upstreams == {"gemini": "http://from-env:3", "azure": "http://file-azure:2"}
    ups = load_settings(upstream_gemini="http://from-kwarg:4").all_upstreams({"bedrock": "https://bedrock.example"})
    assert (ups["gemini"].url, ups["gemini"].provider) == ("http://from-kwarg:4", "gemini")
    assert ups["bedrock"].url == "https://bedrock.example" and ups["openai"].url == "https://api.openai.com"


def test_settings_that_start_with_upstream_are_not_providers() -> None:
    settings = load_settings(upstream_client="aiohttp", upstream_max_connections=4)
    assert settings.provider_upstreams == {} and settings.upstream_client == "aiohttp"


def test_a_providers_upstream_that_is_not_a_url_is_refused_by_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERLOCK_UPSTREAM_GEMINI", "ftp://key:hunter2@gemini.example")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "INTERLOCK_UPSTREAM_GEMINI" in str(err.value) and "hunter2" not in str(err.value)
