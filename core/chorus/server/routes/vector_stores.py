"""The OpenAI Vector Stores API: datasets made through the API or declared in configuration.

Datasets declared in configuration (``[[datasets]]``, catalog ``origin == "config"``) belong to the
operator: the API reads and searches them but never changes them (403 ``dataset_read_only``), since
a bot would silently lose its knowledge until the next restart. Datasets made through the API are
their workspace's to change and delete.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from msgspec import UNSET, UnsetType

from chorus.contract.errors import ChorusError, InvalidRequest, NotFound
from chorus.contract.schemas import Wire, decode_body
from chorus.runtime.knowledge.service import Knowledge
from chorus.server.body import json_body
from chorus.server.routes.files import json_response, paginate, services
from chorus.storage.catalog import StoreFileRecord, StoreRecord


class CreateStore(Wire):
    name: str | None | UnsetType = UNSET
    file_ids: list[str] | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET


class UpdateStore(Wire):
    name: str | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET


class CreateStoreFile(Wire):
    file_id: str
    attributes: dict[str, str | float | bool] | None | UnsetType = UNSET


class RankingOptions(Wire):
    score_threshold: float | UnsetType = UNSET


class SearchStore(Wire):
    query: str | list[str]
    max_num_results: int | UnsetType = UNSET
    filters: dict[str, Any] | None | UnsetType = UNSET
    rewrite_query: bool | UnsetType = UNSET
    ranking_options: RankingOptions | UnsetType = UNSET


_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {
    t: msgspec.json.Decoder(t) for t in (CreateStore, UpdateStore, CreateStoreFile, SearchStore)
}


def _decode(body: bytes, type_: type[Any]) -> Any:
    """An empty body means ``{}`` (the SDK sends none for some calls)."""
    return decode_body(body or b"{}", _DECODERS[type_])


async def store_object(knowledge: Knowledge, record: StoreRecord) -> dict[str, Any]:
    files = await knowledge.catalog.list_store_files(record.workspace, record.id)
    counts = {s: sum(1 for f in files if f.status == s) for s in ("in_progress", "completed", "failed", "cancelled")}
    return {
        "id": record.id, "object": "vector_store", "created_at": record.created_at, "name": record.name,
        "usage_bytes": sum(f.usage_bytes for f in files), "file_counts": {**counts, "total": len(files)},
        "status": "in_progress" if counts["in_progress"] else "completed", "last_active_at": record.last_active_at,
        "metadata": record.metadata, "expires_at": None,
    }


def store_file_object(record: StoreFileRecord) -> dict[str, Any]:
    return {
        "id": record.file_id, "object": "vector_store.file", "usage_bytes": record.usage_bytes,
        "created_at": record.created_at, "vector_store_id": record.vector_store_id, "status": record.status,
        "last_error": record.last_error, "attributes": record.attributes,
        "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 300, "chunk_overlap_tokens": 40}},
    }


async def _store(knowledge: Knowledge, workspace: str, store_id: str, *, change: bool = False) -> StoreRecord:
    """The workspace's store; with ``change``, one the API may change (not declared in configuration)."""
    record = await knowledge.catalog.get_store(workspace, store_id)
    if record is None:
        raise NotFound(f"No such vector store: {store_id!r}.", param="vector_store_id", code="vector_store_not_found")
    if change and record.origin == "config":
        raise read_only(record.id)
    return record


def read_only(store_id: str) -> ChorusError:
    """The 403 for changing a dataset declared in the server's configuration."""
    return ChorusError(
        f"Vector store {store_id!r} is declared in the server's configuration ([[datasets]]) and is read-only "
        "through the API: change its sources in the configuration instead.",
        status_code=403, error_type="invalid_request_error", code="dataset_read_only", param="vector_store_id",
    )


