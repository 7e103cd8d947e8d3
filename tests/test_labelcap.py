"""LabelCap: at most `limit` values per label key, the rest read `other` and are counted."""

from __future__ import annotations

from proxy.labelcap import OTHER, LabelCap


def test_values_past_the_limit_read_other_and_are_counted() -> None:
    cap = LabelCap(2)
    assert [cap.value("agent", a) for a in ("a", "b", "c", "d")] == ["a", "b", OTHER, OTHER]
    assert cap.overflow == {"agent": 2}


def test_values_seen_before_the_cap_filled_keep_their_name() -> None:
    cap = LabelCap(2)
    cap.value("agent", "a")
    cap.value("agent", "b")
    cap.value("agent", "c")
    assert cap.value("agent", "a") == "a" and cap.value("agent", "b") == "b"


def test_each_label_key_has_its_own_limit() -> None:
    cap = LabelCap(1)
    assert cap.value("agent", "x") == "x"
    assert cap.value("model", "gpt-4o") == "gpt-4o"
    assert cap.value("model", "o3") == OTHER
    assert cap.overflow == {"model": 1}


def test_an_uncounted_lookup_folds_without_counting() -> None:
    cap = LabelCap(1)
    cap.value("model", "gpt-4o")
    assert cap.value("model", "o3", count=False) == OTHER
    assert cap.overflow == {}
