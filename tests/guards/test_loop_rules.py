"""Validation of the loops-in-meaning rule fields: errors name the file, the rule, the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.rules import RulesError, load_rules
from tests.guards.factory import rule_from_yaml


def errors_of(tmp_path: Path, rule: str) -> list[str]:
    (tmp_path / "loops.yaml").write_text(f"rules:\n  - {rule}\n")
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path)
    return info.value.errors


def test_meaning_detectors_parse_with_their_defaults() -> None:
    rule = rule_from_yaml("{name: s, kind: loop, detect: stall}")
    assert (rule.detect, rule.novelty, rule.min_words, rule.max_revisits) == ("stall", 0.35, 6, None)


def test_max_revisits_is_only_valid_for_revisit(tmp_path: Path) -> None:
    (message,) = errors_of(tmp_path, "{name: s, kind: loop, detect: stall, max_revisits: 2}")
    assert message == f"{tmp_path}/loops.yaml: rule 's': max_revisits: only valid with detect: revisit"


def test_restated_is_only_valid_for_redelegation(tmp_path: Path) -> None:
    (message,) = errors_of(tmp_path, "{name: r, kind: loop, detect: revisit, restated: 0.5}")
    assert message == f"{tmp_path}/loops.yaml: rule 'r': restated: only valid with detect: redelegation"


def test_novelty_must_be_a_share(tmp_path: Path) -> None:
    (message,) = errors_of(tmp_path, "{name: s, kind: loop, detect: stall, novelty: 1.5}")
    assert message == f"{tmp_path}/loops.yaml: rule 's': novelty: must be <= 1.0 (got 1.5)"


def test_max_revisits_must_be_positive(tmp_path: Path) -> None:
    (message,) = errors_of(tmp_path, "{name: v, kind: loop, detect: revisit, max_revisits: 0}")
    assert message == f"{tmp_path}/loops.yaml: rule 'v': max_revisits: must be >= 1 (got 0)"


def test_unknown_detect_lists_the_new_values(tmp_path: Path) -> None:
    (message,) = errors_of(tmp_path, "{name: d, kind: loop, detect: stal}")
    assert "detect: must be one of" in message and "'stall'" in message and "'redelegation'" in message


def test_default_rules_ship_the_meaning_detectors_flag_only() -> None:
    rules = load_rules(Path(__file__).resolve().parents[2] / "rules").rules
    meaning = {r.detect: r.action for r in rules if r.kind == "loop" and r.detect in ("revisit", "redelegation", "stall")}
    assert meaning == {"revisit": "flag", "redelegation": "flag", "stall": "flag"}
