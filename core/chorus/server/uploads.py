"""Multipart uploads read as they arrive: the file goes to a temporary file, the cap holds while reading.

``POST /v1/files`` may receive a body of any size, announced or chunked. :func:`read_upload` feeds
it to an incremental multipart parser (``multipart``, the one Litestar uses) as it arrives, writes
the file part to an anonymous temporary file off the event loop (hashing it on the way), and fails
with 413 ``file_too_large`` the moment the file, or the whole body, outgrows the cap: memory stays
flat whatever the client sends. Form fields other than the file are small (at most
:data:`MAX_FIELD_BYTES`); a client that disconnects mid-body is :class:`~chorus.server.body.ClientGone`.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from typing import IO, Any

from multipart import MultipartError, MultipartSegment, ParserLimitReached, PushMultipartParser

from chorus.contract.errors import InvalidRequest, UnsupportedMediaType
from chorus.server.body import ClientGone

Receive = Callable[[], Awaitable[Mapping[str, Any]]]

MAX_FIELD_BYTES = 64 * 1024  # a form field that is not the file (``purpose``)
MAX_PARTS = 16
FORM_OVERHEAD = 64 * 1024  # what a body may hold beyond the file: boundaries, part headers, fields
_FLUSH_BYTES = 1024 * 1024  # file bytes gathered before one write to disk


def too_large(limit: int) -> InvalidRequest:
    return InvalidRequest(f"The file is larger than {limit} bytes.", code="file_too_large", status_code=413)


class Upload:
    """The file part of an upload, on disk until :meth:`read`; close it when done."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.TemporaryFile(prefix="chorus-upload-")  # noqa: SIM115 - closed by close()
        self.filename = ""
        self.size = 0
        self.sha256 = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    async def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.size += len(data)
        if self._pending_bytes >= _FLUSH_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        data, self._pending, self._pending_bytes = b"".join(self._pending), [], 0

        def write() -> None:
            self.sha256.update(data)
            self.file.write(data)

        await asyncio.to_thread(write)

    async def read(self) -> bytes:
        """The whole file (it is within the cap)."""
        await self.flush()

        def read() -> bytes:
            self.file.seek(0)
            return self.file.read()

        return await asyncio.to_thread(read)

    def close(self) -> None:
        self.file.close()


def boundary_of(content_type: str | None) -> str:
    """The boundary of a ``multipart/form-data`` content type; 415 for any other type, 400 without one."""
    media, _, params = (content_type or "").partition(";")
    if media.strip().lower() != "multipart/form-data":
        raise UnsupportedMediaType("POST /v1/files reads multipart/form-data (fields 'file' and 'purpose').")
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"')
    raise InvalidRequest("The multipart content type has no boundary.")


async def read_upload(receive: Receive, content_type: str | None, limit: int) -> tuple[Upload | None, dict[str, str]]:
    """Parse a multipart body as it arrives: the ``file`` part (on disk) and the other fields.

    413 ``file_too_large`` as soon as the file passes ``limit`` bytes or the body passes it by more
    than :data:`FORM_OVERHEAD`; 400 for a malformed body. The caller closes the upload.
    """
    parser = PushMultipartParser(boundary_of(content_type), max_segment_count=MAX_PARTS)
    upload: Upload | None = None
    fields: dict[str, str] = {}
    body_limit = limit + FORM_OVERHEAD
    total = 0
    segment: MultipartSegment | None = None
    target: Upload | bytearray | None = None  # where the current part's bytes go (None: dropped)
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone("while sending its upload")
            chunk: bytes = message.get("body", b"")
            total += len(chunk)
            if total > body_limit:
                raise too_large(limit)
            for event in parser.parse(chunk) if chunk else ():
                if isinstance(event, MultipartSegment):
                    segment = event
                    if event.name == "file" and upload is None:
                        upload = target = Upload()
                        upload.filename = event.filename or ""
                    elif event.name == "file":
                        target = None  # a second file: not read
                    else:
                        target = bytearray()
                elif event:  # a piece of the current part's body
                    if isinstance(target, Upload):
                        await target.write(event)
                        if target.size > limit:
                            raise too_large(limit)
                    elif target is not None:
                        target += event
                        if len(target) > MAX_FIELD_BYTES:
                            raise InvalidRequest(f"The form field {segment.name if segment else ''!r} is too large.")
                else:  # the end of the part
                    if isinstance(target, bytearray) and segment is not None and segment.name not in fields:
                        fields[segment.name] = target.decode(segment.charset or "utf-8", "replace")
                    segment, target = None, None
            if not message.get("more_body", False):
                break
        parser.close()
    except ParserLimitReached:
        if upload is not None:
            upload.close()
        raise InvalidRequest(f"The multipart body has more than {MAX_PARTS} parts.") from None
    except MultipartError:
        if upload is not None:
            upload.close()
        raise InvalidRequest("The multipart body is malformed.") from None
    except BaseException:
        if upload is not None:
            upload.close()
        raise
    return upload, fields
