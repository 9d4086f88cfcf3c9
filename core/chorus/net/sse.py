"""A small incremental Server-Sent Events parser for upstream streams (bytes in, data out)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


class EventTooLarge(ValueError):
    """One event (or one line still waiting for its end) is larger than the parser's limit."""


async def iter_sse_data(chunks: AsyncIterable[bytes], max_event_bytes: int | None = None) -> AsyncIterator[bytes]:
    """Yield the ``data`` payload of every event in a byte stream.

    Multi-line ``data:`` fields are joined with ``\\n``; comments, ``event:``, ``id:`` and
    ``retry:`` lines are skipped; ``\\r\\n`` and ``\\n`` line endings are both accepted. Each read is
    scanned once by offset (a read holding many events is not re-copied per line).

    With ``max_event_bytes``, an event whose data (with the part of a line not ended yet) grows past
    it raises :class:`EventTooLarge`, so an upstream cannot make the parser hold an unbounded event.
    """
    buffer = b""
    data: list[bytes] = []
    size = 0  # bytes of ``data``
    limit = max_event_bytes
    async for chunk in chunks:
        buffer = buffer + chunk if buffer else chunk
        start = 0
        find = buffer.find
        while True:
            newline = find(b"\n", start)
            if newline < 0:
                break
            end = newline - 1 if newline > start and buffer[newline - 1] == 13 else newline  # 13: "\r"
            if end == start:  # blank line: the event is complete
                start = newline + 1
                if data:
                    yield b"\n".join(data) if len(data) > 1 else data[0]
                    data = []
                    size = 0
                continue
            if buffer.startswith(b"data:", start):
                value = start + 5
                if value < end and buffer[value] == 32:  # 32: " "
                    value += 1
                data.append(buffer[value:end])
                size += end - value
                if limit is not None and size > limit:
                    raise EventTooLarge(f"an event is larger than {limit} bytes")
            start = newline + 1
        buffer = buffer[start:] if start else buffer
        if limit is not None and size + len(buffer) > limit:
            raise EventTooLarge(f"an event is larger than {limit} bytes")
    if buffer.startswith(b"data:"):
        tail = buffer[5:].rstrip(b"\r")
        data.append(tail[1:] if tail.startswith(b" ") else tail)
    if data:
        yield b"\n".join(data)
