from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path

import pytest

from proxy.cli import main as cli_main
from proxy.guards.counters import MemoryCounterStore
from proxy.rules import RulesError, RulesManager, build_schema, check_main, load_rules, schema_text

ROOT = Path(__file__).resolve().parent.parent / "rules"
GOOD = "rules:\n  - {name: per-run, kind: budget, scope: run, limit_tokens: 1000, action: deny}\n"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def errors_of(directory: Path) -> list[str]:
    with pytest.raises(RulesError) as info:
        load_rules(directory)
    return info.value.errors


def test_default_rules_load_and_only_flag() -> None:
    ruleset = load_rules(ROOT)
    assert ruleset.rules and all(r.action == "flag" for r in ruleset.rules)


@pytest.mark.parametrize("kind", ["budget", "loop", "context", "escalation", "cascade"])
def test_each_example_file_loads_and_shows_its_kind(tmp_path: Path, kind: str) -> None:
    write(tmp_path, f"{kind}.yaml", (ROOT / "examples" / f"{kind}.yaml").read_text())
    ruleset = load_rules(tmp_path)
    assert {r.kind for r in ruleset.rules} == {kind}


def test_checked_in_schema_matches_the_models() -> None:
    assert json.loads((ROOT / "schema.json").read_text()) == build_schema()
    assert (ROOT / "schema.json").read_text() == schema_text()  # byte for byte: no diff on regenerate


def test_schema_command_regenerates_the_checked_in_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "schema.json"
    assert cli_main(["rules", "schema", "--write", str(target)]) == 0
    assert target.read_text() == (ROOT / "schema.json").read_text()
    assert cli_main(["rules", "schema", "--write", str(target), "--check"]) == 0
    capsys.readouterr()
    assert cli_main(["rules", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == build_schema()


def test_schema_check_fails_on_a_stale_file_and_says_how_to_fix_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "schema.json"
    stale.write_text((ROOT / "schema.json").read_text().replace('"cascade"', '"cascades"'))
    assert cli_main(["rules", "schema", "--write", str(stale), "--check"]) == 1
    assert f"stale; run: interlock rules schema --write {stale}" in capsys.readouterr().out


def test_error_names_file_rule_and_field(tmp_path: Path) -> None:
    write(tmp_path, "budget.yaml", GOOD.replace("1000", "0"))
    assert errors_of(tmp_path) == [
        f"{tmp_path}/budget.yaml: rule 'per-run': limit_tokens: must be > 0 (got 0)"
    ]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            "{name: x, kind: budjet}",
            "rule 'x': kind: must be one of budget, loop, context, escalation, cascade",
        ),
        ("{kind: budget, limit_tokens: 5}", "rule #1: name: is required"),
        ("{name: x, kind: budget, limit_tokens: 5, windw: 1h}", "rule 'x': windw: unknown field"),
        (
            "{name: x, kind: budget, limit_tokens: 5, window: 1 hour}",
            "rule 'x': window: must be run or a duration",
        ),
        ("{name: x, kind: budget}", "rule 'x': limit_tokens or limit_usd: set exactly one of them"),
        ("{name: x, kind: loop, detect: loops}", "rule 'x': detect: must be one of"),
        ("{name: x, kind: loop, detect: retry, window: soon}", "rule 'x': window: must be a duration"),
        ("{name: x, kind: loop, detect: ceiling}", "rule 'x': detect: ceiling needs one of max_steps"),
        (
            "{name: x, kind: loop, detect: retry, max_steps: 3}",
            "rule 'x': max_steps: only valid with detect: ceiling",
        ),
        (
            "{name: x, kind: context, action: block}",
            "rule 'x': action: must be one of 'deny', 'flag' or 'escalate'",
        ),
        ("{name: x, kind: context, match: {agnt: a}}", "rule 'x': match.agnt: unknown field"),
        (
            "{name: x, kind: loop, detect: retry, on_store_error: ignore}",
            "rule 'x': on_store_error: must be one of 'allow' or 'deny'",
        ),
        ("[1, 2]", "rule #1: must be a mapping"),
    ],
)
def test_validation_errors_read_well(tmp_path: Path, rule: str, expected: str) -> None:
    write(tmp_path, "r.yaml", f"rules:\n  - {rule}\n")
    (message,) = errors_of(tmp_path)
    assert message.startswith(f"{tmp_path}/r.yaml: {expected}"), message


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", "rules:\n  - {name: x, kind: budget\n")
    (message,) = errors_of(tmp_path)
    assert message.startswith(f"{tmp_path}/bad.yaml: line 3")


def test_every_error_of_every_file_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD + "  - {name: other, kind: loop, detect: retry, max_repeats: 0}\n")
    assert errors_of(tmp_path) == [
        f"{tmp_path}/b.yaml: rule 'other': max_repeats: must be >= 1 (got 0)",
        f"{tmp_path}/b.yaml: rule 'per-run': name: already used in {tmp_path}/a.yaml",
    ]