class VectorStoresController(Controller):
    path = "/"

    @post(["/v1/vector_stores", "/vector_stores"], status_code=200)
    async def create(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, knowledge = await services(request)
        body: CreateStore = _decode(await json_body(request), CreateStore)
        file_ids = body.file_ids if isinstance(body.file_ids, list) else []
        files = [await _file_of(knowledge, workspace, f) for f in file_ids]
        metadata = body.metadata if isinstance(body.metadata, dict) else {}
        record = await knowledge.catalog.create_store(workspace, body.name or "", metadata)
        for file in files:
            await knowledge.attach(workspace, record.id, file)
        return json_response(await store_object(knowledge, record))

    @get(["/v1/vector_stores", "/vector_stores"])
    async def list_stores(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, knowledge = await services(request)
        stores = [await store_object(knowledge, r) for r in await knowledge.catalog.list_stores(workspace)]
        return json_response(paginate(stores, request))

    @get(["/v1/vector_stores/{store_id:str}", "/vector_stores/{store_id:str}"])
    async def retrieve(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, knowledge = await services(request)
        return json_response(await store_object(knowledge, await _store(knowledge, workspace, request.path_params["store_id"])))

    @post(["/v1/vector_stores/{store_id:str}", "/vector_stores/{store_id:str}"], status_code=200)
    async def update(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, knowledge = await services(request)
        record = await _store(knowledge, workspace, request.path_params["store_id"], change=True)
        body: UpdateStore = _decode(await json_body(request), UpdateStore)
        await knowledge.catalog.update_store(
            workspace, record.id, body.name if isinstance(body.name, str) else None,
            body.metadata if isinstance(body.metadata, dict) else None)
        return json_response(await store_object(knowledge, await _store(knowledge, workspace, record.id)))

    @delete(["/v1/vector_stores/{store_id:str}", "/vector_stores/{store_id:str}"], status_code=200)
    async def remove(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, knowledge = await services(request)
        record = await _store(knowledge, workspace, request.path_params["store_id"], change=True)
        await knowledge.delete_dataset(workspace, record.id)
        return json_response({"id": record.id, "object": "vector_store.deleted", "deleted": True})

    @post(["/v1/vector_stores/{store_id:str}/files", "/vector_stores/{store_id:str}/files"], status_code=200)
    async def add_file(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, knowledge = await services(request)
        record = await _store(knowledge, workspace, request.path_params["store_id"], change=True)
        body: CreateStoreFile = _decode(await json_body(request), CreateStoreFile)
        file = await _file_of(knowledge, workspace, body.file_id)
        attributes = body.attributes if isinstance(body.attributes, dict) else {}
        result = await knowledge.attach(workspace, record.id, file, attributes=attributes)
        return json_response(store_file_object(result))

    @get(["/v1/vector_stores/{store_id:str}/files", "/vector_stores/{store_id:str}/files"])
    async def list_files(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, knowledge = await services(request)
        record = await _store(knowledge, workspace, request.path_params["store_id"])
        files = [store_file_object(f) for f in await knowledge.catalog.list_store_files(workspace, record.id)]
        status = request.query_params.get("filter")
        if status:
            files = [f for f in files if f["status"] == status]
        return json_response(paginate(files, request))

    @get(["/v1/vector_stores/{store_id:str}/files/{file_id:str}", "/vector_stores/{store_id:str}/files/{file_id:str}"])
    async def get_file(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, knowledge = await services(request)
        record = await _store(knowledge, workspace, request.path_params["store_id"])
        found = await knowledge.catalog.get_store_file(workspace, record.id, request.path_params["file_id"])
        if found is None:
            raise NotFound(f"No such file in vector store {record.id!r}.", param="file_id", code="file_not_found")
        return json_response(store_file_object(found))

    @delete(
        ["/v1/vector_stores/{store_id:str}/files/{file_id:str}", "/vector_stores/{store_id:str}/files/{file_id:str}"],
        status_code=200,
    )
    async def remove_file(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, knowledge = await services(request)
        record = await _store(knowledge, workspace, request.path_params["store_id"], change=True)
        file_id = request.path_params["file_id"]
        if await knowledge.catalog.get_store_file(workspace, record.id, file_id) is None:
            raise NotFound(f"No such file in vector store {record.id!r}.", param="file_id", code="file_not_found")
        await knowledge.detach(workspace, record.id, file_id)
        return json_response({"id": file_id, "object": "vector_store.file.deleted", "deleted": True})

    @post(["/v1/vector_stores/{store_id:str}/search", "/vector_stores/{store_id:str}/search"], status_code=200)
    async def search(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, knowledge = await services(request)
        record = await _store(knowledge, workspace, request.path_params["store_id"])
        body: SearchStore = _decode(await json_body(request), SearchStore)
        queries = [body.query] if isinstance(body.query, str) else list(body.query)
        k = body.max_num_results if isinstance(body.max_num_results, int) else 10
        if not 1 <= k <= 50:
            raise InvalidRequest("'max_num_results' must be between 1 and 50.", param="max_num_results")
        ranking = body.ranking_options
        threshold = 0.0
        if isinstance(ranking, RankingOptions) and isinstance(ranking.score_threshold, float):
            threshold = ranking.score_threshold
        filters = body.filters if isinstance(body.filters, dict) else None
        try:
            hits = await knowledge.search(workspace, [record.id], " ".join(queries), k=k, filters=filters, min_score=threshold)
        except ValueError as exc:
            raise InvalidRequest(f"Invalid filters: {exc}", param="filters") from None
        # The spec's scores are in [0, 1]: a ranking that is (cosine similarity) shows as it is; one
        # unbounded above (BM25) is scaled so the page's best is 1 (the order never changes).
        scale = max([1.0, *(h.score for h in hits)])
        data = [{"file_id": h.chunk.file_id, "filename": h.chunk.source or h.chunk.title or "",
                 "score": max(0.0, h.score) / scale, "attributes": h.chunk.attributes,
                 "content": [{"type": "text", "text": h.chunk.text}]} for h in hits]
        return json_response({"object": "vector_store.search_results.page", "search_query": queries, "data": data,
                              "has_more": False, "next_page": None})


async def _file_of(knowledge: Knowledge, workspace: str, file_id: str) -> Any:
    file = await knowledge.catalog.get_file(workspace, file_id)
    if file is None:
        raise NotFound(f"No such file: {file_id!r}.", param="file_id", code="file_not_found")
    return file
