"""End to end: two live Chorus instances sharing one PostgreSQL, for the state and for the chunks.

Instance A and instance B have their own data directories, one ``[state] url`` and one
``[vector_store] driver = "pgvector"``: a file uploaded and attached through A is searchable and
answerable through B (the deployment the split-brain refusal asks for). Embeddings come from the
scripted upstream, so searches are hybrid.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.importorskip("chorus_vectorstore_pgvector", reason="chorus-vectorstore-pgvector is not installed")
openai = pytest.importorskip("openai")

from chorus_vectorstore_pgvector import PgvectorStore

from chorus.testing.config import ACME_KEY, GLOBEX_KEY
from chorus.testing.fixtures import ServeChorus
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
[state]
url = "{url}"
schema = "{prefix}_state"

[knowledge]
embedding_model = "up/gpt-test"

[vector_store]
driver = "pgvector"
url = "{url}"
schema = "{prefix}_vectors"

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


async def _drop(url: str, *schemas: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def prefix(pgvector_url: str) -> AsyncIterator[str]:
    name = f"t_{secrets.token_hex(4)}"
    yield name
    await _drop(pgvector_url, f"{name}_state", f"{name}_vectors")


def test_two_instances_share_the_chunks(tmp_path: Path, scripted_upstream: ScriptedUpstream,
                                        serve_chorus: ServeChorus, pgvector_url: str, prefix: str) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "handbook.md").write_text(HANDBOOK)
    settings = SETTINGS.format(url=pgvector_url, prefix=prefix, kb=kb)

    a = serve_chorus(settings, data_dir=tmp_path / "a")
    with a.openai_client(ACME_KEY) as client:
        assert isinstance(a.app.state.knowledge.store, PgvectorStore)
        handbook = client.vector_stores.search("handbook", query="when does the office open")
        assert handbook.data and "eight in the morning" in handbook.data[0].content[0].text
        file = client.files.create(file=("warranty.txt", WARRANTY.encode()), purpose="assistants")
        store = client.vector_stores.create(name="warranty", file_ids=[file.id])
        assert store.file_counts.completed == 1 and store.file_counts.failed == 0

    b = serve_chorus(settings + BOT.format(store=store.id), data_dir=tmp_path / "b")
    with b.openai_client(ACME_KEY) as client, b.openai_client(GLOBEX_KEY) as globex:
        results = client.vector_stores.search(store.id, query="how do I make a warranty claim?")
        assert results.data and results.data[0].file_id == file.id
        assert "24 months" in results.data[0].content[0].text and results.data[0].score > 0
        with pytest.raises(openai.NotFoundError):
            globex.vector_stores.search(store.id, query="warranty claim")

        scripted_upstream.push(Reply(content="Claims are accepted for 24 months after delivery [1]."))
        completion = client.chat.completions.create(
            model="bot/id=kbbot", messages=[{"role": "user", "content": "How long can I make a warranty claim?"}])
        chat = [r for r in scripted_upstream.requests if r.path.endswith("/chat/completions")][-1]
        prompt = str(chat.json["messages"][0]["content"])
        url = f"chorus://datasets/{store.id}/files/{file.id}/chunks/0"
        assert f"[1] Warranty claims ({url})" in prompt and "warranty of 24 months from delivery" in prompt
        message = completion.choices[0].message
        assert message.annotations is not None and message.annotations[0].url_citation.url == url
        assert any(r.path.endswith("/embeddings") for r in scripted_upstream.requests)

    with a.openai_client(ACME_KEY) as client:  # a delete through A is seen by B
        client.vector_stores.files.delete(file.id, vector_store_id=store.id)
    with b.openai_client(ACME_KEY) as client:
        assert client.vector_stores.search(store.id, query="warranty claim").data == []
    assert not (tmp_path / "a" / "knowledge.sqlite3").exists() and not (tmp_path / "b" / "knowledge.sqlite3").exists()
