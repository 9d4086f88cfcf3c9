"""Parsing uploaded files into sections: every format, its structure, and clear refusals."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from chorus.contract.documents import ParsedDocument, Section
from chorus.runtime.knowledge.chunking import document_text
from chorus.runtime.knowledge.parsing import ParseError, detect_format, parse

DATA = Path(__file__).parent / "data" / "knowledge"


def load(name: str, content_type: str | None = None) -> ParsedDocument:
    return parse((DATA / name).read_bytes(), name, content_type)


def make_pdf(pages: list[list[str]], *, title: str = "", password: str | None = None) -> bytes:
    """A real PDF with one Helvetica text line per string on each page (empty list: no text)."""
    writer = PdfWriter()
    font = DictionaryObject({
        NameObject("/Type"): NameObject("/Font"),
        NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica"),
    })
    for lines in pages:
        page = writer.add_blank_page(612, 792)
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        ops.append("ET")
        stream = DecodedStreamObject()
        stream.set_data("\n".join(ops).encode("latin-1"))
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        page.replace_contents(stream)
    if title:
        writer.add_metadata({"/Title": title, "/Author": "Chorus Tests"})
    if password is not None:
        writer.encrypt(password, algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def by_headings(doc: ParsedDocument) -> dict[tuple[str, ...], list[Section]]:
    found: dict[tuple[str, ...], list[Section]] = {}
    for section in doc.sections:
        found.setdefault(tuple(section.headings), []).append(section)
    return found


def reason(data: bytes, filename: str, content_type: str | None = None) -> str:
    with pytest.raises(ParseError) as info:
        parse(data, filename, content_type)
    assert isinstance(info.value, ValueError)
    assert info.value.reason == str(info.value)
    return info.value.reason


# ---------------------------------------------------------------- Markdown


def test_markdown_front_matter_headings_code_and_table() -> None:
    doc = load("guide.md")
    assert doc.title == "Chorus Operator Guide"
    assert doc.url == "https://docs.example.test/guide"
    # Scalars other than title/url go to metadata; collections (tags) are left out.
    assert doc.metadata == {"format": "markdown", "version": 2, "audience": "operators", "draft": False}

    sections = by_headings(doc)
    assert list(sections) == [
        ("Operator Guide",),
        ("Operator Guide", "Installation", "Linux"),
        ("Operator Guide", "Installation", "macOS"),
        ("Operator Guide", "Configuration"),
        ("Operator Guide", "Tuning"),  # a setext H2 closes the Configuration section
    ]
    linux = sections[("Operator Guide", "Installation", "Linux")]
    assert [s.kind for s in linux] == ["text", "code"]
    assert linux[1].text.startswith("```bash\npython -m venv .venv\n")
    assert linux[1].text.endswith("chorus-gateway\n```")
    config = sections[("Operator Guide", "Configuration")]
    assert [s.kind for s in config] == ["text", "table"]
    table = config[1].text.split("\n")
    assert table[0] == "| key | default | meaning |" and len(table) == 4
    assert "chunk_overlap | 150" in table[3]
    # Headings live in the path, not in the text; front matter is not text either.
    text = document_text(doc)
    assert "#" not in text.replace("```", "") and "Tuning\n---" not in text
    assert "audience" not in text


def test_markdown_title_defaults_to_first_h1_and_fences_hide_headings() -> None:
    data = b"""Intro line.

Setext title
============

```python
# not a heading
x = 1
```

## Real heading
text under it

