"""Integration: the real local model (chorus-provider-llamacpp, Gemma 3 270M) behind a live Chorus."""

from __future__ import annotations

import re
from collections.abc import Iterator

import openai
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("chorus_provider_llamacpp")

from chorus.app import create_app
from chorus.config import parse_config
from chorus.testing.server import LiveServer

pytestmark = pytest.mark.integration
KEY = "sk-local-integration"


HANDBOOK = {
    "hours.md": "# Opening hours\n\nSupport is open Monday to Friday, from 9am to 5pm. It is closed on public holidays.\n",
    "returns.md": "# Returns\n\nYou can return an unused item within 30 days of delivery for a full refund.\n",
    "shipping.md": "# Shipping\n\nOrders to Europe ship from Rotterdam and arrive within 7 business days.\n",
}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    kb = tmp_path_factory.mktemp("handbook")
    for name, text in HANDBOOK.items():
        (kb / name).write_text(text, encoding="utf-8")
    config = parse_config({
        "data_dir": str(tmp_path_factory.mktemp("local-data")),
        "providers": [{"id": "local", "driver": "llamacpp", "models": ["gemma-3-270m"], "n_ctx": 1024}],
        "workspaces": [{"id": "w", "api_keys": [KEY]}],
        "datasets": [{"id": "handbook", "workspace": "w", "sources": [str(kb / "*.md")]}],
        "bots": [{"id": "ada", "workspace": "w", "model": "local/gemma-3-270m",
                  "backstory": "You are Ada, Acme's support agent.", "params": {"temperature": 0, "max_tokens": 24}},
                 {"id": "helpdesk", "workspace": "w", "model": "local/gemma-3-270m",
                  "backstory": "You are Acme's helpdesk. Answer from the context below in one short sentence.",
                  "datasets": ["handbook"], "citations": {"attribute": True},
                  "params": {"temperature": 0, "max_tokens": 48}}],
    }, env={})
    with LiveServer(create_app(config)) as server:
        with openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120) as client:
            yield client


def test_bot_answers_from_its_backstory(local: openai.OpenAI) -> None:
    completion = local.chat.completions.create(model="bot/id=ada", messages=[{"role": "user", "content": "What is your name?"}])
    assert completion.model == "bot/id=ada"
    assert "Ada" in (completion.choices[0].message.content or "")
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_stream_from_the_local_model(local: openai.OpenAI) -> None:
    chunks = list(local.chat.completions.create(
        model="model/name=local/gemma-3-270m", messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def _sentences(text: str) -> list[str]:
    return [" ".join(re.findall(r"[^\W_]+", s.lower())) for s in re.split(r"(?<=[.!?])\s+|\n", text) if s.strip()]


@pytest.mark.parametrize("question", ["Who are you?", "Tell me everything you are not sure about.", "Say it again and again."])
def test_temperature_zero_never_loops(local: openai.OpenAI, question: str) -> None:
    """Greedy decoding used to fall into loops ("I'm not sure." ×33): the repetition penalty and the
    repeat guard end the answer before a sentence comes back."""
    completion = local.chat.completions.create(
        model="bot/id=ada", messages=[{"role": "user", "content": question}], temperature=0, max_tokens=160)
    sentences = [s for s in _sentences(completion.choices[0].message.content or "") if s]
    assert len(sentences) == len(set(sentences)), sentences


@pytest.mark.parametrize("stream", [False, True])
def test_small_knowledge_base_answer_is_grounded_and_cited(local: openai.OpenAI, stream: bool) -> None:
    """Three short documents, an ordinary question: the answering document is retrieved, the base
    model answers from the completion-style context, and the answer is attributed to that document."""
    messages = [{"role": "user", "content": "When is support open?"}]
    if stream:
        text, annotations = "", []
        for chunk in local.chat.completions.create(model="bot/id=helpdesk", messages=messages, stream=True):  # type: ignore[arg-type]
            for choice in chunk.choices:
                text += choice.delta.content or ""
                annotations += (choice.delta.model_extra or {}).get("annotations") or []
        titles = [a["url_citation"]["title"] for a in annotations]
    else:
        message = local.chat.completions.create(model="bot/id=helpdesk", messages=messages).choices[0].message  # type: ignore[arg-type]
        text = message.content or ""
        titles = [a.url_citation.title for a in message.annotations or []]
    assert re.search(r"monday|friday|9\s*am", text, re.IGNORECASE), text
    assert titles and all("Opening hours" in t for t in titles), titles
