"""Synchronous generation on a loaded llama.cpp model (runs on the driver's worker thread).

``llama_cpp`` is imported lazily so the package (and its prompt format) imports without it.
"""

from __future__ import annotations

import codecs
import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chorus_provider_llamacpp.stops import RepeatGuard, StopFilter

if TYPE_CHECKING:
    from llama_cpp import Llama


class EngineError(Exception):
    """Loading or running the model failed; the message is safe to show a client."""


class ContextOverflow(EngineError):
    """The prompt does not leave room for a single completion token."""

    def __init__(self, prompt_tokens: int, n_ctx: int) -> None:
        super().__init__(
            f"The prompt is {prompt_tokens} tokens long; this model's context window is {n_ctx} tokens."
        )
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx


@dataclass(frozen=True, slots=True)
class Sampling:
    """Resolved generation parameters for one request."""

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    presence_penalty: float
    frequency_penalty: float
    seed: int
    stop: tuple[str, ...]
    stop_on_repeat: bool = True


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a generation ended. ``finish_reason`` is ``None`` when it was cancelled."""

    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


class Engine:
    """One loaded GGUF model.

    Not thread-safe: the caller runs one method at a time (the driver uses a single worker thread
    and a lock). :meth:`generate` checks ``cancel`` before every token, so setting it stops the
    generation within one token (prompt evaluation itself is not interruptible).
    """

    def __init__(self, llama: Llama, lib: Any, n_ctx: int) -> None:
        self._llama = llama
        self._lib = lib
        self._vocab = lib.llama_model_get_vocab(llama.model)
        self._buffer = ctypes.create_string_buffer(64)
        # llama.cpp may round the context up, but llama-cpp-python sizes its buffers as requested.
        self.n_ctx: int = min(n_ctx, llama.n_ctx())

    @classmethod
    def load(cls, path: str, *, n_ctx: int, n_threads: int | None, n_gpu_layers: int,
             repeat_last_n: int = 64) -> Engine:
        """Load ``path``; raise :class:`EngineError` with a one-line reason on failure."""
        try:
            import llama_cpp
        except ImportError:
            raise EngineError("llama-cpp-python is not installed") from None
        try:
            llama = llama_cpp.Llama(
                model_path=path,
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_gpu_layers=n_gpu_layers,
                last_n_tokens_size=repeat_last_n,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"llama.cpp could not load {path}: {reason}") from None
        return cls(llama, llama_cpp, n_ctx)

    def close(self) -> None:
        """Free the model and its context."""
        self._llama.close()

    def generate(
        self,
        prompt: str,
        sampling: Sampling,
        *,
        cancel: threading.Event,
        on_start: Callable[[int], None],
        on_text: Callable[[str], None],
    ) -> Outcome:
        """Complete ``prompt``, calling ``on_start(prompt_tokens)`` once, then ``on_text`` per piece.

        Raises :class:`ContextOverflow` (before ``on_start``) if the prompt fills the context.
        Emitted text is stripped, cut before the first stop sequence (and, with ``stop_on_repeat``,
        before a sentence that repeats an earlier one), and never retracted.
        """
        llama = self._llama
        # special=False: text that looks like a control token (``<start_of_turn>``) stays plain text.
        tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        if len(tokens) >= self.n_ctx:
            raise ContextOverflow(len(tokens), self.n_ctx)
        budget = min(sampling.max_tokens, self.n_ctx - len(tokens))
        on_start(len(tokens))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopFilter(sampling.stop)
        guard = RepeatGuard() if sampling.stop_on_repeat else None

        def emit(text: str) -> None:
            if guard is not None:
                text = guard.feed(text)
            if text:
                on_text(text)
        llama.set_seed(sampling.seed)
        llama.reset()  # type: ignore[no-untyped-call]  # no prefix reuse: identical requests give identical answers
        produced = 0
        finish: str | None = "length"
        tokens_out = llama.generate(
            tokens,
            temp=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            repeat_penalty=sampling.repeat_penalty,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
        )
        try:
            for token in tokens_out:
                if cancel.is_set():
                    finish = None
                    break
                if self._lib.llama_vocab_is_eog(self._vocab, token):
                    finish = "stop"
                    break
                produced += 1
                emit(stops.feed(decoder.decode(self._piece(token))))
                if stops.stopped or (guard is not None and guard.stopped):
                    finish = "stop"
                    break
                if produced >= budget:
                    break
        finally:
            tokens_out.close()
        if finish is not None:
            emit(stops.feed(decoder.decode(b"", final=True)) + stops.flush())
            if guard is not None:
                tail = guard.flush()
                if tail:
                    on_text(tail)
                if guard.stopped:
                    finish = "stop"
        return Outcome(finish_reason=finish, prompt_tokens=len(tokens), completion_tokens=produced)

    def recite(
        self,
        text: str,
        sampling: Sampling,
        *,
        cancel: threading.Event,
        on_start: Callable[[int], None],
        on_text: Callable[[str], None],
    ) -> Outcome:
        """Send ``text`` (a quoted answer) as if generated: no prompt is evaluated (0 prompt tokens).

        The same limits as :meth:`generate` apply: cut at ``max_tokens`` tokens (``"length"``) and
        before the first stop sequence; ``cancel`` is checked before every token.
        """
        tokens = self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        on_start(0)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopFilter(sampling.stop)
        produced = 0
        finish: str | None = "stop"
        for token in tokens:
            if cancel.is_set():
                return Outcome(finish_reason=None, prompt_tokens=0, completion_tokens=produced)
            if produced >= sampling.max_tokens:
                finish = "length"
                break
            produced += 1
            piece = stops.feed(decoder.decode(self._piece(token)))
            if piece:
                on_text(piece)
            if stops.stopped:
                break
        tail = stops.feed(decoder.decode(b"", final=True)) + stops.flush()
        if tail:
            on_text(tail)
        return Outcome(finish_reason=finish, prompt_tokens=0, completion_tokens=produced)

    def _piece(self, token: int) -> bytes:
        """The bytes of one token (control tokens render as nothing)."""
        size = self._lib.llama_token_to_piece(self._vocab, token, self._buffer, len(self._buffer), 0, False)
        if size < 0:  # buffer too small: llama.cpp reports the size it needs
            self._buffer = ctypes.create_string_buffer(-size)
            size = self._lib.llama_token_to_piece(self._vocab, token, self._buffer, len(self._buffer), 0, False)
        return self._buffer.raw[: max(size, 0)]
