"""Record parsers: JSON, JSON Lines, CSV and TSV, one ``row`` section per record."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from chorus.contract.documents import ParsedDocument, Section
from chorus.runtime.knowledge.parsing.errors import ParseError
from chorus.runtime.knowledge.parsing.text import _decode

# --------------------------------------------------------------------------- JSON, JSON Lines


def _value_text(value: Any) -> str:
    """Strings as they are, scalars as JSON literals, nested values as one-line JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _record_text(record: Any) -> str:
    """``key: value`` lines for an object (null and empty-string fields left out); else the value."""
    if isinstance(record, dict):
        lines = (
            f"{key}: {_value_text(value)}"
            for key, value in record.items()
            if value is not None and value != ""
        )
        return "\n".join(lines).strip()
    return _value_text(record).strip()


def _records_document(records: list[Any]) -> ParsedDocument:
    sections = [Section(text=text, kind="row") for text in map(_record_text, records) if text]
    return ParsedDocument(sections=sections, metadata={"records": len(records)})


def _parse_json(data: bytes) -> ParsedDocument:
    """An array: one ``row`` section per element; an object or scalar: one ``key: value`` section.

    A ``.json`` file that is really JSON Lines (one value per line) is read as JSON Lines.
    """
    text = _decode(data)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            try:
                return _parse_json_lines(data)
            except ParseError:
                pass
        raise ParseError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if isinstance(value, list):
        if not value:
            raise ParseError("JSON array is empty")
        return _records_document(value)
    return ParsedDocument(sections=[Section(text=_record_text(value))])


def _parse_json_lines(data: bytes) -> ParsedDocument:
    """One ``row`` section per non-blank line, each a JSON value."""
    records = []
    for number, line in enumerate(_decode(data).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ParseError(f"invalid JSON on line {number}: {exc.msg} at column {exc.colno}") from None
    if not records:
        raise ParseError("no JSON records")
    return _records_document(records)


# --------------------------------------------------------------------------- CSV, TSV

_DELIMITERS = ",;\t|"


def _sniff_delimiter(text: str) -> str:
    """The delimiter of a CSV: ``csv.Sniffer`` on the first lines, else the most frequent candidate
    in the header line, else a comma."""
    sample = text[:65536]
    if len(text) > len(sample) and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        delimiter = ""
    if delimiter in _DELIMITERS and delimiter:
        return delimiter
    header = sample.split("\n", 1)[0]
    counts = {d: header.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: (counts[d], -_DELIMITERS.index(d)))
    return best if counts[best] else ","


def _parse_delimited(data: bytes, delimiter: str | None) -> ParsedDocument:
    """The first non-blank row is the header; each later row is a ``row`` section of
    ``name: value`` lines (empty cells left out). Extra cells are named ``column_N``."""
    text = _decode(data)
    if delimiter is None:
        delimiter = _sniff_delimiter(text)
    try:
        rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in row)]
    except csv.Error as exc:
        raise ParseError(f"invalid CSV: {exc}") from None
    if not rows:
        raise ParseError("CSV has no rows")
    header = [name.strip() or f"column_{i}" for i, name in enumerate(rows[0], start=1)]
    if len(rows) == 1:
        raise ParseError("CSV has a header row but no data rows")
    sections = []
    for row in rows[1:]:
        lines = []
        for i, cell in enumerate(row):
            value = cell.strip()
            if value:
                name = header[i] if i < len(header) else f"column_{i + 1}"
                lines.append(f"{name}: {value}")
        if lines:
            sections.append(Section(text="\n".join(lines), kind="row"))
    return ParsedDocument(sections=sections, metadata={"records": len(rows) - 1, "columns": header})
