"""Integration: the real local model (chorus-provider-llamacpp, Gemma 3 270M) behind a live Chorus."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    config = parse_config({
        "data_dir": str(tmp_path_factory.mktemp("local-data")),
        "providers": [{"id": "local", "driver": "llamacpp", "models": ["gemma-3-270m"], "n_ctx": 1024}],
        "workspaces": [{"id": "w", "api_keys": [KEY]}],
        "bots": [{"id": "ada", "workspace": "w", "model": "local/gemma-3-270m",
                  "backstory": "You are Ada, Acme's support agent.", "params": {"temperature": 0, "max_tokens": 24}}],
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
