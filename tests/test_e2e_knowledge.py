"""Knowledge end to end with the official SDK: files, vector stores, retrieval, citations, tenancy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from chorus.app import create_app
from chorus.testing.config import ACME_KEY, GLOBEX_KEY, make_config
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Reply, ScriptedUpstream

DATA = Path(__file__).parent / "data" / "kb"

KB_CONFIG = """
[[datasets]]
id = "handbook"
workspace = "acme"
name = "Acme handbook"
sources = ["{kb}/*.md", "{kb}/*.txt"]

[[bots]]
id = "helpdesk"
workspace = "acme"
model = "up/gpt-test"
backstory = "You are Acme's helpdesk."
datasets = ["handbook"]
retrieval = {{ top_k = 2 }}

[[bots]]
id = "cited"
workspace = "acme"
model = "up/gpt-test"
datasets = ["handbook"]
perplexity_citations = true

[[bots]]
id = "attributed"
workspace = "acme"
model = "up/gpt-test"
datasets = ["handbook"]
citations = {{ attribute = true }}
"""


@pytest.fixture(scope="module")
def kb_server(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    config = make_config(upstream.base_url, KB_CONFIG.format(kb=DATA), data_dir=str(tmp_path_factory.mktemp("kb")))
    with LiveServer(create_app(config)) as server:
        yield server


@pytest.fixture
def kc(kb_server: LiveServer, up: ScriptedUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=kb_server.url + "/v1", api_key=ACME_KEY, max_retries=0, timeout=30) as sdk_client:
        yield sdk_client


@pytest.fixture
def gc(kb_server: LiveServer, up: ScriptedUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=kb_server.url + "/v1", api_key=GLOBEX_KEY, max_retries=0, timeout=30) as sdk_client:
        yield sdk_client


def system_prompt(up: ScriptedUpstream) -> str:
    return str(up.requests[-1].json["messages"][0]["content"])


def test_config_dataset_is_a_vector_store(kc: openai.OpenAI) -> None:
    store = kc.vector_stores.retrieve("handbook")
    assert store.name == "Acme handbook"
    assert store.file_counts.completed == 2 and store.file_counts.failed == 0
    names = sorted(f.id for f in kc.vector_stores.files.list("handbook"))
    assert len(names) == 2


def test_bot_answers_with_annotations(kc: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content="Standard delivery to Europe takes 7 business days [1]."))
    completion = kc.chat.completions.create(
        model="bot/id=helpdesk", messages=[{"role": "user", "content": "How long does delivery to Europe take?"}]
    )
    prompt = system_prompt(up)
    assert prompt.startswith("You are Acme's helpdesk.")
    assert "[1] Acme Shipping Guide › Europe (https://acme.test/help/shipping)" in prompt
    message = completion.choices[0].message
    assert message.annotations is not None and len(message.annotations) == 1
    citation = message.annotations[0].url_citation
    assert citation.url == "https://acme.test/help/shipping"
    assert "Europe" in citation.title
    content = message.content or ""
    assert content[citation.start_index:citation.end_index] == "[1]"


def test_streamed_annotations(kc: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content="Returns are accepted within 30 days [1] and refunds take 5 days [1].", chunks=12))
    chunks = list(kc.chat.completions.create(
        model="bot/id=helpdesk", messages=[{"role": "user", "content": "What is the returns policy refund?"}], stream=True
    ))
    text = ""
    streamed: list[dict] = []  # type: ignore[type-arg]
    final: list[dict] = []  # type: ignore[type-arg]
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta.model_dump()
        text += delta.get("content") or ""
        if chunk.choices[0].finish_reason:
            final = delta.get("annotations") or []
        elif delta.get("annotations"):
            # Each annotation arrives as soon as its marker has streamed.
            for annotation in delta["annotations"]:
                assert annotation["url_citation"]["end_index"] <= len(text)
                streamed.append(annotation)
    assert len(streamed) == 2 and final == streamed
    for annotation in final:
        span = annotation["url_citation"]
        assert text[span["start_index"]:span["end_index"]] == "[1]"
        assert span["url"].startswith("chorus://datasets/handbook/files/")


UNMARKED = "Standard delivery to Europe takes 7 business days. I hope that helps you!"
EUROPE = "How long does delivery to Europe take?"


def test_unmarked_answer_is_attributed_to_the_source_it_draws_on(kc: openai.OpenAI, up: ScriptedUpstream) -> None:
    """A model that writes no [n]: each sentence is credited to the source it overlaps (sentence span)."""
    up.push(Reply(content=UNMARKED))
    completion = kc.chat.completions.create(model="bot/id=attributed", messages=[{"role": "user", "content": EUROPE}])
    message = completion.choices[0].message
    assert message.content == UNMARKED
    assert message.annotations is not None and len(message.annotations) == 1
    citation = message.annotations[0].url_citation
    assert citation.url == "https://acme.test/help/shipping" and "Europe" in citation.title
    assert UNMARKED[citation.start_index:citation.end_index] == "Standard delivery to Europe takes 7 business days."


def test_streamed_unmarked_answer_is_attributed_on_the_final_chunk(kc: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content=UNMARKED, chunks=9))
    chunks = list(kc.chat.completions.create(
        model="bot/id=attributed", messages=[{"role": "user", "content": EUROPE}], stream=True))
    text = ""
    final: list[dict] = []  # type: ignore[type-arg]
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta.model_dump()
        text += delta.get("content") or ""
        if chunk.choices[0].finish_reason:
            final = delta.get("annotations") or []
        else:
            assert not delta.get("annotations")   # only known once the answer is complete
    assert text == UNMARKED
    assert [a["url_citation"]["url"] for a in final] == ["https://acme.test/help/shipping"]
    span = final[0]["url_citation"]
    assert text[span["start_index"]:span["end_index"]] == "Standard delivery to Europe takes 7 business days."


def test_attribution_leaves_marked_and_ungrounded_answers_alone(kc: openai.OpenAI, up: ScriptedUpstream) -> None:
    # markers win: only the marker is annotated
    up.push(Reply(content="Standard delivery to Europe takes 7 business days [1]."))
    marked = kc.chat.completions.create(model="bot/id=attributed", messages=[{"role": "user", "content": EUROPE}])
    annotations = marked.choices[0].message.annotations or []
    assert [(a.url_citation.start_index, a.url_citation.end_index) for a in annotations] == [(50, 53)]  # the "[1]"
    # an answer that draws on no source is credited to none
    up.push(Reply(content="I am not able to say. Could you ask again?"))
    vague = kc.chat.completions.create(model="bot/id=attributed", messages=[{"role": "user", "content": EUROPE}])
    assert not vague.choices[0].message.annotations
    # a bot without citations.attribute annotates markers only
    up.push(Reply(content=UNMARKED))
    plain = kc.chat.completions.create(model="bot/id=helpdesk", messages=[{"role": "user", "content": EUROPE}])
    assert not plain.choices[0].message.annotations


def test_follow_up_retrieves_from_the_conversation(kc: openai.OpenAI, up: ScriptedUpstream) -> None:
    messages = [
        {"role": "user", "content": "How long does standard delivery to the United States take?"},
        {"role": "assistant", "content": "3 business days."},
        {"role": "user", "content": "and for Europe?"},
    ]
    kc.chat.completions.create(model="bot/id=helpdesk", messages=messages)  # type: ignore[arg-type]
    prompt = system_prompt(up)
    first = prompt.index("[1]")
    assert "Rotterdam" in prompt[first:prompt.index("[2]") if "[2]" in prompt else None]


def test_perplexity_style_citations(kc: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content="30 days [1]."))
    raw = kc.chat.completions.with_raw_response.create(
        model="bot/id=cited", messages=[{"role": "user", "content": "returns refund days"}])
    body = json.loads(raw.content)
    assert body["citations"] and body["citations"][0].startswith("chorus://")
    assert body["search_results"][0]["url"] == body["citations"][0]
    up.push(Reply(content="30 days [1]."))
    plain = kc.chat.completions.with_raw_response.create(
        model="bot/id=helpdesk", messages=[{"role": "user", "content": "returns refund days"}])
    assert "citations" not in json.loads(plain.content)
    up.push(Reply(content="30 days [1]."))
    opted = kc.chat.completions.with_raw_response.create(
        model="bot/id=helpdesk", messages=[{"role": "user", "content": "returns refund days"}],
        extra_body={"return_citations": True})
    assert json.loads(opted.content)["citations"]


def test_upload_create_store_search_and_delete(kc: openai.OpenAI, gc: openai.OpenAI) -> None:
    good = kc.files.create(file=("returns.txt", (DATA / "returns.txt").read_bytes()), purpose="assistants")
    bad = kc.files.create(file=("broken.pdf", (DATA / "broken.pdf").read_bytes()), purpose="assistants")
    assert good.filename == "returns.txt" and good.bytes == (DATA / "returns.txt").stat().st_size
    store = kc.vector_stores.create(name="support docs", file_ids=[good.id, bad.id])
    assert store.file_counts.completed == 1 and store.file_counts.failed == 1
    failed = kc.vector_stores.files.retrieve(bad.id, vector_store_id=store.id)
    assert failed.status == "failed" and failed.last_error is not None and "broken.pdf" in failed.last_error.message
    results = kc.vector_stores.search(store.id, query="refund payment method")
    assert results.data and results.data[0].file_id == good.id
    assert "original payment method" in results.data[0].content[0].text
    # Another workspace sees none of it.
    with pytest.raises(openai.NotFoundError):
        gc.vector_stores.retrieve(store.id)
    with pytest.raises(openai.NotFoundError):
        gc.vector_stores.search(store.id, query="refund")
    with pytest.raises(openai.NotFoundError):
        gc.files.retrieve(good.id)
    assert store.id not in [s.id for s in gc.vector_stores.list()]
    # Deleting the file removes every chunk of it.
    assert kc.files.delete(good.id).deleted
    assert kc.vector_stores.search(store.id, query="refund payment method").data == []
    assert kc.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError):
        kc.vector_stores.retrieve(store.id)


def test_failed_reingest_keeps_previous_chunks(kb_server: LiveServer, kc: openai.OpenAI) -> None:
    file = kc.files.create(file=("returns.txt", (DATA / "returns.txt").read_bytes()), purpose="assistants")
    store = kc.vector_stores.create(name="atomic", file_ids=[file.id])
    knowledge = kb_server.app.state.knowledge
    original = knowledge.store.replace_file

    async def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("disk full while writing chunks")

    knowledge.store.replace_file = crash
    try:
        # New attributes force a re-ingestion of the same file (unchanged input would be a no-op).
        again = kc.vector_stores.files.create(vector_store_id=store.id, file_id=file.id, attributes={"v": "2"})
    finally:
        knowledge.store.replace_file = original
    assert again.status == "failed"
    assert "disk full" not in (again.last_error.message if again.last_error else "")
    hits = kc.vector_stores.search(store.id, query="refund payment method").data
    assert hits and hits[0].file_id == file.id
    # Attaching the same content again is a no-op that keeps the completed record.
    same = kc.vector_stores.files.create(vector_store_id=store.id, file_id=file.id)
    assert same.status == "completed"


def test_embeddings_endpoint(kc: openai.OpenAI, up: ScriptedUpstream) -> None:
    result = kc.embeddings.create(model="model/name=up/gpt-test", input=["alpha", "beta"])
    assert result.model == "model/name=up/gpt-test"
    assert [len(d.embedding) for d in result.data] == [8, 8]
    assert up.requests[-1].path == "/v1/embeddings" and up.requests[-1].json["input"] == ["alpha", "beta"]
    with pytest.raises(openai.NotFoundError):
        kc.embeddings.create(model="text-embedding-3-small", input="x")


def test_api_vector_store_named_in_a_bot(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    """A store made through the API, then named in a bot's ``datasets``, is the same object."""
    data_dir = str(tmp_path)
    upstream.reset()
    with LiveServer(create_app(make_config(upstream.base_url, data_dir=data_dir))) as first, openai.OpenAI(
        base_url=first.url + "/v1", api_key=ACME_KEY, max_retries=0
    ) as client:
        file = client.files.create(file=("shipping.md", (DATA / "shipping.md").read_bytes()), purpose="assistants")
        store = client.vector_stores.create(name="api store", file_ids=[file.id])
    bot = f"""
[knowledge]
embedding_model = "up/gpt-test"

[[bots]]
id = "api-bot"
workspace = "acme"
model = "up/gpt-test"
datasets = ["{store.id}"]
"""
    with LiveServer(create_app(make_config(upstream.base_url, bot, data_dir=data_dir))) as second, openai.OpenAI(
        base_url=second.url + "/v1", api_key=ACME_KEY, max_retries=0
    ) as client:
        upstream.push(Reply(content="Seven days [1]."))
        completion = client.chat.completions.create(
            model="bot/id=api-bot", messages=[{"role": "user", "content": "Rotterdam warehouse Europe delivery"}])
        assert "Rotterdam" in upstream.requests[-1].json["messages"][0]["content"]
        assert completion.choices[0].message.annotations[0].url_citation.url == "https://acme.test/help/shipping"  # type: ignore[index]
        # With an embedding model configured, the query is embedded for hybrid ranking.
        assert any(r.path == "/v1/embeddings" for r in upstream.requests)
        # New files are embedded at ingestion time.
        upstream.reset()
        added = client.files.create(file=("returns.txt", (DATA / "returns.txt").read_bytes()), purpose="assistants")
        assert client.vector_stores.files.create(vector_store_id=store.id, file_id=added.id).status == "completed"
        assert [r.path for r in upstream.requests] == ["/v1/embeddings"]
        hits = client.vector_stores.search(store.id, query="refund").data
        assert hits and hits[0].file_id == added.id
    upstream.reset()


