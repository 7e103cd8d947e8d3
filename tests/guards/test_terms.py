from __future__ import annotations

from proxy.guards.terms import Corpus, Lexicon, decode_terms, encode_terms


def test_terms_ignore_urls_numbers_ids_and_timestamps() -> None:
    lex = Lexicon()
    a = lex.terms("Build 4821 of the compiler failed at 2025-01-01T10:00:00Z, see https://ci.example/run/77 [id 9f3a2c]")
    b = lex.terms("Build 13 of the compiler failed at 2025-03-09T22:14:05Z, see https://ci.example/run/12 [id 0be771]")
    assert a == b and a


def test_terms_fold_word_forms_and_drop_stop_words() -> None:
    lex = Lexicon()
    assert lex.terms("the sources were searched") == lex.terms("source searching")


def test_encoded_terms_decode_to_the_same_set() -> None:
    terms = Lexicon().terms("population of the harbor district")
    assert decode_terms(encode_terms(terms)) == terms


def test_novelty_is_zero_for_seen_words_and_one_for_new_ones() -> None:
    lex = Lexicon()
    corpus = Corpus([lex.terms("copper harbor census figures")])
    assert corpus.novelty(lex.terms("census figures for copper harbor")) == 0.0
    assert corpus.novelty(lex.terms("glacier turbine vineyard")) == 1.0


def test_words_every_document_holds_weigh_less_than_rare_ones() -> None:
    lex = Lexicon()
    docs = [lex.terms(f"ledger status {w}") for w in ("alpha", "bravo", "charlie", "delta")]
    corpus = Corpus(docs)
    (ledger,) = lex.terms("ledger")
    (alpha,) = lex.terms("alpha")
    assert corpus.weight(ledger) < corpus.weight(alpha)


def test_frequent_english_words_count_less_as_news() -> None:
    lex = Lexicon()
    corpus = Corpus([lex.terms("zenrum quabel torvik")])
    common = corpus.novelty(lex.terms("zenrum quabel torvik find information"), lex.common)
    rare = corpus.novelty(lex.terms("zenrum quabel torvik vennix drapel"), lex.common)
    assert common < rare


def test_recent_documents_count_as_seen_but_not_as_frequent() -> None:
    lex = Lexicon()
    loop = [lex.terms("revised harbor note covering the ferry concern") for _ in range(3)]
    older = [lex.terms(f"ledger entry {w}") for w in ("alpha", "bravo", "charlie")]
    corpus = Corpus(loop + older)
    again = lex.terms("harbor note ferry concern attached")
    assert corpus.novelty(again, recent=loop) < corpus.novelty(again)
