"""Content fingerprints: parts, winnowing, target shingles, tail signatures."""

from __future__ import annotations

from proxy.call import Completion, ToolCall
from proxy.graph.fingerprint import (
    OUTPUT_MAX_CHARS,
    Shingler,
    argument_strings,
    output_parts,
    tail_signature,
    text_parts,
    unpack_tail,
    winnow,
)

PARA = (
    "The reconciliation job silently skips refunds older than ninety days so finance reports "
    "drift from the ledger every quarter and nobody notices until the audit."
)


def test_text_parts_split_on_blank_lines_and_list_items() -> None:
    text = "Plan:\n\n1. First item\ncontinues here\n2. Second item\n- a bullet\n\nClosing words."
    assert text_parts(text) == [
        "Plan:",
        "1. First item\ncontinues here",
        "2. Second item",
        "- a bullet",
        "Closing words.",
    ]


def test_argument_strings_are_the_json_string_values() -> None:
    args = '{"task": "Find the data", "opts": {"depth": 2, "notes": ["one", "two"]}}'
    assert argument_strings(args) == ["Find the data", "one", "two"]
    assert argument_strings("not json at all") == ["not json at all"]


def test_output_parts_cover_text_and_tool_arguments() -> None:
    comp = Completion("Intro.\n\n- part a", [ToolCall("t1", "delegate", '{"task": "do b"}')])
    assert output_parts(comp) == [("Intro.", False), ("- part a", False), ("do b", True)]


def test_a_code_agents_call_argument_is_a_part_handed_on() -> None:
    """smolagents' CodeAgent delegates in code: the task string is what the managed agent gets."""
    code = "Thought: ask the analyst.\n<code>\nreport = analyst(task='Gather the 2025 figures on heat pumps')\nprint(report)"
    parts = output_parts(Completion(code))
    assert ("Gather the 2025 figures on heat pumps", True) in parts
    assert [p for p, handed in parts if handed] == ["Gather the 2025 figures on heat pumps"]
    prose = "You're right (it's 'fine' as is), we're done."
    assert output_parts(Completion(prose)) == [(prose, False)]  # quotes in prose are not a call's argument


def test_source_print_marks_the_parts_handed_to_a_call() -> None:
    sh = Shingler()
    printed = sh.source(Completion(PARA, [ToolCall("t1", "delegate", '{"task": "' + PARA + '"}')]))
    assert len(printed.part_ends) == 2 and printed.handed == 0b10


def test_winnow_is_content_defined() -> None:
    hashes = [9, 3, 7, 8, 1, 6, 5, 2, 4]
    assert winnow(hashes, 3) == [3, 1, 2]
    assert winnow(hashes[2:], 3) == [1, 2]  # the shared passage keeps the shared minima


def test_same_passage_keeps_same_fingerprints_in_any_output() -> None:
    sh = Shingler()
    alone = set(sh.source(Completion(PARA)).fps)
    quoted = set(sh.source(Completion("Summary first. " + PARA + " And more words after it.")).fps)
    assert len(alone & quoted) >= len(alone) - 3


def test_target_finds_every_source_fingerprint_of_a_quote() -> None:
    sh = Shingler()
    fps = sh.source(Completion(PARA)).fps
    _, present = sh.target("Please fix this: " + PARA.upper() + " Thanks!")
    assert all(h in present for h in fps)


def test_short_output_is_found_in_short_input() -> None:
    sh = Shingler()
    (fp,) = sh.source(Completion("quantum error correction")).fps
    _, present = sh.target("Research: quantum error correction.")
    assert fp in present


def test_word_hash_ignores_case_and_punctuation() -> None:
    sh = Shingler()
    assert sh.target("Hello, World!")[0] == sh.target("hello world")[0]


def test_tail_signature_names_words_peculiar_to_the_end() -> None:
    sh = Shingler()
    ids = sh.words("alpha beta gamma alpha beta gamma alpha beta delta epsilon")
    assert unpack_tail(tail_signature(ids)) == sh.words("delta epsilon")


def test_only_the_first_output_max_chars_of_a_runaway_output_are_fingerprinted() -> None:
    """A 1 MiB answer (an upstream's endless stream, kept up to INTERLOCK_STREAM_TEXT_MAX_CHARS)
    costs the event loop what its first 256 Ki characters cost, not four times that; a quote
    of its start is still found, its later text leaves no fingerprints."""
    paragraphs = [" ".join(f"w{i}x{j}" for j in range(40)) for i in range(4000)]
    text = "\n\n".join(paragraphs)
    assert len(text) > 4 * OUTPUT_MAX_CHARS
    sh = Shingler()
    whole = sh.source(Completion(text))
    assert whole == sh.source(Completion(text[:OUTPUT_MAX_CHARS]))
    assert whole.chars <= OUTPUT_MAX_CHARS
    _, first = sh.target("Per the analyst: " + paragraphs[0])
    assert whole.fps and all(fp in whole.fps for fp in sh.source(Completion(paragraphs[0])).fps)
    assert any(fp in first for fp in whole.fps)
    late = sh.source(Completion(paragraphs[-1])).fps
    assert late and not set(late) & set(whole.fps)