~~~
unclosed fence
## still code
"""
    doc = parse(data, "notes.markdown")
    assert doc.title == "Setext title"
    assert [(s.headings, s.kind) for s in doc.sections] == [
        ([], "text"),
        (["Setext title"], "code"),
        (["Setext title", "Real heading"], "text"),
        (["Setext title", "Real heading"], "code"),
    ]
    assert "# not a heading" in doc.sections[1].text
    assert doc.sections[3].text.endswith("## still code")


def test_markdown_thematic_breaks_are_not_front_matter() -> None:
    doc = parse(b"---\nThis is a normal paragraph.\n---\n\nMore text.\n", "a.md")
    # "---" under a paragraph line is a setext heading; nothing is swallowed as front matter.
    assert doc.metadata == {"format": "markdown"}
    assert doc.sections[0].headings == ["This is a normal paragraph."]
    assert doc.sections[0].text == "More text."


def test_markdown_front_matter_url_aliases_and_quotes() -> None:
    data = b"---\ntitle: 'It''s here' # comment\nsource_url: \"https://x.test/a\"\nlayout: doc\n---\nBody\n"
    doc = parse(data, "a.md")
    assert (doc.title, doc.url, doc.metadata["layout"]) == ("It's here", "https://x.test/a", "doc")


# ---------------------------------------------------------------- HTML


def test_html_main_text_without_chrome() -> None:
    doc = load("page.html")
    assert doc.title == "Rate limits & quotas"
    assert doc.url == "https://docs.example.test/limits"  # canonical beats og:url
    assert doc.metadata["language"] == "en"
    assert doc.metadata["description"] == "How Chorus limits requests."
    text = document_text(doc)
    for noise in ("SCRIPT-NOISE", "NAVSTYLE", "HEADER-NOISE", "NAV-NOISE", "COOKIE-NOISE",
                  "ASIDE-NOISE", "FORM-NOISE", "INLINE-SCRIPT-NOISE", "FOOTER-NOISE", "<", "Pricing"):
        assert noise not in text, noise
    assert [(s.headings, s.kind) for s in doc.sections] == [
        (["Rate limits"], "text"),
        (["Rate limits", "Headers"], "text"),
        (["Rate limits", "Headers"], "text"),
        (["Rate limits", "Headers", "Example"], "code"),
        (["Rate limits", "Quotas"], "table"),
    ]
    assert doc.sections[0].text == "Every workspace has a request budget per minute.\nIt resets every minute."
    assert doc.sections[2].text == "- x-ratelimit-remaining\n- x-ratelimit-reset"
    assert doc.sections[3].text == (
        "curl -i https://chorus.example.test/v1/models\n  x-ratelimit-remaining: 59"
    )
    assert doc.sections[4].text == "Plan | Requests per minute\nFree | 60\nTeam | 600"


def test_html_article_fallback_og_url_and_h1_title() -> None:
    data = b"""<html><body><div class=menu><p>Outside text</p></div>
    <article><header><h1>Post &mdash; one</h1></header><p>Inside <em>text</em>.</p>
    <footer>share</footer></article>
    <meta property="og:url" content="https://x.test/post"></body></html>"""
    doc = parse(data, "post.htm")
    assert doc.title == "Post \u2014 one"  # no <title>: first h1
    assert doc.url == "https://x.test/post"
    assert doc.sections == [Section(headings=["Post \u2014 one"], text="Inside text.")]


def test_html_without_regions_keeps_body_and_skips_hidden() -> None:
    data = (b"<p>Visible one<p>Visible two<div hidden><p>gone</p><div>still gone</div></div>"
            b"<p aria-hidden=true>also gone</p><p>Visible three<p hidden>unclosed gone<p>Visible four")
    doc = parse(data, "x.html")
    assert [s.text for s in doc.sections] == ["Visible one", "Visible two", "Visible three", "Visible four"]


def test_html_malformed_marked_section_is_tolerated() -> None:
    # html.parser raises on this; the page is re-read with the bad declaration as text.
    doc = parse(b'<p>Before</p><!["oops]><p>After</p>', "bad.html")
    assert [s.text for s in doc.sections] == ["Before", '<!["oops]>', "After"]


def test_html_declared_legacy_charset() -> None:
    data = '<meta charset="iso-8859-1"><p>Caf\u00e9 cr\u00e8me</p>'.encode("latin-1")
    assert parse(data, "x.html").sections[0].text == "Caf\u00e9 cr\u00e8me"


# ---------------------------------------------------------------- PDF


def test_pdf_pages_become_sections() -> None:
    data = make_pdf(
        [["Quarterly report", "Revenue grew by 12 percent."], [], ["Outlook (draft)", "Growth in Europe."]],
        title="Q3 Report",
    )
    doc = parse(data, "report.pdf")
    assert doc.title == "Q3 Report"
    assert doc.metadata == {"format": "pdf", "pages": 3, "author": "Chorus Tests"}
    assert doc.sections == [
        Section(headings=["Page 1"], text="Quarterly report\nRevenue grew by 12 percent."),
        Section(headings=["Page 3"], text="Outlook (draft)\nGrowth in Europe."),
    ]


def test_pdf_detected_by_magic_without_extension() -> None:
    data = make_pdf([["Sniffed"]])
    assert detect_format(data, "upload", None) == "pdf"
    assert parse(data, "upload", "application/octet-stream").sections[0].text == "Sniffed"


def test_pdf_refusals() -> None:
    assert reason((DATA / "corrupt.pdf").read_bytes(), "corrupt.pdf").startswith("corrupt or invalid PDF")
    assert reason(b"not a pdf at all", "fake.pdf").startswith("corrupt or invalid PDF")
    assert reason(make_pdf([["secret"]], password="hunter2"), "locked.pdf") == (
        "encrypted PDF: a password is required"
    )
    assert "no extractable text" in reason(make_pdf([[], []]), "scan.pdf")


def test_pdf_with_empty_user_password_opens() -> None:
    doc = parse(make_pdf([["Readable anyway"]], password=""), "open.pdf")
    assert doc.sections[0].text == "Readable anyway"


# ---------------------------------------------------------------- JSON, JSON Lines


def test_json_array_rows() -> None:
    doc = load("products.json")
    assert doc.metadata == {"format": "json", "records": 3}
    assert [s.kind for s in doc.sections] == ["row", "row", "row"]
    assert doc.sections[0].text == 'sku: CH-100\nname: Chorus Basic\nprice: 0\ntags: ["free", "self-hosted"]'
    assert doc.sections[1].text == 'sku: CH-200\nname: Chorus Team\nprice: 49.5\nlimits: {"rpm": 600, "seats": 10}'
    assert doc.sections[2].text.endswith("description: Dedicated support and SSO.")


def test_json_single_object_and_lines_in_json_file() -> None:
    doc = parse(b'{"name": "Chorus", "nested": {"a": [1, 2]}, "ok": true}', "one.json")
    assert doc.sections == [Section(text='name: Chorus\nnested: {"a": [1, 2]}\nok: true')]
    lines = parse(b'{"a": 1}\n{"a": 2}\n', "really-lines.json")
    assert [s.text for s in lines.sections] == ["a: 1", "a: 2"]


def test_json_lines() -> None:
    doc = load("faq.jsonl")
    assert doc.metadata == {"format": "jsonl", "records": 3}
    assert doc.sections[1] == Section(
        text="id: 2\nquestion: Is there a free plan?\nanswer: Yes, Chorus Basic.", kind="row"
    )


def test_json_refusals() -> None:
    assert reason((DATA / "invalid.json").read_bytes(), "invalid.json").startswith("invalid JSON: ")
    assert "line 2" in reason((DATA / "invalid.json").read_bytes(), "invalid.json")
    assert reason(b"[]", "empty.json") == "JSON array is empty"
    assert reason(b'{"a": 1}\n{oops}\n', "x.ndjson").startswith("invalid JSON on line 2:")


# ---------------------------------------------------------------- CSV, TSV


def test_csv_rows_with_sniffed_delimiter() -> None:
    doc = load("people.csv")
    assert doc.metadata == {"format": "csv", "records": 3, "columns": ["name", "team", "city"]}
    assert [s.text for s in doc.sections] == [
        "name: Ada Lovelace\nteam: Research\ncity: London",
        "name: Hopper, Grace\nteam: Compilers\ncity: New York",
        "name: Alan Turing\ncity: Manchester",  # empty cells are left out
    ]
    assert {s.kind for s in doc.sections} == {"row"}


def test_tsv_and_ragged_rows() -> None:
    doc = parse(b"a\tb\n1\t2\t3\n", "t.tsv")
    assert doc.sections[0].text == "a: 1\nb: 2\ncolumn_3: 3"
    assert reason(b"just,a,header\n", "h.csv") == "CSV has a header row but no data rows"


# ---------------------------------------------------------------- plain text and decoding


def test_plain_text_paragraphs_and_title() -> None:
    doc = load("notes.txt")
    assert doc.title == "Release notes"
    assert [s.text for s in doc.sections] == [
        "Release notes",
        "Version 1.2 adds dataset ingestion.\nIt also adds citations.",
        "Version 1.1 fixed streaming.",
    ]
    long_first_line = parse(b"x" * 300 + b"\n\nmore", "a.log")
    assert long_first_line.title == ""


def test_text_encodings() -> None:
    assert parse("\ufeffBOM text\r\nline".encode(), "a.txt").sections[0].text == "BOM text\nline"
    assert parse("UTF-16 \u00e9".encode("utf-16"), "a.txt").sections[0].text == "UTF-16 \u00e9"
    assert parse("Windows \u20ac price".encode("cp1252"), "a.txt").sections[0].text == "Windows \u20ac price"
    assert reason(b"caf\x81 \x8d\x90", "a.txt") == "not valid UTF-8 text (bad bytes at offset 3)"


def test_text_refusals() -> None:
    assert reason((DATA / "garbage.txt").read_bytes(), "garbage.txt") == "binary data, not text"
    assert reason((DATA / "empty.txt").read_bytes(), "empty.txt") == "empty file"
    assert reason(b"  \n\n\t ", "blank.md") == "empty file"
    assert reason(b"# Only a heading\n", "h.md") == "no text content found"
    assert reason(b"<script>only()</script>", "s.html") == "no text content found"


# ---------------------------------------------------------------- format detection


@pytest.mark.parametrize(
    ("filename", "content_type", "data", "expected"),
    [
        ("README", "text/markdown; charset=utf-8", b"# T\n\nx", "markdown"),
        ("page", "text/html", b"<p>x</p>", "html"),
        ("data", "application/x-ndjson", b'{"a":1}', "jsonl"),
        ("data", "application/vnd.api+json", b'{"a":1}', "json"),
        ("notes.rst", "text/x-rst", b"Title\n=====", "text"),
        ("upload", None, b"  <!DOCTYPE html><p>x</p>", "html"),
        ("upload", "application/octet-stream", b'[{"a": 1}]', "json"),
        ("script.py", None, b"print('hi')", "text"),
        ("doc.MD", "text/plain", b"x", "markdown"),  # the extension wins
    ],
)
def test_detect_format(filename: str, content_type: str | None, data: bytes, expected: str) -> None:
    assert detect_format(data, filename, content_type) == expected


def test_unsupported_types() -> None:
    assert reason(b"PK\x03\x04\x14\x00\x06\x00" * 20, "report.docx") == (
        "unsupported file type '.docx': binary content"
    )
    assert reason(b"\x89PNG\r\n", "image.png", "image/png") == "unsupported file type 'image/png' (.png)"
    assert reason(b"\x00\x01\x02binary", "blob") == "unsupported file type: binary content"
