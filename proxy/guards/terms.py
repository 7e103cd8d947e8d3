"""Content words of a text, weighted by rarity: what "the same meaning" compares.

    text ──terms()──▶ Terms (frozenset of crc32 of stemmed content words)
                      URLs, numbers, ids, timestamps and stop words dropped; plurals and
                      -ing/-ed endings stripped: restated text keeps its rare words

    run documents (stored lists) ──Corpora──▶ Corpus: document frequencies ──▶ weight(term)
        novelty(new, corpus)      share of the new text's weight not seen before
    (redelegation.py weighs instruction words over a run's sub-goals the same way)

Rare words weigh more than common ones: weight = log((n + 2) / (df + 1)) over the n documents
the run has kept (a word every instruction of the run repeats, such as the task's subject,
weighs little; a word only two of them share weighs a lot).  Hashes are crc32, stable across
processes, so documents stored by one replica are read by another.
"""

from __future__ import annotations

import base64
import math
import zlib
from array import array
from collections.abc import Iterable, Sequence

from proxy.lru import Generations, drop_oldest

Terms = frozenset[int]
EMPTY: Terms = frozenset()

_PUNCT = ".,;:!?()[]{}<>\"'`*_#|~=+/\\-"
_MAX_CHARS = 6_000  # long texts: their head and tail
_STOP = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing done down during each either else
    etc few for from further had has have having he her here hers herself him himself his how
    however i if in into is it its itself just let like may me might more most much must my
    myself no nor not now of off on once only or other our ours ourselves out over own per please
    same shall she should so some such than that the their theirs them themselves then there
    these they this those through thus to too under until up upon us very via was we were what
    when where whether which while who whom whose why will with within without would yet you your
    yours yourself yourselves ok okay yes""".split()  # noqa: SIM905 - a word list reads better as prose
)

# Frequent English words (general usage, not any one domain): as content they weigh
# COMMON_WEIGHT of a rare word.  The run's own frequencies do the rest, but a short run has seen too few
# texts to learn that "find", "source" or "information" say little about which sub-goal.
COMMON = frozenset(
    """able accept access account across act action add address after again age ago agree ahead
    allow almost alone along already alternative although always amount another answer anyone
    anything appear apply approach area argue around arrive article ask attempt available avoid
    away back bad base basic become begin behind believe best better big bit board book bring
    build business call care carry case cause center certain chance change check choose city
    claim clear close come common company complete consider contain continue control correct
    cost country course cover create current data date day deal decide detail determine develop
    different difficult direct discuss document down draft during early easy effect effort end
    enough ensure enter entire establish even event ever every example exist expect explain fact
    fail far feel few field figure file final find fine finish first focus follow form found free
    full future general get give go good great group grow guess hand happen hard head hear help
    high hold home hope hour idea identify important include increase indicate information instead
    interest issue item job keep kind know large last late later lead learn least leave less level
    life light likely line link list little live local long look lose lot low main major make many
    matter mean measure meet mention method might mind miss moment money month move name near need
    never new next note nothing number obtain offer office official often old one open order other
    page paper part particular pass past people perhaps period person place plan point possible
    post power present pretty probably problem process produce provide public put question quick
    quite rather reach read ready real reason receive recent record reference relate reliable remain
    report require research result return review right run say search second section see seem send
    set several share short show side simple since single site small social some something soon
    source specific start state step still stop story study sure system take talk task team tell
    term test thing think time today together top total true try turn type under understand unit
    use used useful using usual value various version view want way week well whole wide word work
    world write wrong year""".split()  # noqa: SIM905 - a word list reads better as prose
)

COMMON_WEIGHT = 1 / 3  # a frequent English word's weight against a rare word's


def stem(word: str) -> str:
    """A light suffix strip ("sources" → "sourc", "searching" → "search"): restatements that
    change a word's form still share it.  Not a linguistic stemmer: only consistent."""
    if word.endswith("'s"):
        word = word[:-2]
    n = len(word)
    if n > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if n > 5 and word.endswith("ing"):
        return word[:-3]
    if n > 4 and word.endswith("ed"):
        return word[:-2]
    if n > 4 and word.endswith("es"):
        return word[:-2]
    if n > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    if n > 4 and word.endswith("e"):
        return word[:-1]
    return word


def _hash(token: str) -> int:
    """crc32 of a lower-cased token's stem, or 0 when it is no content word: URLs, numbers,
    ids, dates, paths and anything else with a digit or a symbol inside, stop words."""
    word = token.strip(_PUNCT)
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) < 3 or not word.isalpha() or word in _STOP:
        return 0
    return zlib.crc32(stem(word).encode()) or 1


