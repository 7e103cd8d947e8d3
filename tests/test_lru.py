"""CharLRU: the character-bounded cache behind the token, fingerprint and hash-chain caches."""

from __future__ import annotations

from proxy.lru import CharLRU, drop_oldest


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
