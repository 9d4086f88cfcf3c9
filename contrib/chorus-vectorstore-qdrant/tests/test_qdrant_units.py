"""Unit tests: the lexical analyzer, filter compilation, generations and file records."""

from __future__ import annotations

import pytest

pytest.importorskip("qdrant_client", reason="qdrant-client is not installed")
pytest.importorskip("chorus_vectorstore_qdrant", reason="chorus-vectorstore-qdrant is not installed")

from chorus_vectorstore_qdrant import points as pt
from chorus_vectorstore_qdrant.filters import compile_filter
from chorus_vectorstore_qdrant.lexical import MAX_QUERY_TERMS, Analyzer, fold, term_id, tokens
from qdrant_client import models

from chorus.errors import InvalidRequest


def test_tokens_fold_case_and_diacritics() -> None:
    assert fold("Ünïcode CAFÉ ﬁle") == "unicode cafe file"
    assert list(tokens('"Foo" AND (bar* foo_baz 日本語')) == ["foo", "and", "bar", "foo", "baz", "日本語"]
    assert list(tokens("x" * 65 + " short")) == ["short"]
    assert list(tokens("!!! ___ ")) == []


def test_term_ids_are_stable() -> None:
    # Stored vectors depend on these values: changing them needs a new analyzer signature.
    assert term_id("alpha") == 238326196
    assert term_id("rotat") == 3919504870
    assert 0 <= term_id("日本語") < 2**32


def test_stemming_merges_inflections() -> None:
    analyzer = Analyzer("english")
    assert analyzer.query("rotating")[0] == analyzer.query("rotate")[0] == analyzer.query("Rotated")[0]
    assert len(analyzer.query("rotating rotate")[0]) == 1
    assert Analyzer("").query("rotating rotate")[0] != Analyzer("").query("rotate")[0]
    assert analyzer.signature == {"tokenizer": "words-nfkd-casefold-v1", "stemmer": "english", "hash": "blake2b-32"}


def test_query_vectors() -> None:
    analyzer = Analyzer()
    indices, values = analyzer.query("Refund refund REFUND policy")
    assert len(indices) == 2 and values == [1.0, 1.0] and indices == sorted(indices)
    assert analyzer.query("")[0] == []
    many = " ".join(f"w{i}" for i in range(500))
    assert len(analyzer.query(many)[0]) == MAX_QUERY_TERMS


def test_bm25_term_weights() -> None:
    analyzer = Analyzer(k1=1.2, b=0.75, avg_len=10.0)

    def weight(text: str, term: str = "anvil", **kw: object) -> float:
        indices, values = analyzer.document(text, **kw)  # type: ignore[arg-type]
        return dict(zip(indices, values, strict=True)).get(analyzer.token_id(term), 0.0)

    one = weight("anvil " + "x " * 9)
    assert weight("anvil anvil " + "x " * 8) > one                  # more occurrences, more weight...
    assert weight("anvil " * 50) < 1.2 + 1                           # ...saturating below k1 + 1
    assert weight("anvil " + "x " * 40) < one                        # longer chunks weigh each term less
    assert weight("x " * 10, title="Anvil") > 0                      # titles and headings count
    assert weight("x " * 9, title="Anvil") > weight("x " * 9, headings=["Anvil"])
    assert analyzer.document("") == ([], [])
    assert Analyzer(title_weight=0).document("", title="Anvil") == ([], [])


# -- filters --------------------------------------------------------------------------------------


def test_filter_constants_fold() -> None:
    never = {"type": "in", "key": "a", "value": []}
    always = {"type": "nin", "key": "a", "value": []}
    eq = {"type": "eq", "key": "a", "value": "x"}
    assert compile_filter(never) is False
    assert compile_filter(always) is True
    assert compile_filter({"type": "and", "filters": [never, eq]}) is False
    assert compile_filter({"type": "or", "filters": [always, eq]}) is True
    assert compile_filter({"type": "and", "filters": [always, eq]}) == compile_filter(eq)
    assert compile_filter({"type": "or", "filters": [never, never]}) is False


def test_filter_shapes() -> None:
    assert compile_filter({"type": "eq", "key": "a.b c", "value": "x"}) == models.FieldCondition(
        key='attributes."a.b c"', match=models.MatchValue(value="x"))
    # numbers compare as numbers whether stored as int or float
    assert compile_filter({"type": "eq", "key": "n", "value": 2}) == models.FieldCondition(
        key='attributes."n"', range=models.Range(gte=2, lte=2))
    assert compile_filter({"type": "ne", "key": "b", "value": True}) == models.Filter(must_not=[
        models.FieldCondition(key='attributes."b"', match=models.MatchValue(value=True))])
    assert compile_filter({"type": "in", "key": "s", "value": ["x", "y", "x"]}) == models.FieldCondition(
        key='attributes."s"', match=models.MatchAny(any=["x", "y"]))
    assert compile_filter({"type": "gte", "key": "n", "value": 1.5}) == models.FieldCondition(
        key='attributes."n"', range=models.Range(gte=1.5))


@pytest.mark.parametrize("value", ["2020", True])
def test_ordering_takes_numbers_only(value: object) -> None:
    with pytest.raises(InvalidRequest, match="numbers"):
        compile_filter({"type": "gt", "key": "year", "value": value})


# -- generations and records ----------------------------------------------------------------------


def test_generations_increase_and_stay_exact_as_doubles() -> None:
    generations = pt.Generations()
    first = generations.next()
    assert generations.next() > first
    far = first + 10**9
    assert generations.next(floor=far) == far + 1
    assert generations.next() == far + 2
    assert far < 2**53 and float(far) == far


def test_records_show_only_their_write() -> None:
    record = pt.FileRecord(5, "w1", 2, False)
    assert record.shows({"write": "w1"}) and not record.shows({"write": "w0"})
    assert not pt.FileRecord(6, "w1", 0, True).shows({"write": "w1"})
    payload = pt.record_payload("acme", "docs", "f", record)
    assert pt.FileRecord.from_payload(payload) == record
    assert pt.FileRecord.from_payload({"kind": "chunk"}) is None
    assert pt.record_id("acme", "docs", "f") != pt.record_id("globex", "docs", "f")
    assert pt.chunk_id("acme", "docs", "f", "w1", 0) != pt.chunk_id("acme", "docs", "f", "w2", 0)
