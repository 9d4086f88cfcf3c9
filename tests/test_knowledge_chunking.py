"""Structure-aware chunking: exact offsets, size limits, overlap, grouping and determinism."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from chorus.contract.documents import Chunk, ParsedDocument, Section
from chorus.runtime.knowledge.chunking import chunk_document, document_text
from chorus.runtime.knowledge.parsing import parse
from tests.test_knowledge_parsing import make_pdf

DATA = Path(__file__).parent / "data" / "knowledge"
FILES = ["guide.md", "page.html", "products.json", "faq.jsonl", "people.csv", "notes.txt"]


def chunks_of(doc: ParsedDocument, **kwargs: object) -> list[Chunk]:
    return chunk_document(doc, workspace="acme", dataset="vs_1", file_id="file-1", source="src", **kwargs)  # type: ignore[arg-type]


def check_invariants(doc: ParsedDocument, chunks: list[Chunk], max_chars: int) -> None:
    """Offsets slice the document text exactly; sizes, ids and order hold."""
    text = document_text(doc)
    for index, chunk in enumerate(chunks):
        assert chunk.index == index and chunk.id == f"file-1:{index}"
        assert text[chunk.start:chunk.end] == chunk.text
        assert chunk.text and chunk.text == chunk.text.strip()
        assert len(chunk.text) <= max_chars
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert before.start < after.start and before.end < after.end
    # Nothing is lost: every non-space character of the document is in some chunk.
    covered = bytearray(len(text))
    for chunk in chunks:
        covered[chunk.start:chunk.end] = b"\x01" * (chunk.end - chunk.start)
    assert all(covered[i] or text[i].isspace() for i in range(len(text)))


def words(rng: random.Random, count: int) -> str:
    vocabulary = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "omicron"]
    return " ".join(rng.choice(vocabulary) for _ in range(count))


def prose(rng: random.Random, sentences: int) -> str:
    return " ".join(words(rng, rng.randint(4, 18)).capitalize() + "." for _ in range(sentences))


def test_document_text_is_the_blank_line_join() -> None:
    doc = ParsedDocument(sections=[Section(text="a"), Section(text="b c")])
    assert document_text(doc) == "a\n\nb c"
    assert chunks_of(ParsedDocument()) == []


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("max_chars", [80, 300, 1200])
def test_invariants_on_every_fixture(name: str, max_chars: int) -> None:
    doc = parse((DATA / name).read_bytes(), name)
    check_invariants(doc, chunks_of(doc, max_chars=max_chars, overlap_chars=20), max_chars)


def test_invariants_on_pdf() -> None:
    doc = parse(make_pdf([["First page line."], ["Second page line."]], title="Two pages"), "two.pdf")
    chunks = chunks_of(doc)
    check_invariants(doc, chunks, 1200)
    assert [(c.headings, c.text, c.title) for c in chunks] == [
        (["Page 1"], "First page line.", "Two pages"),
        (["Page 2"], "Second page line.", "Two pages"),
    ]


def test_chunk_fields() -> None:
    doc = parse((DATA / "guide.md").read_bytes(), "guide.md")
    attributes = {"lang": "en"}
    chunks = chunk_document(doc, workspace="acme", dataset="vs_1", file_id="file-9", source="docs/guide.md",
                            attributes=attributes)
    assert [c.id for c in chunks] == [f"file-9:{i}" for i in range(len(chunks))]
    for chunk in chunks:
        assert (chunk.workspace, chunk.dataset, chunk.file_id, chunk.source) == ("acme", "vs_1", "file-9", "docs/guide.md")
        assert (chunk.title, chunk.url) == ("Chorus Operator Guide", "https://docs.example.test/guide")
        assert chunk.attributes == {"lang": "en"} and chunk.vector is None
    chunks[0].attributes["lang"] = "changed"
    assert chunks[1].attributes == {"lang": "en"} and attributes == {"lang": "en"}


def test_markdown_guide_structure() -> None:
    doc = parse((DATA / "guide.md").read_bytes(), "guide.md")
    chunks = chunks_of(doc)
    check_invariants(doc, chunks, 1200)
    # Headings never appear in the text; they are in the path.
    assert not any("Installation" in c.text or c.text.startswith("#") for c in chunks)
    by_path = [(tuple(c.headings), c.text) for c in chunks]
    assert [path for path, _ in by_path] == [
        ("Operator Guide",),
        ("Operator Guide", "Installation"),
        ("Operator Guide", "Configuration"),
        ("Operator Guide", "Tuning"),
        ("Operator Guide", "Tuning"),
    ]
    # The tiny Linux and macOS sections share the top-level heading: kept together, common path.
    assert "pip install" in by_path[1][1] and "Homebrew" in by_path[1][1]
    # The table is kept whole with its introduction.
    assert by_path[2][1].startswith("Settings live in a TOML file.")
    assert by_path[2][1].endswith("| chunk_overlap | 150 | characters repeated between chunks |")

    # Smaller chunks: the Linux section (text and code) is too big to share a chunk with macOS.
    chunks = chunks_of(doc, max_chars=400, overlap_chars=80)
    check_invariants(doc, chunks, 400)
    assert ["Operator Guide", "Installation", "Linux"] in [c.headings for c in chunks]
    assert ["Operator Guide", "Installation", "macOS"] in [c.headings for c in chunks]
    # The long Tuning paragraph is split, every piece under its own heading path.
    tuning = [c for c in chunks if c.headings == ["Operator Guide", "Tuning"]]
    assert len(tuning) >= 3
    assert tuning[0].text.startswith("Retrieval quality") and tuning[-1].text.endswith("The end.")


def test_long_section_pieces_overlap_at_sentence_boundaries() -> None:
    rng = random.Random(7)
    body = prose(rng, 120)
    doc = ParsedDocument(sections=[Section(headings=["Long"], text=body)])
    chunks = chunks_of(doc, max_chars=500, overlap_chars=100)
    check_invariants(doc, chunks, 500)
    assert len(chunks) > 5
    sentence_starts = 0
    for before, after in zip(chunks, chunks[1:], strict=False):
        shared = before.end - after.start
        assert 33 <= shared <= 150, shared  # about overlap_chars
        assert body[after.start - 1] == " "  # the next piece starts on a word...
        sentence_starts += body[after.start - 2] == "."  # ...usually a sentence
        assert before.text.endswith(".")  # pieces end at a sentence end
        assert before.text.endswith(body[after.start:before.end])
    assert sentence_starts >= 0.8 * (len(chunks) - 1)
    plain = chunks_of(doc, max_chars=500, overlap_chars=0)
    assert all(after.start > before.end for before, after in zip(plain, plain[1:], strict=False))


def test_split_prefers_paragraphs_then_words_then_hard_cuts() -> None:
    rng = random.Random(3)
    paragraphs = "\n\n".join(words(rng, 50) for _ in range(6))  # ~330 chars each, no sentence ends
    doc = ParsedDocument(sections=[Section(text=paragraphs)])
    pieces = chunks_of(doc, max_chars=700, overlap_chars=0)
    check_invariants(doc, pieces, 700)
    assert all(c.text in paragraphs.split("\n\n") or "\n\n" in c.text for c in pieces)
    assert all(document_text(doc)[c.end:c.end + 2] in ("\n\n", "") for c in pieces)

    no_punctuation = ParsedDocument(sections=[Section(text=words(rng, 400))])
    pieces = chunks_of(no_punctuation, max_chars=200, overlap_chars=40)
    check_invariants(no_punctuation, pieces, 200)
    text = document_text(no_punctuation)
    assert all(text[c.start - 1] == " " for c in pieces[1:])  # every piece starts on a word
    assert all(c.end == len(text) or text[c.end] == " " for c in pieces)  # and ends on one

    token = ParsedDocument(sections=[Section(text="x" * 2500)])
    pieces = chunks_of(token, max_chars=1000, overlap_chars=100)
    check_invariants(token, pieces, 1000)
    assert [len(c.text) for c in pieces] == [1000, 1000, 700]


def test_heading_paths_are_not_merged_unless_both_small() -> None:
    rng = random.Random(5)
    # 160 characters: more than an eighth of max_chars, so not "small".
    big_a, big_b = prose(rng, 30)[:160].strip(), prose(rng, 30)[:160].strip()
    doc = ParsedDocument(sections=[
        Section(headings=["A", "x"], text=big_a),
        Section(headings=["A", "y"], text=big_b),
        Section(headings=["A", "z"], text="small z"),
        Section(headings=["A", "w"], text="small w"),
        Section(headings=["B"], text="small b"),
        Section(headings=["B"], text="same path b"),
        Section(headings=["B", "p", "q"], text="grandchild"),
        Section(headings=["B", "p", "q", "r"], text="its child"),
    ])
    chunks = chunks_of(doc, max_chars=1200)
    check_invariants(doc, chunks, 1200)
    assert [(c.headings, c.text) for c in chunks] == [
        (["A", "x"], big_a),
        (["A", "y"], big_b),
        (["A"], "small z\n\nsmall w"),  # small siblings: together, under their common path
        (["B"], "small b\n\nsame path b"),  # another top-level heading starts a new chunk
        (["B", "p", "q"], "grandchild\n\nits child"),  # parent and child; not two levels apart
    ]


def test_same_path_paragraphs_are_packed() -> None:
    rng = random.Random(11)
    paragraphs = [prose(rng, 2)[:150] for _ in range(40)]
    doc = ParsedDocument(sections=[Section(headings=["H"], text=p) for p in paragraphs])
    chunks = chunks_of(doc, max_chars=1000)
    check_invariants(doc, chunks, 1000)
    assert len(chunks) < 10
    assert all(len(c.text) > 700 for c in chunks[:-1])
    assert [p for c in chunks for p in c.text.split("\n\n")] == paragraphs  # whole paragraphs only


def test_tables_and_code_whole_when_they_fit_split_by_lines_otherwise() -> None:
    table = "\n".join(["| n | square |", "|---|---|"] + [f"| {i} | {i * i} |" for i in range(60)])
    code = "\n".join(f"    value_{i} = compute({i})  # step {i}" for i in range(80))
    small_code = "```\nprint('fits')\n```"
    doc = ParsedDocument(sections=[
        Section(headings=["T"], text="Intro to the table."),
        Section(headings=["T"], text=table, kind="table"),
        Section(headings=["C"], text=small_code, kind="code"),
        Section(headings=["C"], text=code.strip(), kind="code"),
    ])
    chunks = chunks_of(doc, max_chars=400, overlap_chars=100)
    check_invariants(doc, chunks, 400)
    table_lines, code_lines = set(table.split("\n")), {line.strip() for line in code.split("\n")}
    table_chunks = [c for c in chunks if c.headings == ["T"]]
    assert table_chunks[0].text == "Intro to the table."  # the table alone is too long to join it
    assert all(set(c.text.split("\n")) <= table_lines for c in table_chunks[1:])
    code_chunks = [c for c in chunks if c.headings == ["C"]]
    assert code_chunks[0].text == small_code
    assert all({line.strip() for line in c.text.split("\n")} <= code_lines for c in code_chunks[1:])
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.start > before.end  # line splits do not overlap

    fits = ParsedDocument(sections=[Section(text="Before."), Section(text=table[:300], kind="table")])
    assert [c.text for c in chunks_of(fits, max_chars=400)] == [f"Before.\n\n{table[:300]}".strip()]


def test_rows_are_grouped_whole_and_never_mixed_with_text() -> None:
    records = [{"id": i, "name": f"item {i}", "note": "x" * (i % 7) * 10} for i in range(50)]
    data = json.dumps(records).encode()
    doc = parse(data, "items.json")
    chunks = chunks_of(doc, max_chars=300)
    check_invariants(doc, chunks, 300)
    assert 5 < len(chunks) < 50
    rows = [s.text for s in doc.sections]
    assert [row for c in chunks for row in c.text.split("\n\n")] == rows  # every row whole, in order
    assert all(c.headings == [] for c in chunks)

    huge = "\n".join(f"field_{i}: {'v' * 40}" for i in range(20))
    mixed = ParsedDocument(sections=[
        Section(text="a: 1", kind="row"),
        Section(text="Prose paragraph.", kind="text"),
        Section(text="b: 2", kind="row"),
        Section(text="c: 3", kind="row"),
        Section(text=huge, kind="row"),
    ])
    chunks = chunks_of(mixed, max_chars=300)
    check_invariants(mixed, chunks, 300)
    assert [c.text for c in chunks[:3]] == ["a: 1", "Prose paragraph.", "b: 2\n\nc: 3"]
    assert "\n".join(c.text for c in chunks[3:]) == huge  # a row alone too long: split by lines


def test_deterministic() -> None:
    for name in FILES:
        data = (DATA / name).read_bytes()
        first = chunks_of(parse(data, name), max_chars=200, overlap_chars=50)
        second = chunks_of(parse(data, name), max_chars=200, overlap_chars=50)
        assert first == second


def test_rejects_bad_sizes() -> None:
    doc = ParsedDocument(sections=[Section(text="x")])
    with pytest.raises(ValueError, match="max_chars"):
        chunks_of(doc, max_chars=10)
    with pytest.raises(ValueError, match="overlap_chars"):
        chunks_of(doc, max_chars=100, overlap_chars=60)


def test_one_megabyte_of_markdown_keeps_the_invariants() -> None:
    rng = random.Random(42)
    parts: list[str] = []
    size = 0
    chapter = 0
    while size < 1_000_000:
        chapter += 1
        block = [f"# Chapter {chapter}"]
        for section in range(8):
            block.append(f"## Part {chapter}.{section}")
            block.extend(prose(rng, rng.randint(1, 25)) for _ in range(rng.randint(1, 6)))
            if section % 3 == 0:
                block.append("```\n" + "\n".join(f"x = {i}" for i in range(rng.randint(3, 150))) + "\n```")
        text = "\n\n".join(block)
        parts.append(text)
        size += len(text)
    data = "\n\n".join(parts).encode()
    doc = parse(data, "big.md")
    chunks = chunks_of(doc)  # speed is measured in benchmarks/, never asserted in tests
    check_invariants(doc, chunks, 1200)
    assert len(chunks) > 800