def test_uploads_are_stored_by_id_never_by_client_path(kb_server: LiveServer, kc: openai.OpenAI) -> None:
    evil = kc.files.create(file=("../../../etc/cron.d/evil.html", b"<script>alert(1)</script>"), purpose="assistants")
    assert evil.filename == "evil.html"
    catalog = kb_server.app.state.knowledge.catalog
    if hasattr(catalog, "file_path"):  # the embedded default keeps bytes on disk, named by id
        stored = catalog.file_path("acme", evil.id)
        assert stored.name == evil.id and stored.read_bytes() == b"<script>alert(1)</script>"
    content = kc.files.with_raw_response.content(evil.id)
    assert content.headers["content-type"] == "application/octet-stream"
    assert content.headers["content-disposition"] == "attachment"
    with pytest.raises(openai.NotFoundError):
        kc.files.retrieve("../" + evil.id)


DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_page_that_answers_ranks_above_pages_that_mention_the_words(
        upstream: ScriptedUpstream, tmp_path: Path) -> None:
    """This project's docs (a small corpus): the dataset question finds knowledge.md's dataset section
    first, not docs/benchmarks.md, whose tables say "bot" and "dataset" many times."""
    config = make_config(upstream.base_url, f"""
[[datasets]]
id = "docs"
workspace = "acme"
sources = ["{DOCS}/*.md"]
""", data_dir=str(tmp_path))
    with LiveServer(create_app(config)) as server, \
            openai.OpenAI(base_url=server.url + "/v1", api_key=ACME_KEY, max_retries=0, timeout=60) as client:
        page = client.vector_stores.search("docs", query="How do I add a bot with a dataset?", max_num_results=10)
        names = [hit.filename for hit in page.data]
    assert names and names[0] == "knowledge.md", names
    if "benchmarks.md" in names:
        assert names.index("knowledge.md") < names.index("benchmarks.md")
