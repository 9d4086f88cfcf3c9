"""End to end: a live Chorus configured with ``[vector_store] driver = "qdrant"``, driven by the SDK.

Phase one uploads a file, makes a vector store of it and searches it; phase two restarts Chorus on
the same data directory (so on the same embedded Qdrant) with a bot whose datasets include that
vector store, and asks the bot. Embeddings come from the scripted upstream, so search is hybrid.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("qdrant_client", reason="qdrant-client is not installed")
pytest.importorskip("chorus_vectorstore_qdrant", reason="chorus-vectorstore-qdrant is not installed")
openai = pytest.importorskip("openai")

from chorus_vectorstore_qdrant import QdrantVectorStore

from chorus.testing.config import ACME_KEY, GLOBEX_KEY
from chorus.testing.fixtures import ServeChorus
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Reply, ScriptedUpstream

WARRANTY = (
    "Warranty claims\n\n"
    "Every Acme anvil carries a warranty of 24 months from delivery. To make a warranty claim, send the "
    "order number and a photo of the defect to claims@acme.test; approved claims are repaired or replaced "
    "free of charge within ten business days.\n"
)
HANDBOOK = """---
title: Office handbook
url: https://acme.test/handbook
---
# Office handbook

## Opening hours

The office opens at eight in the morning and closes at six in the evening, Monday to Friday.
"""

SETTINGS = """
[knowledge]
embedding_model = "up/gpt-test"

[vector_store]
driver = "qdrant"
path = "vectors"
collection = "e2e_chunks"

[[datasets]]
id = "handbook"
workspace = "acme"
name = "Office handbook"
sources = ["{kb}/*.md"]
"""

BOT = """
[[bots]]
id = "kbbot"
workspace = "acme"
model = "up/gpt-test"
backstory = "You are Acme's assistant."
datasets = ["{store}", "handbook"]
"""


def sdk(server: LiveServer, key: str = ACME_KEY) -> openai.OpenAI:
    return server.openai_client(key)


def test_vector_stores_and_bot_answers_through_qdrant(
    tmp_path: Path, scripted_upstream: ScriptedUpstream, serve_chorus: ServeChorus
) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "handbook.md").write_text(HANDBOOK)
    data_dir = str(tmp_path / "data")
    settings = SETTINGS.format(kb=kb)

    # -- phase one: the Files and Vector Stores APIs --------------------------------------
    with (
        serve_chorus(settings, data_dir=data_dir) as server,  # stopped before phase two reopens its Qdrant
        sdk(server) as client,
        sdk(server, GLOBEX_KEY) as globex,
    ):
        assert isinstance(server.app.state.knowledge.store, QdrantVectorStore)
        handbook = client.vector_stores.search("handbook", query="when does the office open")
        assert handbook.data and "eight in the morning" in handbook.data[0].content[0].text

        file = client.files.create(file=("warranty.txt", WARRANTY.encode()), purpose="assistants")
        store = client.vector_stores.create(name="warranty", file_ids=[file.id])
        assert store.file_counts.completed == 1 and store.file_counts.failed == 0
        results = client.vector_stores.search(store.id, query="how do I make a warranty claim?")
        assert results.data and results.data[0].file_id == file.id
        assert "24 months" in results.data[0].content[0].text
        assert results.data[0].score > 0
        with pytest.raises(openai.NotFoundError):
            globex.vector_stores.search(store.id, query="warranty claim")
    assert (tmp_path / "data" / "vectors").is_dir()
    assert not (tmp_path / "data" / "knowledge.sqlite3").exists()

    # -- phase two: a bot whose datasets include that vector store ------------------------
    with serve_chorus(settings + BOT.format(store=store.id), data_dir=data_dir) as server, sdk(server) as client:
        scripted_upstream.push(Reply(content="Claims are accepted for 24 months after delivery [1]."))
        completion = client.chat.completions.create(
            model="bot/id=kbbot", messages=[{"role": "user", "content": "How long can I make a warranty claim?"}])
        chat = [r for r in scripted_upstream.requests if r.path.endswith("/chat/completions")][-1]
        prompt = str(chat.json["messages"][0]["content"])
        assert prompt.startswith("You are Acme's assistant.")
        url = f"chorus://datasets/{store.id}/files/{file.id}/chunks/0"
        assert f"[1] Warranty claims ({url})" in prompt
        assert "warranty of 24 months from delivery" in prompt
        message = completion.choices[0].message
        assert message.annotations is not None and len(message.annotations) == 1
        annotation = message.annotations[0]
        assert annotation.type == "url_citation" and annotation.url_citation.url == url
        content = message.content or ""
        assert content[annotation.url_citation.start_index:annotation.url_citation.end_index] == "[1]"
        # the query was embedded: retrieval ran hybrid over the dense vectors stored at ingest
        assert any(r.path.endswith("/embeddings") for r in scripted_upstream.requests)
        store_driver = server.app.state.knowledge.store
        assert isinstance(store_driver, QdrantVectorStore) and store_driver._layout is not None
        assert store_driver._layout.dense_dim == 8
