"""The bounded caches: CharLRU (texts across calls) and LRU (the index, aggregates, trace buffer)."""

from __future__ import annotations

from proxy.lru import LRU, CharLRU, Memo, drop_oldest


def test_least_recently_used_goes_first_past_the_bound() -> None:
    lru: CharLRU[str, str] = CharLRU(10)
    lru.put("a", "aaaa", 4)
    lru.put("b", "bbbb", 4)
    assert lru.get("a") == "aaaa"  # refreshed: b is now the oldest
    lru.put("c", "cccc", 4)
    assert lru.get("b") is None and lru.get("a") == "aaaa" and lru.get("c") == "cccc"
    assert lru.chars == 8 and len(lru) == 2


def test_a_value_larger_than_the_bound_is_not_kept_and_drops_the_old_one() -> None:
    lru: CharLRU[str, str] = CharLRU(10)
    lru.put("a", "small", 5)
    lru.put("a", "x" * 11, 11)
    assert lru.get("a") is None and lru.chars == 0


def test_replacing_a_key_counts_its_characters_once() -> None:
    lru: CharLRU[str, str] = CharLRU(10)
    lru.put("a", "aaaa", 4)
    lru.put("a", "aaaaaa", 6)
    assert lru.chars == 6 and lru.get("a") == "aaaaaa"


def test_drop_oldest_removes_the_oldest_share_in_insertion_order() -> None:
    items = {str(i): i for i in range(16)}
    drop_oldest(items)  # 1/8 of 16
    assert list(items) == [str(i) for i in range(2, 16)]
    small = {"a": 1}
    drop_oldest(small)  # at least one
    assert small == {}


def test_lru_touch_refreshes_and_evict_drops_the_least_recently_used() -> None:
    lru: LRU[str, list[int]] = LRU()
    made = lru.touch("a", list)
    lru.put("b", [2])
    lru.put("c", [3])
    assert lru.touch("a", list) is made  # found, not made again
    assert lru.evict(2) == [("b", [2])]
    assert list(lru) == ["c", "a"]


def test_lru_evicts_stale_entries_from_the_old_end_only() -> None:
    lru: LRU[str, float] = LRU()
    for key, at in (("old", 1.0), ("mid", 5.0), ("new", 9.0)):
        lru.put(key, at)
    lru.put("old", 1.0)  # used again: young end, although its value is stale
    assert lru.evict(10, stale=lambda at: at < 6.0) == [("mid", 5.0)]  # stops at the first fresh one
    assert list(lru) == ["new", "old"]


def test_memo_keeps_answers_none_included_and_empties_when_full() -> None:
    memo: Memo[str, int | None] = Memo(2)
    assert memo.keep("a", None) is None and "a" in memo  # an unknown model's None is an answer too
    memo.keep("b", 2)
    memo.keep("c", 3)  # full: emptied, then kept
    assert dict(memo) == {"c": 3}