def test_top_level_typos_and_shapes_are_errors(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "rule: []\n")
    write(tmp_path, "b.yaml", "rules: {name: x}\n")
    write(tmp_path, "c.yaml", "- just a list\n")
    assert errors_of(tmp_path) == [
        f"{tmp_path}/a.yaml: rule: unknown field",
        f"{tmp_path}/b.yaml: rules: must be a list",
        f"{tmp_path}/c.yaml: must be a mapping with a 'rules:' list",
    ]


def test_routes_and_pricing_are_collected(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        GOOD + "routes:\n  oncall: {webhook: 'https://x'}\npricing:\n  my-*: {input: 1, output: 2}\n",
    )
    ruleset = load_rules(tmp_path)
    assert set(ruleset.routes) == {"oncall"} and ruleset.pricing["my-*"].output == 2
    assert ruleset.describe()[0]["file"] == f"{tmp_path}/a.yaml"


def test_examples_directory_is_not_loaded_with_the_rules(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    (tmp_path / "examples").mkdir()
    write(tmp_path / "examples", "broken.yaml", "rules: [oops]\n")
    assert len(load_rules(tmp_path).rules) == 1


def test_check_main_exit_codes(tmp_path: Path) -> None:
    out = io.StringIO()
    assert check_main(ROOT, out=out) == 0 and "OK" in out.getvalue()
    write(tmp_path, "a.yaml", GOOD.replace("1000", "-5"))
    out = io.StringIO()
    assert check_main(tmp_path, out=out) == 1
    assert "rule 'per-run': limit_tokens: must be > 0" in out.getvalue()
    assert check_main(tmp_path / "missing", out=io.StringIO()) == 2


# ---------------------------------------------------------------------------- hot reload


def manager(directory: Path, **kwargs: object) -> RulesManager:
    return RulesManager(directory, counters=MemoryCounterStore(), **kwargs)  # type: ignore[arg-type]


def test_broken_edit_keeps_the_last_good_rules(tmp_path: Path) -> None:
    path = write(tmp_path, "budget.yaml", GOOD)
    rules = manager(tmp_path)
    assert rules.reload() and len(rules.chain) == 1
    good_chain = rules.chain
    path.write_text(GOOD.replace("1000", "0"))
    assert not rules.reload()
    assert rules.chain is good_chain and rules.rules.rules[0].limit_tokens == 1000
    assert rules.errors == [f"{tmp_path}/budget.yaml: rule 'per-run': limit_tokens: must be > 0 (got 0)"]
    assert rules.reload_failures == 1
    assert rules.status()["errors"] == rules.errors
    path.write_text(GOOD.replace("1000", "2000"))
    assert rules.reload() and rules.errors == [] and rules.chain is not good_chain


def test_missing_directory_means_no_rules(tmp_path: Path) -> None:
    rules = manager(tmp_path / "absent")
    assert rules.reload() and len(rules.chain) == 0 and rules.errors == []


async def test_started_manager_picks_up_file_changes(tmp_path: Path) -> None:
    path = write(tmp_path, "budget.yaml", GOOD)
    rules = manager(tmp_path, reload_s=0.02)
    await rules.start()
    try:
        assert len(rules.chain) == 1
        path.write_text(GOOD + "  - {name: more, kind: loop, detect: retry}\n")
        os.utime(path, ns=(1, 1))
        for _ in range(200):
            if len(rules.chain) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(rules.chain) == 2
        path.write_text("rules: [")
        for _ in range(200):
            if rules.errors:
                break
            await asyncio.sleep(0.01)
        assert rules.errors and len(rules.chain) == 2
    finally:
        await rules.aclose()


async def test_counters_survive_a_reload(tmp_path: Path) -> None:
    from tests.guards.factory import make_call

    path = write(tmp_path, "budget.yaml", GOOD.replace("1000", "2500"))
    rules = manager(tmp_path)
    rules.reload()
    assert (await rules.chain.on_request(make_call())).action == "allow"  # reserves 2,000
    path.write_text(GOOD.replace("1000", "3000"))
    rules.reload()
    assert (await rules.chain.on_request(make_call())).denied


def test_manager_from_settings(tmp_path: Path) -> None:
    from proxy.settings import load_settings

    settings = load_settings(rules_dir=tmp_path, rules_reload_s=5.0, default_max_tokens=777)
    rules = RulesManager.from_settings(settings, counters=MemoryCounterStore())
    assert rules.rules_dir == tmp_path and rules.reload_s == 5.0


def test_directory_disappearing_keeps_the_loaded_rules(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    write(rules_dir, "budget.yaml", GOOD)
    rules = manager(rules_dir)
    rules.reload()
    (rules_dir / "budget.yaml").unlink()
    rules_dir.rmdir()
    assert not rules.reload() and len(rules.chain) == 1 and "disappeared" in rules.errors[0]


@pytest.mark.parametrize(
    "path", [ROOT / "default.yaml", *sorted((ROOT / "examples").glob("*.yaml"))], ids=str
)
def test_shipped_files_validate_against_the_schema(path: Path) -> None:
    import jsonschema
    import yaml

    jsonschema.validate(yaml.safe_load(path.read_text()), json.loads((ROOT / "schema.json").read_text()))


def test_schema_rejects_what_the_loader_rejects() -> None:
    import jsonschema

    schema = json.loads((ROOT / "schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"rules": [{"name": "x", "kind": "budget", "limit_tokens": 0}]}, schema)


def test_schema_knows_on_store_error_and_its_two_values() -> None:
    import jsonschema

    schema = json.loads((ROOT / "schema.json").read_text())
    rule = {"name": "x", "kind": "loop", "detect": "retry"}
    jsonschema.validate({"rules": [{**rule, "on_store_error": "deny"}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"rules": [{**rule, "on_store_error": "ignore"}]}, schema)


def test_a_missing_rules_directory_is_named_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # `serve` started from another directory: ./rules is not there
    with caplog.at_level("WARNING", logger="interlock.rules"):
        manager(Path("rules")).reload()
    assert f"no rules loaded: {tmp_path / 'rules'} does not exist" in caplog.text


def test_every_rule_kind_is_accepted_enforced_and_in_the_schema() -> None:
    """The kinds a rules file may name, the kinds a guard enforces and the kinds the published
    schema documents are one list: a kind added in one place and not the others fails here."""
    from proxy.guards import GUARD_BUILDERS, RULE_KINDS
    from proxy.rules import KINDS

    def consts(node: object) -> set[str]:
        if isinstance(node, dict):
            found = {node["kind"]["const"]} if isinstance(node.get("kind"), dict) and "const" in node["kind"] else set()
            return found.union(*(consts(v) for v in node.values()))
        if isinstance(node, list):
            return set().union(*(consts(v) for v in node))
        return set()

    schema_kinds = consts(json.loads((ROOT / "schema.json").read_text()))
    assert set(KINDS) == set(GUARD_BUILDERS) == schema_kinds
    assert all(kind.model.kind_name() == name for name, kind in RULE_KINDS.items())
    assert {p.stem for p in (ROOT / "examples").glob("*.yaml")} >= set(KINDS)  # an example per kind
