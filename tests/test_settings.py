"""Settings are validated once, with errors that name the setting and the value."""

from __future__ import annotations

import pytest

from proxy.settings import SettingsError, load_settings


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
