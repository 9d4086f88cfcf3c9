"""The OpenAI Files API (``/v1/files``), scoped to the caller's workspace.

Uploads are read as they arrive (:mod:`chorus.server.uploads`): the file goes to a temporary file on
disk and ``knowledge.max_file_bytes`` is enforced while reading, so memory stays flat whatever the
client sends. A file that belongs to a dataset declared in configuration cannot be deleted here.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post

from chorus.contract.errors import ChorusError, InvalidRequest, NotFound
from chorus.runtime.knowledge.service import Knowledge
from chorus.runtime.registry import Registry
from chorus.server.auth import authenticate
from chorus.server.uploads import FORM_OVERHEAD, read_upload, too_large
from chorus.storage.catalog import FileRecord

_encode = msgspec.json.Encoder().encode
JSON = "application/json"
PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})


def file_object(record: FileRecord) -> dict[str, Any]:
    return {"id": record.id, "object": "file", "bytes": record.bytes, "created_at": record.created_at,
            "filename": record.filename, "purpose": record.purpose, "status": "processed"}


def json_response(payload: Any, status: int = 200) -> Response[bytes]:
    return Response(content=_encode(payload), media_type=JSON, status_code=status)


async def services(request: Request[Any, Any, Any]) -> tuple[str, Knowledge]:
    """Authenticate; the workspace id and the knowledge service."""
    registry: Registry = request.app.state.registry
    workspace = await authenticate(registry, request.headers.get("authorization"))
    return workspace.id, request.app.state.knowledge


def paginate(items: list[dict[str, Any]], request: Request[Any, Any, Any]) -> dict[str, Any]:
    """OpenAI cursor pagination (``limit``, ``order``, ``after``, ``before``) over a full list."""
    params = request.query_params
    try:
        limit = max(1, min(100, int(params.get("limit", 20))))
    except ValueError:
        raise InvalidRequest("'limit' must be an integer.", param="limit") from None
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order")
    if order == "desc":
        items = list(reversed(items))
    ids = [i["id"] for i in items]
    if params.get("after") in ids:
        items = items[ids.index(params["after"]) + 1:]
    elif params.get("before") in ids:
        items = items[: ids.index(params["before"])]
    page = items[:limit]
    # the spec makes first_id/last_id required strings: an empty page has "" (no id to continue from)
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else "",
            "last_id": page[-1]["id"] if page else "", "has_more": len(items) > limit}


class FilesController(Controller):
    path = "/"

    @post(["/v1/files", "/files"], status_code=200, request_max_body_size=None)
    async def upload(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Multipart upload (``file``, ``purpose``). Stored by generated id, never by client name."""
        workspace, knowledge = await services(request)
        limit = knowledge.config.max_file_bytes
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit + FORM_OVERHEAD:
            raise too_large(limit)
        upload, fields = await read_upload(request.receive, request.headers.get("content-type"), limit)
        try:
            if upload is None:
                raise InvalidRequest("A multipart field 'file' is required.", param="file")
            purpose = fields.get("purpose")
            if purpose not in PURPOSES:
                raise InvalidRequest(f"'purpose' must be one of {sorted(PURPOSES)}.", param="purpose")
            data = await upload.read()  # within the cap
            digest = upload.sha256.hexdigest()
            filename = upload.filename
        finally:
            if upload is not None:
                upload.close()
        name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1][:255] or "upload"
        record = await knowledge.catalog.add_file(workspace, name, data, purpose, digest)
        return json_response(file_object(record))

    @get(["/v1/files", "/files"])
    async def list_files(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, knowledge = await services(request)
        records = await knowledge.catalog.list_files(workspace, request.query_params.get("purpose"))
        return json_response(paginate([file_object(r) for r in records], request))

    @get(["/v1/files/{file_id:str}", "/files/{file_id:str}"])
    async def retrieve(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, knowledge = await services(request)
        return json_response(file_object(await _file(knowledge, workspace, request.path_params["file_id"])))

    @get(["/v1/files/{file_id:str}/content", "/files/{file_id:str}/content"])
    async def content(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, knowledge = await services(request)
        record = await _file(knowledge, workspace, request.path_params["file_id"])
        data = await knowledge.catalog.read_file(workspace, record.id)
        # Served as an attachment with a neutral type: uploaded HTML/SVG is never rendered inline.
        return Response(content=data, media_type="application/octet-stream",
                        headers={"content-disposition": "attachment", "x-content-type-options": "nosniff"})

    @delete(["/v1/files/{file_id:str}", "/files/{file_id:str}"], status_code=200)
    async def remove(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, knowledge = await services(request)
        record = await _file(knowledge, workspace, request.path_params["file_id"])
        for store_id in await knowledge.catalog.stores_with_file(workspace, record.id):
            store = await knowledge.catalog.get_store(workspace, store_id)
            if store is not None and store.origin == "config":  # deleting it would take it out of the dataset
                raise ChorusError(
                    f"File {record.id!r} belongs to vector store {store_id!r}, which is declared in the server's "
                    "configuration ([[datasets]]) and is read-only through the API.",
                    status_code=403, error_type="invalid_request_error", code="dataset_read_only", param="file_id",
                )
        await knowledge.delete_file(workspace, record.id)
        return json_response({"id": record.id, "object": "file", "deleted": True})


async def _file(knowledge: Knowledge, workspace: str, file_id: str) -> FileRecord:
    record = await knowledge.catalog.get_file(workspace, file_id)
    if record is None:
        raise NotFound(f"No such file: {file_id!r}.", param="file_id", code="file_not_found")
    return record