class Lexicon:
    """Terms of texts and decoded stored documents, remembered across calls (bounded; the
    values are those computed afresh)."""

    def __init__(self, max_chars: int = 2_000_000, max_docs: int = 16_384) -> None:
        self._texts: Generations[str, Terms] = Generations(max_chars)
        self._words: dict[str, int] = {}
        self._docs: Generations[str, Terms] = Generations(max_docs)
        self.common = frozenset(zlib.crc32(stem(w).encode()) for w in COMMON)

    def terms(self, text: str) -> Terms:
        if not text:
            return EMPTY
        found = self._texts.get(text)
        if found is None:
            found = self._texts.put(text, self._terms(text), min(len(text), 2 * _MAX_CHARS))
        return found

    def _terms(self, text: str) -> Terms:
        """Whitespace tokens, each looked up once in a per-process table (token → hash, or
        0 for a token that is no content word): no regex on the hot path."""
        if len(text) > 2 * _MAX_CHARS:
            text = text[:_MAX_CHARS] + " " + text[-_MAX_CHARS:]
        known = self._words
        out = set()
        for token in set(text.lower().split()):
            h = known.get(token)
            if h is None:
                if len(known) >= 200_000:
                    drop_oldest(known)
                h = known[token] = _hash(token)
            if h:
                out.add(h)
        return frozenset(out)

    def decode(self, encoded: str) -> Terms:
        found = self._docs.get(encoded)
        if found is None:
            found = self._docs.put(encoded, decode_terms(encoded))
        return found


def encode_terms(terms: Iterable[int]) -> str:
    return base64.b64encode(array("I", sorted(terms)).tobytes()).decode()


def decode_terms(text: str) -> Terms:
    raw = array("I")
    raw.frombytes(base64.b64decode(text))
    return frozenset(raw)


class Corpus:
    """Document frequencies over a run's stored documents."""

    __slots__ = ("df", "n")

    def __init__(self, docs: Iterable[Terms] = ()) -> None:
        self.n = 0
        self.df: dict[int, int] = {}
        for doc in docs:
            self.add(doc)

    def add(self, doc: Terms) -> None:
        df, get = self.df, self.df.get
        for t in doc:
            df[t] = get(t, 0) + 1
        self.n += 1

    def remove(self, doc: Terms) -> None:
        df = self.df
        for t in doc:
            left = df[t] - 1
            if left:
                df[t] = left
            else:
                del df[t]
        self.n -= 1

    def weight(self, term: int) -> float:
        """log((n + 2) / (df + 1)): a word few stored documents hold weighs more."""
        return math.log((self.n + 2) / (self.df.get(term, 0) + 1))

    def novelty(
        self, terms: Terms, common: Terms = EMPTY, recent: Sequence[Terms] = (), told: Terms = EMPTY
    ) -> float:
        """Rarity-weighted share of `terms` no stored document holds (1.0: all new).  A word
        of `common` (frequent English) weighs COMMON_WEIGHT of another.  Weights are squared
        here: the words an agent repeats in every output (its own template, a ledger's field
        names) must not outweigh the few words that carry news.  Documents in `recent` (some
        of the stored ones) count as seen but not towards a word's frequency: a loop's own
        words must not become "frequent" because the loop keeps repeating them.  Words of
        `told` (what the agent was just told) count as seen too, as rare as a recent one's."""
        if not terms:
            return 0.0
        df, n2 = self.df, self.n + 2 - len(recent)
        young: dict[int, int] = {}
        for doc in recent:
            for t in terms & doc:
                young[t] = young.get(t, 0) + 1
        top = math.log(n2) ** 2
        low = COMMON_WEIGHT**2
        new = total = 0.0
        for t in terms:
            seen = df.get(t, 0)
            older = seen - young.get(t, 0)
            w = top if not older else math.log(n2 / (older + 1)) ** 2
            if t in common:
                w *= low
            if seen or t in told:
                total += w
            else:
                new += w
        total += new
        return new / total if total else 0.0


class Corpora:
    """The corpus of each stored list, kept up to date from one read to the next: a list read
    again after one push (the usual case: the same run's next call) costs one document added
    and perhaps one dropped, not a recount.  Anything else (another replica pushed, items
    expired) is recounted.  Bounded; never shared between processes."""

    def __init__(self, lexicon: Lexicon, cap: int = 4096) -> None:
        self._lexicon = lexicon
        self._cap = cap
        self._memo: dict[str, tuple[list[str], list[Terms], Corpus]] = {}

    def get(self, key: str, items: list[str]) -> tuple[list[Terms], Corpus]:
        """The documents of `items` (newest first; each item ends with its encoded terms)
        and their corpus.  The corpus is shared: read it, do not change it."""
        memo = self._memo.get(key)
        if memo is not None:
            old, docs, corpus = memo
            if items == old:
                return docs, corpus
            k = len(items) - 1
            if k >= 0 and k <= len(old) and items[1:] == old[:k]:
                for doc in docs[k:]:
                    corpus.remove(doc)
                docs = [self._doc(items[0]), *docs[:k]]
                corpus.add(docs[0])
                self._memo[key] = (items, docs, corpus)
                return docs, corpus
        docs = [self._doc(item) for item in items]
        corpus = Corpus(docs)
        if memo is None and len(self._memo) >= self._cap:
            drop_oldest(self._memo)
        self._memo[key] = (items, docs, corpus)
        return docs, corpus

    def _doc(self, item: str) -> Terms:
        return self._lexicon.decode(item.rpartition("\x1f")[2])
